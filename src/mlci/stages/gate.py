"""gate: check train_metadata.json against the gate rules; write gate.json and junit.xml; exit 3 on failure."""

from __future__ import annotations

from mlci.config import settings as S
from mlci.errors import GateFailed, MlciError, PrerequisiteError
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
    champion = None
    rules = ctx.params.gate.rules
    if ctx.champion is not None and ctx.champion.version is not None and any(r.relative for r in rules):
        champion = {"version": ctx.champion.version, "metrics": ctx.champion.metrics()}
        caveat = ctx.champion.caveat()
        if caveat:
            champion["caveat"] = caveat
    result = evaluate(rules, read_json(path), champion, where=str(path), tracking=ctx.tracking)
    result.update(train_metadata_sha256=file_hash(path), evaluated_at=utc_now())
    if not _same_verdict(s, result):  # an unchanged verdict keeps its files (and what depends on them)
        write_json(s.result(S.GATE_FILE), result)
        gate_junit(result, s.result(S.JUNIT_FILE))
    for line in gate_messages(result):
        ctx.echo(line)
    if not result["passed"]:
        raise GateFailed(failure_summary(result))
    return result


def _same_verdict(s, result: dict) -> bool:
    try:
        old = read_json(s.result(S.GATE_FILE))
    except (OSError, MlciError):
        return False
    keys = ("passed", "rules", "champion", "train_metadata_sha256")
    return isinstance(old, dict) and s.result(S.JUNIT_FILE).exists() and all(old.get(k) == result[k] for k in keys)


def replay(ctx: StageContext) -> None:
    """An up-to-date gate says its verdict again (and fails again), without evaluating anything."""
    verdict = read_json(ctx.settings.result(S.GATE_FILE))
    then = (verdict.get("champion") or {}).get("version")
    if ctx.champion is not None and ctx.champion.version != then:
        # Up to date against another champion only because this model was promoted since: say that,
        # not what was true before the promotion.
        verdict = {**verdict, "rules": [
            {**r, "evaluated": False, "note": f"this model is the champion now (v{ctx.champion.version})"}
            if "relative" in r else r for r in verdict["rules"]]}
    for line in gate_messages(verdict):
        ctx.echo(line)
    if not verdict.get("passed"):
        raise GateFailed(failure_summary(verdict))
