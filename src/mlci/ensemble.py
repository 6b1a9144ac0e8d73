"""The ``best`` profile's classifier: gradient-boosted models averaged, with their own decision threshold.

It is the last step of the same Pipeline as the default profile's (``model.py``):
the ordinal encoder turns raw records into a float matrix whose first
``n_categorical`` columns are category codes (NaN = missing or unknown), and
every member reads that matrix with native categorical handling. So the saved
artifact still takes raw records, and the report, ``mlci predict`` and the
server's pandas-free scorer work on it unchanged.

scikit-learn's API: hyper-parameters in ``__init__`` (the members, unfitted,
and the weights and threshold that the search in ``best.py`` chose by
cross-validation), ``fit`` refits every member on all the rows it is given.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone


#: Up to this many rows, members predict on one thread, without the per-call set-up that pays off
#: only for larger batches.
SMALL = 64


class CatBoostCodes(ClassifierMixin, BaseEstimator):
    """CatBoost on the encoded matrix: its categorical columns must be integers or strings, not
    floats with NaN, so the codes become integers (-1 = missing) on the way in."""

    def __init__(self, n_categorical: int = 0, iterations: int = 600, learning_rate: float = 0.08, depth: int = 6,
                 l2_leaf_reg: float = 3.0, one_hot_max_size: int = 2, max_ctr_complexity: int = 1,
                 random_seed: int = 0, thread_count: int = -1):
        self.n_categorical = n_categorical
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.depth = depth
        self.l2_leaf_reg = l2_leaf_reg
        self.one_hot_max_size = one_hot_max_size
        # 1: no combinations of categoricals. CatBoost's CPU default (4) costs far more fit time on
        # Adult for no gain in validation log-loss (README, "The best profile").
        self.max_ctr_complexity = max_ctr_complexity
        self.random_seed = random_seed
        self.thread_count = thread_count

    def _codes(self, X: np.ndarray) -> np.ndarray:
        """The categorical columns as integers, -1 for missing."""
        k = self.n_categorical
        return np.where(np.isnan(X[:, :k]), -1, X[:, :k]).astype(np.int64)

    def _frame(self, X):
        import pandas as pd

        X = np.asarray(X, dtype=np.float64)
        k = self.n_categorical
        codes = self._codes(X)
        cols = {f"c{i}": codes[:, i] for i in range(k)}
        cols.update({f"n{i}": X[:, k + i] for i in range(X.shape[1] - k)})
        return pd.DataFrame(cols, copy=False)

    def fit(self, X, y):
        from catboost import CatBoostClassifier

        self.model_ = CatBoostClassifier(
            iterations=self.iterations, learning_rate=self.learning_rate, depth=self.depth,
            l2_leaf_reg=self.l2_leaf_reg, one_hot_max_size=self.one_hot_max_size,
            max_ctr_complexity=self.max_ctr_complexity, random_seed=self.random_seed,
            thread_count=self.thread_count, cat_features=list(range(self.n_categorical)),
            allow_writing_files=False, verbose=0,
        )
        self.model_.fit(self._frame(X), np.asarray(y))
        # A random id and the finish time would make every fit's bytes (so its sha256) differ.
        meta = self.model_.get_metadata()
        for key in ("model_guid", "train_finish_time"):
            if key in meta:
                del meta[key]
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        if len(X) <= SMALL:
            # A few rows (the server's single records): plain lists skip the DataFrame's set-up, most of
            # a record's cost (the same probabilities; README, "The best profile").
            rows = [c + r for c, r in zip(self._codes(X).tolist(), X[:, self.n_categorical:].tolist())]
            return self.model_.predict(rows, prediction_type="Probability", thread_count=1)
        return self.model_.predict_proba(self._frame(X))


class Ensemble(ClassifierMixin, BaseEstimator):
    """A weighted mean of the members' positive-class probabilities; ``predict`` uses ``threshold``.

    ``members`` are ``(name, estimator)`` pairs of unfitted estimators; LightGBM members are told
    which columns are categorical at fit time, the others know it from their own parameters.
    """

    def __init__(self, members=(), weights=None, threshold: float = 0.5, n_categorical: int = 0,
                 positive_label=None):
        self.members = members
        self.weights = weights
        self.threshold = threshold
        self.n_categorical = n_categorical
        self.positive_label = positive_label

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"needs two classes, got {len(self.classes_)}")
        # Members learn "is it classes_[1]" (XGBoost wants 0/1 labels); the threshold is on the positive class.
        y01 = (y == self.classes_[1]).astype(np.int64)
        self.members_ = [(name, fit_member(clone(est), X, y01, self.n_categorical)) for name, est in self.members]
        positive = self.classes_[1] if self.positive_label is None else self.positive_label
        self.positive_index_ = int(np.flatnonzero(self.classes_ == positive)[0])
        w = np.ones(len(self.members_)) if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        self.weights_ = w / w.sum()
        #: What ``mlci`` reads as the model's decision threshold (``model.decision_threshold``).
        self.threshold_ = float(self.threshold)
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        p = np.zeros(len(X))
        for (_, m), w in zip(self.members_, self.weights_):
            if w:
                p += w * _proba1(m, X)
        return np.column_stack([1 - p, p])

    def predict(self, X):
        positive = self.predict_proba(X)[:, self.positive_index_] >= self.threshold_
        return self.classes_[np.where(positive, self.positive_index_, 1 - self.positive_index_)]


def _proba1(member, X: np.ndarray) -> np.ndarray:
    """A member's probability of classes_[1]. LightGBM: its booster directly (the scikit-learn
    wrapper's input checks cost more than the trees for a single record; the same numbers)."""
    booster = getattr(member, "booster_", None)
    if booster is not None:
        return booster.predict(X, num_threads=1 if len(X) <= SMALL else 0)
    return member.predict_proba(X)[:, 1]


def fit_member(est, X, y, n_categorical: int):
    """Fit one member on the encoded matrix, with native categorical handling whatever its library."""
    from lightgbm import LGBMClassifier

    if isinstance(est, LGBMClassifier):
        return est.fit(X, y, categorical_feature=list(range(n_categorical)))
    return est.fit(X, y)
