"""Live drift on ``/metrics``: the last records served against the model's reference profile.

The request path copies the booster's encoded rows (``FastScorer.encode``: numbers as floats,
categories as the encoder's codes) and the probabilities into two preallocated rings: a slice
assignment each, no Python per value. A scrape bins the rings with NumPy (``Bins``): a
``searchsorted`` per number, a code -> bin lookup and a ``bincount`` per category, about 2 ms for
10,000 records. A categorical code that is NaN is a missing value (not counted, as ``mlci monitor``
does) -- except under ``--unknown-categories accept``, where it may also be a category the model
never saw (counted as "other"), which the encoding cannot tell apart: then the window also keeps
references to the records, and a NaN code is looked up in its record. (Not by default: holding on
to 10,000 records makes every request's allocations land on memory gone cold.) The figures are
those ``mlci monitor`` gives for the same records (``mlci.monitoring.drift``'s bins and PSI; tested).

Before, the scrape made the records into columns and binned them with pandas: 36 ms per 10,000
records in 25 GIL-holding steps beside the event loop (README, "What it costs").

A new model empties the window: its probabilities, and the reference they are compared with, are
another model's.
"""

from __future__ import annotations

import collections
import logging
import math
import threading

import numpy as np
from prometheus_client.core import GaugeMetricFamily

from mlci.monitoring.drift import kept_categories, prediction_bins, reference_counts
from mlci.monitoring.drift import psi as psi_of
from mlci.monitoring.profile import numeric_counts

WINDOW = 10_000  # records kept: enough for a stable PSI over 10 bins; 8 bytes per feature each (1 MB here)

log = logging.getLogger("mlci.serve")


class Bins:
    """How one model's encoded rows fall into its reference profile's bins: built once per model."""

    def __init__(self, reference: dict, columns: list[tuple[str, dict | None]]):
        position = {name: j for j, (name, _lookup) in enumerate(columns)}
        lookups = dict(columns)
        self.numeric: list[tuple[str, int, list[float]]] = []
        #: (name, column, code -> bin, category -> bin, the "other" bin)
        self.categorical: list[tuple[str, int, np.ndarray, dict[str, int], int]] = []
        #: The reference's counts over the same bins, per feature in the reference's order.
        self.expected: dict[str, np.ndarray] = {}
        self.predictions = reference["predictions"]
        for name, ref in reference["features"].items():
            if name not in position:
                raise ValueError(f"the reference profile's feature {name!r} is not among the model's inputs")
            j = position[name]
            if ref["type"] == "categorical":
                keep = kept_categories(ref)
                index = {k: i for i, k in enumerate(keep)}
                other = len(keep)
                codes = lookups[name] or {}  # category -> code (float) of the model's encoder
                lut = np.full(len(codes), other, dtype=np.intp)
                for category, code in codes.items():
                    lut[int(code)] = index.get(category, other)
                self.categorical.append((name, j, lut, index, other))
            else:
                self.numeric.append((name, j, ref["edges"]))
            self.expected[name] = reference_counts(ref)

    def counts(self, encoded: np.ndarray, records: list | None) -> dict[str, np.ndarray]:
        """Counts per bin of each feature over ``encoded``; ``records[i]`` is row i's record, read only
        where a categorical code is NaN. Without records a NaN code is a missing value."""
        out = {}
        for name, j, edges in self.numeric:
            out[name] = np.asarray(numeric_counts(encoded[:, j], edges), dtype=float)
        for name, j, lut, index, other in self.categorical:
            codes = encoded[:, j]
            nan = np.isnan(codes)
            counts = np.bincount(lut[codes[~nan].astype(np.intp)], minlength=other + 1).astype(float)
            # A NaN code: missing (not counted), or an unknown category (counted as monitor counts it).
            for i in (np.flatnonzero(nan).tolist() if records is not None else ()):
                v = _value(records[i], name)
                if v is not None:
                    counts[index.get(str(v), other)] += 1
            out[name] = counts
        return out


def _value(record, name: str):
    return record.get(name) if type(record) is dict else getattr(record, name, None)


