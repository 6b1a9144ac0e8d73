"""Team scale, for real: pipelines against `mlflow server` on PostgreSQL, concurrent promotions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import populate, run_mlci
from servers import MlflowServer, Postgres

from mlci import errors
from mlci.tracking.registry import use_uri

GATE = ('gate.rules=[{metric: validation_roc_auc, min: 0.85}, {metric: validation_roc_auc, max_drop: 0.005}]')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("team")
    pg = Postgres().start()
    srv = None
    try:
        srv = MlflowServer(pg.uri, root).start()
        yield srv
    finally:
        if srv:
            srv.stop()
        pg.stop()


def make_ws(path, name: str):
    return populate(path / name)


def client(srv):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=srv.uri, registry_uri=srv.uri)


def test_pipeline_against_a_real_tracking_server(server, tmp_path):
    ws = make_ws(tmp_path, "alice")
    name = "team-model"
    env = {"MLFLOW_TRACKING_URI": server.uri, "MLCI_NO_TRACK": ""}
    proc = run_mlci("run", "--json", "-S", f"tracking.model_name={name}", cwd=ws, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("{"), proc.stdout[:500]
    summary = json.loads(proc.stdout)["tracking"]
    c = client(server)
    run = c.get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["test_acc"] > 0.85
    mv = c.get_model_version_by_alias(name, "champion")
    assert str(mv.version) == summary["version"] == "1"
    # The artifact lives under the server's local artifact root and loads with MLflow's own tools.
    import mlflow
    import pandas as pd

    use_uri(server.uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    rows = pd.read_parquet(ws / "data" / "processed" / "test.parquet").drop(columns=["income"]).head(5)
    # As a CSV reads: text, and whole numbers as int64 (the signature's `long`); the split holds floats.
    whole = {c["name"] for c in json.loads((ws / "models" / "model.json").read_text())["dataset"]["columns"]
             if c["type"] == "integer"}
    rows = rows.astype({c: "int64" if c in whole else object for c in rows.columns
                        if c in whole or isinstance(rows[c].dtype, pd.CategoricalDtype)})
    out = model.predict(rows)
    assert list(out.columns) == ["probability", "label"] and len(out) == 5
    assert list((server.root / "artifacts").rglob("model.pkl"))
    # `mlci runs` reads the same server.
    listing = run_mlci("runs", "--json", cwd=ws, env=env)
    assert listing.returncode == 0
    assert summary["run_id"] in [r["run_id"] for r in json.loads(listing.stdout)]
    # Promote and roll back on a server go through MLflow's client (the direct path is SQLite's only).
    params = ws / "params.yaml"
    params.write_text(params.read_text().replace("  model_name: null", f"  model_name: {name}"))
    again = run_mlci("promote", "v01", "--reason", "audit", cwd=ws, env=env)  # v01: version 1
    assert again.returncode == 0 and "already the champion" in again.stdout, again.stderr
    assert c.get_model_version(name, "1").tags["mlci.promotion_reason"] == "audit"
    missing = run_mlci("promote", "9", "--reason", "x", cwd=ws, env=env)
    assert missing.returncode == errors.PREREQUISITE and "has no version 9" in missing.stderr, missing.stderr
    back = run_mlci("rollback", "--reason", "x", cwd=ws, env=env)
    assert back.returncode == errors.PREREQUISITE and "only version ever promoted" in back.stderr, back.stderr


def test_concurrent_promotions_never_leave_the_worse_model(server, tmp_path):
    """Two pipelines gate against no champion at the same moment; only the better one may win."""
    name = "race-model"
    env = {"MLFLOW_TRACKING_URI": server.uri, "MLCI_NO_TRACK": ""}
    configs = {"strong": ["-S", "train.n_estimators=400"], "weak": ["-S", "train.n_estimators=25"]}
    workspaces = {}
    for label, args in configs.items():
        ws = make_ws(tmp_path, label)
        # Train offline first, so that both tracked runs below only gate and promote: maximal overlap.
        pre = run_mlci("run", "--no-track", *args, "-S", GATE, cwd=ws)
        assert pre.returncode == 0, pre.stderr
        workspaces[label] = ws
    common = ["run", "--json", "-S", GATE, "-S", f"tracking.model_name={name}"]
    procs = {
        label: subprocess.Popen([sys.executable, "-m", "mlci", *common, *configs[label]], cwd=ws,
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for label, ws in workspaces.items()
    }
    outs = {label: p.communicate(timeout=300) for label, p in procs.items()}
    for label, p in procs.items():
        assert p.returncode in (0, errors.GATE_FAILED), outs[label][1]
    summaries = {label: json.loads(out)["tracking"] for label, (out, _) in outs.items()}
    c = client(server)
    champion = c.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == summaries["strong"]["version"]
    weak = c.get_model_version(name, summaries["weak"]["version"])
    strong_auc = c.get_run(summaries["strong"]["run_id"]).data.metrics["validation_roc_auc"]
    weak_auc = c.get_run(summaries["weak"]["run_id"]).data.metrics["validation_roc_auc"]
    assert strong_auc > weak_auc + 0.005
    assert str(weak.version) != str(champion.version)
    if weak.tags.get("mlci.promoted_at"):  # the weak one won the race: the strong one replaced it after
        assert champion.tags["mlci.promoted_at"] > weak.tags["mlci.promoted_at"]


def test_unreachable_server_is_caught_before_training(tmp_path):
    ws = make_ws(tmp_path, "offline")
    from servers import free_port

    proc = run_mlci("run", cwd=ws, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "MLCI_NO_TRACK": ""})
    assert proc.returncode == errors.TRACKING
    assert "is unreachable" in proc.stderr and "--no-track" in proc.stderr
    assert not (ws / "models").exists() and not (ws / "data" / "processed").exists()
