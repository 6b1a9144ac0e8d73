"""The gate's rules as a pure function: a model's metrics (and the champion's) in, a verdict out.

Light on purpose (no pandas): a cached or single gate check stays instant. ``mlci.stages.gate``
reads and writes the files.
"""

from __future__ import annotations

from mlci.errors import UsageError

#: The tutorial's own messages, kept word for word: scripts grep for them.
TUTORIAL_PASS = "validation accuracy is higher than the threshold"
TUTORIAL_FAIL = "validation accuracy is lower than the threshold, process stopped"


NOT_EVALUATED = "not evaluated (tracking off)"


def evaluate(rules, meta: dict, champion: dict | None = None, no_champion: str = "no champion yet",
             where: str = "train_metadata.json", tracking: bool = True) -> dict:
    """Each rule of ``rules`` (``GateRule``s) against ``meta`` (train_metadata.json's content).

    ``champion`` is ``{"version": ..., "metrics": {...}}`` with the champion's metrics measured on the
    same validation rows (and an optional ``caveat`` noted on every relative rule); without one,
    relative rules pass and say why (``no_champion``). With ``tracking`` off there is no champion to
    ask: relative rules are marked not evaluated (they neither pass nor fail the gate).
    Returns ``{"passed", "rules", "champion"}``.
    """
    out = []
    for rule in rules:
        value = meta.get(rule.metric)
        if not isinstance(value, (int, float)):
            known = ", ".join(k for k, v in meta.items() if isinstance(v, (int, float)))
            raise UsageError(f"gate rule metric {rule.metric!r} is not in {where} (known: {known})")
        champ = champion["metrics"].get(rule.metric) if champion else None
        entry = {"metric": rule.metric, "value": value, "champion_value": champ}
        if rule.min is not None:
            entry.update(op=">=", threshold=rule.min, passed=value >= rule.min)
        elif rule.max is not None:
            entry.update(op="<=", threshold=rule.max, passed=value <= rule.max)
        elif not tracking:
            entry.update(op=">=" if rule.max_drop is not None else "<=", threshold=None, passed=True,
                         evaluated=False, note=NOT_EVALUATED)
        elif champ is None:
            entry.update(op=">=" if rule.max_drop is not None else "<=", threshold=None, passed=True,
                         note=f"{no_champion}: relative rule passes")
        elif rule.max_drop is not None:
            entry.update(op=">=", threshold=round(champ - rule.max_drop, 6), passed=value >= champ - rule.max_drop)
        else:
            entry.update(op="<=", threshold=round(champ + rule.max_rise, 6), passed=value <= champ + rule.max_rise)
        if rule.relative:
            entry["relative"] = {"max_drop": rule.max_drop} if rule.max_drop is not None else {"max_rise": rule.max_rise}
            if champ is not None and champion.get("caveat"):
                entry["note"] = champion["caveat"]
        entry["passed"] = bool(entry["passed"])
        out.append(entry)
    return {
        "passed": all(r["passed"] for r in out),
        "rules": out,
        "champion": {k: champion[k] for k in ("version", "caveat") if k in champion} if champion else None,
    }


def rule_label(r: dict) -> str:
    """A rule as people write it: ``validation_acc >= 0.8``, ``validation_roc_auc >= champion - 0.005``."""
    if "relative" in r:
        (kind, amount), = r["relative"].items()
        return f"{r['metric']} {r['op']} champion {'-' if kind == 'max_drop' else '+'} {amount:g}"
    return f"{r['metric']} {r['op']} {r['threshold']:g}"


def describe(r: dict) -> str:
    """A rule's outcome in one line: value, and what it had to be."""
    if r.get("threshold") is None:
        return f"{r['metric']} = {r['value']:.4f} ({r.get('note', '')})"
    rel = ""
    if "relative" in r:
        (kind, amount), = r["relative"].items()
        rel = f", champion {r['champion_value']:.4f} {'-' if kind == 'max_drop' else '+'} {amount:g}"
    return f"{r['metric']} = {r['value']:.4f} (must be {r['op']} {r['threshold']:g}{rel})"


def gate_messages(result: dict) -> list[str]:
    """The tutorial's two messages for the accuracy rule, one line per other rule."""
    lines = []
    for r in result["rules"]:
        if r["metric"] == "validation_acc" and r["op"] == ">=" and "relative" not in r:
            lines.append(TUTORIAL_PASS if r["passed"] else TUTORIAL_FAIL)
        elif r.get("evaluated") is False:
            lines.append(f"{rule_label(r)}: {r['note']}")
        else:
            lines.append(f"{describe(r)}: {'pass' if r['passed'] else 'FAIL'}")
    return lines


def failure_summary(result: dict) -> str:
    return "gate failed: " + "; ".join(describe(r) for r in result["rules"] if not r["passed"])


def failed_rules(result: dict) -> list[str]:
    return [describe(r) for r in result["rules"] if not r["passed"]]
