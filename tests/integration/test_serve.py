"""`mlci serve`: a real uvicorn server in a subprocess, on loopback, serving a real registry.

The registry is a SQLite file filled by running the real pipeline twice (two
versions; the champion is the second). Each server is started by the test on
a free port (``--port 0``; the port is read from its start-up line) and
stopped at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import PATH_VARS, populate, run_mlci

from mlci import errors

TOKEN = "test-token-0123456789"
INTS = ("age", "education_num", "capital_gain", "capital_loss", "hours_per_week")
GOOD = {"age": 39, "workclass": "State-gov", "education": "Bachelors", "education_num": 13,
        "marital_status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
        "race": "White", "sex": "Male", "capital_gain": 2174, "capital_loss": 0, "hours_per_week": 40,
        "native_country": "United-States"}


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS and k != "MLCI_SERVE_TOKEN"}
    env.update(MLCI_NO_TRACK="", **(extra or {}))
    return env


def git_workspace(root: Path) -> Path:
    """A workspace in ``root`` whose params.yaml is committed to git (a run records its commit)."""
    ws = populate(root)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "add", "params.yaml"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "params"], cwd=ws, check=True)
    return ws


@pytest.fixture(scope="module")
def registry_ws(tmp_path_factory) -> Path:
    """A git workspace with a tracked registry: v1 (defaults) and v2 (300 trees), v2 the champion."""
    ws = git_workspace(tmp_path_factory.mktemp("serve"))
    for args in ((), ("-S", "train.n_estimators=300")):
        proc = run_mlci("run", "--json", "--until", "gate", *args, cwd=ws, env={"MLCI_NO_TRACK": ""})
        assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)["tracking"]
    assert summary["version"] == "2" and summary["promoted"] is True, summary
    return ws


class Server:
    """``mlci serve`` as a real process; ``url`` once it listens."""

    def __init__(self, cwd: Path, *args: str, token: str | None = TOKEN):
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        env = _env({"MLCI_SERVE_TOKEN": token} if token else None)
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "mlci", "serve", "--port", "0", *args], cwd=cwd,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = self.log.read_text()
            if "serving " in text and " on http://" in text:
                self.url = text.split(" on ", 1)[1].split()[0]
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"mlci serve exited {self.proc.returncode}:\n{text}")
            time.sleep(0.1)
        else:
            raise AssertionError(f"mlci serve did not start:\n{self.log.read_text()}")
        self.client = client(self.url)
        while self.client.get("/ready").status_code != 200:  # uvicorn's start-up after the bind
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self._log.close()

    def pid(self) -> int:
        return self.proc.pid


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30)


@pytest.fixture(scope="module")
def server(registry_ws):
    s = Server(registry_ws, "--poll", "0", "--max-batch", "2000", "--max-body-bytes", "1000000")
    yield s
    s.stop()


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON records in the data's schema: None for missing, integers as integers."""
    out = []
    for row in frame.to_dict("records"):
        rec = {}
        for k, v in row.items():
            if v is None or (isinstance(v, float) and np.isnan(v)):
                rec[k] = None
            else:
                rec[k] = int(v) if k in INTS else v
        out.append(rec)
    return out


def pipeline_proba(model, recs: list[dict]) -> np.ndarray:
    """What the Pipeline itself says for the same records (missing as NaN, categoricals as objects)."""
    frame = pd.DataFrame(recs).astype(object).where(lambda f: f.notna(), np.nan)
    for col in INTS:
        frame[col] = frame[col].astype(float)
    return model.predict_proba(frame)[:, list(model.classes_).index(">50K")]


def load_model(ws: Path):
    from mlci.modeling.artifact import load_model as load

    return load(ws / "models")[0]


# -- the fast path ---------------------------------------------------------------------------------


