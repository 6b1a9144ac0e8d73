"""Run stages in order, skipping those whose inputs, parameters and code are unchanged.

Like ``dvc repro``: after a stage succeeds, the content hashes of its
dependencies and outputs, its parameters and the code's hash are written to
``mlci.lock`` next to ``params.yaml``. A stage is up to date when all of them
still match, so a no-op rerun only hashes a few files and never imports
pandas, scikit-learn or LightGBM (``stages`` is imported lazily).

A workspace lock (``.mlci/workspace.lock``, ``flock``) keeps two runs from
interleaving their writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import settings as S
from .errors import BusyError, GateFailed, MlciError, UsageError
from .fileio import file_hash, read_json, remove_stale_temps, write_bytes
from .resolve import Resolved, code_hash

LOCK_SCHEMA = 1


@dataclass(frozen=True)
class Stage:
    name: str
    params: tuple[str, ...]
    deps: Callable[[S.Settings], list[Path]]
    outs: Callable[[S.Settings], list[Path]]


STAGES: tuple[Stage, ...] = (
    Stage(
        "preprocess",
        ("dataset", "split", "preprocess"),
        lambda s: [s.raw_path],
        lambda s: [*(s.split_path(x) for x in S.SPLITS), s.rejects_path, s.result(S.PREPROCESS_METADATA)],
    ),
    Stage(
        "train",
        ("dataset", "train", "best", "fairness"),
        lambda s: [s.split_path("train"), s.split_path("validation")],
        lambda s: [s.model_path, s.model_card_path, s.result(S.TRAIN_METADATA), s.scores_path("validation")],
    ),
    Stage(
        "gate",
        ("gate",),
        lambda s: [s.result(S.TRAIN_METADATA)],
        lambda s: [s.result(S.GATE_FILE), s.result(S.JUNIT_FILE)],
    ),
    Stage(
        "test",
        (),
        lambda s: [s.model_path, s.model_card_path, s.split_path("test"), s.result(S.GATE_FILE)],
        lambda s: [s.result(S.TEST_METADATA), s.scores_path("test")],
    ),
    Stage(
        "report",
        ("fairness", "report"),
        lambda s: [s.model_path, s.model_card_path, s.split_path("validation"), s.split_path("test"),
                   *(s.result(n) for n in (S.PREPROCESS_METADATA, S.TRAIN_METADATA, S.GATE_FILE, S.TEST_METADATA)),
                   s.scores_path("validation"), s.scores_path("test")],
        lambda s: _report_outputs(s),
    ),
)
STAGE_NAMES = tuple(st.name for st in STAGES)


def _report_outputs(s: S.Settings) -> list[Path]:
    plots = s.result(S.PLOTS_DIR)
    return [s.result(S.REPORT_JSON), s.result(S.REPORT_MD), s.result(S.REPORT_HTML),
            *(plots / f"{name}.png" for name in S.REPORT_PLOTS)]


def stage(name: str) -> Stage:
    return next(st for st in STAGES if st.name == name)


# -- hashes and the lock file ---------------------------------------------------------------


def resolved_params(params: Resolved, st: Stage, champion=None) -> dict:
    # "dataset" is the resolved definition itself, so editing a dataset YAML file counts as a change.
    out = {section: params.section(section) for section in st.params}
    if "best" in out and params.section("train")["profile"] != "best":
        del out["best"]  # the best profile's settings do not change a default-profile model
    if st.name in ("gate", "report"):
        # Both compare with the champion: a new champion makes them stale.
        out["champion"] = "untracked" if champion is None else champion.version
    return out


def _hashes(paths: list[Path]) -> dict[str, str | None]:
    return {str(p): (file_hash(p) if p.is_file() else None) for p in paths}


def read_lock(path: Path) -> dict:
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}  # a damaged lock only costs a rerun
    if not isinstance(data, dict) or data.get("schema") != LOCK_SCHEMA:
        return {}
    return data.get("stages") or {}


def write_lock(path: Path, stages: dict) -> None:
    import yaml

    body = yaml.dump(
        {"schema": LOCK_SCHEMA, "stages": stages},
        Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
        sort_keys=False,
        default_flow_style=False,
    )
    header = "# Written by mlci: what each stage last ran on. Like dvc.lock; do not edit by hand.\n"
    write_bytes(path, (header + body).encode())


def stage_record(st: Stage, s: S.Settings, params: Resolved, code: str, champion=None) -> dict:
    return {
        "code": code,
        "params": resolved_params(params, st, champion),
        "deps": _hashes(st.deps(s)),
        "outs": _hashes(st.outs(s)),
    }


def is_up_to_date(
    st: Stage, s: S.Settings, params: Resolved, code: str, recorded: dict | None, champion=None
) -> bool:
    if not recorded:
        return False
    if recorded.get("code") != code or recorded.get("params") != resolved_params(params, st, champion):
        return False
    for key, paths in (("deps", st.deps(s)), ("outs", st.outs(s))):
        now = _hashes(paths)
        if None in now.values() or recorded.get(key) != now:
            return False
    return True


# -- workspace lock -------------------------------------------------------------------------


@contextlib.contextmanager
def workspace_lock(s: S.Settings, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on the workspace; wait up to ``wait`` seconds for it."""
    s.state_dir.mkdir(parents=True, exist_ok=True)
    path = s.state_dir / "workspace.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    raise BusyError(
                        f"another mlci process (pid {holder}) is using this workspace ({s.workdir}); "
                        "wait for it, or pass --wait SECONDS"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


# -- running --------------------------------------------------------------------------------


