"""A batch of records against a model's reference profile (``mlci.monitoring.profile``).

Per feature: the population stability index (PSI) over the reference's bins, and a two-sample
test for its type: Kolmogorov-Smirnov against the reference's sample for numbers, chi-square on
the category (or bin) counts of both for categories. A feature drifts when both say so: the shift
is large enough to matter (PSI >= ``psi_threshold``) and unlikely to be chance (p < ``p_value``);
a big batch makes any tiny shift significant, a small one makes a large PSI noisy.

The predictions get the same treatment against the validation predictions. With labels, the
batch's own accuracy and ROC-AUC with bootstrap intervals are compared with the validation
figures; without them, the accuracy, precision, recall and F1 are *estimated* from the model's
calibrated probabilities (the expected confusion matrix, as NannyML's CBPE does).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mlci.monitoring.profile import OTHER, category_counts, numeric_counts

EPS = 1e-4  # a share of zero in one of the two would make the PSI infinite
TEST_SAMPLE = 20_000  # batch values the KS test reads at most (seeded); its p-value needs no more


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count (or share) vectors over the same bins."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.clip(e / e.sum(), EPS, None)
    a = np.clip(a / a.sum(), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _chi2_p(expected: np.ndarray, actual: np.ndarray) -> float:
    """Chi-square test of homogeneity of two count vectors (bins empty in both dropped)."""
    from scipy.stats import chi2_contingency

    table = np.vstack([expected, actual]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def _ks_p(reference_sample: list[float], values: np.ndarray, seed: int) -> float:
    from scipy.stats import ks_2samp

    values = values[np.isfinite(values)]
    if not len(values) or not reference_sample:
        return 1.0
    if len(values) > TEST_SAMPLE:
        values = np.random.default_rng(seed).choice(values, size=TEST_SAMPLE, replace=False)
    return float(ks_2samp(np.asarray(reference_sample), values).pvalue)


def feature_drift(ref: dict, values: pd.Series, seed: int) -> dict:
    """One feature of the batch against its reference entry."""
    n = len(values)
    missing = float(values.isna().mean()) if n else 0.0
    expected, actual = feature_bins(ref, values)
    if ref["type"] == "categorical":
        keep = [k for k in ref["counts"] if k != OTHER]
        p = _chi2_p(expected, actual)
        shares = {k: round(float(c / max(actual.sum(), 1)), 6) for k, c in zip([*keep, OTHER], actual)}
        detail = {"shares": {k.replace(OTHER, "(other)"): v for k, v in shares.items()},
                  "reference_shares": {k.replace(OTHER, "(other)"): round(float(c / max(expected.sum(), 1)), 6)
                                       for k, c in zip([*keep, OTHER], expected)},
                  "test": "chi-square"}
    else:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        p = _ks_p(ref["sample"], x, seed)
        finite = x[np.isfinite(x)]
        detail = {"mean": round(float(finite.mean()), 6) if len(finite) else None,
                  "reference_mean": round(float(np.mean(ref["sample"])), 6) if ref["sample"] else None,
                  "test": "Kolmogorov-Smirnov"}
    return {"psi": round(psi(expected, actual), 6), "p_value": p, "missing": round(missing, 6),
            "reference_missing": round(ref["missing"], 6), **detail}


def kept_categories(ref: dict) -> list[str]:
    """A categorical feature's categories counted by name, in the reference's order; its bins are
    these, then ``OTHER`` (every other category, and those never seen in training)."""
    return [k for k in ref["counts"] if k != OTHER]


def reference_counts(ref: dict) -> np.ndarray:
    """The reference's counts per bin of one feature, in the order the batch's are counted."""
    if ref["type"] == "categorical":
        return np.array([ref["counts"][k] for k in [*kept_categories(ref), OTHER]], dtype=float)
    return np.asarray(ref["counts"], dtype=float)


def feature_bins(ref: dict, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The reference's counts and the batch's over the same bins (categories: the kept ones, then the
    rest): what the PSI compares. ``mlci serve``'s live PSI counts over the same bins
    (``serving.livedrift.Bins``)."""
    if ref["type"] == "categorical":
        keep = kept_categories(ref)
        got = category_counts(values, keep)
        return reference_counts(ref), np.array([got[k] for k in [*keep, OTHER]], dtype=float)
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return reference_counts(ref), np.asarray(numeric_counts(x, ref["edges"]), dtype=float)


