"""The model: one scikit-learn Pipeline that takes raw records.

Categorical encoding lives inside the artifact (an ``OrdinalEncoder`` with
the declared categories), so a deployed model accepts the data's own field
names and values; an unseen category or a missing value is encoded as NaN,
which LightGBM's native categorical handling treats as missing instead of
failing.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from mlci.config.params import TrainParams
from mlci.data.dataset import DatasetDef
from mlci.progress import NONE, Progress


def encoder(ds: DatasetDef, categories: dict[str, list[str]]):
    """Raw records -> a float matrix: category codes first (NaN = missing or unknown), then the numbers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OrdinalEncoder

    features = ds.features
    cat_cols = [c.name for c in features if c.type == "categorical"]
    num_cols = [c.name for c in features if c.type not in ("categorical", "label")]
    return ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(
                    categories=[categories[c] for c in cat_cols],
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                    dtype=np.float64,
                ),
                cat_cols,
            ),
            ("numeric", "passthrough", num_cols),
        ],
        verbose_feature_names_out=False,
    )


def n_categorical(ds: DatasetDef) -> int:
    return sum(c.type == "categorical" for c in ds.features)


def threads(n_jobs: int) -> int:
    """``n_jobs`` threads, 0 meaning one per core."""
    return n_jobs or os.cpu_count() or 1


def lightgbm_params(tp: TrainParams, threads: int, seed: int, **override) -> dict:
    """LGBMClassifier arguments from the ``train`` section, ``override`` on top (the best profile's tuning)."""
    p = dict(n_estimators=tp.n_estimators, learning_rate=tp.learning_rate, num_leaves=tp.num_leaves,
             max_depth=tp.max_depth, min_child_samples=tp.min_child_samples, colsample_bytree=tp.colsample_bytree,
             subsample=tp.subsample, reg_lambda=tp.reg_lambda, cat_smooth=tp.cat_smooth,
             min_data_per_group=tp.min_data_per_group)
    p.update(override)
    p["subsample_freq"] = 1 if p["subsample"] < 1 else 0
    # Column-wise histograms with a fixed seed give the same trees whatever the thread count.
    return dict(p, random_state=seed, n_jobs=threads, deterministic=True, force_col_wise=True, verbose=-1)


def build(ds: DatasetDef, tp: TrainParams, categories: dict[str, list[str]]):
    """An unfitted Pipeline: encode categoricals, then a LightGBM classifier (the default profile)."""
    from lightgbm import LGBMClassifier
    from sklearn.pipeline import Pipeline

    classifier = LGBMClassifier(**lightgbm_params(tp, threads(tp.n_jobs), tp.seed))
    return Pipeline([("encode", encoder(ds, categories)), ("classify", classifier)])


def fit(model, frame: pd.DataFrame, ds: DatasetDef, progress: Progress = NONE):
    """Fit on the feature columns of ``frame``; the categoricals come first after encoding. Each tree
    grown advances a ``progress`` task (a LightGBM callback: it changes nothing in the model)."""
    y = np.asarray(frame[ds.target], dtype=object)
    with progress.task("train: trees", total=model[-1].n_estimators) as trees:
        return model.fit(
            frame[[c.name for c in ds.features]], y, classify__categorical_feature=list(range(n_categorical(ds))),
            classify__callbacks=[lambda _env: trees.advance()],
        )


def categories_of(frame: pd.DataFrame, ds: DatasetDef) -> dict[str, list[str]]:
    """The categories the encoder is fixed to: declared ones, else those seen in training."""
    return {
        c.name: list(c.categories) if c.categories is not None else list(frame[c.name].cat.categories)
        for c in ds.features
        if c.type == "categorical"
    }


def positive_index(model, positive_label: str) -> int:
    return list(model.classes_).index(positive_label)


def decision_threshold(model) -> float:
    """The positive-class probability at and above which ``prediction`` is the positive label.

    0.5 unless the model chose its own (the ``best`` profile picks the accuracy-maximising one on
    out-of-fold predictions and keeps it on its last step as ``threshold_``).
    """
    clf = model[-1] if hasattr(model, "steps") else model
    return float(getattr(clf, "threshold_", 0.5))


def predict_proba(model, frame: pd.DataFrame, positive_label: str) -> np.ndarray:
    """Probability of the positive class for every row of ``frame``."""
    return model.predict_proba(frame)[:, positive_index(model, positive_label)]
