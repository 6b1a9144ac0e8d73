"""``mlci.lock``: what each stage last ran on, and whether that still holds (like ``dvc.lock``).

After a stage succeeds, the content hashes of its dependencies and outputs, its parameters and
the hash of its own code are written here. A stage is up to date when all of them still match.
"""

from __future__ import annotations

from pathlib import Path

from mlci.config import settings as S
from mlci.config.resolve import Resolved
from mlci.fileio import path_hash, write_bytes
from mlci.codehash import code_hash
from mlci.pipeline.table import STAGE_NAMES, Stage

LOCK_SCHEMA = 1
UNTRACKED = "untracked"


def stage_code(st: Stage) -> str:
    return code_hash((st.module, *st.extra_code))


def resolved_params(params: Resolved, st: Stage, champion: str | None = UNTRACKED) -> dict:
    """The parameter values a stage ran with, as recorded. ``champion``: the version it compared with
    (None: no champion yet; ``untracked``: tracking off), for the stages that compare."""
    # "dataset" is the resolved definition itself, so editing a dataset YAML file counts as a change.
    out = {section: params.section(section) for section in st.params}
    if "best" in out and params.section("train")["profile"] != "best":
        del out["best"]  # the best profile's settings do not change a default-profile model
    if st.uses_champion(params):
        out["champion"] = champion
    return out


def hashes(paths: list[Path | str], known: dict[str, str] | None = None) -> dict[str, str | None]:
    """Each file's (or partitioned directory's) hash; ``known``: hashes the files will have (outputs a
    restore is about to write). A ``str`` is a data source of the Dask engine (a URL, a glob or a
    directory of files): its fingerprint (``mlci.data.sources``)."""
    known = known or {}
    out = {}
    for p in paths:
        if isinstance(p, str):
            from mlci.data.sources import fingerprint

            out[p] = fingerprint(p)
        else:
            out[str(p)] = known.get(str(p)) or path_hash(p)
    return out


def read_lock(path: Path) -> dict:
    """The stage records; ``{}`` for a missing or damaged lock (a damaged lock only costs a rerun)."""
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != LOCK_SCHEMA or not isinstance(data.get("stages"), dict):
        return {}
    return {k: v for k, v in data["stages"].items() if k in STAGE_NAMES and isinstance(v, dict)}


def write_lock(path: Path, stages: dict) -> None:
    import yaml

    body = yaml.dump(
        {"schema": LOCK_SCHEMA, "stages": {k: stages[k] for k in STAGE_NAMES if k in stages}},
        Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
        sort_keys=False,
        default_flow_style=False,
    )
    header = "# Written by mlci: what each stage last ran on. Like dvc.lock; do not edit by hand.\n"
    write_bytes(path, (header + body).encode())


def stage_record(st: Stage, s: S.Settings, params: Resolved, champion: str | None = UNTRACKED) -> dict:
    return {
        "code": stage_code(st),
        "params": resolved_params(params, st, champion),
        "deps": hashes(st.deps(s)),
        "outs": hashes(st.outs(s)),
    }


def why_stale(st: Stage, s: S.Settings, params: Resolved, recorded: dict | None,
              champion: str | None = UNTRACKED, known: dict[str, str] | None = None) -> str | None:
    """None when the stage is up to date; else what changed, in a few words (``mlci status`` prints it)."""
    if not recorded:
        return "never ran (no lock record)"
    if recorded.get("code") != stage_code(st):
        return "its code changed"
    now = resolved_params(params, st, champion)
    was = recorded.get("params") if isinstance(recorded.get("params"), dict) else {}
    changed = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k))
    if changed:
        if changed == ["champion"]:
            return f"the champion changed ({was.get('champion')} -> {now.get('champion')})"
        return "parameters changed: " + ", ".join(changed)
    for key, paths in (("deps", st.deps(s)), ("outs", st.outs(s))):
        now_hashes, before = hashes(paths, known), recorded.get(key)
        before = before if isinstance(before, dict) else {}
        for p, h in now_hashes.items():
            if h is None:
                return f"{'dependency' if key == 'deps' else 'output'} {p} is missing"
            if before.get(p) != h:
                return f"{'dependency' if key == 'deps' else 'output'} {p} changed"
        if set(before) != set(now_hashes):
            return f"its {key} changed"
    return None


def record(st: Stage, s: S.Settings, params: Resolved, champion: str | None = UNTRACKED) -> None:
    lock = read_lock(s.lock_path)  # re-read: keep what other stages wrote meanwhile
    lock[st.name] = stage_record(st, s, params, champion)
    write_lock(s.lock_path, lock)


def forget(st: Stage, s: S.Settings) -> None:
    """The old record is void once a stage's outputs start changing."""
    lock = read_lock(s.lock_path)
    if lock.pop(st.name, None) is not None:
        write_lock(s.lock_path, lock)


def note_promoted(s: S.Settings, version: str) -> None:
    """After promotion the candidate *is* the champion: its gate verdict and its report (which
    compared it with the champion it replaced) stay valid, not stale."""
    from mlci.pipeline.table import STAGES

    lock = read_lock(s.lock_path)
    changed = False
    for st in STAGES:
        rec = lock.get(st.name)
        if rec and isinstance(rec.get("params"), dict) and "champion" in rec["params"]:
            rec["params"]["champion"] = str(version)
            changed = True
    if changed:
        write_lock(s.lock_path, lock)
