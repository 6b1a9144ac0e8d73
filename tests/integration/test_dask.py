"""engine: dask against a real cluster: a ``dask scheduler`` and two ``dask worker`` processes on
loopback with a memory limit, and a real S3 API (moto's server) holding partitioned data.

The Dask engine must give what the local engine gives where the answer is defined by the data (the
split's rows, the rejects), a model as good (ROC-AUC within 0.003 on the same validation rows) in
the same self-contained Pipeline, metrics equal to scikit-learn's on its own scores, and on bad
input or a broken cluster a one-line error with a documented exit code, never a hang and never a
half-written output.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from servers import DaskCluster, MotoS3, free_port

from conftest import kaggle_csv, run_mlci, ROOT

BLOCK = str(1 << 20)  # 1 MB partitions: the bundled CSV (4 MB) is four of them


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3):
    # The workers read s3:// themselves: they get the endpoint and the credentials, as on a real cluster.
    c = DaskCluster(tmp_path_factory.mktemp("dask"), workers=2, memory_limit="2GB", env=s3.env).start()
    yield c
    c.stop()


def workspace(root: Path, data: Path | None = None) -> Path:
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    if data is not None:
        (root / "data" / "raw" / data.name).write_bytes(data.read_bytes())
    return root


def dask_env(cluster, s3=None, **more) -> dict:
    return {"DASK_SCHEDULER_ADDRESS": cluster.address, "MLCI_NO_TRACK": "1", **(s3.env if s3 else {}), **more}


def rows(path: Path) -> pd.DataFrame:
    """A split's rows in one canonical order (the engines may order them differently)."""
    frame = pd.read_parquet(path).astype(str)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    ws = workspace(tmp_path_factory.mktemp("local"), kaggle_csv(tmp_path_factory.mktemp("csv")))
    done = run_mlci("run", "--no-track", "-q", cwd=ws)
    assert done.returncode == 0, done.stderr
    return ws


def test_the_dask_engine_gives_the_local_engines_split_and_as_good_a_model(cluster, local_run, tmp_path):
    ws = workspace(tmp_path / "ws", kaggle_csv(tmp_path))
    done = run_mlci("run", "--engine", "dask", "--json", "-S", f"dask.blocksize={BLOCK}", cwd=ws, env=dask_env(cluster))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["exit_code"] == 0  # stdout holds the JSON document alone
    assert "Warning" not in done.stderr and "[LightGBM]" not in done.stderr, done.stderr  # no library noise
    pre = json.loads((ws / "results" / "preprocess_metadata.json").read_text())
    assert pre["engine"] == "dask" and pre["partitions"] == 4
    local_pre = json.loads((local_run / "results" / "preprocess_metadata.json").read_text())
    for key in ("rows_read", "rows_valid", "rows_rejected", "rows", "positive_share"):
        assert pre[key] == local_pre[key], key
    for split in ("train", "validation", "test"):  # a row's split never depends on its partition
        theirs = ws / "data" / "processed" / f"{split}.parquet"
        assert theirs.is_dir() and len(list(theirs.glob("part-*.parquet"))) == 4
        pd.testing.assert_frame_equal(rows(theirs), rows(local_run / "data" / "processed" / f"{split}.parquet"))

    ours = json.loads((ws / "results" / "train_metadata.json").read_text())
    local = json.loads((local_run / "results" / "train_metadata.json").read_text())
    assert ours["engine"] == "dask"
    assert abs(ours["validation_roc_auc"] - local["validation_roc_auc"]) <= 0.003, (ours, local)
    assert abs(ours["validation_acc"] - local["validation_acc"]) <= 0.005

    # The metrics, added up from the workers' counts, are scikit-learn's on the model's own scores.
    from sklearn import metrics as m

    scores = pd.read_parquet(ws / "results" / "validation_scores.parquet")
    assert len(scores) == local["rows"]["validation"]
    y, p = scores["label"].to_numpy(), scores["probability"].to_numpy()
    assert ours["validation_acc"] == pytest.approx(m.accuracy_score(y, p >= 0.5), abs=1e-6)
    assert ours["validation_log_loss"] == pytest.approx(m.log_loss(y, p), abs=1e-6)
    assert ours["validation_roc_auc"] == pytest.approx(m.roc_auc_score(y, p), abs=1e-4)
    assert ours["validation_pr_auc"] == pytest.approx(m.average_precision_score(y, p), abs=2e-4)
    test_meta = json.loads((ws / "results" / "test_metadata.json").read_text())
    assert test_meta["rows"]["test"] == local_pre["rows"]["test"]

    # The same self-contained Pipeline: nothing of the cluster in it, `mlci predict` takes it as it is.
    blob = (ws / "models" / "model.pkl").read_bytes()
    assert b"local_listen_port" not in blob and b"127.0.0.1" not in blob
    few = tmp_path / "few.csv"
    few.write_text("".join(kaggle_csv(tmp_path).read_text().splitlines(True)[:51]))
    pred = run_mlci("predict", str(few), "-o", str(tmp_path / "pred.csv"), cwd=ws)
    assert pred.returncode == 0, pred.stderr
    assert len(pd.read_csv(tmp_path / "pred.csv")) == 50
    assert (ws / "results" / "report.html").stat().st_size > 10_000

    again = run_mlci("run", "--engine", "dask", "--json", "-S", f"dask.blocksize={BLOCK}", cwd=ws, env=dask_env(cluster))
    assert again.returncode == 0, again.stderr
    assert {s["status"] for s in json.loads(again.stdout)["stages"]} == {"cached"}, again.stdout


