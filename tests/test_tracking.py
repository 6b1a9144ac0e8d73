"""MLflow tracking and the registry on the embedded SQLite store, checked with MLflow's own client."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, outputs, run_mlci

from mlci import errors
from mlci.tracking import use_uri

GATE_FAIL = "gate.rules=[{metric: validation_acc, min: 0.99}]"


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its schema created once (migrations take seconds)."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracked(workspace, empty_mlflow_db, monkeypatch):
    monkeypatch.delenv("MLCI_NO_TRACK")
    shutil.copy(empty_mlflow_db, workspace / "mlflow.db")
    return workspace


def client(ws: Path):
    import mlflow

    # The registry too: a client without one uses the process-wide registry URI, if any test set one.
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def runs(ws: Path):
    c = client(ws)
    exp = c.get_experiment_by_name("mlci")
    return c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]) if exp else []


def champion(ws: Path) -> str:
    return str(client(ws).get_model_version_by_alias("adult-income", "champion").version)


def test_run_is_recorded_registered_and_promoted(tracked):
    result = cli("run", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["tracking"]
    assert summary["version"] == "1" and summary["promoted"] is True
    (run,) = runs(tracked)
    assert run.info.run_id == summary["run_id"] and run.info.status == "FINISHED"
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert m["validation_acc"] > 0.86 and m["test_acc"] > 0.86 and m["rows_rejected"] == 0 and m["rows_read"] == 32561
    assert p["train.n_estimators"] == "400" and p["dataset"] == "adult"
    assert t["mlci.data_sha256"].startswith("sha256:5b00264637dbfec3")
    assert t["mlci.gate"] == "passed" and t["mlci.cached"] == "false" and t["mlci.command"] == "run"
    names = {a.path for a in client(tracked).list_artifacts(run.info.run_id, "mlci")}
    assert {"mlci/train_metadata.json", "mlci/gate.json", "mlci/test_metadata.json", "mlci/mlci.lock",
            "mlci/params.yaml", "mlci/preprocess_metadata.json", "mlci/junit.xml"} <= names
    reports = {a.path for a in client(tracked).list_artifacts(run.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/report.json", "report/plots"} <= reports
    assert len(client(tracked).list_artifacts(run.info.run_id, "report/plots")) == 5
    assert champion(tracked) == "1"
    # MLflow's own tools load the champion and score raw records.
    import mlflow
    import pandas as pd

    use_uri(f"sqlite:///{tracked / 'mlflow.db'}")
    model = mlflow.sklearn.load_model("models:/adult-income@champion")
    val = pd.read_parquet(tracked / "data" / "processed" / "validation.parquet").head(20)
    proba = model.predict_proba(val.drop(columns=["income"]))[:, 1]
    assert ((proba >= 0) & (proba <= 1)).all()

    # A no-op rerun is still recorded, marked cached, without a new version.
    again = cli("run", "--json")
    assert again.exit_code == 0
    latest = runs(tracked)[0]
    assert latest.data.tags["mlci.cached"] == "true" and latest.data.tags["mlci.model_version"] == "1"
    assert len(client(tracked).search_model_versions("name = 'adult-income'")) == 1


def test_failing_gate_registers_but_does_not_promote(tracked):
    assert cli("run").exit_code == 0
    result = cli("run", "-S", GATE_FAIL, "-S", "train.n_estimators=300")
    assert result.exit_code == errors.GATE_FAILED
    v2 = client(tracked).get_model_version("adult-income", "2")
    assert v2.tags["mlci.gate"] == "failed"
    assert "validation_acc" in json.loads(v2.tags["mlci.failed_rules"])[0]
    assert champion(tracked) == "1"
    assert runs(tracked)[0].data.tags["mlci.gate"] == "failed"
    # The report compares the failed candidate with the champion on the same validation rows.
    report = json.loads((tracked / "results" / "report.json").read_text())
    champ_auc = runs(tracked)[1].data.metrics["validation_roc_auc"]
    assert report["champion"]["version"] == "1"
    assert report["champion"]["metrics"]["validation"]["roc_auc"] == pytest.approx(champ_auc, abs=1e-6)
    md = (tracked / "results" / "report.md").read_text()
    assert "Champion v1 scored on the same rows" in md and "| ROC-AUC | " in md


def test_relative_rules_compare_with_the_champion_on_the_same_rows(tracked):
    assert cli("run").exit_code == 0
    worse = cli("run", "-S", "train.n_estimators=3", "-S", "gate.rules=[{metric: validation_roc_auc, max_drop: 0.005}]")
    assert worse.exit_code == errors.GATE_FAILED
    gate = json.loads((tracked / "results" / "gate.json").read_text())
    rule = gate["rules"][0]
    champ_auc = runs(tracked)[1].data.metrics["validation_roc_auc"]
    assert gate["champion"] == {"version": "1"}
    assert rule["champion_value"] == pytest.approx(champ_auc, abs=1e-6)
    assert rule["threshold"] == pytest.approx(champ_auc - 0.005, abs=1e-6) and not rule["passed"]
    assert champion(tracked) == "1"
    # A slightly different model within the tolerance passes and becomes the champion.
    ok = cli("run", "-S", "train.n_estimators=380")
    assert ok.exit_code == 0, ok.output
    assert champion(tracked) == "3"


def test_promote_and_rollback_record_reason_and_who(tracked):
    assert cli("run").exit_code == 0
    assert cli("run", "-S", "train.n_estimators=390").exit_code == 0
    assert champion(tracked) == "2"
    back = cli("rollback", "--reason", "v2 misbehaves in production")
    assert back.exit_code == 0 and "moved back from v2 to v1" in back.stdout
    assert champion(tracked) == "1"
    v1 = client(tracked).get_model_version("adult-income", "1")
    assert v1.tags["mlci.promotion_reason"] == "rollback from v2: v2 misbehaves in production"
    assert "@" in v1.tags["mlci.promoted_by"] and v1.tags["mlci.promoted_at"]
    assert client(tracked).get_model_version("adult-income", "2").tags["mlci.rollback_reason"]
    up = cli("promote", "v2", "--reason", "fixed upstream")
    assert up.exit_code == 0 and champion(tracked) == "2"
    assert client(tracked).get_model_version("adult-income", "2").tags["mlci.promotion_reason"] == "fixed upstream"
    missing = cli("promote", "9", "--reason", "x")
    assert missing.exit_code == errors.PREREQUISITE and "has no version 9" in missing.stderr


def test_runs_and_diff(tracked):
    git = lambda *a: subprocess.run(["git", *a], cwd=tracked, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "start")
    assert cli("run").exit_code == 0
    first = runs(tracked)[0].data.tags
    head = git("rev-parse", "HEAD").stdout.decode().strip()
    assert first["mlci.git_commit"] == head and first["mlci.git_dirty"] == "false"
    assert cli("run", "-S", "train.learning_rate=0.1", "-S", GATE_FAIL).exit_code == errors.GATE_FAILED
    table = json.loads(cli("runs", "--json").stdout)
    assert len(table) == 2 and table[0]["model_version"] == "2" and table[1]["promoted"] is True
    assert table[0]["gate"] == "failed" and not table[0]["promoted"]
    assert "gate.rules" in json.loads(cli("diff", "--json").stdout)["params"]
    d = json.loads(cli("diff", "--json").stdout)  # champion vs latest
    assert d["a_label"].startswith("champion") and d["b_label"].startswith("latest")
    assert d["params"]["train.learning_rate"] == {"a": "0.05", "b": "0.1"}
    change = d["metrics"]["validation_acc"]
    assert change["change"] == pytest.approx(change["b"] - change["a"], abs=1e-6)
    md = cli("diff", "v1", "v2", "--md").stdout
    assert md.startswith("### Model metrics: v1 → v2") and "| train.learning_rate | 0.05 | 0.1 |" in md
    by_prefix = json.loads(cli("diff", table[1]["run_id"][:8], table[0]["run_id"], "--json").stdout)
    assert by_prefix["a"] == table[1]["run_id"]
    by_git = json.loads(cli("diff", "HEAD", "v1", "--json").stdout)  # the latest run at HEAD vs v1
    assert by_git["a"] == table[0]["run_id"] and by_git["b"] == table[1]["run_id"]
    bad = cli("diff", "no-such-thing", "--json")
    assert bad.exit_code == errors.PREREQUISITE and "not a run id, a model version or a git revision" in bad.stderr


def test_single_stages_are_tracked_too(tracked):
    for stage in ("preprocess", "train", "gate", "test"):
        assert cli(stage).exit_code == 0
    commands = [r.data.tags["mlci.command"] for r in runs(tracked)]
    assert commands == ["test", "gate", "train", "preprocess"]
    assert champion(tracked) == "1"  # the gate promoted what train registered


def test_unreachable_server_fails_before_any_work(tracked):
    result = cli("run", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert result.exit_code == errors.TRACKING
    assert "tracking server http://127.0.0.1:9 is unreachable" in result.stderr and "--no-track" in result.stderr
    assert result.stderr.count("\n") == 1 and outputs(tracked) == []


def _start_and_kill(ws: Path, whole_group: bool) -> None:
    import os

    # Killing the whole group kills the tracking side too only with a worker of the run's own
    # (the daemon lives in a session of its own; see test_tracking_daemon_* below).
    env = {**os.environ, "MLCI_TRACKING_DAEMON": "0"} if whole_group else None
    proc = subprocess.Popen([sys.executable, "-m", "mlci", "run"], cwd=ws, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    for line in proc.stderr:
        if line.startswith("train ..."):
            break
    if whole_group:  # let the tracking worker create its run first
        deadline = time.time() + 60
        while not runs(ws) and time.time() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def wait_for_status(ws: Path, run_id: str, status: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = client(ws).get_run(run_id).info.status
        if now == status:
            return now
        time.sleep(0.5)
    return now


def test_killed_pipeline_is_marked_failed_at_once_by_its_worker(tracked):
    _start_and_kill(tracked, whole_group=False)
    deadline = time.time() + 60
    while not runs(tracked) and time.time() < deadline:  # the orphaned worker may still be starting
        time.sleep(0.5)
    (killed,) = runs(tracked)
    assert wait_for_status(tracked, killed.info.run_id, "FAILED") == "FAILED"


def test_run_left_running_is_marked_failed_by_the_next(tracked):
    _start_and_kill(tracked, whole_group=True)  # the pipeline and its tracking worker die together
    (killed,) = runs(tracked)
    assert killed.info.status == "RUNNING"
    assert cli("run").exit_code == 0
    after = client(tracked).get_run(killed.info.run_id)
    assert after.info.status == "FAILED" and after.data.tags["mlci.failure"]


# -- the tracking daemon --------------------------------------------------------------------


def daemon_pid(ws: Path) -> int | None:
    lock = ws / ".mlci" / "tracking-daemon.lock"
    text = lock.read_text().strip() if lock.exists() else ""
    return int(text) if text else None


def alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_tracking_daemon_serves_run_after_run_then_leaves_when_idle(tracked, monkeypatch):
    monkeypatch.setenv("MLCI_TRACKING_DAEMON_IDLE", "4")
    assert run_mlci("run", cwd=tracked).returncode == 0
    pid = daemon_pid(tracked)
    assert pid and alive(pid) and (tracked / ".mlci" / "tracking.sock").exists()
    second = run_mlci("run", "-S", "train.n_estimators=300", cwd=tracked)
    assert second.returncode == 0, second.stderr
    assert daemon_pid(tracked) == pid  # the same process: MLflow imported once
    assert [r.info.status for r in runs(tracked)] == ["FINISHED", "FINISHED"]
    assert client(tracked).get_registered_model("adult-income").latest_versions  # registered by the daemon
    deadline = time.time() + 30
    while alive(pid) and time.time() < deadline:
        time.sleep(0.5)
    assert not alive(pid) and not (tracked / ".mlci" / "tracking.sock").exists()


def test_tracking_daemon_of_other_code_steps_down(tracked, tmp_path_factory):
    """Edit mlci (here: a copy with one more comment) and the next run gets a daemon of the new code."""
    other_src = tmp_path_factory.mktemp("src")
    shutil.copytree(Path(__file__).resolve().parents[1] / "src" / "mlci", other_src / "mlci")
    with open(other_src / "mlci" / "errors.py", "a") as f:
        f.write("# another version\n")
    old = run_mlci("run", "--until", "preprocess", cwd=tracked, env={"PYTHONPATH": str(other_src)})
    assert old.returncode == 0, old.stderr
    old_pid = daemon_pid(tracked)
    assert old_pid and alive(old_pid)
    new = run_mlci("run", "--until", "preprocess", cwd=tracked)
    assert new.returncode == 0, new.stderr
    new_pid = daemon_pid(tracked)
    assert new_pid != old_pid and alive(new_pid)
    deadline = time.time() + 10
    while alive(old_pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(old_pid)
    assert [r.info.status for r in runs(tracked)] == ["FINISHED", "FINISHED"]


def test_busy_tracking_daemon_sends_a_run_to_a_worker_of_its_own(tracked):
    import os
    import socket

    from mlci.tracking_worker import identity

    assert run_mlci("run", "--until", "preprocess", cwd=tracked).returncode == 0  # starts the daemon
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.connect(str(tracked / ".mlci" / "tracking.sock"))
    stream = held.makefile("rw", encoding="utf-8")
    hello = {"op": "hello", "identity": identity(), "cwd": str(tracked), "env": dict(os.environ),
             "args": {"command": "run", "params_file": None, "overrides": []}}
    for request in (hello, {"op": "begin"}):
        stream.write(json.dumps(request) + "\n")
        stream.flush()
        assert json.loads(stream.readline())["ok"]
    held_run = runs(tracked)[0].info.run_id
    other = run_mlci("run", cwd=tracked)  # the daemon is busy with the held session
    assert other.returncode == 0, other.stderr
    assert runs(tracked)[0].info.status == "FINISHED"
    stream.close()
    held.close()  # a client gone without finishing: its run is marked FAILED at once
    assert wait_for_status(tracked, held_run, "FAILED") == "FAILED"


def test_tracking_daemon_can_be_turned_off(tracked):
    assert run_mlci("run", "--until", "train", cwd=tracked, env={"MLCI_TRACKING_DAEMON": "0"}).returncode == 0
    assert runs(tracked)[0].info.status == "FINISHED"
    assert not (tracked / ".mlci" / "tracking.sock").exists()


def test_corrupt_champion_artifact_stops_promotion(tracked):
    assert cli("run").exit_code == 0
    (stored,) = (tracked / "mlartifacts").rglob("model.pkl")  # the registry's copy of v1
    stored.write_bytes(stored.read_bytes() + b"tampered")
    result = cli("run", "-S", "train.n_estimators=300")
    assert result.exit_code == errors.TRACKING
    assert "does not match the registry's" in result.stderr
    assert champion(tracked) == "1"
    # The new model is still registered (and can be promoted by hand), but nothing moved.
    v2 = client(tracked).get_model_version("adult-income", "2")
    assert "mlci.promoted_at" not in v2.tags
    assert runs(tracked)[0].info.status == "FAILED"


def test_promotion_is_compare_and_set(tracked):
    """A candidate whose gate saw an older champion is compared again with the current one."""
    from mlci import settings
    from mlci.recording import Champion
    from mlci.tracking import Registry

    assert cli("run").exit_code == 0  # v1 champion (400 trees)
    assert cli("run", "-S", "train.n_estimators=40", "-S", "gate.rules=[]").exit_code == 0  # v2, weaker
    # v2 was promoted because its gate had no relative rule; put the strong v1 back as champion...
    assert cli("promote", "1", "--reason", "test").exit_code == 0
    reg = Registry(f"sqlite:///{tracked / 'mlflow.db'}", {"experiment": "mlci", "model_name": "adult-income",
                                                         "alias": "champion", "compare_metric": "validation_roc_auc",
                                                         "greater_is_better": True})
    ch = Champion(reg, settings.from_env())
    weak_auc = ch.metrics_of("2")["validation_roc_auc"]
    # ...and replay v2's promotion as if its gate had run before v1 became champion.
    decision = reg.promote_if_better("2", None, weak_auc, lambda v: ch.metrics_of(v)["validation_roc_auc"])
    assert decision["promoted"] is False and "is better" in decision["note"]
    assert champion(tracked) == "1"
