"""``GET /metrics``: the server's figures in Prometheus' text format (prometheus-client).

Every app has its own ``CollectorRegistry`` (not the library's global one), so several apps in one
process (the tests) do not clash. Two kinds of figures:

* Counted on the request path, with the library's ``Counter`` and ``Histogram`` (their children
  resolved once, not per request: ``labels()`` costs more than the ``inc()`` itself): requests by
  route and status, latency by route, records per request, predictions by label and the predicted
  probability.
* Read when scraped, by collectors that look at what other parts already keep (``ServerState``):
  the served model (an Info, so it follows a reload), the holder's reload counts, the prediction
  log's written / dropped / failed records, and the live drift (``livedrift.py``), which is computed
  then and only then -- never on a request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

#: The routes a request is counted under; any other path is "other" (a scan of random paths must not
#: make a time series per path).
ROUTES = ("/predict", "/health", "/ready", "/model", "/metrics", "/admin/reload", "/openapi.json", "/docs",
          "/docs/oauth2-redirect", "/redoc")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECORD_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
PROBABILITY_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 20))  # the reference profile's 20 bins


class Metrics:
    """The registry of one app and the request path's instruments."""

    def __init__(self, labels: tuple[str, str]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlci_requests", "HTTP requests answered, by route and status code.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("mlci_request_duration_seconds", "Time to answer a request, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.records = Histogram("mlci_records_per_request", "Records scored per POST /predict answered 200.",
                                 buckets=RECORD_BUCKETS, registry=r)
        self.predictions = Counter("mlci_predictions", "Records scored, by predicted label.", ["label"], registry=r)
        self.probability = Histogram("mlci_prediction_probability", "Predicted probability of the positive class.",
                                     buckets=PROBABILITY_BUCKETS, registry=r)
        self._by_label = {label: self.predictions.labels(label) for label in labels}
        self._counted: dict[tuple[str, int], object] = {}  # children made on first use: no empty series
        self._timed: dict[str, object] = {}
        self._routes = frozenset(ROUTES)

    def request(self, path: str, status: int, seconds: float) -> None:
        """One answered request (called by ``observe.Observe`` once the answer is sent)."""
        route = path if path in self._routes else "other"
        child = self._counted.get((route, status))
        if child is None:
            child = self._counted[(route, status)] = self.requests.labels(route, str(status))
        child.inc()
        timer = self._timed.get(route)
        if timer is None:
            timer = self._timed[route] = self.latency.labels(route)
        timer.observe(seconds)

    def scored(self, probabilities: list[float], labels: list[str]) -> None:
        """The records of one 200 answer. One ``observe`` per record: about 1.2 µs each (measured),
        a few per cent of a large batch's own cost per record."""
        n = len(labels)
        self.records.observe(n)
        observe = self.probability.observe
        for v in probabilities:
            observe(v)
        if n == 1:
            self._by_label[labels[0]].inc()
        else:
            for label, child in self._by_label.items():
                k = labels.count(label)
                if k:
                    child.inc(k)

    def add(self, collector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


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
