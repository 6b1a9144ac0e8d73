"""train: fit the model on the train split; measure it on the validation split (never on fitted rows)."""

from __future__ import annotations

import time
from importlib import metadata as _md

import numpy as np

from mlci.config import settings as S
from mlci.errors import PrerequisiteError
from mlci.evaluation.metrics import binary_metrics
from mlci.fileio import atomic_path, file_hash, read_json, write_json
from mlci.modeling.artifact import to_bytes
from mlci.modeling.estimator import build, categories_of, decision_threshold, fit, predict_proba
from mlci.stages.context import StageContext
from mlci.stages.io import read_split, write_scores
from mlci.timestamps import utc_now


def train(ctx: StageContext) -> dict:
    s, params = ctx.settings, ctx.params
    if params.engine == "dask":
        from mlci.cluster.train import train as on_cluster

        return on_cluster(ctx)
    ds = params.dataset_def(s.params_file.parent)
    tr, va = read_split(s, "train"), read_split(s, "validation")
    features = [c.name for c in ds.features]
    missing = [c for c in features + [ds.target] if c not in tr.columns]
    if missing:
        raise PrerequisiteError(
            f"{s.split_path('train')}: lacks {', '.join(missing)}; the dataset changed, rerun `mlci preprocess`"
        )
    profile, search = params.train.profile, None
    started = time.perf_counter()
    if profile == "best":
        from mlci.modeling.best import fit_best

        model, search = fit_best(tr, ds, params.train, params.best, categories_of(tr, ds), ctx.echo, ctx.progress)
    else:
        model = fit(build(ds, params.train, categories_of(tr, ds)), tr, ds, ctx.progress)
    fit_seconds = time.perf_counter() - started
    threshold = decision_threshold(model)
    proba = predict_proba(model, va[features], ds.positive_label)
    y_va = np.asarray(va[ds.target] == ds.positive_label)
    metrics = binary_metrics(y_va, proba, threshold)
    gaps, groups = {}, params.groups(ds)
    if groups:
        from mlci.evaluation.groups import validation_gaps

        gaps = validation_gaps(va, y_va, proba >= threshold, groups, params.fairness.min_group_size)

    with atomic_path(s.model_path) as tmp:
        tmp.write_bytes(to_bytes(model))
    card = model_card(ctx, ds, file_hash(s.model_path), threshold, input_example(va, ds))
    write_json(s.model_card_path, card)
    write_scores(s.scores_path("validation"), y_va, proba, card["sha256"])
    # What the training data and the validation predictions looked like: `mlci monitor` and the
    # server compare incoming records with it (bounded in size whatever the rows).
    from mlci.monitoring.profile import build as reference_profile

    write_json(s.reference_path, reference_profile(tr, ds, y_va, proba, threshold, metrics, card["sha256"],
                                                   seed=params.train.seed))
    meta = {f"validation_{k}": v for k, v in metrics.items()}
    meta.update(gaps)
    meta.update(
        {
            "rows": {"train": len(tr), "validation": len(va)},
            "model": params.train.model if profile == "default" else "ensemble",
            "profile": profile,
            "threshold": threshold,
            "model_sha256": card["sha256"],
            "model_bytes": s.model_path.stat().st_size,
            "data_sha256": card["data_sha256"],
            "fit_seconds": round(fit_seconds, 3),
        }
    )
    if search is not None:
        meta["best"] = search
    write_json(s.result(S.TRAIN_METADATA), meta)
    return meta


def model_card(ctx: StageContext, ds, model_sha: str, threshold: float, example: list[dict]) -> dict:
    """``model.json``: what a user of the pickle needs to know, readable without unpickling it."""
    params, profile = ctx.params, ctx.params.train.profile
    pre_path = ctx.settings.result(S.PREPROCESS_METADATA)
    pre = read_json(pre_path) if pre_path.exists() else {}
    header = pre.get("header_names") or {}
    by_label = {c.name: c.label for c in ds.features if c.label}
    return {
        "format": "sklearn-pipeline/pickle",
        "file": S.MODEL_FILE,
        "sha256": model_sha,
        "positive_label": ds.positive_label,
        "negative_label": ds.negative_label,
        "features": [c.name for c in ds.features],
        # How the training file spelt them: the logged model's signature uses these names.
        "input_names": {c.name: header[c.name] for c in ds.features if c.name in header},
        # A few validation records as pandas reads them from the file (the logged model's input example).
        "input_example": [{header.get(k) or by_label.get(k) or k: v for k, v in row.items()} for row in example],
        "dataset": ds.model_dump(mode="json"),
        "profile": profile,
        "threshold": threshold,
        "params": params.section("train") if profile == "default" else {
            "train": params.section("train"), "best": params.section("best")},
        "data_sha256": pre.get("data_sha256"),
        "split": pre.get("split"),  # which rows it never saw: a champion comparison checks it
        "trained_at": utc_now(),
        "versions": {pkg: _md.version(pkg) for pkg in _packages(params)},
    }


def input_example(frame, ds, n: int = 3) -> list[dict]:
    """The first ``n`` complete records of ``frame``, typed as pandas reads them from a CSV."""
    frame = frame[[c.name for c in ds.features]]
    rows = frame.iloc[:1000].dropna()  # the first complete rows are nearly always near the top
    rows = (rows if len(rows) >= n else frame.dropna()).head(n)
    cast = {"integer": int, "numeric": float, "categorical": str}
    return [{c.name: cast[c.type](row[c.name]) for c in ds.features} for _, row in rows.iterrows()]


def _packages(params) -> list[str]:
    """The distributions the pickle needs to load (a logged model's requirements are built from them)."""
    base = ["mlci", "scikit-learn", "lightgbm", "pandas", "numpy"]
    if params.train.profile != "best":
        return base
    from mlci.modeling.best import PACKAGES

    return base + [PACKAGES[c][1] for c in params.best.candidates if c in PACKAGES]
