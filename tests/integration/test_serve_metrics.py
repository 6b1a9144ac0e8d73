"""`mlci serve`'s observability: /metrics, JSON logs with request ids, prediction logs, live drift.

Real servers on loopback (``test_serve.Server``) serving a model trained by a real tracked pipeline
run: from the registry (its reference profile comes from the MLflow artifact) and from the model
directory. The load is bounded (a few thousand requests from a few threads).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from conftest import run_mlci
from prometheus_client.parser import text_string_to_metric_families
from test_serve import GOOD, TOKEN, Server, git_workspace, records

from mlci import errors


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A git workspace with one tracked run: the registry's champion v1, and the same model in models/."""
    ws = git_workspace(tmp_path_factory.mktemp("serve-metrics"))
    proc = run_mlci("run", "--json", "--until", "gate", cwd=ws, env={"MLCI_NO_TRACK": ""})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tracking"]["promoted"] is True
    return ws


@pytest.fixture(scope="module")
def rows(ws) -> list[dict]:
    """Real records (the validation and test splits) in the API's schema."""
    return records(pd.concat([pd.read_parquet(ws / "data" / "processed" / f"{split}.parquet")
                              for split in ("validation", "test")]).drop(columns=["income"]))


def sha256(ws: Path) -> str:
    return json.loads((ws / "models" / "model.json").read_text())["sha256"]


def scrape(c: httpx.Client) -> dict:
    """/metrics as {(sample name, frozenset of labels): value}, parsed by prometheus-client's own parser."""
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def log_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.parquet"))


def dir_bytes(d: Path) -> int:
    total = 0
    for f in log_files(d):
        try:
            total += f.stat().st_size
        except FileNotFoundError:  # deleted by the server meanwhile (the byte bound at work)
            pass
    return total


