"""Scoring raw records without pandas: the per-request path of ``mlci serve``.

The Pipeline (``model.py``) encodes categoricals with an ``OrdinalEncoder``
(unknown and missing -> NaN), passes numbers through, and hands the float
matrix to LightGBM. Building a DataFrame and running scikit-learn's checks
costs far more than the trees for one record, so this does the same encoding
with a dict lookup per categorical value straight into a float array, and
calls the fitted LightGBM booster on it. ``tests/test_serve.py`` checks that
it gives the Pipeline's ``predict_proba`` on thousands of real rows, unknown
categories and missing values included; ``verify`` checks it again for every
model the server loads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

import numpy as np

NAN = float("nan")


class UnsupportedModel(Exception):
    """The model is not the Pipeline shape this fast path understands."""


class FastScorer:
    def __init__(self, pipeline, positive_label: str):
        from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

        try:
            encode, classify = pipeline.named_steps["encode"], pipeline.named_steps["classify"]
            classes = [str(c) for c in classify.classes_]
            transformers = encode.transformers_
        except (AttributeError, KeyError, TypeError) as e:
            raise UnsupportedModel(f"not an encode + classifier Pipeline ({type(e).__name__}: {e})") from None
        # LightGBM (the default profile): its booster straight away. Anything else (the best profile's
        # Ensemble) through its own predict_proba on the same encoded matrix.
        booster = getattr(classify, "booster_", None)
        if len(classes) != 2 or positive_label not in classes:
            raise UnsupportedModel(f"classes {classes} do not include the positive label {positive_label!r}")
        #: (column, lookup or None) in the booster's column order; None = a number, passed through.
        self.columns: list[tuple[str, dict[str, float] | None]] = []
        self.categories: dict[str, list[str]] = {}
        for _name, trans, cols in transformers:
            if trans == "drop" or len(cols) == 0:
                continue
            if isinstance(trans, OrdinalEncoder):
                for col, cats in zip(cols, trans.categories_):
                    names = [str(c) for c in cats]
                    self.categories[col] = names
                    self.columns.append((col, {c: float(i) for i, c in enumerate(names)}))
            elif trans == "passthrough" or (isinstance(trans, FunctionTransformer) and trans.func is None):
                self.columns.extend((col, None) for col in cols)
            else:
                raise UnsupportedModel(f"transformer {type(trans).__name__} on {list(cols)} is not supported")
        expected = booster.num_feature() if booster is not None else getattr(classify, "n_features_in_", None)
        if expected is not None and len(self.columns) != expected:
            raise UnsupportedModel(f"{len(self.columns)} encoded columns, the classifier expects {expected}")
        self.booster = booster
        self.classifier = classify
        self.classes = classes
        #: The model's own decision threshold on the positive class (the best profile's), else None:
        #: the Pipeline's argmax.
        self.threshold = float(classify.threshold_) if hasattr(classify, "threshold_") else None
        #: Both paths give the probability of classes_[1].
        self.positive_is_1 = classes.index(positive_label) == 1
        self.positive_label = positive_label
        self.negative_label = classes[1 - classes.index(positive_label)]
        self.features = [c for c, _ in self.columns]
        # One record's values, in column order (attrgetter of one name gives the value, not a tuple).
        self._attrs = attrgetter(*self.features) if len(self.features) > 1 else (
            lambda r, _get=attrgetter(self.features[0]): (_get(r),))
        # One row, reused: a single-record request allocates nothing but its answer.
        self._one = np.empty((1, len(self.columns)), dtype=np.float64)
        self._single = _SingleRow(booster, self._one) if booster is not None and _SingleRow.available() else None

    def encode(self, records: Sequence[Mapping[str, Any] | Any]) -> np.ndarray:
        """Records -> the booster's float matrix.

        A record is a mapping of column -> raw value (None or absent for missing), or an object with
        one attribute per column (the server's validated request records); one kind per call.
        """
        mapping = isinstance(records[0], Mapping)
        if len(records) == 1:
            row, rec = self._one[0], records[0]
            values = map(rec.get, self.features) if mapping else self._attrs(rec)
            for j, ((_col, lookup), v) in enumerate(zip(self.columns, values)):
                row[j] = (lookup.get(v, NAN) if isinstance(v, str) else NAN) if lookup is not None else (
                    NAN if v is None else v)
            return self._one
        # Column by column: one list and one array copy per column, not a numpy scalar assignment
        # per value. (Off attribute objects with attrgetter: faster than off dicts, measured.)
        out = np.empty((len(records), len(self.columns)), dtype=np.float64)
        for j, (col, lookup) in enumerate(self.columns):
            values = [r.get(col) for r in records] if mapping else list(map(attrgetter(col), records))
            if lookup is not None:
                get = lookup.get
                out[:, j] = [get(v, NAN) if isinstance(v, str) else NAN for v in values]
            else:
                out[:, j] = [NAN if v is None else v for v in values]
        return out

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row of an encoded matrix."""
        if self.booster is None:
            p1 = self.classifier.predict_proba(x)[:, 1]
        elif len(x) == 1 and self._single is not None and x is self._one:
            p1 = self._single.predict()
        else:
            # One thread for small batches: OpenMP's start-up costs more than their trees.
            p1 = self.booster.predict(x, num_threads=1 if len(x) < 512 else 0)
        return p1 if self.positive_is_1 else 1.0 - p1

    def labels(self, p_pos: np.ndarray) -> list[str]:
        """The Pipeline's ``predict``: the model's threshold on the positive class if it has one, else
        argmax of (p0, p1), ties to classes_[0]."""
        if self.threshold is not None:
            pos, neg, t = self.positive_label, self.negative_label, self.threshold
            return [pos if v >= t else neg for v in p_pos.tolist()]
        p1 = p_pos if self.positive_is_1 else 1.0 - p_pos
        c0, c1 = self.classes
        return [c1 if v > 1.0 - v else c0 for v in p1.tolist()]

    def score(self, records: Sequence[Mapping[str, Any] | Any]) -> tuple[np.ndarray, list[str]]:
        """Records (see ``encode``) -> probability of the positive class and predicted label of each."""
        p = self.proba(self.encode(records))
        return p, self.labels(p)

    def verify(self, pipeline, records: list[Mapping[str, Any]], tolerance: float = 1e-9) -> None:
        """Smoke prediction: this path and the Pipeline agree on ``records``; raise if not."""
        import pandas as pd

        frame = pd.DataFrame([{c: (NAN if r.get(c) is None else r.get(c)) for c in self.features} for r in records],
                             columns=self.features)
        for col, lookup in self.columns:
            if lookup is not None:
                frame[col] = frame[col].astype(object)
        expected = pipeline.predict_proba(frame)[:, self.classes.index(self.positive_label)]
        got, labels = self.score(records)
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in got.tolist()):
            raise ValueError(f"smoke prediction gave probabilities outside [0, 1]: {got.tolist()}")
        if np.max(np.abs(got - expected)) > tolerance:
            raise ValueError(f"fast path and Pipeline disagree on the smoke records: {got.tolist()} "
                             f"vs {expected.tolist()}")
        if labels != [str(x) for x in pipeline.predict(frame)]:
            raise ValueError("fast path and Pipeline disagree on the smoke records' labels")


