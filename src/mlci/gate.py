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


def gate(s: S.Settings, params: Params, echo: Callable[[str], None] = print) -> dict:
    """Check train_metadata.json against the gate rules; write gate.json; raise GateFailed on failure."""
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
        if rule.min is not None:
            op, threshold, ok = ">=", rule.min, value >= rule.min
        else:
            op, threshold, ok = "<=", rule.max, value <= rule.max
        rules.append(
            {"metric": rule.metric, "value": value, "op": op, "threshold": threshold, "passed": bool(ok)}
        )
    passed = all(r["passed"] for r in rules)
    result = {
        "passed": passed,
        "rules": rules,
        "train_metadata_sha256": file_hash(path),
        "evaluated_at": now(),
    }
    write_json(s.result(S.GATE_FILE), result)
    for line in gate_messages(result):
        echo(line)
    if not passed:
        raise GateFailed(failure_summary(result))
    return result


def gate_messages(result: dict) -> list[str]:
    """The tutorial's two messages for the accuracy rule, one line per other rule."""
    lines = []
    for r in result["rules"]:
        if r["metric"] == "validation_acc" and r["op"] == ">=":
            lines.append(TUTORIAL_PASS if r["passed"] else TUTORIAL_FAIL)
        else:
            verdict = "pass" if r["passed"] else "FAIL"
            lines.append(f"{r['metric']} = {r['value']:.4f} (must be {r['op']} {r['threshold']:g}): {verdict}")
    return lines


def failure_summary(result: dict) -> str:
    failed = [f"{r['metric']} {r['value']:.4f} {r['op']} {r['threshold']:g} is false" for r in result["rules"] if not r["passed"]]
    return "gate failed: " + "; ".join(failed)
