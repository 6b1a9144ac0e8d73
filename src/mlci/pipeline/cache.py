"""The run cache (like DVC's run-cache): a stage's outputs, kept by what made them.

After a stage runs, its outputs are stored content-addressed under ``<state dir>/cache/objects``
and a run entry under ``cache/runs/<key>.json`` maps the stage's key to them. The key is the hash of
what the lock compares: the stage's code, its parameters (the champion it compared with included)
and its inputs' hashes. A stale stage whose key has an entry is restored (every output written as
one set, each checked against its hash) instead of run: reverting a parameter costs a copy, not a
refit, and gives the very bytes the earlier run made.

The cache keeps at most ``MLCI_CACHE_MAX_MB`` (default :data:`DEFAULT_LIMIT_MB`) of objects; past
that, the least recently used entries go (``mlci cache gc`` does it on demand, ``--all`` empties it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from mlci.config import settings as S
from mlci.config.resolve import Resolved
from mlci.fileio import bytes_hash, file_hash, read_json_or_none, write_json, write_set
from mlci.pipeline import lock as L
from mlci.pipeline.table import Stage

DEFAULT_LIMIT_MB = 2048


def _root(s: S.Settings) -> Path:
    return s.state_dir / "cache"


def limit_bytes(mb: float | str | None = None) -> int:
    """The cache's bound in bytes: ``mb`` MiB, else ``MLCI_CACHE_MAX_MB``, else the default (``inf``: none)."""
    raw = os.environ.get("MLCI_CACHE_MAX_MB", "").strip() if mb is None else mb
    try:
        value = float(raw) if raw != "" else float(DEFAULT_LIMIT_MB)
    except (TypeError, ValueError):
        value = float(DEFAULT_LIMIT_MB)
    if value != value or value < 0:  # NaN or negative: the default
        value = float(DEFAULT_LIMIT_MB)
    return int(min(value, 1 << 40) * (1 << 20))


def key(st: Stage, s: S.Settings, params: Resolved, champion: str | None, known: dict[str, str] | None = None) -> str:
    """What the stage's result depends on, hashed: code, parameters, inputs (``known``: see ``L.hashes``)."""
    made_of = {"stage": st.name, "code": L.stage_code(st), "params": L.resolved_params(params, st, champion),
               "deps": L.hashes(st.deps(s), known)}
    if st.uses_champion(params) and champion not in (None, L.UNTRACKED):
        # "v3" means a model only within one store and one registered model; with no champion the
        # result depends on no store, so a copied or moved workspace keeps its entries.
        made_of["champion_of"] = [os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db",
                                  str(s.workdir.resolve()), params.section("tracking").get("model_name")]
    return hashlib.sha256(json.dumps(made_of, sort_keys=True, default=str).encode()).hexdigest()


def _object(s: S.Settings, digest: str) -> Path:
    h = digest.removeprefix("sha256:")
    return _root(s) / "objects" / h[:2] / h[2:]


def _entry_path(s: S.Settings, k: str) -> Path:
    return _root(s) / "runs" / f"{k}.json"


def lookup(st: Stage, s: S.Settings, k: str) -> dict | None:
    """The entry for key ``k``, when it holds every output of the stage as it is declared now."""
    try:
        entry = read_json_or_none(_entry_path(s, k))
    except Exception:  # noqa: BLE001 - a damaged entry is only a miss
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("outs"), dict):
        return None
    if set(entry["outs"]) != {str(p) for p in st.outs(s)} or not all(
            isinstance(h, str) and h.startswith("sha256:") and _object(s, h).is_file() for h in entry["outs"].values()):
        return None
    return entry


def drop(s: S.Settings, k: str) -> None:
    """Forget an entry (its objects go at the next collection)."""
    _entry_path(s, k).unlink(missing_ok=True)


def restore(st: Stage, s: S.Settings, entry: dict, k: str) -> None:
    """Write the entry's outputs over the stage's (as one set); each object is checked first."""
    files = {}
    for path, digest in entry["outs"].items():
        data = _object(s, digest).read_bytes()
        if bytes_hash(data) != digest:
            raise OSError(f"run cache object for {path} is damaged")
        files[Path(path)] = data
    write_set(files)
    os.utime(_entry_path(s, k))  # recently used


def save(st: Stage, s: S.Settings, k: str, output) -> None:
    """Keep the stage's outputs under key ``k`` (a full disk or a read-only state directory only
    costs the cache)."""
    try:
        outs = {}
        for p in st.outs(s):
            if not p.is_file():
                return  # an output it did not write: nothing complete to keep
            digest = file_hash(p)
            obj = _object(s, digest)
            if not obj.is_file():
                obj.parent.mkdir(parents=True, exist_ok=True)
                tmp = obj.with_name(obj.name + ".tmp")
                shutil.copyfile(p, tmp)
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, obj)
            outs[str(p)] = digest
        try:
            json.dumps(output)
        except (TypeError, ValueError):
            output = None
        write_json(_entry_path(s, k), {"stage": st.name, "outs": outs, "output": output,
                                        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        gc(s, limit_bytes())
    except OSError:
        pass


def gc(s: S.Settings, limit: int) -> dict:
    """Drop the least recently used entries until the objects they keep fit in ``limit`` bytes; then
    the objects no entry names. Returns what was removed."""
    runs_dir, objects_dir = _root(s) / "runs", _root(s) / "objects"
    entries = []
    for path in runs_dir.glob("*.json") if runs_dir.is_dir() else ():
        try:
            data = json.loads(path.read_text())
            digests = {d for d in data["outs"].values() if isinstance(d, str) and d.startswith("sha256:")}
            entries.append((path.stat().st_mtime, path, digests))
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            path.unlink(missing_ok=True)
    entries.sort(key=lambda e: e[0], reverse=True)  # newest first
    kept: set[str] = set()
    size, removed_entries = 0, 0
    sizes: dict[str, int] = {}
    for _, path, digests in entries:
        new = digests - kept
        for d in new:
            obj = _object(s, d)
            sizes[d] = obj.stat().st_size if obj.is_file() else 0
        extra = sum(sizes[d] for d in new)
        if size + extra > limit:
            path.unlink(missing_ok=True)
            removed_entries += 1
            continue
        kept |= digests
        size += extra
    removed_objects = 0
    for obj in objects_dir.glob("*/*") if objects_dir.is_dir() else ():
        if f"sha256:{obj.parent.name}{obj.name}" not in kept:
            obj.unlink(missing_ok=True)
            removed_objects += 1
    for folder in objects_dir.iterdir() if objects_dir.is_dir() else ():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return {"entries_removed": removed_entries, "objects_removed": removed_objects, "bytes_kept": size,
            "entries_kept": len(entries) - removed_entries}