def test_fast_path_equals_pipeline_on_real_rows_with_unknown_and_missing(registry_ws):
    from mlci.serving.scoring import FastScorer

    model = load_model(registry_ws)
    frame = pd.concat([pd.read_parquet(registry_ws / "data" / "processed" / f"{s}.parquet")
                       for s in ("validation", "test")]).drop(columns=["income"])
    recs = records(frame)[:4000]
    rng = np.random.default_rng(0)
    for i in rng.choice(len(recs), 400, replace=False):  # unknown categories
        recs[i][rng.choice(["workclass", "occupation", "native_country", "race"])] = "Atlantis"
    for i in rng.choice(len(recs), 400, replace=False):  # missing values, numbers too
        recs[i][rng.choice(["age", "hours_per_week", "education", "sex", "capital_gain"])] = None
    assert sum(r["workclass"] is None for r in recs) > 50  # the data's own missing values are in there
    scorer = FastScorer(model, ">50K")
    p, labels = scorer.score(recs)
    expected = pipeline_proba(model, recs)
    assert p.shape == (4000,) and np.max(np.abs(p - expected)) <= 1e-12
    assert labels == [str(x) for x in model.predict(pd.DataFrame(recs).astype(object).where(
        lambda f: f.notna(), np.nan).astype({c: float for c in INTS}))]
    one, _ = scorer.score([recs[7]])  # the preallocated single row gives the same
    assert one[0] == p[7]


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()  # not orjson: it cannot write integers over 64 bits


def _rec(**change) -> bytes:
    return _json(dict(GOOD, **change))


# Bodies for the two request paths (msgspec in front, pydantic behind): the good ones must take the
# front path; every one must get the same answer from both. Raw bytes, so that duplicate keys and
# broken JSON can be said.
GOOD_BODIES = [
    _json(GOOD), _json([GOOD, GOOD]), _rec(workclass=None, age=None, capital_gain=None),
    _json({k: None for k in GOOD}), _rec(fnlwgt=77516), _rec(fnlwgt=None), _rec(age=0), _rec(age=120),
    b' {"age": 39, "workclass": "Private", "education": "Masters", "education_num": 14, '
    b'"marital_status": "Divorced", "occupation": "Sales", "relationship": "Unmarried", "race": "Black", '
    b'"sex": "Female", "capital_gain": 0, "capital_loss": 0, "hours_per_week": 1, "native_country": null} ',
]
BAD_BODIES = [
    _rec(age="39"), _rec(age=39.0), _rec(age=39.5), _rec(age=True), _rec(age=-1), _rec(age=121),
    _rec(hours_per_week=500), _rec(capital_gain=1e5), _rec(sex=1), _rec(sex=["Male"]), _rec(agee=39), _rec(fnlwgt=-1), _rec(fnlwgt="1"),
    _rec(fnlwgt=2**60),  # valid for pydantic, over msgspec's exact-integer bound: the pydantic path's 200
    _rec(fnlwgt=123456789012345678901),  # orjson makes it a float: pydantic's int_type
    _rec(fnlwgt=1.5), _json({k: v for k, v in GOOD.items() if k != "sex"}), _json({}), _json([]), _json([{}]),
    _json([GOOD, dict(GOOD, age="x"), GOOD]), _json([GOOD, 5]), _json("GOOD"), _json(5), b"null", b"",
    b'{"age": 39,', b"[" + _json(GOOD) + b",]", _json(GOOD).replace(b'"age":39', b'"age":500,"age":39'),
    _json(GOOD).replace(b'"age":39', b'"age":39,"age":500'), _rec(native_country="\u00e9" * 201),
    _rec(native_country="x" * 201),
]
# Unknown categories: refused by default, scored as missing with --unknown-categories accept.
UNKNOWN_BODIES = [_rec(workclass="Astronaut"), _rec(workclass=""), _rec(native_country="Atlantis"),
                  _json([GOOD, dict(GOOD, native_country="\u00e9" * 200)])]