def test_partitioned_parquet_and_csv_on_s3_are_read_by_the_workers(cluster, s3, local_run, tmp_path):
    source = pd.read_csv(kaggle_csv(tmp_path))
    bucket = s3.client()
    bucket.create_bucket(Bucket="adult")
    for i, part in enumerate(np.array_split(np.arange(len(source)), 3)):
        chunk = source.iloc[part]
        buf = io.BytesIO()
        chunk.to_parquet(buf, index=False)
        bucket.put_object(Bucket="adult", Key=f"parquet/part-{i}.parquet", Body=buf.getvalue())
        bucket.put_object(Bucket="adult", Key=f"csv/part-{i}.csv", Body=chunk.to_csv(index=False).encode())
    expected = rows(local_run / "data" / "processed" / "validation.parquet")
    for kind in ("parquet", "csv"):
        ws = workspace(tmp_path / kind)
        done = run_mlci("preprocess", "-S", "engine=dask", cwd=ws,
                        env=dask_env(cluster, s3, RAW_DATA_DIR=f"s3://adult/{kind}"))
        assert done.returncode == 0, done.stderr
        pre = json.loads((ws / "results" / "preprocess_metadata.json").read_text())
        assert pre["source"] == f"s3://adult/{kind}" and pre["partitions"] == 3
        assert pre["rows_valid"] == len(source) - pre["rows_rejected"]
        # Parquet keeps the numbers' types, the CSV their text: both validate to the same rows.
        pd.testing.assert_frame_equal(rows(ws / "data" / "processed" / "validation.parquet"), expected)
        assert pre["data_sha256"].startswith("sha256-src:")
        status = run_mlci("status", "-S", "engine=dask", cwd=ws, env=dask_env(cluster, s3, RAW_DATA_DIR=f"s3://adult/{kind}"))
        assert "preprocess" in status.stdout and "up to date" in status.stdout, status.stdout