class LiveWindow:
    """The last ``size`` records served and their probabilities, for the model that scored them."""

    def __init__(self, size: int = WINDOW, current=lambda: None, unknown_accepted: bool = False):
        self.size = size
        self.keep_records = unknown_accepted  # a NaN categorical code may be an unknown category then
        self.current = current  # the model served now (the holder's): a window of another one is stale
        self._model = None
        self._encoded = np.empty((0, 0))
        self._proba = np.empty(size)
        self._records: collections.deque = collections.deque(maxlen=size)
        self.seen = 0  # records added since the window last emptied: a scrape recomputes only when it moved
        self._bins: tuple[object, Bins] | None = None
        self._cache: tuple[object, int, dict] | None = None
        self._lock = threading.Lock()  # two scrapes at once compute once

    def add(self, loaded, records: list, encoded: np.ndarray, probabilities: list[float]) -> None:
        """On the request path (the event loop's thread): copies and references, nothing binned.
        ``encoded`` may be the scorer's reused one-row buffer: it is copied now."""
        if loaded is not self._model:
            self._model, self.seen = None, 0  # a scrape meanwhile sees no model
            self._encoded = np.empty((self.size, encoded.shape[1]))
            self._records.clear()
            self._model = loaded
        n, size = len(records), self.size
        if n == 1:
            i = self.seen % size
            self._encoded[i] = encoded[0]
            self._proba[i] = probabilities[0]
        else:
            if n > size:
                encoded, probabilities, n0 = encoded[-size:], probabilities[-size:], n
                self.seen += n0 - size  # the first ones would have fallen out at once
                n = size
            i = self.seen % size
            first = min(n, size - i)
            self._encoded[i:i + first] = encoded[:first]
            self._proba[i:i + first] = probabilities[:first]
            if first < n:  # wrapped round
                self._encoded[:n - first] = encoded[first:]
                self._proba[:n - first] = probabilities[first:]
        if self.keep_records:
            self._records.extend(records)
        self.seen += n

    def snapshot(self) -> tuple[object, np.ndarray, np.ndarray, list | None]:
        """The model and a copy of the window: encoded rows, probabilities and records, row i of the
        first two being record i of the third (None unless ``keep_records``). Each copy is one C call
        under the GIL; requests may append between them, so it is taken again until nothing moved."""
        for _ in range(100):
            model, seen = self._model, self.seen
            try:
                encoded, proba, records = self._encoded.copy(), self._proba.copy(), list(self._records)
            except RuntimeError:  # "deque mutated during iteration"
                continue
            if self._model is model and self.seen == seen:
                break
        else:  # never seen settle (a hundred tries): an empty window rather than a wrong one
            return model, np.empty((0, self._encoded.shape[1])), np.empty(0), [] if self.keep_records else None
        m = min(seen, self.size)
        if seen > self.size:  # the ring's oldest row is at seen % size: turned to match the deque's order
            start = seen % self.size
            encoded, proba = np.roll(encoded, -start, axis=0), np.roll(proba, -start)
        return model, encoded[:m], proba[:m], records[len(records) - m:] if self.keep_records else None

    def psi(self) -> dict | None:
        """``{"features": {name: psi}, "predictions": psi, "records": n}`` for the model's reference, or None
        (no model scored yet, or it has no reference profile)."""
        with self._lock:
            model, seen = self._model, self.seen
            if model is not None and model is not self.current():
                # Swapped since the last record: the window is emptied by the next one; until then it
                # describes a model no longer served.
                return {"features": {}, "predictions": math.nan, "records": 0}
            if model is None or getattr(model, "reference", None) is None:
                return None
            if self._cache is not None and self._cache[0] is model and self._cache[1] == seen:
                return self._cache[2]
            model, encoded, proba, records = self.snapshot()
            if self._bins is None or self._bins[0] is not model:
                self._bins = (model, Bins(model.reference, model.scorer.columns))
            out = compute_psi(self._bins[1], encoded, proba, records)
            self._cache = (model, seen, out)
            return out


def compute_psi(bins: Bins, encoded: np.ndarray, proba: np.ndarray, records: list | None) -> dict:
    """PSI of each feature and of the predictions over the window's rows against the reference of ``bins``."""
    counts = bins.counts(encoded, records)
    return {"features": {name: psi_of(expected, counts[name]) for name, expected in bins.expected.items()},
            "predictions": psi_of(*prediction_bins(bins.predictions, proba)),
            "records": len(proba)}


class DriftCollector:
    """``mlci_feature_psi{feature=...}``, ``mlci_prediction_psi`` and the window's size, at scrape time."""

    def __init__(self, window: LiveWindow):
        self.window = window
        self._failed = False

    def describe(self):
        return []

    def collect(self):
        try:
            result = self.window.psi()
        except Exception as e:  # noqa: BLE001 - a scrape must not fail for the drift figures
            if not self._failed:
                log.error("live drift could not be computed: %s: %s", type(e).__name__, e)
                self._failed = True
            result = None
        records = GaugeMetricFamily("mlci_drift_window_records", "Records in the live drift window (the "
                                    f"last {self.window.size} scored by the model now served).",
                                    value=result["records"] if result else 0)
        yield records
        if not result or not result["records"]:
            return
        features = GaugeMetricFamily("mlci_feature_psi", "Population stability index of a feature over the live "
                                     "window against the model's training data (reference profile).",
                                     labels=["feature"])
        for name, value in result["features"].items():
            features.add_metric([name], value)
        yield features
        yield GaugeMetricFamily("mlci_prediction_psi", "Population stability index of the predicted probability "
                                "over the live window against the validation predictions.", value=result["predictions"])
