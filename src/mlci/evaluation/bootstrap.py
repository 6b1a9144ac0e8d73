"""Bootstrap confidence intervals for the binary metrics, all resamples at once.

Calling scikit-learn's metric functions once per resample and metric costs far
more than the report's whole budget (README, "Reports": the figures). A resample is a vector of counts (how often
each row was drawn), so every metric is a weighted sum: the confusion-matrix
metrics are matrix products, and ROC-AUC and average precision are cumulative
sums over the rows sorted once by score (ties grouped, as scikit-learn does).
The tests check every point estimate and single resamples against
scikit-learn's own functions.

Counting every row of every resample costs resamples x rows, which grows with the data while the
answer does not need it to. Above :data:`ROWS_MAX` rows a resample therefore counts *cells*: the
rows are grouped by (score bin, label), at most :data:`BINS` bins, and a resample's cell counts
are drawn as one multinomial of the cells' shares of the rows. Why that is the same bootstrap:

* Drawing n rows with replacement and counting them by cell *is* a multinomial(n, cell shares)
  draw. Every metric that depends on the rows only through their cell is therefore resampled
  exactly: accuracy, precision, recall, F1 and balanced accuracy (a bin is wholly above or below
  the decision threshold: the threshold is a bin edge), and all metrics when a split has at
  most ``BINS`` distinct scores (then a bin is one score).
* Log-loss and Brier score are means of per-row terms; a cell carries its rows' mean term, so
  the point estimate is exact and a resample misses only the spread of the terms *within* a
  cell. With quantile bins of a model's scores that spread is negligible: on the Adult model's
  validation scores the cells keep over 99.99 % of the terms' variance already at 256 bins.
* ROC-AUC and average precision see the rows of one bin as tied. With 1,024 quantile bins that
  touches about a thousandth of the positive-negative pairs: the cells' values differ from the
  exact ones by a near-constant, by which the resamples are moved, so the interval sits around
  the exact estimate as the cells' interval sits around theirs.

Point estimates are always computed on every row. tests/unit/test_bootstrap_cells.py checks
the cell intervals against a per-row bootstrap on 12,000-60,000 rows (continuous and tied
scores): every endpoint within a small share of the interval's width, the size of the
bootstrap's own Monte Carlo noise.
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
#: Up to this many rows a resample draws rows (exact, and cheaper than cells there); above, cells.
ROWS_MAX = 10_000
#: Score bins of the cell resample (each split by label: at most about twice as many cells).
BINS = 1024


def weighted_metrics(y: np.ndarray, proba: np.ndarray, w: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Every metric for each row of ``w`` (resamples x rows, counts or weights)."""
    y = np.asarray(y).astype(bool)
    proba = np.asarray(proba, dtype=float)
    w = np.atleast_2d(w)
    order = np.argsort(-proba, kind="mergesort")  # descending score, for the ranking metrics
    if np.any(order != np.arange(len(order))):  # intervals() sorts once, so resamples need no copy
        y, proba, w = y[order], proba[order], w[:, order]
    loss, sq = _terms(y, proba)
    return _sums(y, proba >= threshold, proba, loss, sq, w)


def _terms(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's log-loss and Brier terms."""
    p = np.clip(proba, 1e-15, 1 - 1e-15)
    return -np.where(y, np.log(p), np.log1p(-p)), (proba - y) ** 2


def _sums(y, pred, key, loss, sq, w) -> dict[str, np.ndarray]:
    """The metrics of weighted units (rows, or cells of rows) sorted by ``key`` descending: each unit's
    label, prediction, log-loss and Brier term; equal keys are tied scores."""
    # One matrix product gives every per-unit sum: confusion-matrix cells, log-loss and Brier terms.
    per_row = np.stack([y & pred, ~y & pred, y & ~pred, ~y & ~pred, loss, sq], axis=1)
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
    out.update(_ranking(y, key, w, pos, neg))
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
    threshold: float = 0.5, chunk_cells: int = 2_000_000, rows_max: int | None = None, bins: int | None = None,
) -> dict[str, dict[str, float]]:
    """Point estimate (exact, on every row) and percentile bootstrap interval of every metric:
    ``{metric: {value, low, high}}``. Up to ``rows_max`` rows a resample draws rows; above, it draws
    (score bin, label) cells (``cells``; module docstring), so its cost stops growing with rows."""
    from threadpoolctl import threadpool_limits

    # The matrix products here are small (resamples x rows x 6): a second BLAS thread gains
    # nothing, and its busy-waiting between calls takes a core from the report's figure process
    # (measured: README, "Reports").
    with threadpool_limits(1, user_api="blas"):
        return _intervals(y, proba, resamples, seed, level, threshold, chunk_cells,
                          ROWS_MAX if rows_max is None else rows_max, BINS if bins is None else bins)


