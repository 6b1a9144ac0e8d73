"""Bootstrap confidence intervals for the binary metrics, all resamples at once.

Calling scikit-learn's metric functions once per resample and metric costs far
more than the report's whole budget (README, "Reports": the figures). A resample is a vector of counts (how often
each row was drawn), so every metric is a weighted sum: the confusion-matrix
metrics are matrix products, and ROC-AUC and average precision are cumulative
sums over the rows sorted once by score (ties grouped, as scikit-learn does).
The tests check every point estimate and single resamples against
scikit-learn's own functions.
"""

from __future__ import annotations

import numpy as np

#: Report order and display names; keys are those of ``metrics.binary_metrics``.
METRICS = {
    "acc": "accuracy",
    "balanced_acc": "balanced accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "log_loss": "log-loss",
    "brier": "Brier score",
}
LOWER_IS_BETTER = {"log_loss", "brier"}


def weighted_metrics(y: np.ndarray, proba: np.ndarray, w: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Every metric for each row of ``w`` (resamples x rows, counts or weights)."""
    y = np.asarray(y).astype(bool)
    proba = np.asarray(proba, dtype=float)
    w = np.atleast_2d(w)
    order = np.argsort(-proba, kind="mergesort")  # descending score, for the ranking metrics
    if np.any(order != np.arange(len(order))):  # intervals() sorts once, so resamples need no copy
        y, proba, w = y[order], proba[order], w[:, order]
    pred = proba >= threshold
    p = np.clip(proba, 1e-15, 1 - 1e-15)
    # One matrix product gives every per-row sum: confusion-matrix cells, log-loss and Brier terms.
    per_row = np.stack([y & pred, ~y & pred, y & ~pred, ~y & ~pred,
                        -np.where(y, np.log(p), np.log1p(-p)), (proba - y) ** 2], axis=1)
    tp, fp, fn, tn, ll, brier = (w @ per_row.astype(w.dtype)).astype(float).T
    n = tp + fp + fn + tn
    pos, neg = tp + fn, fp + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(pos > 0, tp / pos, 0.0)
        specificity = np.where(neg > 0, tn / neg, 0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    out = {
        "acc": (tp + tn) / n,
        "balanced_acc": (recall + specificity) / 2,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "log_loss": ll / n,
        "brier": brier / n,
    }
    out.update(_ranking(y, proba, w, pos, neg))
    return out


def _ranking(y, proba, w, pos, neg) -> dict[str, np.ndarray]:
    """ROC-AUC (Mann-Whitney, ties count half) and average precision (scikit-learn's step sum)
    from cumulative counts at the end of each group of equal scores (rows sorted descending).

    Both are sums over the positive rows only, so everything but one running total works on
    the positive columns of ``w`` (a quarter of them on Adult). A positive row in score group
    g outranks ``neg - (fp(g) + fp(g-1)) / 2`` negatives (ties count half) and meets precision
    ``tp(g) / n(g)``, where tp/fp/n are the counts up to the end of a group. Counts stay in
    ``w``'s dtype (float32 for resamples: sums of counts are exact below 2**24)."""
    n_rows = len(proba)
    positives = np.flatnonzero(y)
    ends = np.flatnonzero(np.r_[proba[1:] != proba[:-1], True])  # the last row of each group
    group = np.searchsorted(ends, positives)  # each positive row's group
    end = ends[group]
    before = np.r_[-1, ends][group]  # the last row of the previous group (-1: none)
    cum = np.cumsum(w, axis=1)  # rows counted so far
    wpos = w[:, positives]
    tp_run = np.cumsum(wpos, axis=1)  # positives counted so far, at each positive row
    if len(ends) == n_rows:  # no ties: a group is one row
        tp_end, n_end = tp_run, cum[:, positives]
        tp_before = tp_run - wpos
        n_before = np.where(before >= 0, cum[:, np.maximum(before, 0)], 0)
    else:
        # The positives up to a row: the running count at the last positive row at or before it.
        at = np.searchsorted(positives, end, side="right") - 1
        at_before = np.searchsorted(positives, before, side="right") - 1
        tp_end, n_end = tp_run[:, at], cum[:, end]
        tp_before = np.where(at_before >= 0, tp_run[:, np.maximum(at_before, 0)], 0)
        n_before = np.where(before >= 0, cum[:, np.maximum(before, 0)], 0)
    fp_both = (n_end - tp_end) + (n_before - tp_before)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (neg - np.einsum("ij,ij->i", wpos, fp_both, dtype=float) / 2 / pos) / neg
        # A positive row drawn zero times may sit where nothing was counted yet: it adds 0.
        precision = np.divide(tp_end, n_end, out=np.zeros_like(tp_end), where=n_end > 0)
        ap = np.einsum("ij,ij->i", wpos, precision, dtype=float) / pos
    return {"roc_auc": np.where((pos > 0) & (neg > 0), auc, np.nan), "pr_auc": np.where(pos > 0, ap, np.nan)}


def roc_auc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``scores`` (k x rows) against one ``y``: same definition as
    ``weighted_metrics``, without scikit-learn's ~5 ms of input checks per call."""
    y = np.asarray(y).astype(bool)
    pos = np.full(1, float(y.sum()))
    neg = len(y) - pos
    ones = np.ones((1, len(y)))
    out = np.empty(len(scores))
    for i, s in enumerate(np.asarray(scores, dtype=float)):
        order = np.argsort(-s, kind="mergesort")
        out[i] = _ranking(y[order], s[order], ones, pos, neg)["roc_auc"][0]
    return out


def intervals(
    y: np.ndarray, proba: np.ndarray, *, resamples: int = 1000, seed: int = 0, level: float = 0.95,
    threshold: float = 0.5, chunk_cells: int = 2_000_000,
) -> dict[str, dict[str, float]]:
    """Point estimate and percentile bootstrap interval of every metric: ``{metric: {value, low, high}}``."""
    from threadpoolctl import threadpool_limits

    # The matrix products here are small (resamples x rows x 6): a second BLAS thread gains
    # nothing, and its busy-waiting between calls takes a core from the report's figure process
    # (measured: README, "Reports").
    with threadpool_limits(1, user_api="blas"):
        return _intervals(y, proba, resamples, seed, level, threshold, chunk_cells)


def _intervals(y, proba, resamples, seed, level, threshold, chunk_cells) -> dict[str, dict[str, float]]:
    order = np.argsort(-np.asarray(proba, dtype=float), kind="mergesort")
    y, proba = np.asarray(y).astype(bool)[order], np.asarray(proba, dtype=float)[order]
    n = len(y)
    point = {k: float(v[0]) for k, v in weighted_metrics(y, proba, np.ones((1, n)), threshold).items()}
    rng = np.random.default_rng(seed)
    # Resamples at a time: bounded memory whatever the rows (``chunk_cells`` floats). Smaller chunks are faster
    # alone (cache) but slower next to the report's other threads (more GIL hand-offs).
    chunk = max(1, chunk_cells // n)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, resamples, chunk):  # bounded memory: chunk x rows counts at a time
        k = min(chunk, resamples - start)
        # The smallest index type draws fastest; one bincount per resample beats one over
        # offset int64 indices (2x). float32 counts are exact (< 2**24) and halve the memory
        # traffic of the sums.
        drawn = rng.integers(0, n, size=(k, n), dtype=np.uint16 if n <= 1 << 16 else np.int64)
        counts = np.empty((k, n), dtype=np.float32)
        for i, row in enumerate(drawn):
            counts[i] = np.bincount(row, minlength=n)
        for name, values in weighted_metrics(y, proba, counts, threshold).items():
            draws[name].append(values)
    alpha = (1 - level) / 2
    out = {}
    for name in METRICS:
        values = np.concatenate(draws[name])
        values = values[np.isfinite(values)]
        low, high = (np.quantile(values, [alpha, 1 - alpha]) if len(values) else (np.nan, np.nan))
        out[name] = {"value": round(point[name], 6), "low": round(float(low), 6), "high": round(float(high), 6)}
    return out
