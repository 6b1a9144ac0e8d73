"""What a tracked command records: an MLflow run built from the pipeline's result files.

Stages never talk to MLflow. After they ran, :func:`record_run` reads what they wrote (metadata,
the gate's verdict, the model card, the report) and logs it; a new model becomes a registered
version; one that passed the gate is promoted (compare-and-set, see ``Registry.promote_if_better``).
"""

from __future__ import annotations

import hashlib
import json
import socket

from mlci.config import settings as S
from mlci.config.resolve import Resolved
from mlci.evaluation.gate import failed_rules
from mlci.fileio import file_hash, read_json, read_json_or_none
from mlci.tracking.champion import Champion
from mlci.tracking.registry import Registry, flatten_params
from mlci.tracking.store import TrackingError, git_info


def start(registry: Registry, command: str, s: S.Settings, git: dict[str, str]) -> str:
    """A new RUNNING run of ``command`` (a run whose process dies is marked FAILED by the next one);
    ``git``: :func:`~mlci.tracking.store.git_info` of the workspace.

    A single-stage command (``mlci train``: the tutorial's ``docker exec`` steps, a Jenkins chain)
    is nested under a parent run that groups the stages run in this workspace, on this host, at
    this commit; ``mlci preprocess`` starts a new group."""
    from mlci.pipeline.table import STAGES

    stages = [st.name for st in STAGES]
    group = group_key(s, git) if command in stages else None
    try:
        return registry.start_run(command, git, group=group, new_group=command == stages[0])
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - the server said no: one clear line
        raise TrackingError(f"tracking at {registry.uri} failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}; "
                            "pass --no-track to run without tracking") from None


def record_run(
    registry: Registry,
    command: str,
    s: S.Settings,
    params: Resolved,
    statuses: dict[str, str],
    champion: Champion | None,
    error: str | None = None,
    run_id: str | None = None,
    git: dict[str, str] | None = None,
    stages: list[dict] | None = None,
) -> dict:
    """Record a finished command as an MLflow run (``run_id``, already RUNNING, or a new one) from its
    result files: parameters, metrics, tags, the files; register a new model; promote it if the gate
    passed."""
    git = git if git is not None else git_info(s.workdir)
    run_id = run_id or start(registry, command, s, git)
    results = {name: s.result(name) for name in
               (S.PREPROCESS_METADATA, S.TRAIN_METADATA, S.GATE_FILE, S.TEST_METADATA)}
    # Outputs of a stage that failed are the previous run's, except a gate that said no.
    fresh = {name for name, st in statuses.items() if st in ("ran", "cached", "restored")}
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {
        "stages": json.dumps(statuses),
        "cached": str(all(st == "cached" for st in statuses.values()) and bool(statuses)).lower(),
    }
    pre = read_json_or_none(results[S.PREPROCESS_METADATA]) if "preprocess" in fresh else None
    if pre:
        metrics.update({k: pre[k] for k in ("rows_read", "rows_valid", "rows_rejected", "reject_share")})
        tags["data_sha256"] = pre["data_sha256"]
    gate = read_json_or_none(results[S.GATE_FILE]) if "gate" in statuses else None
    if gate and not ("gate" in fresh or _gate_is_current(gate, s)):
        gate = None
    if gate:
        tags["gate"] = "passed" if gate["passed"] else "failed"
        metrics["gate_passed"] = float(gate["passed"])
    # The gate and test stages are about the current model: record its metrics with them too.
    train = read_json_or_none(results[S.TRAIN_METADATA]) if fresh & {"train", "gate", "test"} or gate else None
    if train:
        metrics.update({k: v for k, v in train.items() if isinstance(v, (int, float)) and k != "fit_seconds"})
    test = read_json_or_none(results[S.TEST_METADATA]) if statuses.get("test") in ("ran", "cached", "restored") else None
    if test:
        metrics.update({k: v for k, v in test.items() if isinstance(v, (int, float))})
    if error:
        tags["error"] = error[:5000]
    registry.log(run_id, flatten_params(params.sections), metrics, tags)
    if fresh & {"preprocess", "train"}:
        datasets = _datasets(s, params.section("dataset"), read_json_or_none(results[S.PREPROCESS_METADATA]))
        if datasets:
            registry.log_datasets(run_id, datasets)
    current = [results[name] for name, content in ((S.PREPROCESS_METADATA, pre), (S.TRAIN_METADATA, train),
                                                   (S.GATE_FILE, gate), (S.TEST_METADATA, test)) if content]
    if gate:
        current.append(s.result(S.JUNIT_FILE))
    files = {f"mlci/{p.name}": p for p in current + [s.lock_path, s.params_file]}
    if statuses.get("report") in ("ran", "cached", "restored"):
        files.update({f"report/{n}": s.result(n) for n in (S.REPORT_MD, S.REPORT_HTML, S.REPORT_JSON)})
        files.update({f"report/{S.PLOTS_DIR}/{n}.png": s.result(S.PLOTS_DIR) / f"{n}.png" for n in S.REPORT_PLOTS})
    registry.log_files(run_id, files)
    if command == "run" and stages:
        registry.log_stage_runs(run_id, [st for st in stages if st["status"] in ("ran", "failed")])

    summary: dict = {"run_id": run_id, "tracking_uri": registry.uri}
    if train and s.model_card_path.exists():
        summary.update(_register_and_promote(registry, run_id, s, gate, champion, git))
    registry.end_run(run_id, "FAILED" if error and not (gate and not gate["passed"]) else "FINISHED")
    return summary


