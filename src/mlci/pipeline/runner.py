"""Run stages in order, skipping those whose inputs, parameters and code are unchanged (``dvc repro``).

The runner knows stages only through the table (``mlci.pipeline.table``): it builds each one's
context, calls it, records it in the lock, and tells its observers (the CLI's display, tracking)
what happened. It never talks to MLflow; the champion it hands the comparing stages is whatever
object the caller gives it (``mlci.tracking.champion``), or None when tracking is off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from mlci.config import settings as S
from mlci.config.resolve import Resolved
from mlci.errors import GateFailed, MlciError, UsageError, io_failure
from mlci.fileio import remove_stale_temps
from mlci.pipeline import cache as C
from mlci.pipeline import lock as L
from mlci.pipeline.table import STAGE_NAMES, STAGES, Stage, stage
from mlci.progress import NONE, Progress


@dataclass
class StageResult:
    name: str
    status: str  # "ran", "cached", "restored" (from the run cache), "failed", "not run"
    seconds: float = 0.0
    error: str | None = None
    started_at: float | None = None  # epoch seconds, for a stage that ran
    output: Any = field(default=None, repr=False, compare=False)


@dataclass
class RunResult:
    stages: list[StageResult] = field(default_factory=list)
    exit_code: int = 0
    error: str | None = None
    #: What an observer made of the run (tracking puts its summary here).
    tracking: dict | None = None

    @property
    def statuses(self) -> dict[str, str]:
        return {r.name: r.status for r in self.stages}

    @property
    def gate_passed(self) -> bool | None:
        st = next((r for r in self.stages if r.name == "gate"), None)
        if st is None or st.status in ("not run",):
            return None
        return st.status != "failed"


class Observer(Protocol):
    def event(self, kind: str, name: str, info: dict) -> None: ...  # "start", "done", "cached", "failed"
    def finished(self, result: RunResult) -> None: ...


def champion_key(champion) -> str | None:
    """What the lock records of the champion a comparing stage saw."""
    return L.UNTRACKED if champion is None else champion.version


def producers(st: Stage, s: S.Settings) -> list[str]:
    """The earlier stages that write a file ``st`` reads: when one of them reruns, ``st`` reruns too."""
    deps = {str(p) for p in st.deps(s)}
    return [u.name for u in STAGES[: STAGE_NAMES.index(st.name)] if deps & {str(p) for p in u.outs(s)}]


def staleness(s: S.Settings, params: Resolved, champion=None) -> dict[str, str | None]:
    """For each stage, None if ``mlci run`` would skip it, else why it would run (``mlci status``)."""
    recorded, out = L.read_lock(s.lock_path), {}
    restored: dict[str, str] = {}  # what the run cache would write: {path: hash}
    from_cache: set[str] = set()  # stages the run cache would restore (their readers need not rerun)
    for st in STAGES:
        why = L.why_stale(st, s, params, recorded.get(st.name), champion_key(champion), restored)
        upstream = [u for u in producers(st, s) if out.get(u) and u not in from_cache]
        if upstream:
            out[st.name] = f"{upstream[0]} reruns and writes what it reads"
            continue
        out[st.name] = why
        entry = C.lookup(st, s, C.key(st, s, params, champion_key(champion), restored)) if why else None
        if entry is not None:
            out[st.name] = f"{why}{FROM_CACHE}"
            from_cache.add(st.name)
            restored.update(entry["outs"])
    return out


#: How ``mlci status`` says a stale stage will be restored, not run.
FROM_CACHE = "; its outputs for these inputs are in the run cache"


def _context(st: Stage, s: S.Settings, params: Resolved, echo, champion, painter, progress=NONE):
    from mlci.stages.context import StageContext, StageParams

    return StageContext(s, StageParams(params, st.params), echo, champion if st.uses_champion(params) else None,
                        painter, tracking=champion is not None, progress=progress)


def _call(st: Stage, s: S.Settings, params: Resolved, echo, champion, painter, k: str, progress=NONE) -> Any:
    """Run one stage now, record it in the lock and keep its outputs in the run cache under key ``k``
    (a failed gate is a complete, valid result too)."""
    try:
        for d in {p.parent for p in st.outs(s)}:
            remove_stale_temps(d)
        L.forget(st, s)
        try:
            out = st.load()(_context(st, s, params, echo, champion, painter, progress))
        except GateFailed:
            L.record(st, s, params, champion_key(champion))
            C.save(st, s, k, None)
            raise
        L.record(st, s, params, champion_key(champion))
        C.save(st, s, k, out)
        return out
    except OSError as e:  # a directory that is a file, no permission, a full disk: one line, not a bug
        raise io_failure(e, f"the {st.name} stage, reading or writing,") from None

def run(
    s: S.Settings,
    params: Resolved,
    *,
    force: bool = False,
    until: str = "report",
    only: str | None = None,
    observers: Iterable[Observer] = (),
    echo: Callable[[str], None] = print,
    champion=None,
    progress: Progress = NONE,
) -> RunResult:
    """Run the stages up to ``until`` (or exactly ``only``, up to date or not), skipping up-to-date ones
    unless ``force``. The first failure stops the run, except for stages that run after a failed gate.
    ``progress`` hears how far each stage's long loops got (``mlci.progress``; nothing by default)."""
    for name in (until, only):
        if name is not None and name not in STAGE_NAMES:
            raise UsageError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    run_ = _Run(s, params, list(observers), echo, champion, progress)
    todo = [stage(only)] if only else list(STAGES[: STAGE_NAMES.index(until) + 1])
    recorded, ran = L.read_lock(s.lock_path), set()
    try:
        for st in todo:
            failed = run_.result.exit_code
            if failed and not (failed == GateFailed.exit_code and st.after_failed_gate):
                continue
            # A stage reruns when it is stale itself, or when a stage that writes what it reads reran
            # (``mlci status`` predicts exactly this).
            if not (force or only or ran & set(producers(st, s))) and \
                    L.why_stale(st, s, params, recorded.get(st.name), champion_key(champion)) is None:
                run_.cached(st)
                continue
            k = C.key(st, s, params, champion_key(champion))
            entry = None if (force or only) else C.lookup(st, s, k)
            if entry is not None and run_.restored(st, entry, k):  # made before from these inputs
                continue
            if run_.painter is None and any(t.needs_painter for t in todo):
                # Work to do, and a report to come: start its figure process now, before any heavy
                # import, so that matplotlib loads while the other stages run.
                from mlci.reporting.painter import Painter

                run_.painter = Painter()
            ran.add(st.name)
            run_.execute(st, k)
    finally:
        if run_.painter is not None:
            run_.painter.close()
    if not only and not run_.result.exit_code:
        _retire_later_outputs(s, params, until, champion, echo)
    result = run_.result
    done = {r.name for r in result.stages}
    result.stages += [StageResult(st.name, "not run") for st in todo if st.name not in done]
    result.stages.sort(key=lambda r: STAGE_NAMES.index(r.name))
    for o in run_.observers:
        o.finished(result)
    return result


