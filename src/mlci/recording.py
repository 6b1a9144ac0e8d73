"""What a tracked command records, and what it does to the registry afterwards.

The CLI calls :func:`begin` before any stage runs (so an unreachable server
fails fast) and :func:`finish` after; :class:`Champion` gives the gate the
champion's metrics on this workspace's validation rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import settings as S
from .fileio import read_json
from .resolve import Resolved
from .tracking import Registry, TrackingError, check_reachable, flatten_params, git_info, tracking_uri


class Champion:
    """The champion when the run began (what the gate compares with), in the tracking process.

    The gate itself scores it in the pipeline process (``cli._ChampionProxy``); ``metrics_of``
    serves promotion, when the champion moved meanwhile and must be compared again.
    """

    def __init__(self, registry: Registry, s: S.Settings):
        self.registry = registry
        self.s = s
        mv = registry.champion()
        self.version: str | None = str(mv.version) if mv else None

    def metrics_of(self, version: str) -> dict:
        return champion_metrics(self.s, self.registry.load(version))


def champion_inputs(s: S.Settings, model) -> tuple[str, list[str], str]:
    """(positive label, the model's input columns, target) for scoring a champion on our rows."""
    card = read_json(s.model_card_path)  # the candidate's card: target and label names
    features = list(model.feature_names_in_) if hasattr(model, "feature_names_in_") else card["features"]
    return card["positive_label"], features, card["dataset"]["target"]


def champion_metrics(s: S.Settings, model) -> dict:
    """Any model's metrics on this workspace's validation rows, named like train_metadata.json's."""
    from .stages import validation_metrics

    return validation_metrics(s, model, *champion_inputs(s, model))[0]


def begin(command: str, s: S.Settings, params: Resolved) -> tuple[Registry, str]:
    uri = tracking_uri()
    check_reachable(uri)
    try:
        registry = Registry(uri, params.section("tracking"))
        run_id = registry.start_run(command, git_info(s.workdir))
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - the server said no: one clear line, before any work
        raise TrackingError(f"tracking at {uri} failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}; "
                            "pass --no-track to run without tracking") from None
    return registry, run_id


def finish(
    registry: Registry,
    run_id: str,
    s: S.Settings,
    params: Resolved,
    statuses: dict[str, str],
    champion: Champion | None,
    error: str | None = None,
) -> dict:
    """Log everything the run produced; register a new model; promote it if the gate passed."""
    results = {name: s.result(name) for name in
               (S.PREPROCESS_METADATA, S.TRAIN_METADATA, S.GATE_FILE, S.TEST_METADATA)}
    # Outputs of a stage that failed are the previous run's, except a gate that said no.
    fresh = {name for name, st in statuses.items() if st in ("ran", "cached")}
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {
        "stages": json.dumps(statuses),
        "cached": str(all(st == "cached" for st in statuses.values()) and bool(statuses)).lower(),
    }
    pre = _read(results[S.PREPROCESS_METADATA]) if "preprocess" in fresh else None
    if pre:
        metrics.update({k: pre[k] for k in ("rows_read", "rows_valid", "rows_rejected", "reject_share")})
        tags["data_sha256"] = pre["data_sha256"]
    gate = _read(results[S.GATE_FILE]) if "gate" in statuses else None
    if gate and not ("gate" in fresh or _gate_is_current(gate, s)):
        gate = None
    if gate:
        tags["gate"] = "passed" if gate["passed"] else "failed"
        metrics["gate_passed"] = float(gate["passed"])
    # The gate and test stages are about the current model: record its metrics with them too.
    train = _read(results[S.TRAIN_METADATA]) if fresh & {"train", "gate", "test"} or gate else None
    if train:
        metrics.update({k: v for k, v in train.items() if isinstance(v, (int, float)) and k != "fit_seconds"})
    test = _read(results[S.TEST_METADATA]) if statuses.get("test") in ("ran", "cached") else None
    if test:
        metrics.update({k: v for k, v in test.items() if isinstance(v, (int, float))})
    if error:
        tags["error"] = error[:5000]
    registry.log(run_id, flatten_params(params.sections), metrics, tags)
    current = [results[name] for name, content in ((S.PREPROCESS_METADATA, pre), (S.TRAIN_METADATA, train),
                                                   (S.GATE_FILE, gate), (S.TEST_METADATA, test)) if content]
    if gate:
        current.append(s.result(S.JUNIT_FILE))
    files = {f"mlci/{p.name}": p for p in current + [s.lock_path, s.params_file]}
    if statuses.get("report") in ("ran", "cached"):
        files.update({f"report/{n}": s.result(n) for n in (S.REPORT_MD, S.REPORT_HTML, S.REPORT_JSON)})
        files.update({f"report/{S.PLOTS_DIR}/{n}.png": s.result(S.PLOTS_DIR) / f"{n}.png" for n in S.REPORT_PLOTS})
    registry.log_files(run_id, files)

    summary: dict = {"run_id": run_id, "tracking_uri": registry.uri}
    if train and s.model_card_path.exists():
        summary.update(_register_and_promote(registry, run_id, s, statuses, gate, champion))
    registry.end_run(run_id, "FAILED" if error and not (gate and not gate["passed"]) else "FINISHED")
    return summary


def ensure_registered(registry: Registry, run_id: str, s: S.Settings) -> str:
    """The registered version of the workspace's model, registering it (from this run) if new."""
    card = read_json(s.model_card_path)
    version = registry.find_version(card["sha256"])
    if version is None:
        from .fileio import file_hash

        if file_hash(s.model_path) != card["sha256"]:
            raise TrackingError(f"{s.model_path}: does not match {s.model_card_path}; not registered")
        version = registry.register(run_id, s.model_path, card)
    return version


def _register_and_promote(registry, run_id, s, statuses, gate, champion) -> dict:
    from .gate import failed_rules

    version = ensure_registered(registry, run_id, s)
    registry.log(run_id, {}, {}, {"model_version": version})
    out = {"model": registry.name, "version": version, "promoted": False}
    if gate is None:
        return out
    mv = registry.version(version)
    if not gate["passed"]:
        registry.tag_version(version, {"gate": "failed", "failed_rules": json.dumps(failed_rules(gate))})
        out["note"] = "gate failed: champion unchanged"
        return out
    registry.tag_version(version, {"gate": "passed"})
    if mv.tags.get("mlci.promoted_at"):
        out["note"] = "already promoted once; `mlci promote` promotes it again"
        return out
    train = _read(s.result(S.TRAIN_METADATA))
    value = train.get(registry.compare_metric)
    if value is None:
        raise TrackingError(f"tracking.compare_metric {registry.compare_metric!r} is not in train_metadata.json")
    gate_champion = (gate.get("champion") or {}).get("version")
    decision = registry.promote_if_better(
        version, gate_champion, value,
        lambda v: champion.metrics_of(v)[registry.compare_metric] if champion else float("-inf"),
    )
    registry.log(run_id, {}, {}, {"promoted": str(decision["promoted"]).lower()})
    out.update(decision)
    return out


def _gate_is_current(gate: dict, s: S.Settings) -> bool:
    from .fileio import file_hash

    path = s.result(S.TRAIN_METADATA)
    return path.exists() and gate.get("train_metadata_sha256") == file_hash(path)


def _read(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None
