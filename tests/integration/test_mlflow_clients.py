"""MLflow's own clients on the champion mlci registered, for both profiles: ``mlflow.pyfunc.load_model``,
``mlflow models serve`` and ``mlflow models predict`` in an environment built from the model alone.

Each answers the positive class's probability and the label for a plain ``read_csv`` frame of the
tutorial's CSV (``?`` markers and a category the model never saw included), equal to ``mlci predict``'s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, kaggle_csv, run_mlci
from servers import free_port, wait_until_answers

MODEL = "models:/adult-income@champion"
#: The best profile, made quick: every member family (so the pickle needs CatBoost, XGBoost and
#: mlci's own Ensemble), few rounds, no tuning.
PROFILES = {
    "default": [],
    "best": ["--profile", "best", "-S", "best.tuning_trials=0", "-S", "best.catboost_iterations=30",
             "-S", "best.xgboost_rounds=30", "-S", "best.folds=2"],
}
BIN = Path(sys.executable).parent  # this environment's mlflow, uvicorn and uv


@pytest.fixture(scope="module", params=list(PROFILES))
def champion(request, tmp_path_factory):
    """A workspace whose tracked run on the tutorial's CSV registered a champion; rows to score and
    ``mlci predict``'s answers for them."""
    ws = tmp_path_factory.mktemp(f"clients-{request.param}")
    (ws / "data" / "raw").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    csv = kaggle_csv(ws)
    os.symlink(csv, ws / "data" / "raw" / "adult.csv")
    env = {"RAW_DATA_FILE": "adult.csv", "MLCI_NO_TRACK": ""}
    proc = run_mlci("run", "--json", *PROFILES[request.param], cwd=ws, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["tracking"]["promoted"] is True

    lines = csv.read_text().splitlines()[:401]
    lines[5] = lines[5].replace('"United-States"', '"Atlantis"', 1)  # a country the model never saw
    rows = ws / "rows.csv"
    rows.write_text("\n".join(lines) + "\n")
    out = ws / "scored.csv"
    proc = run_mlci("predict", str(rows), "-o", str(out), cwd=ws, env=env)
    assert proc.returncode == 0, proc.stderr
    reference = pd.read_csv(out)
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    return SimpleNamespace(ws=ws, uri=uri, rows=rows, reference=reference, profile=request.param,
                           env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}"})


def same_as_mlci_predict(champion, answers: list[dict] | pd.DataFrame) -> None:
    got = pd.DataFrame(answers)
    assert list(got.columns) == ["probability", "label"] and len(got) == len(champion.reference)
    np.testing.assert_allclose(got["probability"], champion.reference["probability"], rtol=0, atol=1e-9)
    assert (got["label"] == champion.reference["prediction"]).all()


def test_pyfunc_load_model_scores_a_plain_read_csv_frame(champion):
    import mlflow

    from mlci.tracking.store import use_uri

    use_uri(champion.uri)
    frame = pd.read_csv(champion.rows)  # integers as int64, text as text, `?` as it is in the file
    assert (frame == "?").any().any() and (frame["native.country"] == "Atlantis").sum() == 1
    model = mlflow.pyfunc.load_model(MODEL)
    same_as_mlci_predict(champion, model.predict(frame))
    # The signature names the columns as the file spells them, typed as pandas reads them.
    inputs = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert inputs["education.num"] == "long" and inputs["native.country"] == "string" and "fnlwgt" not in inputs
    with pytest.raises(ValueError, match=r"column 'age', row 2: 'old' is not a number"):
        model.unwrap_python_model().predict(None, frame.astype({"age": object}).assign(
            age=lambda f: f.age.where(f.index != 2, "old")))
    assert [c.name for c in model.metadata.get_output_schema().inputs] == ["probability", "label"]


def test_the_logged_model_carries_its_environment(champion):
    import mlflow

    from mlci.tracking.store import use_uri

    use_uri(champion.uri)
    local = Path(mlflow.artifacts.download_artifacts(MODEL))
    reqs = (local / "requirements.txt").read_text().split()
    names = {r.split("==")[0] for r in reqs}
    assert {"mlflow", "scikit-learn", "lightgbm", "pandas", "numpy", "cloudpickle"} <= names
    assert all("==" in r for r in reqs)  # pinned to what it was trained with
    if champion.profile == "best":
        assert {"catboost", "xgboost-cpu"} <= names
    assert (local / "code" / "mlci" / "ensemble.py").is_file()  # the best profile's pickle needs it
    assert not list((local / "code").rglob("*.data"))  # modules only, not the bundled data
    assert (local / "input_example.json").is_file() and (local / "artifacts" / "model.pkl").is_file()


def test_mlflow_models_serve_answers_probabilities(champion):
    port = free_port()
    log = champion.ws / "serve.log"
    with open(log, "w") as fh:
        server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", MODEL, "--env-manager", "local",
                                   "-h", "127.0.0.1", "-p", str(port)], env=champion.env, cwd=champion.ws,
                                  stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/ping", server, log)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=champion.rows.read_bytes(),
                                         headers={"Content-Type": "text/csv"})
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                answers = json.loads(reply.read())["predictions"]
        except urllib.error.HTTPError as e:
            pytest.fail(f"{e}: {e.read().decode()[:2000]}")
        same_as_mlci_predict(champion, answers)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_mlflow_models_predict_in_the_models_own_environment(champion):
    """``--env-manager uv`` builds a virtualenv from the model's python_env.yaml and requirements.txt
    (from PyPI, through uv's cache), then loads and scores the model there."""
    if shutil.which("uv", path=champion.env["PATH"]) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("uv is not installed (tasks.py installs it into .venv)")
        pytest.skip("uv is not installed here")
    out = champion.ws / "predicted.json"
    proc = subprocess.run([str(BIN / "mlflow"), "models", "predict", "-m", MODEL, "-i", str(champion.rows), "-t",
                           "csv", "-o", str(out), "--env-manager", "uv"], env=champion.env, cwd=champion.ws,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and os.environ.get("CI") != "true" and "Failed to fetch" in proc.stderr:
        pytest.skip("PyPI is not reachable here: the model's environment cannot be built")
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_as_mlci_predict(champion, json.loads(out.read_text())["predictions"])