def cells(y: np.ndarray, proba: np.ndarray, threshold: float, bins: int = BINS) -> tuple[np.ndarray, ...]:
    """The (score bin, label) cells of rows sorted by score descending: each cell's label, prediction,
    bin (a tie key, descending order), mean log-loss and Brier terms, and row count.

    The bins are the distinct scores when there are at most ``bins`` of them (then every row of a
    cell is the same row, as far as any metric can tell); else quantile bins, cut between groups of
    tied scores and at ``threshold``, so that a bin is wholly predicted positive or negative."""
    n = len(proba)
    changes = np.r_[False, proba[1:] != proba[:-1]]
    if np.count_nonzero(changes) < bins:
        group = np.cumsum(changes)
    else:
        cut = proba[np.linspace(0, n, bins, endpoint=False).astype(np.int64)]
        edges = np.unique(np.r_[cut, threshold])
        group = len(edges) - np.searchsorted(edges, proba, side="right")  # 0: the highest scores
    k = int(group[-1]) + 1 if n else 0
    loss, sq = _terms(y, proba)
    pred = np.zeros(k, dtype=bool)
    pred[group] = proba >= threshold  # the same for every row of a bin
    out = []
    for label in (True, False):  # a bin's positive cell, then its negative one: tied in the ranking
        mask = y == label
        count = np.bincount(group[mask], minlength=k).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append((np.full(k, label), pred, np.arange(k), np.bincount(group[mask], loss[mask], k) / count,
                        np.bincount(group[mask], sq[mask], k) / count, count))
    # Interleave: bin 0's positive and negative cells, bin 1's, ...; then drop the empty ones.
    columns = [np.stack([a, b], axis=1).ravel() for a, b in zip(*out)]
    keep = columns[-1] > 0
    return tuple(c[keep] for c in columns)


def _intervals(y, proba, resamples, seed, level, threshold, chunk_cells, rows_max, bins) -> dict[str, dict[str, float]]:
    order = np.argsort(-np.asarray(proba, dtype=float), kind="mergesort")
    y, proba = np.asarray(y).astype(bool)[order], np.asarray(proba, dtype=float)[order]
    n = len(y)
    point = {k: float(v[0]) for k, v in weighted_metrics(y, proba, np.ones((1, n)), threshold).items()}
    rng = np.random.default_rng(seed)
    if n <= rows_max:
        units, shift = None, dict.fromkeys(point, 0.0)
        size = n
    else:
        units = cells(y, proba, threshold, bins)
        size = len(units[-1])
        # Quantile bins tie a bin's scores: the ranking metrics of the cells differ from the exact
        # ones by a near-constant (about 1/bins of the pairs); the resamples are moved by it, so that
        # the interval sits around the exact estimate as the cells' sits around theirs.
        binned = _sums(*units[:-1], units[-1][None])
        shift = {k: point[k] - float(v[0]) for k, v in binned.items()}
    # Resamples at a time: bounded memory whatever the rows (``chunk_cells`` floats). Smaller chunks are faster
    # alone (cache) but slower next to the report's other threads (more GIL hand-offs).
    chunk = max(1, chunk_cells // size)
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for start in range(0, resamples, chunk):  # bounded memory: chunk x rows counts at a time
        k = min(chunk, resamples - start)
        if units is None:
            # The smallest index type draws fastest; one bincount per resample beats one over
            # offset int64 indices (2x). float32 counts are exact (< 2**24) and halve the memory
            # traffic of the sums.
            drawn = rng.integers(0, n, size=(k, n), dtype=np.uint16 if n <= 1 << 16 else np.int64)
            counts = np.empty((k, n), dtype=np.float32)
            for i, row in enumerate(drawn):
                counts[i] = np.bincount(row, minlength=n)
            values = weighted_metrics(y, proba, counts, threshold)
        else:
            # n rows drawn with replacement fall into the cells as a multinomial of their shares:
            # the same counts the rows' own resample gives, drawn without touching a row.
            counts = rng.multinomial(n, units[-1] / n, size=k).astype(float)
            values = _sums(*units[:-1], counts)
        for name, v in values.items():
            draws[name].append(v + shift[name])
    alpha = (1 - level) / 2
    out = {}
    for name in METRICS:
        values = np.concatenate(draws[name])
        values = values[np.isfinite(values)]
        low, high = (np.quantile(values, [alpha, 1 - alpha]) if len(values) else (np.nan, np.nan))
        out[name] = {"value": round(point[name], 6), "low": round(float(low), 6), "high": round(float(high), 6)}
    return out