def prediction_bins(ref: dict, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The validation predictions' counts and the batch's over the reference's probability bins."""
    return (np.asarray(ref["counts"], dtype=float),
            np.asarray(numeric_counts(np.asarray(proba, dtype=float), ref["edges"]), dtype=float))


def prediction_drift(ref: dict, proba: np.ndarray, seed: int) -> dict:
    expected, actual = prediction_bins(ref, proba)
    return {"psi": round(psi(expected, actual), 6), "p_value": _ks_p(ref["sample"], np.asarray(proba), seed),
            "mean": round(float(np.mean(proba)), 6) if len(proba) else None,
            "reference_mean": round(float(np.mean(ref["sample"])), 6) if ref["sample"] else None,
            "test": "Kolmogorov-Smirnov"}


def estimated_performance(ref: dict, proba: np.ndarray) -> dict:
    """Accuracy, precision, recall and F1 expected from calibrated probabilities (no labels needed).

    A record predicted positive is right with its calibrated probability c, one predicted
    negative with 1 - c; summing gives the expected confusion matrix. The interval (95 %, normal
    approximation) holds two uncertainties: the batch's outcomes given c (a Poisson-binomial sum),
    and the calibration map's own, learnt on the reference's validation rows (about a binomial
    proportion's over that many rows): with equal sizes the second is as large as the first."""
    grid = np.linspace(0, 1, len(ref["calibration"]))
    c = np.interp(np.asarray(proba, dtype=float), grid, np.asarray(ref["calibration"]))
    positive = np.asarray(proba) >= ref["threshold"]
    tp, fp = c[positive].sum(), (1 - c[positive]).sum()
    fn, tn = c[~positive].sum(), (1 - c[~positive]).sum()
    n = len(c)
    right = np.where(positive, c, 1 - c)
    acc = float(right.mean()) if n else float("nan")
    n_ref = ref.get("rows") or 0
    calibration_var = acc * (1 - acc) / n_ref if n_ref and n else 0.0
    half = 1.96 * math.sqrt(float((right * (1 - right)).sum()) / n ** 2 + calibration_var) if n else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"acc": {"value": round(acc, 6), "low": round(acc - half, 6), "high": round(acc + half, 6)},
            "precision": {"value": round(float(precision), 6)}, "recall": {"value": round(float(recall), 6)},
            "f1": {"value": round(float(f1), 6)}, "estimated": True}


def compare(profile: dict, frame: pd.DataFrame, proba: np.ndarray, y: np.ndarray | None, mp,
            resamples: int = 1000) -> dict:
    """Everything ``mlci monitor`` reports, and which of ``mp``'s rules (``MonitorParams``) failed."""
    features = {}
    for i, (name, ref) in enumerate(profile["features"].items()):
        if name in frame.columns:
            f = feature_drift(ref, frame[name], mp.seed + i)
            f["drift"] = bool(f["psi"] >= mp.psi_threshold and f["p_value"] < mp.p_value)
            features[name] = f
    pred_ref = profile["predictions"]
    predictions = prediction_drift(pred_ref, proba, mp.seed + 10_000)
    predictions["drift"] = bool(predictions["psi"] >= mp.psi_threshold and predictions["p_value"] < mp.p_value)
    validation = pred_ref["validation"]
    if y is not None:
        from mlci.evaluation.bootstrap import intervals

        live = intervals(y, proba, resamples=resamples, seed=mp.seed, level=0.95, threshold=pred_ref["threshold"])
        performance = {"estimated": False, **{k: live[k] for k in ("acc", "roc_auc", "precision", "recall", "f1")
                                              if k in live}}
    else:
        performance = estimated_performance(pred_ref, proba)
    drops = {}
    for metric, allowed in mp.max_drop.items():
        if metric in performance and metric in validation:
            got = performance[metric]
            # A drop counts when even the interval's top lies below the validation figure minus
            # what is allowed (an estimate without an interval: its value).
            top = got.get("high", got["value"])
            drops[metric] = {"validation": validation[metric], "live": got["value"], "high": top, "allowed": allowed,
                             "failed": bool(top < validation[metric] - allowed)}
    failed = [f"feature {n} drifted (PSI {f['psi']:.3f}, p {f['p_value']:.2g})" for n, f in features.items()
              if f["drift"]]
    if predictions["drift"]:
        failed.append(f"predictions drifted (PSI {predictions['psi']:.3f}, p {predictions['p_value']:.2g})")
    failed += [f"{'estimated ' if performance['estimated'] else ''}{m} {d['live']:.4f} is more than {d['allowed']} "
               f"below validation's {d['validation']:.4f}" for m, d in drops.items() if d["failed"]]
    return {"rows": len(frame), "labelled": y is not None, "features": features, "predictions": predictions,
            "performance": performance, "validation": validation, "drops": drops, "failed": failed}