def test_msgspec_decoder_accepts_only_what_the_pydantic_model_accepts_and_scores_it_the_same(registry_ws):
    """The front path's decoder against the request model, in both unknown-category modes: whatever it
    accepts pydantic accepts too, with the same probabilities; valid bodies of real rows it accepts."""
    import msgspec
    from pydantic import TypeAdapter

    from mlci.data.dataset import DatasetDef
    from mlci.serving.schema import record_model, request_decoder
    from mlci.serving.scoring import FastScorer

    model = load_model(registry_ws)
    card = json.loads((registry_ws / "models" / "model.json").read_text())
    ds = DatasetDef.model_validate(card["dataset"])
    scorer = FastScorer(model, ">50K")
    real = records(pd.read_parquet(registry_ws / "data" / "processed" / "test.parquet").drop(columns=["income"]))
    real = real[:2000]
    assert sum(r["occupation"] is None for r in real) > 20  # the data's own missing values
    for mode in ("reject", "accept"):
        decoder = request_decoder(ds, scorer.categories, mode, max_batch=2000)
        Record = record_model(ds, scorer.categories, mode)
        pyd = TypeAdapter(Record | list[Record])
        good = [*GOOD_BODIES, _json(real), _json(real[:1]), *(UNKNOWN_BODIES if mode == "accept" else ())]
        for body in [*good, *BAD_BODIES, *(UNKNOWN_BODIES if mode == "reject" else ())]:
            try:
                fast = decoder.decode(body)
            except msgspec.MsgspecError:
                assert body not in good, (mode, body[:200])  # a valid body takes the front path
                continue
            assert body in good, (mode, body[:200])  # the rest are left to pydantic
            slow = pyd.validate_python(orjson.loads(body))  # raises if the decoder accepted too much
            fast, slow = (x if isinstance(x, list) else [x] for x in (fast, slow))
            p_fast, labels_fast = scorer.score(fast)
            p_slow, labels_slow = scorer.score([r.__dict__ for r in slow])  # as the pydantic path hands them over
            assert p_fast.tolist() == p_slow.tolist() and labels_fast == labels_slow
    # 2001 records: over the batch limit, left to the pydantic path (and its 413)
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(_json([GOOD] * 2001))


def _both_paths(c: httpx.Client, body: bytes) -> tuple[httpx.Response, httpx.Response]:
    """The same body through the front path and, with a content type it leaves to FastAPI, the pydantic path."""
    front = c.post("/predict", content=body, headers={"content-type": "application/json"})
    behind = c.post("/predict", content=body, headers={"content-type": "application/json; charset=utf-8"})
    return front, behind


def _assert_same_answers(c: httpx.Client, accept: bool) -> None:
    for body in GOOD_BODIES + BAD_BODIES + UNKNOWN_BODIES:
        front, behind = _both_paths(c, body)
        assert (front.status_code, front.content) == (behind.status_code, behind.content), body[:300]
        assert front.headers["content-type"] == behind.headers["content-type"] == "application/json"
        assert front.status_code in (200, 422), (front.status_code, front.text[:300])
        if body in GOOD_BODIES or (accept and body in UNKNOWN_BODIES):
            assert front.status_code == 200
        if body in UNKNOWN_BODIES and not accept:
            assert front.status_code == 422 and front.json()["detail"][0]["type"] == "literal_error"


def test_both_request_paths_give_the_same_answers(server):
    """Byte for byte: the 200s (probabilities, labels, model and version) and the 422s (pydantic's
    locations, messages and types)."""
    _assert_same_answers(server.client, accept=False)
    front, _ = _both_paths(server.client, _rec(age="39"))
    assert front.json()["detail"] == [{"loc": ["body", "age"], "msg": "Input should be a valid integer",
                                       "type": "int_type"}]
    front, _ = _both_paths(server.client, _json([GOOD, dict(GOOD, workclass="Astronaut")]))
    assert [e["loc"] for e in front.json()["detail"]] == [["body", 1, "workclass"]]


def test_both_request_paths_agree_with_unknown_categories_accepted(registry_ws):
    s = Server(registry_ws, "--poll", "0", "--unknown-categories", "accept")
    try:
        _assert_same_answers(s.client, accept=True)
        unknown, _ = _both_paths(s.client, _rec(native_country="Atlantis"))
        missing, _ = _both_paths(s.client, _rec(native_country=None))
        assert unknown.status_code == 200 and unknown.content == missing.content  # scored as missing
        too_long, _ = _both_paths(s.client, _rec(native_country="x" * 201))
        assert too_long.status_code == 422 and too_long.json()["detail"][0]["type"] == "string_too_long"
    finally:
        s.stop()


