"""`mlci init` on CSV files the test writes: init -> run -> predict -> serve with no hand edits, next to an
Adult champion in the same tracking store, which stays as it was."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from conftest import PATH_VARS, populate, run_mlci

from mlci import errors


def numeric_csv(path: Path) -> Path:
    """scikit-learn's breast-cancer data (569 rows, 30 numbers), its label as the numbers 0 and 1."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame.to_csv(path, index=False)
    return path


def categorical_csv(path: Path, rows: int = 1200) -> Path:
    """Customers: an id, categories, integers, money with "NA" for missing, a group column, yes/no churn."""
    rng = random.Random(7)
    out = []
    for i in range(rows):
        plan = rng.choice(["basic", "plus", "pro"])
        tenure = rng.randint(0, 72)
        spend = round(rng.uniform(5, 120), 2)
        churn = (plan == "basic") + (tenure < 12) + (spend > 90) + rng.random() > 1.6
        out.append({"Customer ID": f"C{i:05d}", "Plan": plan, "Tenure Months": tenure,
                    "Monthly.Spend": "NA" if rng.random() < 0.03 else spend,
                    "Region": rng.choice(["north", "south", "east", "west"]), "Sex": rng.choice(["F", "M"]),
                    "Churned": "yes" if churn else "no"})
    pd.DataFrame(out).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    """A tracked Adult run whose champion shares the tracking store with the projects below."""
    ws = populate(tmp_path_factory.mktemp("adult"))
    store = tmp_path_factory.mktemp("store") / "mlflow.db"
    env = {"MLCI_NO_TRACK": "", "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    proc = run_mlci("run", "--json", cwd=ws, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return env, store


def registry_state(store: Path) -> dict:
    import mlflow

    uri = f"sqlite:///{store}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name = 'adult-income'")
    champion = client.get_model_version_by_alias("adult-income", "champion")
    return {"versions": sorted(int(v.version) for v in versions), "champion": str(champion.version),
            "experiments": sorted(e.name for e in client.search_experiments())}


