"""MLflow tracking and the registry on the embedded SQLite store, checked with MLflow's own client."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, outputs, run_mlci

from mlci import errors
from mlci.tracking.registry import use_uri

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


def runs(ws: Path, nested: bool = False):
    """The runs of mlci commands, latest first (``nested``: every run, stage runs and group parents too)."""
    c = client(ws)
    exp = c.get_experiment_by_name("adult")  # one experiment per dataset
    where = "" if nested else "tags.`mlci.command` != ''"
    return c.search_runs([exp.experiment_id], where, order_by=["attributes.start_time DESC"]) if exp else []


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
    assert m["validation_acc"] > 0.86 and m["test_acc"] > 0.85 and m["rows_rejected"] == 0 and m["rows_read"] == 32561
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
    model = mlflow.pyfunc.load_model("models:/adult-income@champion")
    val = pd.read_parquet(tracked / "data" / "processed" / "validation.parquet").head(20)
    card = json.loads((tracked / "models" / "model.json").read_text())
    # As read from a CSV: integers (the signature's `long`) and text; the split files hold floats and categories.
    as_read = {c["name"]: "int64" if c["type"] == "integer" else object for c in card["dataset"]["columns"]
               if c["type"] != "label" and c["name"] in val}
    out = model.predict(val.drop(columns=["income"]).astype(as_read))
    assert list(out.columns) == ["probability", "label"] and out.probability.between(0, 1).all()

    # A no-op rerun records no new run: it says which run and version it matches.
    again = cli("run", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["tracking"] == {"run_id": run.info.run_id, "tracking_uri": summary["tracking_uri"],
                                                    "model": "adult-income", "version": "1", "cached": True}
    assert len(runs(tracked)) == 1
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


def test_a_registry_that_cannot_say_who_the_champion_is_stops_promotion_and_diff(tracked):
    """A failing store (here its alias table gone) is a tracking error, not "no champion yet": the gate's
    compare-and-set would otherwise promote a model compared with nothing."""
    import sqlite3

    from mlci.config.resolve import resolve
    from mlci.tracking.registry import Registry
    from mlci.tracking.store import TrackingError

    assert cli("runs", "--promotions").stdout.strip() == "adult-income: no promotion yet"  # nothing registered
    assert cli("run").exit_code == 0
    reg = Registry(f"sqlite:///{tracked / 'mlflow.db'}",
                   resolve(tracked / "params.yaml", [], tracked / ".mlci").section("tracking"))
    assert str(reg.champion().version) == "1"
    with sqlite3.connect(tracked / "mlflow.db") as con:
        con.execute("ALTER TABLE registered_model_aliases RENAME TO moved_away")
    with pytest.raises(TrackingError, match="cannot say which version of adult-income is the champion"):
        reg.champion()
    with pytest.raises(TrackingError):
        reg.promote_if_better("1", None, 0.9, lambda _v: 0.0)
    assert cli("diff", "champion", "latest").exit_code == errors.TRACKING
    # A run whose gate would compare with the champion stops at the store, in one line; nothing moved.
    again = cli("run", "-S", "train.n_estimators=300")
    assert again.exit_code == errors.TRACKING and "cannot say which version" in again.stderr, again.output
    with sqlite3.connect(tracked / "mlflow.db") as con:
        con.execute("ALTER TABLE moved_away RENAME TO registered_model_aliases")
    assert champion(tracked) == "1"
    # Nor is a store that cannot list the promotions "no promotion yet".
    assert "v1" in cli("runs", "--promotions").stdout
    with sqlite3.connect(tracked / "mlflow.db") as con:
        con.execute("ALTER TABLE registered_model_tags RENAME TO moved_away")
    listing = cli("runs", "--promotions")
    assert listing.exit_code == errors.TRACKING and "cannot list adult-income's promotions" in listing.stderr


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


def test_a_refitted_champion_is_compared_by_its_recorded_figures_not_rescored(tracked):
    """The deployed model learnt from the validation rows too (train.refit_max_rows): re-scored there it
    would look better than its recipe measured unseen, and no challenger would pass. The gate and
    the report compare with the figures measured before that fit."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from mlci.modeling.estimator import predict_proba

    assert cli("run").exit_code == 0
    first = json.loads((tracked / "results" / "train_metadata.json").read_text())
    card = json.loads((tracked / "models" / "model.json").read_text())
    assert first["fitted_on"] == card["fitted_on"] == "train+validation"
    assert first["rows"]["fitted"] == first["rows"]["train"] + first["rows"]["validation"]
    model = pickle.loads((tracked / "models" / "model.pkl").read_bytes())
    va = pd.read_parquet(tracked / "data" / "processed" / "validation.parquet")
    rescored = roc_auc_score(va["income"] == ">50K", predict_proba(model, va[card["features"]], ">50K"))
    assert rescored > first["validation_roc_auc"] + 0.005  # it learnt these rows

    second = cli("run", "-S", "train.learning_rate=0.045")
    assert second.exit_code == 0, second.output
    gate = json.loads((tracked / "results" / "gate.json").read_text())
    relative = [r for r in gate["rules"] if "relative" in r]
    assert relative and all(r["champion_value"] == pytest.approx(first[r["metric"]], abs=1e-9) for r in relative)
    assert gate["champion"] == {"version": "1"}  # same data, same split: the very rows, no caveat
    report = json.loads((tracked / "results" / "report.json").read_text())
    assert report["champion"]["metrics"]["validation"]["roc_auc"] == pytest.approx(first["validation_roc_auc"])
    assert "recorded before" in report["champion"]["note"]
    assert report["figures_split"] == "test" and report["importance_note"] is None