def ensure_registered(registry: Registry, run_id: str, s: S.Settings) -> str:
    """The registered version of the workspace's model, registering it (from this run) if new."""
    card = read_json(s.model_card_path)
    version = registry.find_version(card["sha256"])
    if version is None:
        if file_hash(s.model_path) != card["sha256"]:
            raise TrackingError(f"{s.model_path}: does not match {s.model_card_path}; not registered")
        version = registry.register(run_id, s.model_path, card)
    return version


def _register_and_promote(registry, run_id, s, gate, champion, git: dict[str, str]) -> dict:
    version = ensure_registered(registry, run_id, s)
    registry.log(run_id, {}, {}, {"model_version": version})
    out = {"model": registry.name, "version": version, "promoted": False}
    if gate is None:
        return out
    if not gate["passed"]:
        registry.tag_version(version, {"gate": "failed", "failed_rules": json.dumps(failed_rules(gate))})
        out["note"] = "gate failed: champion unchanged"
        return out
    registry.tag_version(version, {"gate": "passed"})
    refusal = promotion_refused(registry.tracking, git)
    if refusal:
        registry.client.set_registered_model_alias(registry.name, registry.challenger_alias, str(version))
        registry.log(run_id, {}, {}, {"promoted": "false", "challenger": "true"})
        out.update(challenger=registry.challenger_alias, note=f"{refusal}: registered as the "
                   f"{registry.challenger_alias}, the {registry.alias} stays")
        return out
    train = read_json_or_none(s.result(S.TRAIN_METADATA))
    value = train.get(registry.compare_metric)
    if value is None:
        raise TrackingError(f"tracking.compare_metric {registry.compare_metric!r} is not in train_metadata.json")
    gate_champion = (gate.get("champion") or {}).get("version")
    decision = registry.promote_if_better(
        version, gate_champion, value,
        lambda v: champion.metrics(v)[registry.compare_metric] if champion else float("-inf"),
        compared=any("relative" in r for r in gate["rules"]),
    )
    registry.log(run_id, {}, {}, {"promoted": str(decision["promoted"]).lower()})
    out.update(decision)
    return out


def group_key(s: S.Settings, git: dict[str, str]) -> str:
    """What groups single-stage commands: this host (a container's own), the workspace, the commit."""
    text = "\0".join((socket.gethostname(), str(s.workdir.resolve()), git.get("git_commit", "")))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def promotion_refused(tracking: dict, git: dict) -> str | None:
    """Why this run may not move the champion (None: it may), by the promotion policy."""
    if not tracking.get("promote", True):
        return "promotion is off (tracking.promote / --no-promote)"
    if git.get("pull_request") == "true":
        return "a pull request never promotes"
    branches, branch = tracking.get("promote_branches") or [], git.get("git_branch")
    if branches and branch is not None and branch not in branches:
        return f"branch {branch!r} does not promote (tracking.promote_branches: {', '.join(branches)})"
    return None


#: MLflow's dataset contexts for the three splits.
_CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}
_TYPES = {"integer": "long", "numeric": "double", "categorical": "string", "label": "string"}


def _datasets(s: S.Settings, ds: dict, pre: dict | None) -> list[dict]:
    """The three splits this run's model was made and measured with, as :meth:`Registry.log_datasets` takes them."""
    if not pre or not isinstance(pre.get("rows"), dict):
        return []
    schema = [{"type": _TYPES[c["type"]], "name": c["name"], "required": True}
              for c in ds["columns"] if c["name"] not in ds.get("drop", [])]
    out = []
    for split, context in _CONTEXTS.items():
        path = s.split_path(split)
        if path.is_file() and split in pre["rows"]:
            out.append({"name": f"{ds['name']}-{split}", "digest": file_hash(path).removeprefix("sha256:")[:16],
                        "source": str(path), "context": context, "schema": schema, "rows": pre["rows"][split]})
    return out


def _gate_is_current(gate: dict, s: S.Settings) -> bool:
    path = s.result(S.TRAIN_METADATA)
    return path.exists() and gate.get("train_metadata_sha256") == file_hash(path)