def test_a_bad_partition_is_one_clear_error_and_the_old_outputs_stay(cluster, tmp_path):
    data = kaggle_csv(tmp_path).read_text().splitlines(True)
    ws = workspace(tmp_path / "ws")
    parts = ws / "data" / "raw" / "parts"
    parts.mkdir()
    (parts / "a.csv").write_text("".join(data[:10001]))
    (parts / "b.csv").write_text(data[0] + "".join(data[10001:]))
    env = dask_env(cluster, RAW_DATA_FILE="parts")
    good = run_mlci("preprocess", "-S", "engine=dask", cwd=ws, env=env)
    assert good.returncode == 0, good.stderr
    processed = ws / "data" / "processed"
    before = {p: p.read_bytes() for p in processed.rglob("*") if p.is_file()}

    # A row with a field too many in the second file: a structural error naming that file.
    (parts / "b.csv").write_text(data[0] + "".join(data[10001:12000]) + data[12000].rstrip("\n") + ",1\n"
                                 + "".join(data[12001:]))
    bad = run_mlci("preprocess", "-S", "engine=dask", cwd=ws, env=env)
    assert bad.returncode == 4, bad.stderr
    assert "b.csv" in bad.stderr and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    # Too many rejected rows (unknown labels) in one partition: exit 5, counted over all partitions.
    broken = data[10001:].copy()
    broken[:2000] = [line.replace('"<=50K"', '"maybe"').replace('">50K"', '"maybe"') for line in broken[:2000]]
    (parts / "b.csv").write_text(data[0] + "".join(broken))
    rejected = run_mlci("preprocess", "-S", "engine=dask", cwd=ws, env=env)
    assert rejected.returncode == 5, rejected.stderr
    assert "max_reject_share" in rejected.stderr and "Traceback" not in rejected.stderr
    after = {p: p.read_bytes() for p in processed.rglob("*") if p.is_file()}
    assert after == before  # nothing half-written, nothing lost, no temporary directory left


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    ws = workspace(tmp_path / "ws", kaggle_csv(tmp_path))
    started = time.monotonic()
    done = run_mlci("run", "--engine", "dask", "-S", "dask.connect_timeout=3", cwd=ws,
                    env={"DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{free_port()}", "MLCI_NO_TRACK": "1"})
    assert done.returncode == 13, done.stderr
    assert "unreachable" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 60
    assert not (ws / "data" / "processed" / "train.parquet").exists()


