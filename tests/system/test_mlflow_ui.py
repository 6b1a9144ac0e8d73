"""The MLflow UI on what mlci records, read in headless Chromium: who ran it, from which source and
commit, the datasets, the logged model with its metrics, and the pipeline's stages nested in it.

Screenshots go to ``.test-artifacts/`` (``MLCI_TEST_ARTIFACTS``)."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, populate, run_mlci
from servers import free_port, wait_until_answers

ARTIFACTS = Path(os.environ.get("MLCI_TEST_ARTIFACTS", ROOT / ".test-artifacts"))
BIN = Path(sys.executable).parent


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A tracked `mlci run` in a git checkout, and `mlflow ui` on its store (loopback)."""
    ws = populate(tmp_path_factory.mktemp("ui"))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "start"]):
        subprocess.run(git + args, cwd=ws, check=True)
    proc = run_mlci("run", cwd=ws, env={"MLCI_NO_TRACK": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = free_port()
    log = open(ws / "ui.log", "w")
    server = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{ws / 'mlflow.db'}",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=ws, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
                              start_new_session=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/health", server, ws / "ui.log", timeout=120)
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
        exp = client.get_experiment_by_name("adult")
        runs = client.search_runs([exp.experiment_id])
        yield {"url": f"http://127.0.0.1:{port}", "ws": ws, "exp": exp.experiment_id,
               "run": next(r for r in runs if r.data.tags.get("mlci.command") == "run"),
               "stage": next(r for r in runs if r.data.tags.get("mlci.stage") == "train"),
               "model": client.search_logged_models([exp.experiment_id])[0]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def _page(ui, route: str, shot: str) -> str:
    """The page's rendered text (its DOM after the app ran), and a screenshot of it."""
    chromium = _chromium()
    url = f"{ui['url']}/#{route}"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
              "--virtual-time-budget=20000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    subprocess.run([*common, "--hide-scrollbars", f"--screenshot={ARTIFACTS / shot}", url], capture_output=True,
                   timeout=180, check=True)
    assert (ARTIFACTS / shot).read_bytes().startswith(b"\x89PNG")
    body = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_the_run_page_shows_user_source_datasets_and_model(ui):
    run = ui["run"]
    text = _page(ui, f"/experiments/{ui['exp']}/runs/{run.info.run_id}", "mlflow-ui-run.png")
    tags = run.data.tags
    assert tags["mlflow.user"] in text and "mlci run" in text  # "Created by", "Source"
    assert tags["mlflow.source.git.commit"][:7] in text
    assert "adult-train" in text and "+2" in text  # "Datasets": the train split, and the other two
    child_runs = text[text.find("Child runs"):][:200]
    assert all(stage in child_runs for stage in ("preprocess", "train", "gate", "test", "report"))
    assert "Logged models" in text and ui["model"].name in text and "adult-income" in text  # registered too


def test_a_stage_run_names_its_parent(ui):
    text = _page(ui, f"/experiments/{ui['exp']}/runs/{ui['stage'].info.run_id}", "mlflow-ui-stage.png")
    assert "Parent run" in text and ui["run"].info.run_name in text


def test_the_logged_model_page_shows_its_metrics(ui):
    text = _page(ui, f"/experiments/{ui['exp']}/models/{ui['model'].model_id}", "mlflow-ui-model.png")
    assert "validation_roc_auc" in text and "test_acc" in text