def wait_for(fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not true after {timeout} s")


def test_metrics_count_requests_by_route_and_status_and_name_the_model(ws):
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--max-body-bytes", "2048")
    try:
        c = s.client
        before = scrape(c)  # the scrape itself is counted from the next one on
        answers = [c.post("/predict", json=GOOD) for _ in range(5)]
        answers += [c.post("/predict", json=[GOOD, dict(GOOD, age=70), dict(GOOD, sex="Female")]) for _ in range(2)]
        answers += [c.post("/predict", json=dict(GOOD, age="39")) for _ in range(3)]  # 422
        answers += [c.post("/predict", content=b"[" + b",".join([json.dumps(GOOD).encode()] * 20) + b"]",
                           headers={"content-type": "application/json"})]  # over 2,048 bytes: 413
        answers += [c.get("/health") for _ in range(2)] + [c.get("/no/such/page")]
        assert [r.status_code for r in answers] == [200] * 7 + [422] * 3 + [413] + [200, 200, 404]
        m = scrape(c)
        assert value(before, "mlci_requests_total", route="/predict", status="200") == 0
        assert value(m, "mlci_requests_total", route="/predict", status="200") == 7
        assert value(m, "mlci_requests_total", route="/predict", status="422") == 3
        assert value(m, "mlci_requests_total", route="/predict", status="413") == 1
        assert value(m, "mlci_requests_total", route="/health", status="200") == 2
        assert value(m, "mlci_requests_total", route="other", status="404") == 1  # not a series per path
        assert value(m, "mlci_requests_total", route="/metrics", status="200") == 1
        assert value(m, "mlci_request_duration_seconds_count", route="/predict") == 11
        assert 0 < value(m, "mlci_request_duration_seconds_sum", route="/predict") < 11 * 5
        assert value(m, "mlci_records_per_request_count") == 7 and value(m, "mlci_records_per_request_sum") == 11
        labels = [p["prediction"] for r in answers[:7] for p in r.json()["predictions"]]
        for label in (">50K", "<=50K"):
            assert value(m, "mlci_predictions_total", label=label) == labels.count(label)
        probabilities = [p["probability"] for r in answers[:7] for p in r.json()["predictions"]]
        assert value(m, "mlci_prediction_probability_count") == 11
        assert value(m, "mlci_prediction_probability_sum") == pytest.approx(sum(probabilities), abs=1e-9)
        assert value(m, "mlci_prediction_probability_bucket", le="0.5") == sum(p <= 0.5 for p in probabilities)
        info = [dict(k[1]) for k in m if k[0] == "mlci_model_info"]
        assert info == [{"name": "models", "version": sha256(ws).removeprefix("sha256:")[:12], "sha256": sha256(ws)}]
        assert value(m, "mlci_model_reloads_total", result="success") == 0
        assert value(m, "mlci_drift_window_records") == 11
        # Every answer carries a request id, the 413 and 404 too; a sane one sent is kept, others replaced.
        ids = [r.headers.get("x-request-id") for r in answers]
        assert all(ids) and len(set(ids)) == len(ids)
        assert c.get("/health", headers={"X-Request-ID": "order-42:a.b"}).headers["x-request-id"] == "order-42:a.b"
        for bad in ("a b", "x" * 200, "-starts-with-dash", "é"):
            got = c.get("/health", headers={"X-Request-ID": bad.encode()}).headers["x-request-id"]
            assert got != bad and got
    finally:
        s.stop()


def test_no_metrics_turns_the_route_off(ws):
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--no-metrics")
    try:
        assert s.client.get("/metrics").status_code == 404
        assert s.client.post("/predict", json=GOOD).headers["x-request-id"]
    finally:
        s.stop()


def test_json_log_lines_carry_the_response_request_id_and_nothing_else_reaches_the_log(ws):
    """The registry's champion (MLflow downloads it: no progress bar, no warnings in the log), JSON lines
    only; the access line of a request has the id the response had. Its reference profile came from
    the registry version's artifacts: the drift gauges are there."""
    s = Server(ws, "--poll", "0", "--log-format", "json", "--access-log")
    try:
        c = s.client
        ok = c.post("/predict", json=GOOD, headers={"X-Request-ID": "client-id-1"})
        bad = c.post("/predict", json=dict(GOOD, age=-1))
        batch = c.post("/predict", json=[GOOD] * 4)
        assert (ok.status_code, bad.status_code, batch.status_code) == (200, 422, 200)
        assert ok.headers["x-request-id"] == "client-id-1"
        m = scrape(c)
        info = [dict(k[1]) for k in m if k[0] == "mlci_model_info"]
        assert info == [{"name": "adult-income", "version": "1", "sha256": sha256(ws)}]
        assert value(m, "mlci_feature_psi", feature="age") > 0 and value(m, "mlci_drift_window_records") == 5
    finally:
        s.stop()
    lines = [json.loads(line) for line in s.log.read_text().splitlines()]  # every line is JSON
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert any(x["message"].startswith("serving adult-income version 1 on http://") for x in lines)
    access = {x["request_id"]: x for x in lines if x["logger"] == "mlci.access"}
    for r, records in ((ok, 1), (bad, None), (batch, 4)):
        line = access[r.headers["x-request-id"]]
        assert (line["method"], line["path"], line["status"]) == ("POST", "/predict", r.status_code)
        assert line.get("records") == records and line["duration_ms"] > 0
    assert "tqdm" not in s.log.read_text() and "Warning" not in s.log.read_text()


def _hammer(url: str, bodies: list, count: int, threads: int) -> list[int]:
    statuses: list[int] = []
    lock = threading.Lock()

    def run(k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(k, count, threads):
                code = c.post("/predict", json=bodies[i % len(bodies)]).status_code
                with lock:
                    statuses.append(code)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    return statuses


def test_prediction_logs_under_load_stay_under_the_byte_bound_and_monitor_reads_them(ws, rows, tmp_path):
    logs, bound = tmp_path / "predictions", 100_000
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--log-predictions", str(logs),
               "--log-max-bytes", str(bound), "--log-flush-seconds", "0.5")
    sizes = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            sizes.append(dir_bytes(logs))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # Single records and batches of 20, all different rows: 21,000 records, over the bound compressed.
        n = len(rows) - 20
        bodies = [rows[11 * i % n] if i % 2 else rows[11 * i % n:11 * i % n + 20] for i in range(2000)]
        statuses = _hammer(s.url, bodies, 2000, threads=4)
        assert len(statuses) == 2000 and statuses.count(200) == 2000, sorted(set(statuses))
        m = wait_for(lambda: (lambda m: m if value(m, "mlci_prediction_log_written_records_total") >= 21_000
                              else None)(scrape(s.client)))
    finally:
        stop.set()
        watcher.join()
        s.stop()
    sent = 1000 * 1 + 1000 * 20
    assert value(m, "mlci_prediction_log_dropped_records_total") == 0
    assert value(m, "mlci_prediction_log_write_errors_total", kind="ENOENT") == 0
    assert value(m, "mlci_prediction_log_written_records_total") == sent
    assert len(sizes) > 20 and max(sizes) <= bound and dir_bytes(logs) <= bound
    files = log_files(logs)
    kept = sum(len(pd.read_parquet(f)) for f in files)
    assert 0 < kept < sent  # the oldest files were deleted to stay under the bound
    assert not [p for p in logs.iterdir() if not p.name.endswith(".parquet")]  # no temporary file left
    frame = pd.read_parquet(files[-1])
    assert {"probability", "prediction", "served_at", "request_id", "model_sha256", "age", "workclass"} <= set(frame)
    assert set(frame["model_sha256"]) == {sha256(ws)}
    out = tmp_path / "monitor"
    proc = run_mlci("monitor", str(logs), "--model-dir", "models", "--no-track", "--json", "-o", str(out), cwd=ws)
    assert proc.returncode in (0, errors.MONITOR_FAILED), proc.stderr
    assert json.loads(proc.stdout)["rows"] == kept
    assert json.loads((out / "monitor.json").read_text())["rows"] == kept


def test_a_removed_log_directory_is_counted_and_the_server_keeps_answering(ws, tmp_path):
    logs = tmp_path / "gone"
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--log-predictions", str(logs),
               "--log-flush-seconds", "0.2")
    try:
        c = s.client
        assert c.post("/predict", json=GOOD).status_code == 200
        wait_for(lambda: log_files(logs))
        shutil.rmtree(logs)
        for _ in range(3):  # three files' worth, each failing
            assert [c.post("/predict", json=[GOOD] * 3).status_code for _ in range(5)] == [200] * 5
            time.sleep(0.6)  # past --log-flush-seconds: a file (a failure) per round
        m = wait_for(lambda: (lambda m: m if value(m, "mlci_prediction_log_failed_records_total") >= 45
                              else None)(scrape(c)))
        assert value(m, "mlci_prediction_log_write_errors_total", kind="ENOENT") >= 2
        assert value(m, "mlci_prediction_log_written_records_total") == 1
        assert c.get("/ready").status_code == 200
    finally:
        s.stop()
    assert s.log.read_text().count("prediction log: cannot write") == 1  # once per kind


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: whichever of its threads started them)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_killed_log_writer_loses_only_what_it_held_and_is_replaced(ws, tmp_path):
    """The prediction log's writer process killed while it holds 15 records (its file is not due for
    30 s): the server keeps answering, counts them as failed (WriterExited), starts a new writer a
    second later, and what comes after is written."""
    logs = tmp_path / "killed"
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--log-predictions", str(logs),
               "--log-flush-seconds", "30")
    try:
        c = s.client
        first = wait_for(lambda: children(s.pid()))
        assert len(first) == 1
        assert niceness(first[0]) == niceness(s.pid()) + 10  # below the server's priority (WRITER_NICE)
        for i in range(5):
            assert c.post("/predict", json=[GOOD] * 3, headers={"X-Request-ID": f"before-{i}"}).status_code == 200
        time.sleep(0.5)  # the feeder hands them over within 50 ms
        os.kill(first[0], signal.SIGKILL)
        m = wait_for(lambda: (lambda m: m if value(m, "mlci_prediction_log_failed_records_total") >= 15
                              else None)(scrape(c)))
        assert value(m, "mlci_prediction_log_write_errors_total", kind="WriterExited") >= 1
        second = wait_for(lambda: [p for p in children(s.pid()) if p != first[0]])
        assert len(second) == 1
        for i in range(4):
            assert c.post("/predict", json=[GOOD] * 2, headers={"X-Request-ID": f"after-{i}"}).status_code == 200
        lost = value(scrape(c), "mlci_prediction_log_failed_records_total")
    finally:
        s.stop()
    ids = pd.concat([pd.read_parquet(f) for f in log_files(logs)])["request_id"]
    assert not any(i.startswith("before-") for i in ids)
    assert ids.value_counts().to_dict() == {f"after-{i}": 2 for i in range(4)}
    assert s.log.read_text().count("prediction log: the writer process exited") == 1, s.log.read_text()
    assert lost >= 15 and not children(s.pid())


