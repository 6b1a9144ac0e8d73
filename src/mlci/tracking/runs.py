"""Queries behind ``mlci runs`` and ``mlci diff``: a run from a reference, a row per run, two runs side by side."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlci.errors import PrerequisiteError
from mlci.timestamps import iso_from_ms
from mlci.tracking.registry import Registry
from mlci.tracking.store import GIT_COMMIT, T, commit_of


def resolve_ref(registry: Registry, ref: str | None, default: str, cwd: Path | None = None):
    """A run from a reference: a run id (or unique prefix), a model version (``3``, ``v3``),
    a git revision, ``latest``, ``champion`` or ``challenger`` (the aliases as configured)."""
    ref = ref or default
    client = registry.client
    aliases = {"champion": registry.alias, "challenger": registry.challenger_alias, registry.alias: registry.alias,
               registry.challenger_alias: registry.challenger_alias}
    if ref in aliases:
        alias = aliases[ref]
        mv = registry.alias_version(alias, "nothing to compare")
        if mv is None:
            raise PrerequisiteError(f"{registry.name} has no {alias} yet")
        return client.get_run(mv.run_id), f"{alias} (v{mv.version})"
    # Each kind of reference asks the store for the few runs that can match, not for every run.
    if ref == "latest":
        found = registry.runs(1, f"tags.`{T}command` = 'run'") or registry.runs(1)
        if not found:
            raise PrerequisiteError(f"no runs in experiment {registry.experiment!r} yet")
        return found[0], f"latest ({found[0].info.run_id[:8]})"
    version = _version_ref(ref)
    if version is not None:
        mv = registry.existing_version(version, "nothing to compare")
        return client.get_run(mv.run_id), f"v{version}"
    prefix = ref.lower()
    is_prefix = len(ref) >= 4 and all(c in "0123456789abcdef" for c in prefix)  # run ids are hex
    matches = registry.runs(2, f"attributes.run_id LIKE '{prefix}%'") if is_prefix else []
    if len(matches) == 1:
        return matches[0], ref[:8]
    if len(matches) > 1:
        raise PrerequisiteError(f"run id prefix {ref!r} is ambiguous (2 or more runs): give more characters")
    if ref.isdigit():  # a number that is no run id prefix: a version
        try:
            mv = registry.version(ref)
            return client.get_run(mv.run_id), f"v{ref}"
        except Exception:  # noqa: BLE001
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=cwd, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        raise PrerequisiteError(f"{ref!r} is not a run id, a model version or a git revision") from None
    # MLflow's commit tag, else mlci's own on runs recorded before it (which carry no MLflow tag).
    found = registry.runs(1, f"tags.`{GIT_COMMIT}` = '{commit}'") or [
        r for r in registry.runs(50, f"tags.`{T}git_commit` = '{commit}'") if commit_of(r.data.tags) == commit]
    if found:
        return found[0], f"{ref} ({commit[:7]})"
    raise PrerequisiteError(f"no tracked run at git revision {ref} ({commit[:7]})")


def _version_ref(ref: str) -> str | None:
    """``v3``, ``V3``, ``version:3`` and numbers under 4 digits name a model version."""
    for prefix in ("version:", "v", "V"):
        if ref.startswith(prefix) and ref[len(prefix):].isdigit():
            return ref[len(prefix):]
    return ref if ref.isdigit() and len(ref) < 4 else None


def run_row(r) -> dict:
    tags, m = r.data.tags, r.data.metrics
    commit = commit_of(tags) or ""
    return {
        "run_id": r.info.run_id,
        "command": tags.get(T + "command", ""),
        "start_time": iso_from_ms(r.info.start_time) or "",
        "status": r.info.status,
        "git_commit": commit,
        "git_dirty": tags.get(T + "git_dirty") == "true",
        "cached": tags.get(T + "cached") == "true",
        "validation_acc": m.get("validation_acc"),
        "validation_roc_auc": m.get("validation_roc_auc"),
        "test_acc": m.get("test_acc"),
        "test_roc_auc": m.get("test_roc_auc"),
        "gate": tags.get(T + "gate"),
        "model_version": tags.get(T + "model_version"),
        "promoted": tags.get(T + "promoted") == "true",
    }


def diff(a, b) -> dict:
    """Metrics and parameters of two runs side by side, with B - A."""
    metrics = {}
    for k in sorted(set(a.data.metrics) | set(b.data.metrics)):
        va, vb = a.data.metrics.get(k), b.data.metrics.get(k)
        metrics[k] = {"a": va, "b": vb, "change": None if va is None or vb is None else round(vb - va, 6)}
    params = {}
    for k in sorted(set(a.data.params) | set(b.data.params)):
        va, vb = a.data.params.get(k), b.data.params.get(k)
        if va != vb:
            params[k] = {"a": va, "b": vb}
    return {"a": a.info.run_id, "b": b.info.run_id, "metrics": metrics, "params": params}
