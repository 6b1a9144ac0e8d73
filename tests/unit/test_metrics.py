"""mlci.evaluation.metrics.binary_metrics against scikit-learn's own functions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as m

from mlci.evaluation.metrics import binary_metrics


def data(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    proba = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)  # informative, not perfect
    return y, proba


@pytest.mark.parametrize("threshold", [0.5, 0.35])
def test_binary_metrics_match_scikit_learn(threshold):
    y, proba = data()
    pred = (proba >= threshold).astype(int)
    expected = {
        "acc": m.accuracy_score(y, pred), "balanced_acc": m.balanced_accuracy_score(y, pred),
        "precision": m.precision_score(y, pred), "recall": m.recall_score(y, pred), "f1": m.f1_score(y, pred),
        "log_loss": m.log_loss(y, proba), "brier": m.brier_score_loss(y, proba),
        "roc_auc": m.roc_auc_score(y, proba), "pr_auc": m.average_precision_score(y, proba),
    }
    if threshold != 0.5:
        expected["acc_at_0.5"] = m.accuracy_score(y, (proba >= 0.5).astype(int))
    got = binary_metrics(y, proba, threshold)
    assert got == pytest.approx(expected, abs=1e-6) and set(got) == set(expected)
    assert all(type(v) is float for v in got.values())


def test_the_threshold_moves_only_the_thresholded_metrics():
    y, proba = data(seed=1)
    low, high = binary_metrics(y, proba, 0.2), binary_metrics(y, proba, 0.8)
    assert low["recall"] > high["recall"] and low["precision"] < high["precision"]
    assert {k: low[k] for k in ("log_loss", "brier", "roc_auc", "pr_auc")} == \
        {k: high[k] for k in ("log_loss", "brier", "roc_auc", "pr_auc")}


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # balanced accuracy, one class
def test_one_class_has_no_ranking_metrics():
    got = binary_metrics(np.zeros(50, dtype=int), np.linspace(0, 0.9, 50))
    assert "roc_auc" not in got and "pr_auc" not in got
    assert got["acc"] == pytest.approx(np.mean(np.linspace(0, 0.9, 50) < 0.5)) and got["recall"] == 0.0