def test_sampling_is_deterministic_per_request_id(ws, tmp_path):
    logs = tmp_path / "sampled"
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--log-predictions", str(logs), "--log-sample", "0.5")
    try:
        for _ in range(2):
            for i in range(200):
                assert s.client.post("/predict", json=GOOD, headers={"X-Request-ID": f"req-{i}"}).status_code == 200
        m = scrape(s.client)
    finally:
        s.stop()
    ids = pd.concat([pd.read_parquet(f) for f in log_files(logs)])["request_id"].value_counts()
    assert 60 <= len(ids) <= 140 and set(ids) == {2}  # each id logged both times or never
    assert value(m, "mlci_prediction_log_sampled_out_records_total") == 400 - 2 * len(ids)


@pytest.mark.parametrize("unknown", ["accept", "reject"])
def test_live_psi_equals_monitors_on_the_same_records(ws, rows, tmp_path, unknown):
    """The same 3,000 records (older people only: a real shift; with ``--unknown-categories accept``
    every 7th occupation one the model never saw, scored as missing; the data's own missing values),
    PSI from /metrics and from `mlci monitor` on the prediction logs the server wrote of them. Through
    both request paths: msgspec's, and pydantic's (a charset in the content type), one record or a
    hundred at a time."""
    shifted = [dict(r, occupation="Astronaut") if i % 7 == 0 and unknown == "accept" else r
               for i, r in enumerate(r for r in rows if r["age"] is not None and r["age"] >= 45)][:3000]
    assert len(shifted) == 3000 and any(r["workclass"] is None for r in shifted)
    logs = tmp_path / "psi"
    s = Server(ws, "--model-dir", "models", "--poll", "0", "--log-predictions", str(logs),
               "--unknown-categories", unknown)
    charset = {"Content-Type": "application/json; charset=utf-8"}
    try:
        for i in range(0, 2900, 100):
            r = s.client.post("/predict", content=json.dumps(shifted[i:i + 100]), headers=charset if i % 200 else None)
            assert r.status_code == 200
        for i in range(2900, 3000):
            assert s.client.post("/predict", json=shifted[i], headers=charset if i % 2 else None).status_code == 200
        m = scrape(s.client)
    finally:
        s.stop()  # the log is written at shutdown
    out = tmp_path / "monitor"
    proc = run_mlci("monitor", str(logs), "--model-dir", "models", "--no-track", "-o", str(out), cwd=ws)
    assert proc.returncode in (0, errors.MONITOR_FAILED), proc.stderr
    report = json.loads((out / "monitor.json").read_text())
    assert report["rows"] == 3000 and value(m, "mlci_drift_window_records") == 3000
    assert report["features"]["age"]["psi"] > 0.5  # the shift is there
    assert (report["features"]["occupation"]["psi"] > 0.1) == (unknown == "accept")  # and the unknown occupations
    for name, f in report["features"].items():
        assert value(m, "mlci_feature_psi", feature=name) == pytest.approx(f["psi"], abs=1e-6), name
    assert value(m, "mlci_prediction_psi") == pytest.approx(report["predictions"]["psi"], abs=1e-6)


