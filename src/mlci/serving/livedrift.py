"""Live drift on ``/metrics``: the last records served against the model's reference profile.

The request path only appends references to the records it already holds (validated, immutable)
and their probabilities to two bounded deques: no binning, no copying. The PSI per feature and of
the predictions is computed when ``/metrics`` is scraped, from a snapshot of the window, with
``mlci.monitoring.drift``'s own binning and PSI: the figures are those ``mlci monitor`` gives for the
same records (tested), and a scrape costs tens of milliseconds on 10,000 records, in the
scraping thread, not on a request.

A new model empties the window: its probabilities, and the reference they are compared with, are
another model's.
"""

from __future__ import annotations

import collections
import logging
import math
import threading

import numpy as np
import pandas as pd
from prometheus_client.core import GaugeMetricFamily

from mlci.monitoring.drift import feature_bins, prediction_bins
from mlci.monitoring.drift import psi as psi_of
from mlci.serving.records import columns, let_go

WINDOW = 10_000  # records kept: enough for a stable PSI over 10 bins, bounded memory (a few MB)
SLICE = 1000  # records made into columns between two yields of the GIL

log = logging.getLogger("mlci.serve")


class LiveWindow:
    """The last ``size`` records served and their probabilities, for the model that scored them."""

    def __init__(self, size: int = WINDOW, current=lambda: None):
        self.size = size
        self.current = current  # the model served now (the holder's): a window of another one is stale
        self._model = None
        self._records: collections.deque = collections.deque(maxlen=size)
        self._proba: collections.deque = collections.deque(maxlen=size)
        self.seen = 0  # records added since the window last emptied: a scrape recomputes only when it moved
        self._cache: tuple[object, int, dict] | None = None
        self._lock = threading.Lock()  # two scrapes at once compute once

    def add(self, loaded, records: list, probabilities: list[float]) -> None:
        """On the request path (the event loop's thread): references appended, nothing computed."""
        if loaded is not self._model:
            self._records.clear()
            self._proba.clear()
            self._model, self.seen = loaded, 0
        self._records.extend(records)
        self._proba.extend(probabilities)
        self.seen += len(records)

    def snapshot(self) -> tuple[object, list, list[float]]:
        """The model and a copy of the window (taken in C under the GIL, while requests keep appending;
        retried in the rare case the deque moved under the copy)."""
        for _ in range(10):
            try:
                model, records, proba = self._model, list(self._records), list(self._proba)
            except RuntimeError:  # "deque mutated during iteration"
                continue
            n = min(len(records), len(proba))
            return model, records[len(records) - n:], proba[len(proba) - n:]
        return self._model, [], []

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
            model, records, proba = self.snapshot()
            out = compute_psi(model, records, proba)
            self._cache = (model, seen, out)
            return out


def compute_psi(loaded, records: list, proba: list[float]) -> dict:
    """PSI of each feature and of the predictions over ``records`` against ``loaded.reference``."""
    ref = loaded.reference
    names = list(ref["features"])
    features = {}
    # In steps, the GIL let go between them (``records.let_go``): a scrape runs beside the event loop.
    for name, values in zip(names, columns(records, names, SLICE)):
        fref = ref["features"][name]
        if fref["type"] == "categorical":
            series = pd.Series(values, dtype=object)
        else:  # None -> NaN in C (object -> float), not a Python test per value
            series = pd.Series(np.array(values, dtype=object).astype(float))
        features[name] = psi_of(*feature_bins(fref, series))
        let_go()
    return {"features": features, "predictions": psi_of(*prediction_bins(ref["predictions"], np.asarray(proba))),
            "records": len(records)}


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
