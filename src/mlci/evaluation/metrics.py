"""Binary-classification metrics, computed once and named the same everywhere."""

from __future__ import annotations

import numpy as np


def binary_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """``y_true`` is 1 for the positive class; ``proba`` its predicted probability; ``threshold`` the
    model's decision threshold (the threshold-free metrics do not depend on it). A model with its own
    threshold also gets ``acc_at_0.5``, the accuracy a plain 0.5 would have given."""
    from sklearn import metrics as m

    y_true = np.asarray(y_true).astype(int)
    pred = (proba >= threshold).astype(int)
    out = {
        "acc": m.accuracy_score(y_true, pred),
        "balanced_acc": m.balanced_accuracy_score(y_true, pred),
        "precision": m.precision_score(y_true, pred, zero_division=0),
        "recall": m.recall_score(y_true, pred, zero_division=0),
        "f1": m.f1_score(y_true, pred, zero_division=0),
        "log_loss": m.log_loss(y_true, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1]),
        "brier": m.brier_score_loss(y_true, proba),
    }
    if threshold != 0.5:
        out["acc_at_0.5"] = m.accuracy_score(y_true, (proba >= 0.5).astype(int))
    if len(np.unique(y_true)) == 2:
        out["roc_auc"] = m.roc_auc_score(y_true, proba)
        out["pr_auc"] = m.average_precision_score(y_true, proba)
    return {k: round(float(v), 6) for k, v in out.items()}