def _retire_later_outputs(s: S.Settings, params: Resolved, until: str, champion, echo) -> None:
    """After ``--until``, the outputs of later stages that describe another model (a report of the
    previous model, say) must not be left looking current: they are removed, and say so."""
    recorded = L.read_lock(s.lock_path)
    for st in STAGES[STAGE_NAMES.index(until) + 1:]:
        if st.name not in recorded or L.why_stale(st, s, params, recorded[st.name], champion_key(champion)) is None:
            continue
        gone = [p for p in st.outs(s) if p.is_file()]
        for p in gone:
            p.unlink()
        L.forget(st, s)
        if gone:
            echo(f"{st.name}: removed {len(gone)} output(s) of an earlier model ({', '.join(str(p) for p in gone[:3])}"
                 f"{', ...' if len(gone) > 3 else ''}); `mlci run` makes them again")


class _Run:
    """One run's state: its result so far, its observers, the figure process once started."""

    def __init__(self, s, params, observers, echo, champion, progress):
        self.s, self.params, self.observers, self.echo, self.champion = s, params, observers, echo, champion
        self.progress = progress
        self.result, self.painter = RunResult(), None

    def tell(self, kind: str, name: str, **info) -> None:
        for o in self.observers:
            o.event(kind, name, info)

    def fail(self, res: StageResult, e: MlciError) -> None:
        res.status, res.error = "failed", e.message
        if not self.result.exit_code:  # a report failing after a failed gate keeps the gate's verdict
            self.result.exit_code, self.result.error = e.exit_code, e.message
        self.tell("failed", res.name, error=e.message, seconds=res.seconds)

    def cached(self, st: Stage) -> None:
        res = StageResult(st.name, "cached")
        self.result.stages.append(res)
        self.tell("cached", st.name)
        self._replay(st, res)

    def _replay(self, st: Stage, res: StageResult) -> None:
        """A stage not run now says again what it said (the gate's verdict, and its exit code)."""
        replay = st.load_replay()
        if replay is not None:
            try:
                replay(_context(st, self.s, self.params, self.echo, self.champion, None))
            except MlciError as e:
                self.fail(res, e)

    def restored(self, st: Stage, entry: dict, k: str) -> bool:
        """Restore the stage from the run cache; False (the entry dropped) when that cannot be done:
        a damaged or vanished object is only a miss, and the stage runs."""
        try:
            C.restore(st, self.s, entry, k)
        except OSError:
            C.drop(self.s, k)
            return False
        res = StageResult(st.name, "restored", output=entry.get("output"))
        self.result.stages.append(res)
        try:
            L.record(st, self.s, self.params, champion_key(self.champion))
        except OSError as e:
            self.fail(res, io_failure(e, f"the {st.name} stage, restoring from the run cache,"))
            return True
        self.tell("restored", st.name)
        self._replay(st, res)
        return True

    def execute(self, st: Stage, k: str) -> None:
        started = time.perf_counter()
        self.tell("start", st.name)
        res = StageResult(st.name, "ran", started_at=time.time())
        self.result.stages.append(res)
        try:
            res.output = _call(st, self.s, self.params, self.echo, self.champion, self.painter, k, self.progress)
        except MlciError as e:
            res.seconds = time.perf_counter() - started
            self.fail(res, e)
            return
        res.seconds = time.perf_counter() - started
        self.tell("done", st.name, seconds=res.seconds)