def _registry_rows(db: Path) -> dict[str, list[tuple]]:
    """The registry's tables, with the times a promotion records (values and event keys) blanked."""
    import re
    import sqlite3

    con = sqlite3.connect(db)
    found = {}
    for table in ("registered_models", "model_versions", "registered_model_aliases", "registered_model_tags",
                  "model_version_tags"):
        rows = []
        for row in con.execute(f"SELECT * FROM {table}"):
            rows.append(tuple(re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "T",
                                     re.sub(r"(mlci\.(?:history|promotion)\.)\d+", r"\1N", v))
                              if isinstance(v, str) else v for v in row))
        found[table] = sorted(rows, key=repr)
    con.close()
    return found


def test_promote_and_rollback_record_reason_and_who(tracked):
    from mlci.config.resolve import resolve
    from mlci.tracking.registry import Registry

    assert cli("run").exit_code == 0
    assert cli("run", "-S", "train.n_estimators=390").exit_code == 0
    assert champion(tracked) == "2"
    shutil.copy(tracked / "mlflow.db", tracked / "by-client.db")  # the same steps through MLflow's client
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
    tracking = resolve(tracked / "params.yaml", [], tracked / ".mlci").section("tracking")
    history = [(e["kind"], e["version"], e["from"]) for e in Registry(f"sqlite:///{tracked / 'mlflow.db'}",
                                                                      tracking).history()]
    assert history == [("promote", "1", None), ("promote", "2", "1"), ("rollback", "1", "2"), ("promote", "2", "1")]
    # On a SQLite store both commands write MLflow's rows themselves (no MLflow start-up): the very
    # rows MLflow's client writes for the same steps, times aside.
    reg = Registry(f"sqlite:///{tracked / 'by-client.db'}", tracking)
    assert reg.rollback("v2 misbehaves in production") == ("2", "1")
    assert reg.promote("2", "fixed upstream") == "1"
    assert _registry_rows(tracked / "mlflow.db") == _registry_rows(tracked / "by-client.db")
    probe = ("import sys; from mlci.cli import main; main(['promote', '1', '--reason', 'probe'], standalone_mode=False);"
             " print('mlflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tracked, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["adult-income v1 is now the champion (was v2)",
                                                                 "False"], (
        proc.stderr or "MLflow's client was used: if MLflow's schema changed, compare direct's rows with it, "
        "then add the revision to direct.WRITE_SCHEMAS")
    missing = cli("promote", "9", "--reason", "x")
    assert missing.exit_code == errors.PREREQUISITE and "has no version 9" in missing.stderr
    # A damaged artifact is refused before anything is written.
    before = _registry_rows(tracked / "mlflow.db")
    for art in (tracked / "mlartifacts").rglob("model.pkl"):
        art.write_bytes(art.read_bytes() + b"x")
    bad = cli("promote", "2", "--reason", "x")
    assert bad.exit_code == errors.TRACKING and "sha256" in bad.stderr and "nothing was promoted" in bad.stderr
    assert _registry_rows(tracked / "mlflow.db") == before