def test_a_worker_killed_mid_fit_ends_the_step_with_a_clear_error(tmp_path):
    """No nanny to bring the worker back: the fit cannot finish, and must not wait forever."""
    c = DaskCluster(tmp_path / "cluster", workers=2, memory_limit="2GB", nanny=False).start()
    try:
        ws = workspace(tmp_path / "ws")
        text = kaggle_csv(tmp_path).read_text().splitlines(True)
        # Eight copies (260,000 rows), ages moved a little: a fit of some seconds on two workers.
        big = ws / "data" / "raw" / "adult.csv"
        with open(big, "w") as out:
            out.write(text[0])
            for k in range(8):
                for line in text[1:]:
                    age, rest = line.split(",", 1)
                    out.write(f"{int(age) + k % 3},{rest}")
        env = dask_env(c)
        pre = run_mlci("preprocess", "-S", "engine=dask", "-S", "dask.blocksize=4000000", cwd=ws, env=env)
        assert pre.returncode == 0, pre.stderr
        full_env = {**os.environ, **env}
        proc = subprocess.Popen([sys.executable, "-m", "mlci", "train", "-S", "engine=dask", "-S",
                                 "train.n_estimators=3000", "-S", "dask.step_timeout=300"], cwd=ws, env=full_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while "Connected to rank" not in c.log("worker1") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)
        os.kill(c.workers[1].pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 13, err
        assert "left the cluster" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not (ws / "models" / "model.pkl").exists()  # no model from a broken fit
    finally:
        c.stop()


def test_a_worker_out_of_memory_is_a_clear_error_and_leaves_nothing(tmp_path):
    """Workers of 350 MB given one 33 MB CSV block to read: each is over its nanny's 95 % and
    restarted, the scheduler gives the task up: one line, exit 13, seconds, not a hang; no output."""
    c = DaskCluster(tmp_path / "cluster", workers=2, memory_limit="350MB").start()
    try:
        ws = workspace(tmp_path / "ws")
        text = kaggle_csv(tmp_path).read_text().splitlines(True)
        with open(ws / "data" / "raw" / "adult.csv", "w") as out:
            out.write(text[0])
            for _ in range(8):
                out.writelines(text[1:])
        started = time.monotonic()
        done = run_mlci("preprocess", "-S", "engine=dask", "-S", "dask.blocksize=200000000", "-S",
                        "dask.step_timeout=120", cwd=ws, env=dask_env(c))
        assert done.returncode == 13, done.stderr
        assert "died (out of memory, usually" in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr and time.monotonic() - started < 100
        assert "exceeded 95% memory budget" in c.log("worker0") + c.log("worker1")
        assert not (ws / "data" / "processed").exists() or not any((ws / "data" / "processed").iterdir())
    finally:
        c.stop()


def test_a_port_taken_before_lightgbm_binds_it_is_retried_with_fresh_ports(tmp_path):
    """LightGBM's Dask module picks a free port on each worker and binds it later; another process
    may take it in between. Made to happen for real: on each worker the first port handed out is
    already bound by a listening socket, so LightGBM's own bind fails; mlci fits again with fresh
    ports and the run ends as any other."""
    from distributed import Client

    def squat():  # runs on each worker: the first port handed out is held by someone else
        import socket

        import lightgbm.dask as ld

        real = ld._acquire_port

        def acquire():
            if getattr(ld, "_test_squatted", None) is not None:
                return real()
            taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            taken.bind(("", 0))
            taken.listen()
            ld._test_squatted = taken
            handed = ld._RemoteSocket()
            handed.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # released before LightGBM binds
            return handed, taken.getsockname()[1]

        ld._acquire_port = acquire

    c = DaskCluster(tmp_path / "cluster", workers=2, memory_limit="2GB").start()
    try:
        ws = workspace(tmp_path / "ws", kaggle_csv(tmp_path))
        env = dask_env(c)
        assert run_mlci("preprocess", "-S", "engine=dask", "-S", f"dask.blocksize={BLOCK}", cwd=ws,
                        env=env).returncode == 0
        with Client(c.address, timeout=30) as client:
            client.run(squat)
            done = run_mlci("train", "-S", "engine=dask", "-S", "dask.step_timeout=240", cwd=ws, env=env)
            assert done.returncode == 0, done.stderr
            squatted = client.run(lambda: __import__("lightgbm.dask").dask._test_squatted is not None)
        assert list(squatted.values()) == [True, True]  # both first attempts met a taken port
        meta = json.loads((ws / "results" / "train_metadata.json").read_text())
        assert meta["engine"] == "dask" and meta["validation_roc_auc"] > 0.92
    finally:
        c.stop()


def test_two_fits_sharing_the_cluster_both_finish(cluster, tmp_path):
    """LightGBM's Dask fits sharing workers wait on each other's sockets; mlci's cluster-wide lock
    lets one fit at a time: both end, neither hangs."""
    env = dask_env(cluster)
    spaces = []
    for name in ("a", "b"):
        ws = workspace(tmp_path / name, kaggle_csv(tmp_path))
        done = run_mlci("preprocess", "-S", "engine=dask", "-S", f"dask.blocksize={BLOCK}", cwd=ws, env=env)
        assert done.returncode == 0, done.stderr
        spaces.append(ws)
    full_env = {**os.environ, **env}
    procs = [subprocess.Popen([sys.executable, "-m", "mlci", "train", "-S", "engine=dask", "-S", "dask.step_timeout=240"],
                              cwd=ws, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for ws in spaces]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    a, b = (json.loads((ws / "results" / "train_metadata.json").read_text()) for ws in spaces)
    assert abs(a["validation_roc_auc"] - b["validation_roc_auc"]) <= 0.001  # the same data, as good a model
