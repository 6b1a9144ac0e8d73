"""The bootstrap over (score bin, label) cells against the plain one over rows.

Above ``bootstrap.ROWS_MAX`` rows the report's intervals resample cells, not rows. These tests check
that a cell resample is a row resample counted by cell (exactly, when every score is its own bin), and
that the intervals match a per-row bootstrap to within its own Monte Carlo noise, on tens of thousands
of rows with continuous scores, heavily tied scores and a threshold other than 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlci.evaluation import bootstrap as B


def data(n: int, seed: int = 0, digits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A model's scores: positives (about a quarter) score higher, with overlap and a long tail."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.25
    p = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.6 + 2.6 * y - 2.0)))
    return y, (np.round(p, digits) if digits else p)


def sorted_desc(y, p):
    order = np.argsort(-p, kind="mergesort")
    return y[order], p[order]


def test_cells_give_the_exact_point_estimates_and_are_bounded():
    y, p = sorted_desc(*data(100_000))
    exact = B.weighted_metrics(y, p, np.ones((1, len(y))), 0.4)
    units = B.cells(y, p, 0.4, bins=512)
    assert len(units[-1]) <= 2 * (512 + 1) and units[-1].sum() == len(y)
    on_cells = B._sums(*units[:-1], units[-1][None])
    # Counts, log-loss and Brier terms are exact on cells; the ranking metrics are off by the ties
    # the bins make (which the intervals shift away).
    for k in ("acc", "balanced_acc", "precision", "recall", "f1", "log_loss", "brier"):
        assert on_cells[k][0] == pytest.approx(exact[k][0], rel=1e-9), k
    for k in ("roc_auc", "pr_auc"):
        assert abs(on_cells[k][0] - exact[k][0]) < 2e-3, k


def test_with_few_distinct_scores_a_cell_resample_is_a_row_resample():
    """Each distinct score is its own bin: the rows' counts summed by cell give the same metrics."""
    y, p = sorted_desc(*data(30_000, seed=1, digits=2))
    units = B.cells(y, p, 0.5, bins=1024)
    group = np.cumsum(np.r_[False, p[1:] != p[:-1]])
    cell_of = {(g, lab): i for i, (g, lab) in enumerate(zip(units[2], units[0]))}
    row_cell = np.array([cell_of[(g, lab)] for g, lab in zip(group, y)])
    counts = np.bincount(np.random.default_rng(7).integers(0, len(y), len(y)), minlength=len(y)).astype(float)
    rows = B.weighted_metrics(y, p, counts[None])
    on_cells = B._sums(*units[:-1], np.bincount(row_cell, counts, minlength=len(units[-1]))[None])
    assert {k: v[0] for k, v in on_cells.items()} == pytest.approx({k: v[0] for k, v in rows.items()}, rel=1e-9)


@pytest.mark.parametrize("n, digits, threshold", [(12_000, None, 0.3), (30_000, None, 0.5), (30_000, 2, 0.5),
                                                  (60_000, None, 0.5)])
def test_intervals_match_a_per_row_bootstrap(n, digits, threshold):
    y, p = data(n, seed=n, digits=digits)
    kw = dict(resamples=1500, level=0.95, threshold=threshold)
    rows = B.intervals(y, p, seed=0, rows_max=10**9, **kw)
    cells = B.intervals(y, p, seed=1, rows_max=0, **kw)
    assert len(B.cells(*sorted_desc(y, p), threshold)[-1]) < n / 5  # really resampled cells, not rows
    for k, r in rows.items():
        c, width = cells[k], r["high"] - r["low"]
        assert c["value"] == r["value"], k  # the point estimate is the exact one
        # 1,500 resamples put an endpoint within a few percent of the width of where it belongs.
        assert abs(c["low"] - r["low"]) < 0.12 * width and abs(c["high"] - r["high"]) < 0.12 * width, (k, r, c)


def test_cell_intervals_are_reproducible():
    y, p = data(50_000, seed=3)
    a, b = B.intervals(y, p, resamples=300, seed=5), B.intervals(y, p, resamples=300, seed=5)
    assert a == b and a != B.intervals(y, p, resamples=300, seed=6)
    assert all(m["low"] <= m["value"] <= m["high"] for m in a.values())