def test_runs_and_diff(tracked):
    git = lambda *a: subprocess.run(["git", *a], cwd=tracked, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "start")
    assert cli("run").exit_code == 0
    first = runs(tracked)[0].data.tags
    head = git("rev-parse", "HEAD").stdout.decode().strip()
    assert first["mlflow.source.git.commit"] == head and first["mlci.git_dirty"] == "false"
    # MLflow's own conventions, so its UI says who ran what from where.
    assert first["mlflow.user"].startswith(os.environ.get("USER", "root")) and first["mlflow.source.type"] == "LOCAL"
    assert first["mlflow.source.name"] == "mlci run" and first["mlflow.runName"].startswith("run-")
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
    missing = cli("diff", "v9", "v1", "--json")
    assert missing.exit_code == errors.PREREQUISITE and "has no version 9" in missing.stderr


def test_single_stages_are_tracked_too(tracked):
    for stage in ("preprocess", "train", "gate", "test"):
        assert cli(stage).exit_code == 0
    commands = [r.data.tags["mlci.command"] for r in runs(tracked)]
    assert commands == ["test", "gate", "train", "preprocess"]
    assert champion(tracked) == "1"  # the gate promoted what train registered
    # The tutorial's `docker exec` steps of one workspace and commit group under one parent run;
    # the next `preprocess` starts the next group.
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs(tracked)}
    assert len(parents) == 1 and None not in parents
    (group,) = [r for r in runs(tracked, nested=True) if r.info.run_id in parents]
    assert group.data.tags["mlci.group"] and group.info.status == "FINISHED"
    assert cli("preprocess").exit_code == 0
    assert runs(tracked)[0].data.tags["mlflow.parentRunId"] not in parents


