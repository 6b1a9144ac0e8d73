"""Any binary-classification CSV works by configuration alone; the model takes raw records."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import cli

from mlci import errors

DATASET_YAML = """
name: churn
target: Churned
positive_label: "yes"
negative_label: "no"
columns:
  - {name: Customer-ID, type: categorical}
  - {name: Plan, type: categorical, categories: [basic, plus, pro]}
  - {name: Region, type: categorical}
  - {name: Tenure Months, type: integer, min: 0, max: 600}
  - {name: Monthly.Spend, type: numeric, min: 0}
  - {name: Churned, type: label}
drop: [Customer-ID]
missing_values: ["", "NA"]
"""


def make_churn(n: int, seed: int) -> pd.DataFrame:
    """A small synthetic data set whose label depends on the features (so a model can learn it)."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro"], n)
    region = rng.choice(["north", "south", "east", "west"], n)
    tenure = rng.integers(0, 120, n)
    spend = np.round(rng.gamma(2.0, 30.0, n), 2)
    logit = -1.0 + 1.5 * (plan == "basic") - 0.03 * tenure + 0.01 * spend + 0.5 * (region == "south")
    churned = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df = pd.DataFrame({"Customer-ID": [f"c{i}" for i in range(n)], "Plan": plan, "Region": region,
                       "Tenure Months": tenure, "Monthly.Spend": spend, "Churned": churned})
    df.loc[rng.random(n) < 0.05, "Region"] = "NA"  # missing values, kept
    return df


@pytest.fixture
def churn_workspace(workspace):
    make_churn(3000, 0).to_csv(workspace / "data" / "raw" / "churn.csv", index=False)
    (workspace / "churn.yaml").write_text(DATASET_YAML)
    params = (workspace / "params.yaml").read_text().replace("dataset: adult", "dataset: churn.yaml")
    params = params.replace("min: 0.8", "min: 0.6").replace("min: 0.9", "min: 0.6")
    (workspace / "params.yaml").write_text(params)
    return workspace


def test_second_dataset_runs_the_whole_pipeline(churn_workspace):
    ws = churn_workspace
    result = cli("run", "--json", env={"RAW_DATA_FILE": "churn.csv"})
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert 0.6 < out["test_metadata"]["test_roc_auc"] <= 1.0
    card = json.loads((ws / "models" / "model.json").read_text())
    assert card["features"] == ["plan", "region", "tenure_months", "monthly_spend"]
    assert card["positive_label"] == "yes"

    # Scoring a file without the label column, in the data's own spelling.
    new = make_churn(50, 1).drop(columns=["Churned"])
    new.to_csv(ws / "new.csv", index=False)
    scored = cli("predict", "new.csv", "-o", "scored.csv")
    assert scored.exit_code == 0, scored.output
    df = pd.read_csv(ws / "scored.csv")
    assert len(df) == 50 and set(df["prediction"]) <= {"yes", "no"}
    assert list(df["Customer-ID"]) == list(new["Customer-ID"])

    # Editing the dataset definition makes preprocess stale (it is part of the recorded parameters).
    (ws / "churn.yaml").write_text(DATASET_YAML.replace("max: 600", "max: 100"))
    again = cli("run", "--json", env={"RAW_DATA_FILE": "churn.csv"})
    assert again.exit_code == errors.REJECTS  # tenure up to 119 is now out of range
    assert "'tenure_months' above maximum 100" in again.stderr


def test_inline_dataset_definition_and_bad_definitions(churn_workspace):
    import yaml

    ws = churn_workspace
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["dataset"] = yaml.safe_load(DATASET_YAML)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    assert cli("preprocess", env={"RAW_DATA_FILE": "churn.csv"}).exit_code == 0

    params["dataset"]["target"] = "nope"
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    result = cli("preprocess", env={"RAW_DATA_FILE": "churn.csv"})
    assert result.exit_code == errors.USAGE and "target 'nope' is not among the columns" in result.stderr


def test_model_takes_raw_records_and_unseen_categories(workspace):
    """The saved artifact is one sklearn Pipeline: raw values in, probabilities out, no mlci needed."""
    assert cli("run").exit_code == 0
    record = {"age": 45, "workclass": "Private", "education": "Bachelors", "education_num": 13,
              "marital_status": "Married-civ-spouse", "occupation": "Exec-managerial", "relationship": "Husband",
              "race": "White", "sex": "Male", "capital_gain": 0, "capital_loss": 0, "hours_per_week": 50,
              "native_country": "United-States"}
    unseen = {**record, "native_country": "Atlantis", "workclass": None}
    probe = (
        "import sys, json, pickle, pandas as pd\n"
        "sys.modules['mlci'] = None  # loading must not need our package\n"
        "m = pickle.load(open('models/model.pkl', 'rb'))\n"
        f"rows = pd.DataFrame([{record!r}, {unseen!r}])\n"
        "print(json.dumps({'classes': list(m.classes_), 'p': m.predict_proba(rows)[:, 1].tolist()}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=workspace, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["classes"] == ["<=50K", ">50K"]
    assert all(0 < p < 1 for p in out["p"]) and out["p"][0] > 0.5  # a married executive: likely >50K
