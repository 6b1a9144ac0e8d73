"""Pure parts of the server's observability: log-line format, request ids, sampling, the live PSI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from mlci.monitoring.drift import feature_bins, prediction_bins, psi
from mlci.monitoring.profile import numeric_counts, numeric_edges
from mlci.serving.logs import JsonFormatter
from mlci.serving.observe import SANE_ID, Observe
from mlci.serving.predlog import sampled


def test_a_json_log_line_is_one_object_with_the_request_fields():
    rec = logging.LogRecord("mlci.access", logging.INFO, __file__, 1, "POST %s %d", ("/predict", 200), None)
    rec.__dict__.update(method="POST", path="/predict", status=200, duration_ms=1.5, request_id="r-1", records=3)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "POST /predict 200" and out["level"] == "INFO" and out["logger"] == "mlci.access"
    assert {k: out[k] for k in ("method", "path", "status", "duration_ms", "request_id", "records")} == {
        "method": "POST", "path": "/predict", "status": 200, "duration_ms": 1.5, "request_id": "r-1", "records": 3}
    assert out["time"].endswith("+00:00")
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        err = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert json.loads(JsonFormatter().format(err))["error"] == "ValueError: bad\nthing"


def test_request_ids_kept_when_sane_and_made_otherwise():
    o = Observe(app=None)
    assert o.request_id([(b"x-request-id", b"abc-123:x.y")]) == "abc-123:x.y"
    made = {o.request_id([]) for _ in range(100)} | {o.request_id([(b"x-request-id", b"a b")])}
    assert len(made) == 101 and all(SANE_ID.fullmatch(i.encode()) for i in made)
    for bad in (b"", b"a b", b"x" * 129, b"-x", b"a\r\nSet-Cookie: y", "é".encode()):
        assert not SANE_ID.fullmatch(bad)


def test_sampling_is_a_function_of_the_request_id_at_the_rate():
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [sampled(i, 0.25) for i in ids]
    assert picked == [sampled(i, 0.25) for i in ids]  # the same id, the same answer
    assert 0.23 < sum(picked) / len(ids) < 0.27
    assert all(sampled(i, 1.0) for i in ids[:100])
    assert [sampled(i, 0.25, seed=1) for i in ids] != picked  # the seed moves it
    low = {i for i, p in zip(ids, [sampled(i, 0.1) for i in ids]) if p}
    assert low <= {i for i, p in zip(ids, picked) if p}  # a lower rate keeps a subset


@pytest.mark.parametrize("unknown_accepted", [True, False])
def test_live_psi_equals_monitor_on_the_windows_records(unknown_accepted):
    """The live window fed as the server feeds it (a real FastScorer's encoded rows; Structs and dicts;
    batches of 1 to more than the window, wrapping the ring) gives drift.py's figures for its last
    ``size`` records: missing values, a category the encoder knows and the reference does not keep,
    numbers outside every edge, and an unknown category where the server accepts them (where it
    rejects them, none reaches the window)."""
    import msgspec
    from lightgbm import LGBMClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from mlci.serving.livedrift import LiveWindow
    from mlci.serving.scoring import FastScorer

    rng = np.random.default_rng(0)
    sexes = np.array(["Male", "Female", "Nonbinary"])[rng.choice(3, 4000, p=[0.6, 0.39, 0.01])]
    train = pd.DataFrame({"sex": sexes.astype(object), "age": rng.normal(40, 10, 4000)})
    y = (train["age"] + rng.normal(0, 10, 4000) > 45).astype(int).astype(str)
    enc = ColumnTransformer([("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                                    encoded_missing_value=np.nan), ["sex"]),
                             ("num", "passthrough", ["age"])])
    pipeline = Pipeline([("encode", enc), ("classify", LGBMClassifier(n_estimators=5, verbose=-1))]).fit(train, y)
    scorer = FastScorer(pipeline, "1")
    edges = numeric_edges(train["age"].to_numpy())
    ages_train = train["age"].to_numpy()
    ref = {"features": {"age": {"type": "numeric", "edges": edges, "counts": numeric_counts(ages_train, edges),
                                "missing": 0.0, "sample": sorted(train["age"][:1000].tolist())},
                        # "Nonbinary" is not kept by name: counted as other, like an unknown category
                        "sex": {"type": "categorical", "counts": {"Male": 2400, "Female": 1560, "\0other": 40},
                                "missing": 0.0}},
           "predictions": {"edges": [i / 20 for i in range(1, 20)], "counts": [50] * 20, "sample": [0.5]}}
    loaded = type("Loaded", (), {"reference": ref, "scorer": scorer})()

    n = 6000
    ages = [None if i % 17 == 0 else (150.0 if i % 101 == 0 else float(v)) for i, v in enumerate(rng.normal(50, 10, n))]
    unknown = "Robot" if unknown_accepted else "Male"
    sex = [None if i % 13 == 0 else ("Male", "Female", unknown, "Nonbinary")[i % 4] for i in range(n)]
    Record = msgspec.defstruct("Record", [("sex", "str | None"), ("age", "float | None"),
                                          ("fnlwgt", "int | None", None)])
    records = [Record(sex=s, age=a) if i % 2 else {"age": a, "sex": s} for i, (a, s) in enumerate(zip(ages, sex))]
    window = LiveWindow(size=1000, current=lambda: loaded, unknown_accepted=unknown_accepted)
    proba: list[float] = []
    fed: list = []  # what the window was given, in order
    i = 0
    for k, size in enumerate([1, 1, 7, 250, 2500, 1, 999, 3, 500, 1, 1200, 1]):  # 2500: over the window at once
        batch = records[i:i + size]
        kind = [r for r in batch if (type(r) is dict) == (k % 2 == 0)] if size > 1 else batch  # one kind per call
        encoded = scorer.encode(kind)
        p = scorer.proba(encoded).tolist()
        window.add(loaded, kind, encoded, p)
        proba.extend(p)
        i += size
        fed.extend(kind)
    got = window.psi()
    last = fed[-1000:]
    frame = pd.DataFrame({"age": [r["age"] if type(r) is dict else r.age for r in last],
                          "sex": [r["sex"] if type(r) is dict else r.sex for r in last]})
    assert got["records"] == 1000 and frame["sex"].isna().any() and (frame["sex"] == unknown).any()
    assert len(window._records) == (1000 if unknown_accepted else 0)  # records are kept only when needed
    for name in ("age", "sex"):  # monitor's PSI before it rounds to six places
        assert got["features"][name] == pytest.approx(psi(*feature_bins(ref["features"][name], frame[name])), abs=1e-12)
    assert got["predictions"] == pytest.approx(psi(*prediction_bins(ref["predictions"], np.asarray(proba[-1000:]))),
                                               abs=1e-12)
    assert got["features"]["age"] > 0.5 and got["features"]["sex"] > 0.1  # the shifts are there


def _samples(registry) -> dict:
    """A registry's samples as {(name, labels): value}, the ``_created`` times left out."""
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if not s.name.endswith("_created")}