def test_a_pipeline_run_nests_a_run_per_stage(tracked):
    assert cli("run").exit_code == 0
    (run,) = runs(tracked)
    children = [r for r in runs(tracked, nested=True) if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["gate", "preprocess", "report", "test", "train"]
    train = next(r for r in children if r.info.run_name == "train")
    assert train.data.metrics["seconds"] > 0 and train.info.status == "FINISHED"
    assert train.info.end_time - train.info.start_time == pytest.approx(train.data.metrics["seconds"] * 1000, abs=2)
    # `mlci runs` lists commands, not their stages.
    assert [r["run_id"] for r in json.loads(cli("runs", "--json").stdout)] == [run.info.run_id]
    # A rerun of only the report nests only it.
    assert cli("run", "-S", "report.bootstrap_resamples=200").exit_code == 0
    latest = runs(tracked)[0]
    nested = [r.info.run_name for r in runs(tracked, nested=True)
              if r.data.tags.get("mlflow.parentRunId") == latest.info.run_id]
    assert nested == ["report"]


def test_unreachable_server_fails_before_any_work(tracked):
    result = cli("run", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert result.exit_code == errors.TRACKING
    assert "tracking server http://127.0.0.1:9 is unreachable" in result.stderr and "--no-track" in result.stderr
    assert result.stderr.count("\n") == 1 and outputs(tracked) == []


def test_a_pipeline_killed_mid_run_is_recorded_failed(tracked):
    """Killed during training: its run (created once preprocess was done) is RUNNING for a dead process,
    and the next run marks it FAILED; nothing says FINISHED for work that never finished."""
    proc = subprocess.Popen([sys.executable, "-m", "mlci", "run"], cwd=tracked, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if line.startswith("train ..."):
            break
    deadline = time.time() + 60
    while not runs(tracked) and time.time() < deadline:  # the run is opened in the background
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (killed,) = runs(tracked)
    assert killed.info.status == "RUNNING"
    assert cli("run").exit_code == 0
    after = client(tracked).get_run(killed.info.run_id)
    assert after.info.status == "FAILED" and after.data.tags["mlci.failure"]


def test_run_left_running_is_marked_failed_by_the_next(tracked):
    """A process killed while it recorded leaves its run RUNNING; the next run on this host marks it FAILED."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    c = client(tracked)
    exp = c.create_experiment("adult", artifact_location=(tracked / "mlartifacts").as_uri())
    import socket

    left = c.create_run(exp, tags={"mlci.host": socket.gethostname(), "mlci.pid": str(dead.pid)}).info.run_id
    assert cli("run").exit_code == 0
    after = c.get_run(left)
    assert after.info.status == "FAILED" and after.data.tags["mlci.failure"]


def test_no_op_rerun_records_nothing_and_leaves_no_process(tracked):
    import psutil

    assert cli("run").exit_code == 0
    before = [r.info.run_id for r in runs(tracked)]
    proc = run_mlci("run", cwd=tracked)
    assert proc.returncode == 0, proc.stderr
    assert f"nothing changed since run {before[0]}" in proc.stderr and "adult-income v1" in proc.stderr
    assert [r.info.run_id for r in runs(tracked)] == before  # no new run for a no-op
    mine = [p for p in psutil.process_iter(["cmdline"]) if "mlci" in " ".join(p.info["cmdline"] or [])
            and p.pid != os.getpid() and p.ppid() == os.getpid()]
    assert mine == []  # nothing of a tracked run outlives it


def test_no_op_rerun_imports_no_mlflow(tracked):
    assert cli("run").exit_code == 0
    code = ("import sys, runpy; sys.argv = ['mlci', 'run']\n"
            "try:\n    runpy.run_module('mlci', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mlflow', 'pandas', 'sklearn', 'lightgbm')]\n"
            "assert not bad, bad[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tracked, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


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
    from mlci.config import settings
    from mlci.tracking.champion import Champion
    from mlci.tracking.registry import Registry

    assert cli("run").exit_code == 0  # v1 champion (400 trees)
    assert cli("run", "-S", "train.n_estimators=40", "-S", "gate.rules=[]", "-S", "gate.allow_no_rules=true").exit_code == 0
    # v2 was promoted because its gate had no relative rule; put the strong v1 back as champion...
    assert cli("promote", "1", "--reason", "test").exit_code == 0
    tracking = {"experiment": "mlci", "model_name": "adult-income", "alias": "champion",
                "compare_metric": "validation_roc_auc", "greater_is_better": True}
    ch = Champion(f"sqlite:///{tracked / 'mlflow.db'}", tracking, settings.from_env())
    reg = ch.registry
    weak_auc = ch.metrics("2")["validation_roc_auc"]
    # ...and replay v2's promotion as if its gate had run before v1 became champion.
    decision = reg.promote_if_better("2", None, weak_auc, lambda v: ch.metrics(v)["validation_roc_auc"])
    assert decision["promoted"] is False and "is better" in decision["note"]
    assert champion(tracked) == "1"


def test_a_damaged_last_run_file_only_costs_a_recorded_rerun(tracked):
    assert cli("run").exit_code == 0
    (tracked / ".mlci" / "last-run.json").write_text("{not json")
    again = cli("run")
    assert again.exit_code == 0, again.output
    assert len(runs(tracked)) == 2  # recorded as a cached run instead of an error


def _half_migrated(db: Path) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("CREATE TABLE _alembic_tmp_tags (key TEXT)")  # what an interrupted migration leaves
    con.commit()
    con.close()


DAMAGE = {
    "garbage": lambda db: db.write_bytes(b"this is not a database\n" * 100),
    "truncated": lambda db: db.write_bytes(db.read_bytes()[:5000]),
    "half-migrated": _half_migrated,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", [["run"], ["status"], ["runs"]])
def test_a_damaged_store_is_named_with_the_way_out(tracked, damage, command):
    """No hang, no internal error: one line naming the database and what to do, exit 8; the file untouched."""
    db = tracked / "mlflow.db"
    DAMAGE[damage](db)
    before = db.read_bytes()
    proc = run_mlci(*command, cwd=tracked, env={"MLCI_NO_TRACK": ""}, timeout=60)
    assert proc.returncode == errors.TRACKING, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: tracking database {db}") and "move it aside" in last, proc.stderr
    assert "Traceback" not in proc.stderr and db.read_bytes() == before
    assert not (tracked / "results").exists()  # checked before any work


def test_a_run_restored_from_the_run_cache_is_the_earlier_model(tracked):
    """Reverting a parameter: the run is recorded, with the version that model already has."""
    assert cli("run").exit_code == 0
    assert cli("run", "-S", "train.learning_rate=0.1").exit_code in (0, errors.GATE_FAILED)
    versions = len(client(tracked).search_model_versions("name = 'adult-income'"))
    back = cli("run", "--json")
    assert back.exit_code == 0, back.output
    summary = json.loads(back.stdout)
    assert {st["name"]: st["status"] for st in summary["stages"]}["train"] == "restored"
    assert summary["tracking"]["version"] == "1"  # no new registry version
    assert len(client(tracked).search_model_versions("name = 'adult-income'")) == versions
    assert runs(tracked)[0].data.tags["mlci.model_version"] == "1"


@pytest.mark.parametrize("warm", [False, True], ids=["fresh-store", "warm-store"])
def test_workspaces_sharing_one_store_run_at_once(tmp_path, warm):
    """Three workspaces, one SQLite store, `mlci run --force` in all at once: no hang, every run recorded,
    one champion, the schema whole."""
    import sqlite3

    from conftest import populate

    store = tmp_path / "shared" / "mlflow.db"
    store.parent.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLCI_NO_TRACK", "MLFLOW_TRACKING_URI")},
           "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    spaces = [populate(tmp_path / f"ws{i}") for i in range(3)]
    if warm:
        assert run_mlci("run", cwd=spaces[0], env={"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"],
                                                   "MLCI_NO_TRACK": ""}).returncode == 0
    procs = [subprocess.Popen([sys.executable, "-m", "mlci", "run", "--force", "-S", f"train.n_estimators={300 + i}"],
                              cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i, ws in enumerate(spaces)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    uri = f"sqlite:///{store}"
    c = mlflow_client(uri)
    exp = c.get_experiment_by_name("adult")
    recorded = c.search_runs([exp.experiment_id], "tags.`mlci.command` = 'run'")
    assert len(recorded) == 3 + warm and all(r.info.status == "FINISHED" for r in recorded)
    assert c.get_model_version_by_alias("adult-income", "champion") is not None
    con = sqlite3.connect(store)
    leftovers = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp%'")]
    con.close()
    assert leftovers == []


def mlflow_client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_tracking_server_that_answers_500_is_a_bounded_one_line_error(workspace):
    """Every call answered with HTTP 500: `mlci run` gives up within its bounded retries, before any work."""
    import http.server
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def _fail(self):
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error_code": "INTERNAL_ERROR", "message": "broken"}')

        do_GET = do_POST = _fail

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        proc = run_mlci("run", cwd=workspace, timeout=120,
                        env={"MLCI_NO_TRACK": "", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{httpd.server_port}"})
        elapsed = time.monotonic() - started
    finally:
        httpd.shutdown()
    assert proc.returncode == errors.TRACKING, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert elapsed < 60 and outputs(workspace) == []


def test_runs_reads_sqlite_as_mlflow_lists_it(tracked):
    """`mlci runs` on a SQLite store reads it directly (``peek.runs``, no MLflow import): the same runs
    in the same order with the same tags, params and metrics as MLflow's search_runs, for each
    condition it answers; a deleted run is gone from both; a schema it was not checked on is MLflow's."""
    from mlci.tracking import peek

    assert cli("run").exit_code == 0
    assert cli("run", "-S", "train.learning_rate=0.1", "-S", GATE_FAIL,
               env={"MLCI_BRANCH": "feature"}).exit_code == errors.GATE_FAILED
    assert cli("gate").exit_code == 0  # a single-stage command, nested in a group parent
    assert cli("run", "-S", "train.n_estimators=390").exit_code == 0
    uri, c = f"sqlite:///{tracked / 'mlflow.db'}", client(tracked)
    exp = c.get_experiment_by_name("adult").experiment_id
    c.delete_run(runs(tracked)[-1].info.run_id)

    def shape(found):
        return [(r.info.run_id, r.info.start_time, r.info.status, r.data.tags, r.data.params, r.data.metrics)
                for r in found]

    cases = [(20, None, None), (2, None, None), (20, "feature", None), (20, None, "FINISHED"), (20, None, "FAILED")]
    for limit, branch, status in cases:
        where = " and ".join(["tags.`mlci.command` != ''",
                              *([f"tags.`mlflow.source.git.branch` = '{branch}'"] if branch else []),
                              *([f"attributes.status = '{status}'"] if status else [])])
        theirs = c.search_runs([exp], where, order_by=["attributes.start_time DESC"], max_results=limit)
        ours = peek.runs(uri, "adult", limit, branch, status)
        assert ours is not peek.UNKNOWN, "MLflow's schema changed: check peek.runs against it, then add it to LISTING_SCHEMAS"
        assert shape(ours) == shape(theirs), (limit, branch, status)
    assert len(shape(peek.runs(uri, "adult", 20))) == 3 and len(shape(peek.runs(uri, "adult", 20, "feature"))) == 1
    assert peek.runs(uri, "no-such-experiment", 20) == []
    # The command takes that path: its JSON is run_row of MLflow's own answer, and no MLflow is imported.
    from mlci.tracking.runs import run_row

    code = ("import sys, runpy; sys.argv = ['mlci', 'runs', '--json']\n"
            "try:\n    runpy.run_module('mlci', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mlflow', 'pandas', 'sqlalchemy')]\n"
            "assert not bad, bad[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tracked, capture_output=True, text=True,
                          env={**os.environ, "MLCI_NO_TRACK": ""})
    assert proc.returncode == 0, proc.stderr
    listed = c.search_runs([exp], "tags.`mlci.command` != ''", order_by=["attributes.start_time DESC"])
    assert json.loads(proc.stdout) == [run_row(r) for r in listed]
    # Another schema revision: not read.
    other = tracked / "other.db"
    shutil.copy(tracked / "mlflow.db", other)
    import sqlite3

    con = sqlite3.connect(other)
    con.execute("UPDATE alembic_version SET version_num = 'not-checked'")
    con.commit()
    con.close()
    assert peek.runs(f"sqlite:///{other}", "adult", 20) is peek.UNKNOWN


def test_runs_filters_and_columns(tracked):
    assert cli("run").exit_code == 0
    assert cli("run", "-S", "train.learning_rate=0.1", "-S", GATE_FAIL).exit_code == errors.GATE_FAILED
    table = json.loads(cli("runs", "--json", "--param", "train.learning_rate", "--metric", "test_acc").stdout)
    assert [r["params.train.learning_rate"] for r in table] == ["0.1", "0.05"]
    assert table[0]["metrics.test_acc"] is None and table[1]["metrics.test_acc"] > 0.85  # the failed gate: no test
    only = json.loads(cli("runs", "--json", "--filter", "tags.`mlci.gate` = 'failed'").stdout)
    assert [r["run_id"] for r in only] == [table[0]["run_id"]]
    assert json.loads(cli("runs", "--json", "--status", "failed").stdout) == []
    assert json.loads(cli("runs", "--json", "--branch", "nowhere").stdout) == []
    bad = cli("runs", "--filter", "garbage ==")
    assert bad.exit_code == errors.USAGE and bad.stderr.startswith("error: --filter 'garbage =='")