def smoke_records(features: list[str], categories: dict[str, list[str]], ranges: dict[str, tuple]) -> list[dict]:
    """A few records that touch every column: known categories, an unknown one, missing values, bounds."""
    recs = []
    for k in range(3):
        rec: dict[str, Any] = {}
        for col in features:
            cats = categories.get(col)
            if cats is not None:
                rec[col] = cats[k % len(cats)] if k < 2 else "__unknown__"
            else:
                lo, hi = ranges.get(col, (None, None))
                lo = 0.0 if lo is None else lo
                hi = lo + 100.0 if hi is None else hi
                rec[col] = (lo, (lo + hi) / 2, hi)[k]
        recs.append(rec)
    recs.append({col: None for col in features})
    return recs


class _SingleRow:
    """LightGBM's single-row fast predictor on a fixed input row: its configuration (parameters,
    thread count, output buffer) is set up once per model, not on every call as ``Booster.predict``
    does, which is most of a one-record prediction's cost (measured). Not thread-safe: the
    server scores on its event-loop thread only."""

    @staticmethod
    def available() -> bool:
        try:
            from lightgbm.basic import _LIB

            return hasattr(_LIB, "LGBM_BoosterPredictForMatSingleRowFast")
        except (ImportError, AttributeError):
            return False

    def __init__(self, booster, row: np.ndarray):
        import ctypes

        from lightgbm.basic import _LIB, _c_str, _safe_call

        self._lib, self._safe_call, self._ctypes = _LIB, _safe_call, ctypes
        self._booster = booster  # the handle below lives as long as the booster
        self._row = row  # the caller writes the record here
        self._out = np.empty(1, dtype=np.float64)
        self._len = ctypes.c_int64()
        self._cfg = ctypes.c_void_p()
        # predict_type 0: normal (probability); data_type 1: float64; all iterations from the first, as
        # LGBMClassifier.predict_proba does for a model trained without early stopping.
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_int(1),
            ctypes.c_int32(row.shape[1]), _c_str("num_threads=1"), ctypes.byref(self._cfg)))
        self._args = (self._cfg, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._len),
                      self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))

    def predict(self) -> np.ndarray:
        self._safe_call(self._lib.LGBM_BoosterPredictForMatSingleRowFast(*self._args))
        return self._out.copy()

    def __del__(self):
        cfg = getattr(self, "_cfg", None)
        if cfg is not None and cfg.value:
            self._lib.LGBM_FastConfigFree(cfg)
