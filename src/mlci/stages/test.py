"""test: score the held-out test split once, and only after a passing gate for this very model."""

from __future__ import annotations

import numpy as np

from mlci.config import settings as S
from mlci.data.dataset import DatasetDef
from mlci.errors import PrerequisiteError
from mlci.evaluation.metrics import binary_metrics
from mlci.fileio import file_hash, read_json, write_json
from mlci.modeling.artifact import load_model
from mlci.modeling.estimator import decision_threshold, predict_proba
from mlci.stages.context import StageContext
from mlci.stages.io import read_split, write_scores


def test(ctx: StageContext) -> dict:
    s = ctx.settings
    gate_path = s.result(S.GATE_FILE)
    train_path = s.result(S.TRAIN_METADATA)
    if not gate_path.exists():
        raise PrerequisiteError(f"{gate_path}: not found; run `mlci gate` first")
    verdict = read_json(gate_path)
    if not verdict.get("passed"):
        raise PrerequisiteError(f"{gate_path}: the gate did not pass; the test split is only scored after it does")
    if not train_path.exists() or verdict.get("train_metadata_sha256") != file_hash(train_path):
        raise PrerequisiteError(f"{gate_path}: is for another model; run `mlci gate` again")
    model, card = load_model(s.model_dir)
    ds = DatasetDef.model_validate(card["dataset"])
    if ctx.params.engine == "dask":
        from mlci.stages.cluster.train import test as on_cluster

        return on_cluster(ctx, model, card, ds)
    te = read_split(s, "test")
    proba = predict_proba(model, te[card["features"]], ds.positive_label)
    y_te = np.asarray(te[ds.target] == ds.positive_label)
    metrics = binary_metrics(y_te, proba, decision_threshold(model))
    write_scores(s.scores_path("test"), y_te, proba, card["sha256"])
    meta = {f"test_{k}": v for k, v in metrics.items()}
    meta.update({"rows": {"test": len(te)}, "model_sha256": card["sha256"]})
    write_json(s.result(S.TEST_METADATA), meta)
    return meta