def test_request_path_counts_expose_what_prometheus_clients_own_instruments_do():
    """The same observations through ``Metrics`` and through prometheus-client's Counter and Histogram
    (what it used before): the same families, samples and values (bucket edges included)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from mlci.serving import metrics as mm

    ours = mm.Metrics((">50K", "<=50K"))
    ref = CollectorRegistry()
    requests = Counter("mlci_requests", "HTTP requests answered, by route and status code.", ["route", "status"],
                       registry=ref)
    latency = Histogram("mlci_request_duration_seconds", "Time to answer a request, by route.", ["route"],
                        buckets=mm.LATENCY_BUCKETS, registry=ref)
    records = Histogram("mlci_records_per_request", "Records scored per POST /predict answered 200.",
                        buckets=mm.RECORD_BUCKETS, registry=ref)
    predictions = Counter("mlci_predictions", "Records scored, by predicted label.", ["label"], registry=ref)
    for label in (">50K", "<=50K"):
        predictions.labels(label)
    probability = Histogram("mlci_prediction_probability", "Predicted probability of the positive class.",
                            buckets=mm.PROBABILITY_BUCKETS, registry=ref)
    rng = np.random.default_rng(3)
    # Values on the bucket edges too: a bound is "less than or equal".
    seconds = [0.0005, 0.001, 0.0004, 0.003, 10.0, 12.0] + rng.exponential(0.01, 200).tolist()
    for k, s in enumerate(seconds):
        path, status = [("/predict", 200), ("/predict", 422), ("/health", 200), ("/no/such", 404)][k % 4]
        ours.request(path, status, s)
        requests.labels(path if path in mm.ROUTES else "other", str(status)).inc()
        latency.labels(path if path in mm.ROUTES else "other").observe(s)
    batches = [[0.05], [0.5, 0.55, 1.0, 0.0], rng.uniform(size=300).round(2).tolist(), [0.95] * 3]
    for p in batches:
        labels = [">50K" if v >= 0.5 else "<=50K" for v in p]
        ours.scored(p, labels)
        records.observe(len(p))
        for v, label in zip(p, labels):
            probability.observe(v)
            predictions.labels(label).inc()
    got, want = _samples(ours.registry), _samples(ref)
    assert got.keys() == want.keys()
    for key, value in want.items():  # a sum added in another order may differ in its last bits
        assert got[key] == (pytest.approx(value, rel=1e-12) if key[0].endswith("_sum") else value), key
    assert got[("mlci_requests_total", frozenset({("route", "other"), ("status", "404")}))] == len(seconds) // 4
    created = [s for f in ours.registry.collect() for s in f.samples if s.name.endswith("_created")]
    assert {s.name for s in created} == {"mlci_requests_created", "mlci_request_duration_seconds_created",
                                         "mlci_records_per_request_created", "mlci_predictions_created",
                                         "mlci_prediction_probability_created"}


def test_a_logged_batch_repeats_each_requests_fields_over_its_records(tmp_path):
    """The writer's table: requests of 1 and of several records, from both request paths (Structs and
    dicts), in order, each record with its own request's id, time and answer -- after the trip the
    feeder gives them to the writer process (MessagePack)."""
    import msgspec

    from mlci.serving.logwriter import build_table, decoder
    from mlci.serving.predlog import PredictionLog
    from mlci.stages.monitor import LOG_COLUMNS

    Record = msgspec.defstruct("Record", [("age", int | None), ("sex", str | None), ("hours", float | None),
                                          ("dropped", float | None, None)], gc=False)
    plog = PredictionLog(tmp_path, [("sex", "categorical"), ("age", "integer"), ("hours", "float")])
    requests = [("a", [Record(30, "Male", 40.0)], [0.25], ["<=50K"]),
                ("b", [Record(None, "Female", 2), {"age": 50, "sex": None, "hours": 1.5}, Record(70, None, None)],
                 [0.5, 0.75, 0.125], [">50K", ">50K", "<=50K"]),
                ("c", [{"age": 1, "sex": "x", "hours": None}], [1.0], [">50K"])]
    for rid, recs, p, labels in requests:
        plog.add(rid, f"sha-{rid}", recs, p, labels)
        # A value MessagePack cannot hold (an integer of 2**64 or more, which the pydantic path lets by)
        # loses its request, counted, and leaves nothing of it in the frame.
        plog.add("big", "sha-big", [{"age": 2**64, "sex": "Male", "hours": 1.0}], [0.5], ["<=50K"])
    frame, n = plog._take_frame()  # what the feeder sends, decoded as the writer does
    assert n == 5 and int.from_bytes(frame[:4], "little") == len(frame) - 4
    assert plog._added == plog._taken == 5  # the lost requests never counted against the queue's bound
    assert plog.stats()["failed"] == 3 and plog.stats()["errors"] == {"OverflowError": 3}
    batch = decoder([name for name, _ in plog.columns]).decode(bytes(frame[4:]))
    table = build_table(batch, plog.columns, LOG_COLUMNS)
    col = {name: table.column(name).to_pylist() for name in table.column_names}
    assert table.column_names[:3] == ["sex", "age", "hours"]
    assert col["request_id"] == ["a", "b", "b", "b", "c"]
    assert col["model_sha256"] == ["sha-a", "sha-b", "sha-b", "sha-b", "sha-c"]
    assert col["probability"] == [0.25, 0.5, 0.75, 0.125, 1.0]
    assert col["prediction"] == ["<=50K", ">50K", ">50K", "<=50K", ">50K"]
    assert col["sex"] == ["Male", "Female", None, None, "x"]
    assert col["age"] == [30, None, 50, 70, 1] and str(table.schema.field("age").type) == "int64"
    assert col["hours"] == [40.0, 2.0, 1.5, None, None] and str(table.schema.field("hours").type) == "double"
    ms = [int(item[2] * 1000) for item in batch]
    assert table.column("served_at").cast("int64").to_pylist() == [ms[0], ms[1], ms[1], ms[1], ms[2]]
    assert str(table.schema.field("served_at").type) == "timestamp[ms, tz=UTC]"


def test_the_feeders_frames_reach_the_writers_own_loop_whole_and_in_order(tmp_path):
    """More requests than a frame holds, single records and batches: the frames the feeder takes, one
    stream on a pipe as the writer process reads it (``Writer.run``), become one Parquet file with
    every record in order, and the writer reports them all."""
    import io
    import os
    import threading

    import pyarrow.parquet as pq

    from mlci.serving.logwriter import Writer
    from mlci.serving.predlog import SLICE, PredictionLog
    from mlci.stages.monitor import LOG_COLUMNS

    columns = [("age", "integer"), ("sex", "categorical")]
    plog = PredictionLog(tmp_path, columns)
    expected = []
    for i in range(2 * SLICE + 37):
        recs = [{"age": i, "sex": "Male"}] if i % 10 else [{"age": i, "sex": "Female"}, {"age": -i, "sex": None}]
        plog.add(f"r{i}", "sha", recs, [i / 1000] * len(recs), ["<=50K"] * len(recs))
        expected += [(f"r{i}", r["age"], r["sex"]) for r in recs]
    frames = []
    while plog._queue:
        frames.append(plog._take_frame())
    assert [int.from_bytes(f[5:9], "big") for f, _ in frames] == [SLICE, SLICE, 37]  # requests per frame
    assert plog._added == plog._taken == sum(n for _, n in frames) == len(expected)
    read, write = os.pipe()

    def feed():
        with os.fdopen(write, "wb") as pipe:
            pipe.write(b"".join(f for f, _ in frames))

    feeder = threading.Thread(target=feed)
    feeder.start()
    told = io.StringIO()
    Writer(tmp_path, columns, LOG_COLUMNS, max_bytes=1 << 30, rows_per_file=10**6, flush_seconds=3600,
           out=told).run(read)
    feeder.join()
    os.close(read)
    (path,) = tmp_path.glob("predictions-*.parquet")
    table = pq.read_table(path)
    got = list(zip(*(table.column(c).to_pylist() for c in ("request_id", "age", "sex"))))
    assert got == expected
    assert [json.loads(line) for line in told.getvalue().splitlines()][-1]["wrote"] == len(expected)