def serve_one(project: Path, env: dict, record: dict) -> dict:
    log = project / "serve.log"
    full = {**{k: v for k, v in os.environ.items() if k not in PATH_VARS}, **env}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlci", "serve", "--port", "0"], cwd=project, env=full,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while " on http://" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = log.read_text().split(" on ", 1)[1].split()[0]
        with httpx.Client(base_url=url, timeout=30) as client:
            while client.get("/ready").status_code != 200:
                time.sleep(0.05)
            reply = client.post("/predict", json=record)
            assert reply.status_code == 200, reply.text
            return reply.json()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_init_run_predict_serve_with_no_hand_edits(adult, tmp_path, kind):
    env, store = adult
    before = registry_state(store)
    data = numeric_csv(tmp_path / "cancer.csv") if kind == "numeric" else categorical_csv(tmp_path / "churn.csv")
    target = "target" if kind == "numeric" else "Churned"
    project = tmp_path / "project"
    made = run_mlci("init", str(data), "--target", target, "--dir", str(project), "--json", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    definition = yaml.safe_load((project / "dataset.yaml").read_text())
    if kind == "numeric":
        # Labels as written in the data (numbers), the plain positive one.
        assert summary["positive_label"] == "1" and summary["features"] == 30 and summary["categorical"] == 0
        assert {c["type"] for c in definition["columns"]} == {"numeric", "label"}
    else:
        assert summary["positive_label"] == "yes" and definition["drop"] == ["Customer ID"]
        assert "NA" in definition["missing_values"] and definition["groups"] == {"Sex": None}
        types = {c["name"]: c["type"] for c in definition["columns"]}
        assert types == {"Customer ID": "categorical", "Plan": "categorical", "Tenure Months": "integer",
                         "Monthly.Spend": "numeric", "Region": "categorical", "Sex": "categorical",
                         "Churned": "label"}
        plan = next(c for c in definition["columns"] if c["name"] == "Plan")
        assert plan["categories"] == ["basic", "plus", "pro"]
    rules = yaml.safe_load((project / "params.yaml").read_text())["gate"]["rules"]
    assert rules[0]["metric"] == "validation_acc" and rules[0]["min"] <= summary["baseline"]["validation_acc"]

    run = run_mlci("run", "--json", cwd=project, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    tracking = json.loads(run.stdout)["tracking"]
    name = data.stem
    assert tracking["model"] == name and tracking["version"] == "1" and tracking["promoted"] is True

    scored = run_mlci("predict", f"data/raw/{data.name}", "-o", "scored.csv", cwd=project, env=env)
    assert scored.returncode == 0, scored.stderr
    assert pd.read_csv(project / "scored.csv")["probability"].between(0, 1).all()

    row = pd.read_csv(data, dtype=str, keep_default_na=False).iloc[0].to_dict()
    row.pop(target)
    types = {c["name"]: c["type"] for c in definition["columns"]}
    cast = {"integer": int, "numeric": float}
    record = {k: None if v in definition["missing_values"] else cast.get(types[k], str)(float(v) if types[k] == "integer"
                                                                                        else v)
              for k, v in row.items() if k not in definition.get("drop", [])}
    answer = serve_one(project, env, record)
    assert answer["model"] == name and 0 <= answer["predictions"][0]["probability"] <= 1

    after = registry_state(store)
    assert after["versions"] == before["versions"] and after["champion"] == before["champion"]  # Adult untouched
    assert name in after["experiments"] and "adult" in after["experiments"]


def test_init_refuses_what_it_cannot_do_and_leaves_nothing(tmp_path):
    data = categorical_csv(tmp_path / "churn.csv", rows=200)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [
        (["--target", "Churned", "--dir", str(taken)], errors.USAGE, "exists and is not empty"),
        (["--target", "Nope", "--dir", str(tmp_path / "a")], errors.USAGE, "has no such column"),
        (["--target", "Plan", "--dir", str(tmp_path / "b")], errors.DATA, "has 3 distinct values"),
        (["--target", "Churned", "--positive", "maybe", "--dir", str(tmp_path / "c")], errors.USAGE,
         "not a value of 'Churned'"),
    ]
    for args, code, words in cases:
        proc = run_mlci("init", str(data), *args, cwd=tmp_path)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and words in proc.stderr and proc.stderr.count("\n") == 1
    headless = tmp_path / "headless.csv"
    headless.write_text("1,2,3\n4,5,6\n")
    proc = run_mlci("init", str(headless), "--target", "3", "--dir", str(tmp_path / "d"), cwd=tmp_path)
    assert proc.returncode == errors.DATA and "not a header line" in proc.stderr
    assert (taken / "keep.txt").read_text() == "mine" and sorted(p.name for p in taken.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["churn.csv", "headless.csv", "taken"]


def test_diff_refuses_runs_of_two_datasets_unless_asked(tmp_path):
    """Two datasets tracked into one experiment (said outright): `mlci diff` names both and refuses."""
    env = {"MLCI_NO_TRACK": "", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    ws = populate(tmp_path / "adult")
    params = ws / "params.yaml"
    params.write_text(params.read_text().replace("  experiment: null", "  experiment: shared"))
    assert run_mlci("run", cwd=ws, env=env).returncode == 0
    data = categorical_csv(tmp_path / "churn.csv", rows=400)
    assert run_mlci("init", str(data), "--target", "Churned", "--dir", "churn", cwd=tmp_path, env=env).returncode == 0
    with open(tmp_path / "churn" / "params.yaml", "a") as fh:
        fh.write("\ntracking:\n  experiment: shared\n")
    assert run_mlci("run", cwd=tmp_path / "churn", env=env).returncode == 0
    refused = run_mlci("diff", cwd=ws, env=env)  # the Adult champion against the latest run: churn's
    assert refused.returncode == errors.USAGE, refused.stderr
    assert "dataset 'adult'" in refused.stderr and "'churn'" in refused.stderr and "--across-datasets" in refused.stderr
    assert run_mlci("diff", "--across-datasets", cwd=ws, env=env).returncode == 0
