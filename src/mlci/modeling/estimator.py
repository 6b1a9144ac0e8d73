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
    grown advances a ``progress`` task (a LightGBM callback: it changes nothing in the model).

    What ``model.fit`` does, step by step: the encoder's categories are fixed, so fitting it learns
    nothing from the rows but their columns; it is fitted on a few, and every row is encoded by
    :func:`encode` (scikit-learn's own transform looks each value up in Python: most of a fit's
    time at a million rows)."""
    x, y = frame[[c.name for c in ds.features]], np.asarray(frame[ds.target], dtype=object)
    cat_features = list(range(n_categorical(ds)))
    with progress.task("train: trees", total=model[-1].n_estimators) as trees:
        callbacks = [lambda _env: trees.advance()]
        if _two_steps(model):
            enc, clf = model.steps[0][1], model.steps[-1][1]
            enc.fit(x.iloc[:100])
            z = encode(enc, x)
            if z is not None:
                clf.fit(z, y, categorical_feature=cat_features, callbacks=callbacks)
                return model
        return model.fit(x, y, classify__categorical_feature=cat_features, classify__callbacks=callbacks)


def _two_steps(model) -> bool:
    return hasattr(model, "steps") and len(model.steps) == 2


def encode(enc, frame: pd.DataFrame) -> np.ndarray | None:
    """``enc.transform(frame)``, the same floats, for a fitted :func:`encoder` and a frame whose
    categorical columns are pandas categoricals or strings and whose numbers are numeric: category
    codes by pandas (hashed, at C speed) instead of scikit-learn's per-value Python lookup.
    None when ``enc`` or ``frame`` is of another shape (the caller then uses ``enc`` itself)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    if not isinstance(enc, ColumnTransformer) or not hasattr(enc, "transformers_"):
        return None
    blocks = []
    for _, step, cols in enc.transformers_:
        if (isinstance(step, str) and step == "drop") or len(cols) == 0:
            continue  # an empty selection's transformer is never fitted (no categoricals, say)
        if any(not isinstance(c, str) or c not in frame.columns for c in cols):
            return None
        if isinstance(step, OrdinalEncoder):
            if not (step.handle_unknown == "use_encoded_value" and np.isnan(step.unknown_value)
                    and np.isnan(step.encoded_missing_value) and step.dtype in (float, np.float64)
                    and step.max_categories is None and step.min_frequency is None):
                return None
            for col, cats in zip(cols, step.categories_):
                values = frame[col]
                if not _strings(values):
                    return None
                try:
                    codes = _codes(values, pd.Index(list(cats), dtype=object))
                except (TypeError, ValueError, pd.errors.InvalidIndexError):  # repeated categories
                    return None
                blocks.append(np.where(codes < 0, np.nan, codes.astype(np.float64)))
        elif isinstance(step, FunctionTransformer) and step.func is None:  # "passthrough"
            for col in cols:
                if frame[col].dtype.kind not in "biuf":
                    return None
                blocks.append(frame[col].to_numpy(dtype=np.float64))
        else:
            return None
    out = np.empty((len(frame), len(blocks)), dtype=np.float64)
    for i, b in enumerate(blocks):
        out[:, i] = b
    return out


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


def _codes(values: pd.Series, cats: pd.Index) -> np.ndarray:
    """Each value's position in ``cats``; -1 for a missing or unknown value."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # look the few categories up, not the rows
        own = values.cat.codes.to_numpy()
        where = np.append(cats.get_indexer(values.cat.categories), -1)  # [-1]: missing
        return where[own]
    return cats.get_indexer(values)


def _strings(values: pd.Series) -> bool:
    """Whether every value (missing aside) is a string: categories, pandas strings or plain objects."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.cat.categories.to_series()
    elif isinstance(values.dtype, pd.StringDtype):
        return True
    elif values.dtype != object:
        return False
    return pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")


def predict_proba(model, frame: pd.DataFrame, positive_label: str) -> np.ndarray:
    """Probability of the positive class for every row of ``frame``: ``model.predict_proba``,
    with the rows encoded by :func:`encode` where it applies (the same floats, faster)."""
    z = encode(model.steps[0][1], frame) if _two_steps(model) else None
    proba = model.predict_proba(frame) if z is None else model.steps[-1][1].predict_proba(z)
    return proba[:, positive_index(model, positive_label)]
