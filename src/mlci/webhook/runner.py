"""A push's run: check the commit out into a fresh directory, run the pipeline there, read its verdict.

In the commit's own image when a Docker engine answers (``--runner docker``), else as a process on
this machine. Either way the pipeline that runs is the *installed* mlci (``python -I``: a checkout's
own ``mlci/`` folder is not importable), in a scrubbed environment (the webhook's secret never
reaches it), and pass/fail is read from the pipeline's own result files, not its exit code alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlci.config import settings as S
from mlci.errors import GATE_FAILED, StateError
from mlci.fileio import read_json_or_none
from mlci.webhook.model import Config, Run

#: What a host run may see of the server's environment (locale, paths, proxies and CA bundles, MLflow's
#: server and its credentials); everything else, the webhook's secret first, stays behind.
PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
             "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
             "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL", "PIP_CERT",
             "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
             "DOCKER_HOST", "MLCI_DOCKER", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run_dir(config: Config, run: Run) -> Path:
    """Where a run's checkout, log and (docker runner) results live."""
    return config.workdir / "runs" / run.id


def scrubbed_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k in PASSED_ON}, **extra}


def execute(run: Run, config: Config) -> None:
    """Check out the commit into a fresh directory and run the pipeline there."""
    base = run_dir(config, run)
    src = base / "src"
    base.mkdir(parents=True, exist_ok=True)
    run.status, run.started_at = "running", time.time()
    try:
        with open(base / "log.txt", "w", encoding="utf-8") as log:
            def step(*cmd: str, **kw) -> int:
                shown = [a.split("=", 1)[0] + "=<the proxy's CA>" if a.startswith("PIP_CA=") else a for a in cmd]
                log.write("$ " + " ".join(shown) + "\n")
                log.flush()
                return subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=config.timeout, **kw).returncode

            if step("git", "clone", "--quiet", "--no-checkout", "--", config.repo_url, str(src)):
                raise RuntimeError("git clone failed")
            if step("git", "-C", str(src), "checkout", "--quiet", "--detach", run.commit):
                raise RuntimeError(f"commit {run.commit} not found in {config.repo_url}")
            run.runner = _runner(config.runner)
            # MLflow's store outlives the checkouts (the champion is what the next push is compared
            # with): a team server if MLFLOW_TRACKING_URI says so, else a SQLite file in the workdir.
            store = config.workdir / "mlflow"
            store.mkdir(exist_ok=True)
            pipeline = _in_docker if run.runner == "docker" else _on_host
            code, results_dir = pipeline(step, run, config, base, src, store)
        _verdict(run, code, results_dir)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        run.status, run.error = "failed", str(e)
    finally:
        run.finished_at = time.time()


def _in_docker(step, run: Run, config: Config, base: Path, src: Path, store: Path) -> tuple[int, Path]:
    tag = f"mlci-webhook:{run.commit[:12]}"
    ca = ["--build-arg", f"PIP_CA={Path(config.build_ca).read_text()}"] if config.build_ca else []
    if step(docker_cli(), "build", *ca, "--build-arg", f"MLCI_REVISION={run.commit}", "-t", tag, str(src),
            env=DOCKER_ENV):
        raise RuntimeError("docker build failed")
    results_dir = base / "results"
    results_dir.mkdir()
    for d in (results_dir, store):
        d.chmod(0o777)  # the image runs as an unprivileged user
    uri = ["-e", "MLFLOW_TRACKING_URI"] if os.environ.get("MLFLOW_TRACKING_URI") else []
    code = step(docker_cli(), "run", "--rm", *uri, "-e", f"MLCI_BRANCH={run.branch}", "-v", f"{results_dir}:/data/results",
                "-v", f"{store}:/data/mlflow", tag, "run", env=DOCKER_ENV)
    return code, results_dir


def _on_host(step, run: Run, config: Config, base: Path, src: Path, store: Path) -> tuple[int, Path]:
    env = scrubbed_env(MLCI_BRANCH=run.branch)  # the checkout is detached: say which branch it is
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{(store / 'mlflow.db').absolute()}")
    # -I: isolated mode; the checkout (the working directory) is not on sys.path, so a pushed
    # top-level `mlci/` package cannot stand in for the installed one.
    return step(sys.executable, "-I", "-m", "mlci", "run", cwd=src, env=env), src / "results"


def _verdict(run: Run, code: int, results_dir: Path) -> None:
    """Pass/fail from the pipeline's own result files: a run "passed" only when the gate said so and
    the test split was scored for that very model."""
    run.exit_code = code
    run.gate = read_json_or_none_safe(results_dir / S.GATE_FILE)
    train = read_json_or_none_safe(results_dir / S.TRAIN_METADATA) or {}
    test = read_json_or_none_safe(results_dir / S.TEST_METADATA) or {}
    run.metrics = {k: v for k, v in {**train, **test}.items() if k.endswith(("_acc", "_roc_auc"))}
    gate_passed = bool(run.gate and run.gate.get("passed") is True)
    tested = bool(test) and test.get("model_sha256") == train.get("model_sha256")
    if code == 0 and gate_passed and tested:
        run.status = "passed"
    elif code == GATE_FAILED and run.gate is not None and run.gate.get("passed") is False:
        run.status = "gate-failed"
    else:
        run.status = "failed"
        run.error = (f"mlci run exited with {code}; see the log" if code not in (0, GATE_FAILED)
                     else f"mlci run exited with {code} but its result files do not show a complete run")


def read_json_or_none_safe(path: Path) -> dict | None:
    """A result file's content, or None when it is missing or damaged (read_json raises StateError then)."""
    try:
        return read_json_or_none(path)
    except (OSError, StateError):
        return None


def docker_cli() -> str:
    """``MLCI_DOCKER`` (e.g. Debian's /usr/bin/docker) or `docker`."""
    return os.environ.get("MLCI_DOCKER") or shutil.which("docker") or "docker"


DOCKER_ENV = {**os.environ, "DOCKER_BUILDKIT": "1"}


def _runner(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        up = subprocess.run([docker_cli(), "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        up = False
    return "docker" if up else "host"
