"""``GET /metrics``: the server's figures in Prometheus' text format (prometheus-client).

Every app has its own ``CollectorRegistry`` (not the library's global one), so several apps in one
process (the tests) do not clash. Two kinds of figures:

* Counted on the request path: requests by route and status, latency by route, records per
  request, predictions by label and the predicted probability. Plain counts (``Tally``: a list of
  bucket counts, a sum; one dict lookup per counter) written only by the event loop's thread and
  turned into Prometheus families when scraped (``RequestCollector``), the same names, samples and
  ``_created`` times prometheus-client's ``Counter`` and ``Histogram`` give. Those take a lock and
  loop over the buckets in Python on every call: 7.9 µs of a single-record request, where these
  take 1.7 (measured; README, "What it costs").
* Read when scraped, by collectors that look at what other parts already keep (``ServerState``):
  the served model (an Info, so it follows a reload), the holder's reload counts, the prediction
  log's written / dropped / failed records, and the live drift (``livedrift.py``), which is computed
  then and only then -- never on a request.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as _client_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

#: The routes a request is counted under; any other path is "other" (a scan of random paths must not
#: make a time series per path).
ROUTES = ("/predict", "/health", "/ready", "/model", "/metrics", "/admin/reload", "/openapi.json", "/docs",
          "/docs/oauth2-redirect", "/redoc")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECORD_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
PROBABILITY_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 20))  # the reference profile's 20 bins
#: prometheus-client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES) for the ``_created`` samples.
CREATED = getattr(_client_metrics, "_use_created", True)


class Tally:
    """One histogram's counts: ``counts[i]`` observations in (bounds[i-1], bounds[i]], the last +Inf.

    Written by one thread only (the event loop's), read by a scrape: a list's item and a float,
    each read whole under the GIL (a scrape may see a sum one observation ahead of the counts)."""

    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple):
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: the first bound >= value, as the library
        self.sum += value

    def observe_many(self, values: list[float]) -> None:
        counts, bounds = self.counts, self.bounds
        for v in values:
            counts[bisect_left(bounds, v)] += 1
        self.sum += sum(values)

    def buckets(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts)):
            acc += count
            out.append((floatToGoString(bound), float(acc)))
        return out


class Metrics:
    """The registry of one app and the request path's counts."""

    def __init__(self, labels: tuple[str, str]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, int], list] = {}  # (route, status): [count, created]; made on first use
        self.latency: dict[str, Tally] = {}  # by route, made on first use: no empty series
        self.records = Tally(RECORD_BUCKETS)
        self.probability = Tally(PROBABILITY_BUCKETS)
        now = time.time()
        self.predictions = {label: [0, now] for label in labels}
        self._routes = frozenset(ROUTES)
        self.registry.register(RequestCollector(self))

    def request(self, path: str, status: int, seconds: float) -> None:
        """One answered request (called by ``observe.Observe`` once the answer is sent)."""
        route = path if path in self._routes else "other"
        counted = self.requests.get((route, status))
        if counted is None:
            counted = self.requests[(route, status)] = [0, time.time()]
        counted[0] += 1
        timer = self.latency.get(route)
        if timer is None:
            timer = self.latency[route] = Tally(LATENCY_BUCKETS)
        timer.observe(seconds)

    def scored(self, probabilities: list[float], labels: list[str]) -> None:
        """The records of one 200 answer."""
        n = len(labels)
        self.records.observe(n)
        if n == 1:
            self.probability.observe(probabilities[0])
            self.predictions[labels[0]][0] += 1
        else:
            self.probability.observe_many(probabilities)
            for label, counted in self.predictions.items():
                counted[0] += labels.count(label)

    def add(self, collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class RequestCollector:
    """The request path's counts of ``Metrics`` as Prometheus families, when scraped."""

    def __init__(self, metrics: Metrics):
        self.m = metrics

    def describe(self):
        return []

    def collect(self):
        m = self.m
        requests = CounterMetricFamily("mlci_requests", "HTTP requests answered, by route and status code.",
                                       labels=["route", "status"])
        for (route, status), (count, created) in list(m.requests.items()):
            requests.add_metric([route, str(status)], count, created=created if CREATED else None)
        yield requests
        latency = HistogramMetricFamily("mlci_request_duration_seconds", "Time to answer a request, by route.",
                                        labels=["route"])
        for route, tally in list(m.latency.items()):
            _histogram(latency, tally, route=route)
        yield latency
        records = HistogramMetricFamily("mlci_records_per_request",
                                        "Records scored per POST /predict answered 200.")
        _histogram(records, m.records)
        yield records
        predictions = CounterMetricFamily("mlci_predictions", "Records scored, by predicted label.", labels=["label"])
        for label, (count, created) in m.predictions.items():
            predictions.add_metric([label], count, created=created if CREATED else None)
        yield predictions
        probability = HistogramMetricFamily("mlci_prediction_probability",
                                            "Predicted probability of the positive class.")
        _histogram(probability, m.probability)
        yield probability


def _histogram(family: HistogramMetricFamily, tally: Tally, **labels) -> None:
    family.add_metric(list(labels.values()), tally.buckets(), tally.sum)
    if CREATED:
        family.samples.append(Sample(family.name + "_created", labels, tally.created, None))


class ModelCollector:
    """The served model (``mlci_model_info``) and the holder's reloads, read from the holder when scraped."""

    def __init__(self, holder):
        self.holder = holder

    def describe(self):
        return []  # figures made at scrape time: nothing to check at registration

    def collect(self):
        loaded = self.holder.current
        if loaded is not None:
            info = loaded.info
            yield InfoMetricFamily("mlci_model", "The model answering requests.", value={
                "name": str(info.get("name") or ""), "version": str(info.get("version") or ""),
                "sha256": str(info.get("model_sha256") or "")})
        reloads = CounterMetricFamily("mlci_model_reloads", "Looks at the model source that installed a new "
                                      "model (success) or could not (failure: the old one kept serving).",
                                      labels=["result"])
        reloads.add_metric(["success"], self.holder.reloads["success"])
        reloads.add_metric(["failure"], self.holder.reloads["failure"])
        yield reloads


class PredictionLogCollector:
    """What the prediction log (``predlog.PredictionLog``) wrote, dropped and failed to write."""

    def __init__(self, plog):
        self.plog = plog

    def describe(self):
        return []

    def collect(self):
        s = self.plog.stats()
        for name, help_text in (("written", "Records written to prediction-log files."),
                                ("dropped", "Records not logged because the write queue was full."),
                                ("sampled_out", "Records of requests left out by --log-sample.")):
            yield CounterMetricFamily(f"mlci_prediction_log_{name}_records", help_text, value=s[name])
        errors = CounterMetricFamily("mlci_prediction_log_write_errors", "Prediction-log files that could not be "
                                     "written, by kind (an errno name or exception type).", labels=["kind"])
        lost = CounterMetricFamily("mlci_prediction_log_failed_records", "Records lost to failed writes.",
                                   value=s["failed"])
        for kind, count in sorted(s["errors"].items()):
            errors.add_metric([kind], count)
        yield errors
        yield lost
        yield GaugeMetricFamily("mlci_prediction_log_bytes", "Bytes of prediction-log files in the directory.",
                                value=s["bytes"])
