"""The drift figures against hand computations, and the performance estimate on calibrated data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlci.monitoring.drift import estimated_performance, feature_drift, psi
from mlci.monitoring.profile import OTHER, calibration_map, category_counts, numeric_counts, numeric_edges


def test_psi_is_the_textbook_sum():
    e, a = [50, 30, 20], [30, 30, 40]
    by_hand = sum((x / 100 - y / 100) * math.log((x / 100) / (y / 100)) for x, y in zip(a, e))
    assert psi(e, a) == pytest.approx(by_hand)
    assert psi(e, e) == 0.0
    assert psi([10, 0], [5, 5]) > 0 and math.isfinite(psi([10, 0], [5, 5]))  # an empty bin is smoothed


def test_chi_square_p_value_matches_the_statistic_computed_by_hand():
    from scipy.stats import chi2

    ref = {"type": "categorical", "counts": {"a": 60, "b": 40, OTHER: 0}, "missing": 0.0}
    batch = pd.Series(["a"] * 45 + ["b"] * 55)
    table = np.array([[60, 40], [45, 55]], dtype=float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = ((table - expected) ** 2 / expected).sum()
    got = feature_drift(ref, batch, seed=0)
    assert got["p_value"] == pytest.approx(chi2.sf(stat, df=1))
    assert got["shares"]["a"] == 0.45 and got["reference_shares"]["a"] == 0.6


def test_numeric_bins_count_every_value_once():
    x = np.array([1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, np.nan], dtype=float)
    edges = numeric_edges(x)
    counts = numeric_counts(x, edges)
    assert sum(counts) == 12 and edges == sorted(set(edges))
    # (-inf, e0] holds every value up to the first edge
    assert counts[0] == int((x[np.isfinite(x)] <= edges[0]).sum())
    assert category_counts(pd.Series(["x", "y", "x", None]), keep=["x"]) == {"x": 2, OTHER: 1}


def test_the_estimate_of_accuracy_holds_on_calibrated_probabilities():
    rng = np.random.default_rng(0)
    p = rng.beta(0.7, 1.5, size=20_000)
    y = rng.random(p.size) < p  # the probabilities are calibrated by construction
    ref = {"calibration": calibration_map(y[:10_000].astype(int), p[:10_000]), "threshold": 0.5}
    est = estimated_performance(ref, p[10_000:])["acc"]
    true = np.mean((p[10_000:] >= 0.5) == y[10_000:])
    assert est["low"] <= true <= est["high"] and est["high"] - est["low"] < 0.03
