"""The gate: does the trained model meet the rules in ``params.yaml``?

Kept free of heavy imports: it only reads and writes JSON, so a cached or
single gate check stays instant.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Callable

from . import settings as S
from .errors import GateFailed, PrerequisiteError, UsageError
from .fileio import file_hash, read_json, write_json

if TYPE_CHECKING:
    from .params import Params

#: The tutorial's own messages, kept word for word: scripts grep for them.
TUTORIAL_PASS = "validation accuracy is higher than the threshold"
TUTORIAL_FAIL = "validation accuracy is lower than the threshold, process stopped"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def gate(
    s: S.Settings,
    params: "Params",
    echo: Callable[[str], None] = print,
    champion: dict | None = None,
    no_champion: str = "no champion yet",
) -> dict:
    """Check train_metadata.json against the gate rules; write gate.json; raise GateFailed on failure.

    ``champion`` is ``{"version": ..., "metrics": {...}}`` with the champion's metrics measured on the
    same validation rows; without one, relative rules pass and say why (``no_champion``).
    """
    path = s.result(S.TRAIN_METADATA)
    if not path.exists():
        raise PrerequisiteError(f"{path}: not found; run `mlci train` first")
    meta = read_json(path)
    rules = []
    for rule in params.gate.rules:
        value = meta.get(rule.metric)
        if not isinstance(value, (int, float)):
            known = ", ".join(k for k, v in meta.items() if isinstance(v, (int, float)))
            raise UsageError(f"gate rule metric {rule.metric!r} is not in {path} (known: {known})")
        champ = champion["metrics"].get(rule.metric) if champion else None
        entry = {"metric": rule.metric, "value": value, "champion_value": champ}
        if rule.min is not None:
            entry.update(op=">=", threshold=rule.min, passed=value >= rule.min)
        elif rule.max is not None:
            entry.update(op="<=", threshold=rule.max, passed=value <= rule.max)
        elif champ is None:
            entry.update(op=">=" if rule.max_drop is not None else "<=", threshold=None, passed=True,
                         note=f"{no_champion}: relative rule passes")
        elif rule.max_drop is not None:
            entry.update(op=">=", threshold=round(champ - rule.max_drop, 6), passed=value >= champ - rule.max_drop)
        else:
            entry.update(op="<=", threshold=round(champ + rule.max_rise, 6), passed=value <= champ + rule.max_rise)
        if rule.relative:
            entry["relative"] = {"max_drop": rule.max_drop} if rule.max_drop is not None else {"max_rise": rule.max_rise}
        entry["passed"] = bool(entry["passed"])
        rules.append(entry)
    passed = all(r["passed"] for r in rules)
    result = {
        "passed": passed,
        "rules": rules,
        "champion": {"version": champion["version"]} if champion else None,
        "train_metadata_sha256": file_hash(path),
        "evaluated_at": now(),
    }
    write_json(s.result(S.GATE_FILE), result)
    from .junit import gate_junit

    gate_junit(result, s.result(S.JUNIT_FILE))
    for line in gate_messages(result):
        echo(line)
    if not passed:
        raise GateFailed(failure_summary(result))
    return result


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
        else:
            lines.append(f"{describe(r)}: {'pass' if r['passed'] else 'FAIL'}")
    return lines


def failure_summary(result: dict) -> str:
    return "gate failed: " + "; ".join(describe(r) for r in result["rules"] if not r["passed"])


def failed_rules(result: dict) -> list[str]:
    return [describe(r) for r in result["rules"] if not r["passed"]]