# -- the API ---------------------------------------------------------------------------------------


def test_health_ready_and_model_describe_the_champion(server, registry_ws):
    c = server.client
    assert c.get("/health").json() == {"status": "ok"}
    assert c.get("/ready").json() == {"ready": True, "version": "2"}
    info = c.get("/model").json()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=registry_ws, capture_output=True, text=True).stdout.strip()
    card = json.loads((registry_ws / "models" / "model.json").read_text())
    assert info["name"] == "adult-income" and info["version"] == "2" and info["alias"] == "champion"
    assert info["source"] == "registry" and info["git_commit"] == head and info["last_error"] is None
    assert info["model_sha256"] == card["sha256"] and info["trained_at"] == card["trained_at"]
    assert info["data_sha256"].startswith("sha256:5b00264637dbfec3")
    assert 0.86 < info["metrics"]["validation_acc"] < 0.9 and 0.9 < info["metrics"]["validation_roc_auc"] < 0.95
    # No CORS unless configured; loopback only by default.
    r = c.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    assert server.url.startswith("http://127.0.0.1:")


def test_predict_one_and_many_match_the_pipeline(server, registry_ws):
    model = load_model(registry_ws)  # the workspace's model is v2, the one served
    recs = records(pd.read_parquet(registry_ws / "data" / "processed" / "test.parquet").drop(columns=["income"]))[:500]
    recs[3] = {**recs[3], "fnlwgt": 77516}  # a dropped column of the data's schema is accepted, and ignored
    r = server.client.post("/predict", json=recs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "adult-income" and body["version"] == "2" and len(body["predictions"]) == 500
    got = np.array([p["probability"] for p in body["predictions"]])
    expected = pipeline_proba(model, [{k: v for k, v in x.items() if k != "fnlwgt"} for x in recs])
    assert np.max(np.abs(got - expected)) <= 1e-12
    assert [p["prediction"] for p in body["predictions"]] == [">50K" if v > 0.5 else "<=50K" for v in expected]
    single = server.client.post("/predict", json=GOOD).json()
    assert single["predictions"] == [{"probability": pytest.approx(float(pipeline_proba(model, [GOOD])[0]), abs=1e-12),
                                      "prediction": "<=50K"}]
    missing = server.client.post("/predict", json={**GOOD, "workclass": None, "age": None})
    assert missing.status_code == 200 and 0 <= missing.json()["predictions"][0]["probability"] <= 1


def test_request_line_and_header_limits(server):
    from mlci.serving.limits import MAX_HEADER_BYTES, MAX_TARGET_BYTES

    c = server.client
    assert c.get("/health", headers={"X-Big": "x" * (MAX_HEADER_BYTES + 1)}).status_code == 431
    assert c.post("/predict", json=GOOD, headers={"X-Big": "x" * (MAX_HEADER_BYTES + 1)}).status_code == 431
    assert c.get("/health?" + "q" * (MAX_TARGET_BYTES + 1)).status_code == 414
    assert c.get("/health", headers={"X-Small": "x" * 1000}).status_code == 200  # ordinary headers pass


def test_the_datas_own_field_names_are_accepted(server):
    """The Kaggle file's header spells them `education.num`; the server takes them as the loader does."""
    kaggle = {k.replace("_", "."): v for k, v in GOOD.items()}
    assert "education.num" in kaggle
    same = server.client.post("/predict", json=GOOD).json()["predictions"]
    r = server.client.post("/predict", json=[kaggle, GOOD])
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == same * 2
    twice = server.client.post("/predict", json={**kaggle, "education_num": 13})
    assert twice.status_code == 422 and "given twice" in twice.text


@pytest.mark.parametrize("change, field, kind", [
    ({"age": "39"}, "age", "int_type"),  # a wrong type
    ({"age": 39.5}, "age", "int_type"),
    ({"hours_per_week": 500}, "hours_per_week", "less_than_equal"),  # out of range
    ({"age": -1}, "age", "greater_than_equal"),
    ({"workclass": "Astronaut"}, "workclass", "literal_error"),  # unknown category (rejected by default)
    ({"sex": 1}, "sex", "literal_error"),
    ({"agee": 39}, "agee", "extra_forbidden"),  # a misspelt field is not scored as missing
])
def test_bad_records_are_422_naming_the_field(server, change, field, kind):
    for body, loc in ((dict(GOOD, **change), ["body", field]), ([GOOD, dict(GOOD, **change)], ["body", 1, field])):
        r = server.client.post("/predict", json=body)
        assert r.status_code == 422, r.text
        assert {"loc": loc, "type": kind} in [{"loc": e["loc"], "type": e["type"]} for e in r.json()["detail"]]


def test_missing_field_empty_batch_and_limits(server):
    c = server.client
    r = c.post("/predict", json={k: v for k, v in GOOD.items() if k != "education"})
    assert r.status_code == 422 and r.json()["detail"] == [{"loc": ["body", "education"], "msg": "Field required",
                                                            "type": "missing"}]
    assert c.post("/predict", json=[]).status_code == 422
    r = c.post("/predict", json=[GOOD] * 2001)  # --max-batch 2000
    assert r.status_code == 413 and "at most 2000" in r.json()["detail"]
    assert c.post("/predict", json=[GOOD] * 2000).status_code == 200
    r = c.post("/predict", json=[{}] * 1500)  # 13 errors per record: the answer lists the first 100
    assert r.status_code == 422 and len(r.json()["detail"]) == 100
    assert r.json()["detail"][0]["loc"] == ["body", 0, "age"]
    r = c.post("/predict", content=b"[" + b" " * 1_000_001 + b"]", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit applies to what arrives
        for _ in range(200):
            yield b" " * 10_000

    r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_admin_reload_needs_the_token(server):
    c = server.client
    assert c.post("/admin/reload").status_code == 401
    assert c.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
    r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json() == {"status": "unchanged", "version": "2", "previous": None, "error": None}


def test_openapi_shows_enums_and_ranges(server):
    spec = server.client.get("/openapi.json").json()
    props = spec["components"]["schemas"]["Record"]["properties"]
    assert {"type": "string", "enum": ["Female", "Male"]} in props["sex"]["anyOf"]
    age = next(x for x in props["age"]["anyOf"] if x.get("type") == "integer")
    assert age["minimum"] == 0 and age["maximum"] == 120
    assert set(spec["components"]["schemas"]["Record"]["required"]) == set(GOOD)


def test_schemathesis_finds_no_server_error_and_every_response_matches_the_schema(server, tmp_path):
    st = Path(sys.executable).with_name("st")
    proc = subprocess.run(
        [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error,response_schema_conformance",
         "--max-examples", "25", "--seed", "1", "--workers", "1", "--no-color", "--generation-database", "none",
         "--header", f"Authorization: Bearer {TOKEN}", "--request-timeout", "20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout and "6 selected / 6 total" in proc.stdout  # GET /metrics is the sixth


def test_soak_mixed_good_and_bad_requests(server, registry_ws):
    """A fixed count (3,000) and time bound of mixed requests: every good one answered, every bad one 4xx,
    the server's memory growth after warm-up under 30 MB."""
    import psutil

    recs = records(pd.read_parquet(registry_ws / "data" / "processed" / "test.parquet").drop(columns=["income"]))
    proc = psutil.Process(server.pid())
    bad = [dict(GOOD, age="x"), {k: v for k, v in GOOD.items() if k != "sex"}, dict(GOOD, capital_loss=10 ** 6),
           dict(GOOD, native_country="Atlantis"), [GOOD] * 2001]
    c = client(server.url)
    failed_good, wrong_bad, answered, single_ms = [], [], 0, []
    # Bodies encoded once: the client's own JSON encoding is not what is measured.
    singles = [orjson.dumps(r) for r in recs[:1000]]
    batches = [orjson.dumps(recs[k:k + 100]) for k in range(0, 3000, 100)]
    bad = [orjson.dumps(b) for b in bad]
    json_type = {"content-type": "application/json"}

    def one(i: int) -> None:
        nonlocal answered
        kind = i % 10
        if kind < 5:
            body, n = singles[i % len(singles)], 1
        elif kind == 5:
            body, n = batches[i % len(batches)], 100
        else:
            body, n = bad[(i // 10) % len(bad)], 0
        t0 = time.perf_counter()
        r = c.post("/predict", content=body, headers=json_type)
        if n == 1:
            single_ms.append((time.perf_counter() - t0) * 1000)
        answered += 1
        if n and (r.status_code != 200 or len(r.json()["predictions"]) != n):
            failed_good.append((i, r.status_code, r.text[:200]))
        if not n and not 400 <= r.status_code < 500:
            wrong_bad.append((i, r.status_code, r.text[:200]))

    for i in range(300):  # warm-up: allocator arenas, pydantic's and LightGBM's caches
        one(i)
    rss0 = proc.memory_info().rss
    started = time.monotonic()
    for i in range(300, 3000):
        one(i)
        assert time.monotonic() - started < 120, "soak exceeded its time bound"
    growth = (proc.memory_info().rss - rss0) / 2**20
    c.close()
    assert answered == 3000 and failed_good == [] and wrong_bad == []
    assert growth < 30, f"RSS grew {growth:.1f} MB"
    # Keep-alive requests are not held up by Nagle's algorithm meeting the client's delayed ACK
    # (40 ms each when the server's sockets lacked TCP_NODELAY).
    assert float(np.median(single_ms)) < 25


# -- hot swap --------------------------------------------------------------------------------------


class Hammer:
    """Good requests from another thread until stopped: failures and the versions that answered."""

    def __init__(self, url: str):
        self.client = client(url)
        self.failures: list = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self.client.post("/predict", json=[GOOD, GOOD])
                if r.status_code != 200 or len(r.json()["predictions"]) != 2:
                    self.failures.append((r.status_code, r.text[:200]))
                else:
                    v = r.json()["version"]
                    if not self.versions or self.versions[-1] != v:
                        self.versions.append(v)
            except httpx.HTTPError as e:
                self.failures.append(repr(e))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.client.close()


def _wait_for(fn, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_champion_moves_and_a_corrupt_one_is_refused_without_failing_a_request(registry_ws):
    import mlflow

    s = Server(registry_ws, "--poll", "0.5")
    hammer = Hammer(s.url)
    try:
        assert s.client.get("/model").json()["version"] == "2"
        proc = run_mlci("promote", "1", "--reason", "serve test", cwd=registry_ws, env={"MLCI_NO_TRACK": ""})
        assert proc.returncode == 0, proc.stderr
        _wait_for(lambda: s.client.get("/model").json()["version"] == "1")
        time.sleep(1.0)  # answered by v1 for a while
        # v2's artifact is corrupted in the store; then the alias is pointed at it behind mlci's back.
        uri = f"sqlite:///{registry_ws / 'mlflow.db'}"
        mlc = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        sha = mlc.get_model_version("adult-income", "2").tags["mlci.model_sha256"]
        pkl = next(p for p in (registry_ws / "mlartifacts").rglob("model.pkl")
                   if "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() == sha)
        good_bytes = pkl.read_bytes()
        pkl.write_bytes(good_bytes[:-100] + b"\0" * 100)
        mlc.set_registered_model_alias("adult-income", "champion", "2")
        err = _wait_for(lambda: s.client.get("/model").json()["last_error"])
        assert err["version"] == "2" and "sha256" in err["error"]
        info = s.client.get("/model").json()
        assert info["version"] == "1" and info["model_sha256"] != sha
        r = s.client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})  # forced: tried again
        assert r.status_code == 200 and r.json()["status"] == "kept" and r.json()["version"] == "1"
        assert s.client.post("/predict", json=GOOD).json()["version"] == "1"
        time.sleep(1.0)
        # Repaired: the poller does not retry a failed version at once, /admin/reload does, and swaps.
        pkl.write_bytes(good_bytes)
        time.sleep(1.5)
        assert s.client.get("/model").json()["version"] == "1"
        r = s.client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.json() == {"status": "swapped", "version": "2", "previous": "1", "error": None}
        assert s.client.get("/model").json()["last_error"] is None
        time.sleep(1.0)
    finally:
        hammer.stop()
        s.stop()
    assert hammer.failures == []
    assert hammer.versions == ["2", "1", "2"]
    log = s.log.read_text()
    assert "now serving adult-income version 1 (was 2)" in log
    assert "model 2 not loaded, still serving version 1" in log and "Traceback" not in log


# -- the command line ------------------------------------------------------------------------------


def test_model_dir_is_served_and_a_changed_pickle_is_refused(registry_ws, tmp_path):
    s = Server(registry_ws, "--model-dir", "models", "--poll", "0", "--unknown-categories", "accept",
               "--cors-origin", "https://app.example", token=None)
    try:
        ok = s.client.post("/predict", json=GOOD, headers={"Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = s.client.post("/predict", json=GOOD, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        info = s.client.get("/model").json()
        card = json.loads((registry_ws / "models" / "model.json").read_text())
        assert info["source"] == "directory" and info["model_sha256"] == card["sha256"] and info["alias"] is None
        assert info["metrics"]["validation_acc"] > 0.86  # results/train_metadata.json of this very model
        r = s.client.post("/predict", json=dict(GOOD, native_country="Atlantis"))  # accepted: scored as missing
        assert r.status_code == 200
        assert r.json()["predictions"][0]["probability"] == s.client.post(
            "/predict", json=dict(GOOD, native_country=None)).json()["predictions"][0]["probability"]
        assert s.client.post("/admin/reload", headers={"Authorization": "Bearer x"}).status_code == 403  # disabled
    finally:
        s.stop()
    bad = tmp_path / "models"
    shutil.copytree(registry_ws / "models", bad)
    (bad / "model.pkl").write_bytes((bad / "model.pkl").read_bytes() + b"\0")
    proc = run_mlci("serve", "--model-dir", str(bad), "--port", "0", cwd=registry_ws)
    assert proc.returncode == errors.PREREQUISITE
    assert proc.stderr.startswith("error: ") and "sha256" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_port_in_use_is_exit_9_in_one_line(registry_ws):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_mlci("serve", "--model-dir", "models", "--port", str(port), cwd=registry_ws)
    assert proc.returncode == errors.SERVE == 9
    assert proc.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_serve_does_not_load_for_other_commands():
    code = "import sys, mlci.cli; print(sorted(m for m in ('fastapi', 'uvicorn', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_champion_is_exit_6_in_one_line(registry_ws):
    params = (registry_ws / "params.yaml").read_text()
    assert "  model_name: null" in params  # the dataset's name for it, unless said
    (registry_ws / "other-params.yaml").write_text(params.replace("  model_name: null", "  model_name: nobody"))
    proc = run_mlci("--params", "other-params.yaml", "serve", "--port", "0", cwd=registry_ws)
    assert proc.returncode == errors.PREREQUISITE
    assert proc.stderr.startswith("error: nobody@champion") and "no model to serve" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # -S, as for the pipeline commands, says the same without a second parameters file.
    proc = run_mlci("serve", "--port", "0", "-S", "tracking.model_name=nobody", cwd=registry_ws)
    assert proc.returncode == errors.PREREQUISITE and proc.stderr.startswith("error: nobody@champion")
    typo = run_mlci("serve", "--port", "0", "-S", "tracking.model_nam=x", cwd=registry_ws)
    assert typo.returncode == errors.USAGE and "-S" in typo.stderr and "model_name" in typo.stderr


def test_a_model_failing_its_smoke_prediction_is_not_installed(registry_ws):
    """The holder and its checks are real; the source hands it a model whose Pipeline answers nonsense."""
    from mlci.serving.holder import ModelHolder
    from mlci.serving.sources import Candidate, DirSource

    class Broken(DirSource):
        def current(self):
            return "broken" if self.broken else super().current()

        def load(self, ident):
            c = super().load(ident)
            if ident == "broken":
                c.pipeline.predict_proba = lambda frame: np.full((len(frame), 2), 0.5)
                c = Candidate("broken", c.pipeline, c.card, c.info)
            return c

    source = Broken(registry_ws / "models")
    source.broken = False
    holder = ModelHolder(source, poll=0)
    first = holder.load_initial()
    source.broken = True
    outcome = holder.check()
    assert outcome["status"] == "kept" and "disagree" in outcome["error"]
    assert holder.current is first and holder.last_error["version"] == "broken"
    assert holder.check() == {"status": "kept", "version": first.info["version"], "error": outcome["error"]}
    source.broken = False
    assert holder.check()["status"] == "unchanged" and holder.current is first


def test_a_version_registered_without_its_card_takes_the_builtin_dataset_schema(registry_ws):
    """Versions registered before they carried model.json: the run's `dataset` parameter names the schema."""
    from mlci.serving.schema import record_model
    import mlflow

    from mlci.serving.sources import RegistrySource, prepare

    uri = f"sqlite:///{registry_ws / 'mlflow.db'}"
    mlc = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    sha = mlc.get_model_version("adult-income", "1").tags["mlci.model_sha256"]
    (pkl,) = [p for p in (registry_ws / "mlartifacts").rglob("model.pkl")
              if "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() == sha]
    pkl.with_name("model.json").unlink(missing_ok=True)
    source = RegistrySource(f"sqlite:///{registry_ws / 'mlflow.db'}",
                            {"experiment": "mlci", "model_name": "adult-income", "alias": "champion",
                             "compare_metric": "validation_roc_auc", "greater_is_better": True})
    loaded = prepare(source.load("1"))
    assert loaded.dataset.name == "adult" and loaded.info["version"] == "1" and loaded.info["trained_at"]
    props = record_model(loaded.dataset, loaded.scorer.categories).model_json_schema()["properties"]
    assert {"type": "integer", "minimum": 0, "maximum": 120} in props["age"]["anyOf"]
    assert loaded.scorer.positive_label == ">50K"


def test_a_best_profile_model_is_served_equal_to_its_pipeline_and_threshold(tmp_path):
    """The best profile's ensemble (not LightGBM at the end) goes through the same server: the fast
    path's probabilities are the Pipeline's, and `prediction` follows the model's own threshold."""
    ws = populate(tmp_path / "best")
    raw = ws / "data" / "raw" / "adult.data"
    lines = raw.read_text().splitlines(True)[:6000]  # the machinery, not the accuracy: seconds to train
    raw.unlink()
    raw.write_text("".join(lines))
    proc = run_mlci("run", "--until", "train", "--profile", "best", "-S", "best.folds=3", "-S", "best.tuning_trials=1",
                    "-S", "best.catboost_iterations=40", "-S", "best.xgboost_rounds=40", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    model = load_model(ws)
    assert type(model[-1]).__name__ == "Ensemble"
    frame = pd.read_parquet(ws / "data" / "processed" / "validation.parquet").drop(columns=["income"])
    rows = records(frame.head(400))
    rows[0] = dict(rows[0], native_country=None, occupation=None)
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--unknown-categories", "accept", token=None)
    try:
        got = s.client.post("/predict", json=rows).json()["predictions"]
        one = s.client.post("/predict", json=rows[1]).json()["predictions"][0]
    finally:
        s.stop()
    p = np.array([g["probability"] for g in got])
    np.testing.assert_allclose(p, pipeline_proba(model, rows), rtol=0, atol=1e-9)
    assert one["probability"] == pytest.approx(p[1], abs=1e-12)
    t = model[-1].threshold_
    assert [g["prediction"] for g in got] == [">50K" if v >= t else "<=50K" for v in p]
