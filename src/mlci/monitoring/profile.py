"""The reference profile: what the training data and the model's validation predictions looked like.

Saved beside every model (``reference.json``) and logged with it, so that ``mlci monitor`` and the
server can tell later whether incoming records still look like the data the model learnt from.
It is bounded whatever the row count: per feature, quantile bins with their counts (numbers) or
category counts (at most ``MAX_CATEGORIES``), the missing share, and a seeded sample of at most
``SAMPLE`` values for a two-sample test; for the predictions, a histogram, a sample, the validation
figures and a calibration map (validation probability -> observed positive rate) that turns the
model's probabilities on unlabelled records into an estimate of its accuracy (as NannyML's CBPE).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMA = 1
BINS = 10  # quantile bins per number: deciles, the usual grid for the population stability index
PROBA_BINS = 20  # equal-width bins of the predicted probability
SAMPLE = 1000  # values kept per feature for the Kolmogorov-Smirnov test
MAX_CATEGORIES = 200  # the most frequent categories kept by name; the rest are counted as "other"
OTHER = "\0other"  # categories beyond those kept (or never seen in training), in counts
MISSING = "\0missing"


def numeric_edges(values: np.ndarray, bins: int = BINS) -> list[float]:
    """Inner bin edges at the quantiles of ``values`` (distinct: a column of mostly zeros has few)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return []
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1], method="lower")
    return sorted({float(v) for v in inner})


def numeric_counts(values: np.ndarray, edges: list[float]) -> list[int]:
    """Counts of ``values`` in the bins (-inf, e0], (e0, e1], ..., (e_last, inf); missing not counted."""
    finite = values[np.isfinite(values)]
    idx = np.searchsorted(np.asarray(edges, dtype=float), finite, side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(int).tolist()


def category_counts(values: pd.Series, keep: list[str] | None = None) -> dict[str, int]:
    """Counts per category (missing apart); with ``keep``, others are summed under ``OTHER``."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # counted on the codes: no string per row
        counts = values.value_counts()
        counts = counts[counts > 0]
        counts.index = counts.index.astype(str)
    else:
        counts = values.astype(object).dropna().astype(str).value_counts()
    if keep is None:
        return {str(k): int(v) for k, v in counts.items()}
    out = {k: int(counts.get(k, 0)) for k in keep}
    out[OTHER] = int(counts[~counts.index.isin(keep)].sum())
    return out


def sample(values: np.ndarray, n: int, seed: int) -> list[float]:
    finite = values[np.isfinite(values)]
    if len(finite) > n:
        finite = np.random.default_rng(seed).choice(finite, size=n, replace=False)
    return [round(float(v), 6) for v in np.sort(finite)]


def calibration_map(y: np.ndarray, proba: np.ndarray, points: int = 101) -> list[float]:
    """Observed positive rate at each of ``points`` probabilities 0..1: an isotonic fit on the
    validation split, kept as a fixed grid (bounded, and ``np.interp`` reads it back)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba, y.astype(float))
    return [round(float(v), 6) for v in iso.predict(np.linspace(0, 1, points))]


def build(train: pd.DataFrame, ds, y_validation: np.ndarray, proba_validation: np.ndarray, threshold: float,
          validation_metrics: dict, model_sha256: str, seed: int = 0) -> dict:
    """The reference profile of a model trained on ``train`` and measured on the validation split."""
    features = {}
    for i, col in enumerate(ds.features):
        v = train[col.name]
        missing = float(v.isna().mean()) if len(v) else 0.0
        if col.type == "categorical":
            counts = category_counts(v)  # once: the kept ones and the rest both come from it
            keep = sorted(counts, key=lambda k: (-counts[k], k))[:MAX_CATEGORIES]
            kept = {k: counts[k] for k in keep}
            kept[OTHER] = sum(counts.values()) - sum(kept.values())
            features[col.name] = {"type": "categorical", "counts": kept, "missing": missing}
        else:
            x = pd.to_numeric(v, errors="coerce").to_numpy(dtype=float)
            edges = numeric_edges(x)
            features[col.name] = {"type": col.type, "edges": edges, "counts": numeric_counts(x, edges),
                                  "missing": missing, "sample": sample(x, SAMPLE, seed + i)}
    proba_validation = np.asarray(proba_validation, dtype=float)
    edges = np.linspace(0, 1, PROBA_BINS + 1)[1:-1].round(6).tolist()
    return {
        "schema": SCHEMA,
        "model_sha256": model_sha256,
        "rows": len(train),
        "features": features,
        "predictions": {
            "edges": edges, "counts": numeric_counts(proba_validation, edges),
            "sample": sample(proba_validation, SAMPLE, seed + 10_000),
            "threshold": threshold,
            "calibration": calibration_map(np.asarray(y_validation).astype(int), proba_validation),
            "validation": {k: validation_metrics[k] for k in ("acc", "roc_auc", "precision", "recall", "f1")
                           if k in validation_metrics},
            "rows": int(len(proba_validation)),
        },
    }
