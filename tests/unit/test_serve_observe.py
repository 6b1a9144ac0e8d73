"""Pure parts of the server's observability: log-line format, request ids, sampling, the live PSI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from mlci.monitoring.drift import feature_drift, prediction_drift
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


def test_live_psi_equals_monitor_on_records_with_missing_values():
    """compute_psi on Structs (fields in another order, one more) and dict records gives drift.py's figures for the same values."""
    from types import SimpleNamespace

    from mlci.serving.livedrift import compute_psi

    rng = np.random.default_rng(0)
    train = rng.normal(40, 10, 5000)
    edges = numeric_edges(train)
    ref = {"features": {"age": {"type": "numeric", "edges": edges, "counts": numeric_counts(train, edges),
                                "missing": 0.0, "sample": sorted(train[:1000].tolist())},
                        "sex": {"type": "categorical", "counts": {"Male": 3000, "Female": 2000, "\0other": 0},
                                "missing": 0.0}},
           "predictions": {"edges": [i / 20 for i in range(1, 20)], "counts": [50] * 20, "sample": [0.5]}}
    ages = [None if i % 17 == 0 else float(v) for i, v in enumerate(rng.normal(50, 10, 3000))]
    sexes = [None if i % 13 == 0 else ("Male", "Female", "Other")[i % 3] for i in range(3000)]
    import msgspec

    Record = msgspec.defstruct("Record", [("sex", "str | None"), ("age", "float | None"), ("fnlwgt", "int | None", None)])
    records = [Record(sex=s, age=a) if i % 2 else {"age": a, "sex": s}
               for i, (a, s) in enumerate(zip(ages, sexes))]
    proba = rng.uniform(0, 1, 3000).tolist()
    got = compute_psi(SimpleNamespace(reference=ref), records, proba)
    frame = pd.DataFrame({"age": ages, "sex": sexes})
    assert abs(got["features"]["age"] - feature_drift(ref["features"]["age"], frame["age"], 0)["psi"]) < 1e-6
    assert abs(got["features"]["sex"] - feature_drift(ref["features"]["sex"], frame["sex"], 0)["psi"]) < 1e-6
    assert abs(got["predictions"] - prediction_drift(ref["predictions"], np.asarray(proba), 0)["psi"]) < 1e-6
    assert got["features"]["age"] > 0.5 and got["records"] == 3000
