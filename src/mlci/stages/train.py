"""train: fit the model on the train split and measure it on the validation split (never on fitted
rows); then fit the same recipe on train + validation, the deployed model (``train.refit_max_rows``).

Nothing is chosen on the validation rows: they measure the recipe (the gate's figures), then add
to the deployed model's rows. The test split stays untouched until ``mlci test`` scores the
deployed model."""

from __future__ import annotations

import time

import numpy as np

from mlci.config import settings as S
from mlci.errors import PrerequisiteError
from mlci.evaluation.metrics import binary_metrics
from mlci.fileio import atomic_path, file_hash, write_json
from mlci.modeling.artifact import to_bytes
from mlci.modeling.estimator import build, categories_of, decision_threshold, fit, predict_proba
from mlci.stages.card import input_example, model_card
from mlci.stages.context import StageContext
from mlci.stages.io import read_split, write_scores


def train(ctx: StageContext) -> dict:
    s, params = ctx.settings, ctx.params
    if params.engine == "dask":
        from mlci.stages.cluster.train import train as on_cluster

        return on_cluster(ctx)
    ds = params.dataset_def(s.params_file.parent)
    tr, va = read_split(s, "train"), read_split(s, "validation")
    features = [c.name for c in ds.features]
    missing = [c for c in features + [ds.target] if c not in tr.columns]
    if missing:
        raise PrerequisiteError(
            f"{s.split_path('train')}: lacks {', '.join(missing)}; the dataset changed, rerun `mlci preprocess`"
        )
    import pandas as pd
    from sklearn.base import clone

    profile, search, tp = params.train.profile, None, params.train
    refit = len(tr) + len(va) <= tp.refit_max_rows
    fitted = pd.concat([tr, va], ignore_index=True) if refit else tr
    started = time.perf_counter()
    if profile == "best":
        from mlci.modeling.best import fit_best

        measured, model, search = fit_best(tr, ds, tp, params.best, categories_of(tr, ds), fitted if refit else None,
                                           ctx.echo, ctx.progress)
    else:
        measured = fit(build(ds, tp, categories_of(tr, ds)), tr, ds, ctx.progress)
        # The same estimator, unfitted (the encoder's categories are fixed), on more rows.
        model = fit(clone(measured), fitted, ds, ctx.progress) if refit else None
    model = measured if model is None else model
    fit_seconds = time.perf_counter() - started
    threshold = decision_threshold(model)
    proba = predict_proba(measured, va[features], ds.positive_label)
    y_va = np.asarray(va[ds.target] == ds.positive_label)
    metrics = binary_metrics(y_va, proba, threshold)
    gaps, groups = {}, params.groups(ds)
    if groups:
        from mlci.evaluation.groups import validation_gaps

        gaps = validation_gaps(va, y_va, proba >= threshold, groups, params.fairness.min_group_size)

    with atomic_path(s.model_path) as tmp:
        tmp.write_bytes(to_bytes(model))
    card = model_card(ctx, ds, file_hash(s.model_path), threshold, input_example(va, ds),
                      "train+validation" if refit else "train", metrics)
    write_json(s.model_card_path, card)
    write_scores(s.scores_path("validation"), y_va, proba, card["sha256"])
    # What the training data and the validation predictions looked like: `mlci monitor` and the
    # server compare incoming records with it (bounded in size whatever the rows).
    from mlci.monitoring.profile import build as reference_profile

    write_json(s.reference_path, reference_profile(fitted, ds, y_va, proba, threshold, metrics, card["sha256"],
                                                   seed=tp.seed))
    meta = {f"validation_{k}": v for k, v in metrics.items()}
    meta.update(gaps)
    meta.update(
        {
            "rows": {"train": len(tr), "validation": len(va), "fitted": len(fitted)},
            # What the validation_* figures are of (README, "Validation figures").
            "fitted_on": "train+validation" if refit else "train",
            "validation_figures": ("the same recipe fitted on the train split alone; the saved model was then "
                                   "fitted on train + validation" if refit else "the saved model"),
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