def test_an_unusable_log_directory_is_exit_11_in_one_line(ws, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    proc = run_mlci("serve", "--model-dir", "models", "--port", "0", "--log-predictions",
                    str(tmp_path / "file"), cwd=ws, timeout=120)
    assert proc.returncode == errors.IO, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--log-predictions" in proc.stderr


def test_a_refused_reload_is_counted_and_the_info_still_names_the_served_model(ws, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(ws / "models", models)
    s = Server(ws, "--model-dir", str(models), "--poll", "0")
    try:
        c = s.client
        assert c.post("/predict", json=GOOD).status_code == 200
        card = json.loads((models / "model.json").read_text())
        (models / "model.json").write_text(json.dumps(dict(card, sha256="sha256:" + "0" * 64)))
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.json()["status"] == "kept", r.text
        m = scrape(c)
        assert value(m, "mlci_model_reloads_total", result="failure") == 1
        assert value(m, "mlci_model_reloads_total", result="success") == 0
        assert [dict(k[1])["sha256"] for k in m if k[0] == "mlci_model_info"] == [card["sha256"]]
        assert value(m, "mlci_drift_window_records") == 1  # the same model: its window kept
    finally:
        s.stop()


def test_a_new_champion_updates_the_info_and_empties_the_drift_window(ws):
    """Last in this file: it promotes a second version in the module's registry."""
    s = Server(ws, "--poll", "0")
    try:
        c = s.client
        assert c.post("/predict", json=[GOOD] * 3).status_code == 200
        assert value(scrape(c), "mlci_drift_window_records") == 3
        proc = run_mlci("run", "--json", "--until", "gate", "-S", "train.n_estimators=300", cwd=ws,
                        env={"MLCI_NO_TRACK": ""})
        assert proc.returncode == 0 and json.loads(proc.stdout)["tracking"]["version"] == "2", proc.stderr
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert (r.json()["status"], r.json()["version"], r.json()["previous"]) == ("swapped", "2", "1"), r.text
        m = scrape(c)
        assert [dict(k[1]) for k in m if k[0] == "mlci_model_info"] == [
            {"name": "adult-income", "version": "2", "sha256": sha256(ws)}]
        assert value(m, "mlci_model_reloads_total", result="success") == 1
        assert value(m, "mlci_drift_window_records") == 0  # another model's probabilities: emptied
        assert c.post("/predict", json=GOOD).status_code == 200
        assert value(scrape(c), "mlci_drift_window_records") == 1
    finally:
        s.stop()