@dataclass
class StageResult:
    name: str
    status: str  # "ran", "cached", "failed", "not run"
    seconds: float = 0.0
    error: str | None = None


@dataclass
class RunResult:
    stages: list[StageResult] = field(default_factory=list)
    exit_code: int = 0
    error: str | None = None

    @property
    def gate_passed(self) -> bool | None:
        st = next((r for r in self.stages if r.name == "gate"), None)
        if st is None or st.status in ("not run",):
            return None
        return st.status != "failed"


Event = Callable[[str, str, dict], None]


def run_stage(name: str, s: S.Settings, params: Resolved, echo: Callable[[str], None], champion=None,
              painter=None) -> dict:
    """Run one stage now and record it in the lock file (used by the single-stage commands too).

    ``champion`` (see ``cli._ChampionProxy``) is what the gate compares with; None means tracking is off.
    """
    if name == "gate":
        from .gate import gate as fn  # light: no pandas
    elif name == "report":
        from .report import report as fn
    else:
        from . import stages  # heavy: imports pandas, scikit-learn, LightGBM

        fn = getattr(stages, name)
    st = stage(name)
    for d in {p.parent for p in st.outs(s)}:
        remove_stale_temps(d)
    code = code_hash()
    lock = read_lock(s.lock_path)
    if lock.pop(name, None) is not None:
        write_lock(s.lock_path, lock)  # the old record is void once the outputs start changing
    kwargs = {}
    if name == "gate":
        if champion is None:
            kwargs = {"no_champion": "tracking is off"}
        elif champion.version is not None:
            kwargs = {"champion": {"version": champion.version, "metrics": champion.metrics()}}
    elif name == "report":
        kwargs = {"champion": champion, "painter": painter}
    try:
        out = fn(s, params.model, echo, **kwargs)
    except GateFailed:
        # A failed gate is a complete, valid result: record it, so a rerun reports it without work.
        _record(st, s, params, code, champion)
        raise
    _record(st, s, params, code, champion)
    return out


def _record(st: Stage, s: S.Settings, params: Resolved, code: str, champion=None) -> None:
    lock = read_lock(s.lock_path)  # re-read: keep what other stages wrote meanwhile
    lock[st.name] = stage_record(st, s, params, code, champion)
    write_lock(s.lock_path, {k: lock[k] for k in STAGE_NAMES if k in lock})


def run(
    s: S.Settings,
    params: Resolved,
    *,
    force: bool = False,
    until: str = "report",
    on_event: Event = lambda kind, name, info: None,
    echo: Callable[[str], None] = print,
    champion=None,
) -> RunResult:
    """Run the stages up to ``until``, skipping up-to-date ones unless ``force``.

    The first failure stops the run, with one exception: after a failed gate the report still
    runs (without the test split), because that is when a reviewer most needs it.
    """
    if until not in STAGE_NAMES:
        raise UsageError(f"unknown stage {until!r}; stages: {', '.join(STAGE_NAMES)}")
    result = RunResult()
    code = code_hash()
    stale = force
    todo = STAGES[: STAGE_NAMES.index(until) + 1]
    painter = None
    try:
        for st in todo:
            if result.exit_code and not (result.exit_code == GateFailed.exit_code and st.name == "report"):
                continue
            started = time.perf_counter()
            recorded = read_lock(s.lock_path).get(st.name)
            if not stale and is_up_to_date(st, s, params, code, recorded, champion):
                on_event("cached", st.name, {})
                res = StageResult(st.name, "cached")
                result.stages.append(res)
                if st.name == "gate":
                    verdict = read_json(s.result(S.GATE_FILE))
                    from .gate import failure_summary, gate_messages

                    for line in gate_messages(verdict):
                        echo(line)
                    if not verdict.get("passed"):
                        res.status = "failed"
                        res.error = failure_summary(verdict)
                        result.exit_code, result.error = GateFailed.exit_code, res.error
                        on_event("failed", st.name, {"error": res.error})
                continue
            if painter is None and todo[-1].name == "report":
                # Work to do, and a report at the end: start its figure process now, before any
                # heavy import, so that matplotlib loads while the other stages run.
                from .painter import Painter

                painter = Painter()
            stale = True  # everything downstream of a rerun stage reruns too
            on_event("start", st.name, {})
            try:
                run_stage(st.name, s, params, echo, champion, painter)
            except MlciError as e:
                res = StageResult(st.name, "failed", time.perf_counter() - started, e.message)
                result.stages.append(res)
                if not result.exit_code:  # a report failing after a failed gate keeps the gate's verdict
                    result.exit_code, result.error = e.exit_code, e.message
                on_event("failed", st.name, {"error": e.message, "seconds": res.seconds})
                continue
            res = StageResult(st.name, "ran", time.perf_counter() - started)
            result.stages.append(res)
            on_event("done", st.name, {"seconds": res.seconds})
    finally:
        if painter is not None:
            painter.close()
    done = {r.name for r in result.stages}
    result.stages += [StageResult(st.name, "not run") for st in todo if st.name not in done]
    result.stages.sort(key=lambda r: STAGE_NAMES.index(r.name))
    return result


def note_promoted(s: S.Settings, version: str) -> None:
    """After promotion the candidate *is* the champion: its gate verdict and its report (which
    compared it with the champion it replaced) stay valid, not stale."""
    lock = read_lock(s.lock_path)
    changed = False
    for name in ("gate", "report"):
        record = lock.get(name)
        if record and "champion" in record.get("params", {}):
            record["params"]["champion"] = str(version)
            changed = True
    if changed:
        write_lock(s.lock_path, lock)
