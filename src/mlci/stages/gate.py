"""gate: check train_metadata.json against the gate rules; write gate.json and junit.xml; exit 3 on failure."""

from __future__ import annotations

from mlci.config import settings as S
from mlci.errors import GateFailed, PrerequisiteError
from mlci.evaluation.gate import evaluate, failure_summary, gate_messages
from mlci.evaluation.junit import gate_junit
from mlci.fileio import file_hash, read_json, write_json
from mlci.stages.context import StageContext
from mlci.timestamps import utc_now


def gate(ctx: StageContext) -> dict:
    s = ctx.settings
    path = s.result(S.TRAIN_METADATA)
    if not path.exists():
        raise PrerequisiteError(f"{path}: not found; run `mlci train` first")
    champion, no_champion = None, "no champion yet"
    if ctx.champion is None:
        no_champion = "tracking is off"
    elif ctx.champion.version is not None:
        champion = {"version": ctx.champion.version, "metrics": ctx.champion.metrics()}
    result = evaluate(ctx.params.gate.rules, read_json(path), champion, no_champion, where=str(path))
    result.update(train_metadata_sha256=file_hash(path), evaluated_at=utc_now())
    write_json(s.result(S.GATE_FILE), result)
    gate_junit(result, s.result(S.JUNIT_FILE))
    for line in gate_messages(result):
        ctx.echo(line)
    if not result["passed"]:
        raise GateFailed(failure_summary(result))
    return result


def replay(ctx: StageContext) -> None:
    """An up-to-date gate says its verdict again (and fails again), without evaluating anything."""
    verdict = read_json(ctx.settings.result(S.GATE_FILE))
    for line in gate_messages(verdict):
        ctx.echo(line)
    if not verdict.get("passed"):
        raise GateFailed(failure_summary(verdict))
