#!/usr/bin/env python3
"""Set up and run mlci with nothing but python3 (3.11+) and access to PyPI.

    python3 tasks.py run      # set up .venv (what running needs), then run the whole pipeline
    python3 tasks.py run --profile best   # the same, with the best profile's extra (CatBoost, XGBoost, Optuna)
    python3 tasks.py setup    # only set up .venv for running (then .venv/bin/mlci ..., e.g. monitor)
    python3 tasks.py test     # set up .venv (with every test tool), then run the test suite
    python3 tasks.py test-unit  # only the fast unit tier (tests/unit: pytest -m unit, seconds)
    python3 tasks.py bench    # the pipeline benchmark (bench/pipeline.py)
    python3 tasks.py bench-report     # what the report costs (bench/report.py)
    python3 tasks.py bench-tracking   # what MLflow tracking costs a run (bench/tracking.py)
    python3 tasks.py bench-container  # image size, build times (bench/container.py; needs DOCKER_HOST)
    python3 tasks.py bench-serve      # mlci serve vs mlflow models serve (bench/serve.py; needs wrk)
    python3 tasks.py bench-best       # the default and best profiles side by side (bench/best.py)
    python3 tasks.py bench-split      # the row-hash split against a stratified split (bench/split.py)
    python3 tasks.py bench-scale      # the whole pipeline vs its floor at 1x, 10x, 100x rows (bench/scale.py)
    python3 tasks.py bench-cli        # how fast runs, diff, promote and rollback answer (bench/cli_latency.py)
    python3 tasks.py bench-monitor    # the reference profile's size, mlci monitor on 1 M records (bench/monitor.py)
    python3 tasks.py lock     # re-pin requirements.lock from pyproject.toml

Set-up creates ``.venv`` and installs exactly the versions pinned in
``requirements-runtime.lock`` for ``run`` (no test tools, no best profile, no MLflow
server) or ``requirements.lock`` for everything else (with uv, itself pinned below,
for speed, kept in ``~/.cache/mlci``: running does not need it), then the project in
editable mode. It is skipped when nothing it depends on changed (a test set-up
serves ``run`` as it is).
Extra arguments are passed on: ``python3 tasks.py run --force``,
``python3 tasks.py test -k load``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
LOCK = ROOT / "requirements.lock"
UV = "uv==0.13.8"
PIP = "pip==23.2.1"  # the test environment's (the wheel test builds with it); running needs none


def sh(*cmd: str | os.PathLike, **kw) -> None:
    print("+", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
BEST_LOCK = ROOT / "requirements-best.lock"  # the runtime pins plus the best profile's CatBoost, XGBoost, Optuna


def _digest(lock: Path) -> str:
    return hashlib.sha256(
        b"".join(p.read_bytes() for p in (lock, ROOT / "pyproject.toml", Path(__file__))) + UV.encode() + PIP.encode()
    ).hexdigest()


def uv() -> Path:
    """uv, pinned, in a small virtualenv of its own under ~/.cache/mlci (made once, shared by clones):
    it sets environments up, running needs none of it, so the run environment does not carry it."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlci" / UV.replace("==", "-")
    exe = home / "bin" / "uv"
    if not exe.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        sh(home / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", UV)
    return exe


#: What a run imports, compiled to bytecode once at set-up (see ``setup``): the pipeline, tracking
#: and MLflow's model API, the report's figures, the server.
WARM_UP = ("import mlci.cli, mlci.cli.pipeline, mlci.cli.registry, mlci.cli.serve, mlci.pipeline.runner, "
           "mlci.stages.train, mlci.stages.report, mlci.tracking.session, mlci.tracking.registry, "
           "mlci.tracking.logged_model, mlci.serving.app, mlci.reporting.plots, pandas, pyarrow.parquet, "
           "sklearn.pipeline, sklearn.compose, sklearn.preprocessing, sklearn.metrics, lightgbm, scipy.optimize, "
           "mlflow, mlflow.pyfunc, mlflow.tracking, mlflow.models, matplotlib.pyplot, fastapi, uvicorn, starlette")


def setup(kind: str = "test") -> None:
    """``.venv`` with the pins of ``kind``: "run" (what running needs: the runtime lock) or "test" (the
    whole development lock: test tools, the best profile, MLflow's server). A test set-up serves a
    run too, so `run` after `test` installs nothing."""
    if sys.version_info < (3, 11):
        sys.exit(f"mlci needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / ".mlci-setup"
    current = stamp.read_text() if stamp.exists() and (BIN / "mlci").exists() else ""
    wanted = {"test": f"test {_digest(LOCK)}", "best": f"best {_digest(BEST_LOCK)}",
              "run": f"run {_digest(RUNTIME_LOCK)}"}
    serves = {"test": ("test",), "best": ("test", "best"), "run": ("test", "best", "run")}[kind]
    if current in [wanted[k] for k in serves]:
        return
    lock = {"test": LOCK, "best": BEST_LOCK, "run": RUNTIME_LOCK}[kind]
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=False, clear=True).create(VENV)  # uv installs; pip would be 25 MB unused
    env = {**os.environ, "VIRTUAL_ENV": str(VENV)}
    py = BIN / "python"
    if kind == "test":
        # Every module compiled ahead: with PYTHONDONTWRITEBYTECODE set (as on our CI machines) each
        # import would otherwise compile from source in every test's process. uv and pip go in too:
        # the tests run `mlflow models predict --env-manager uv`, and build and install the wheel.
        sh(uv(), "pip", "sync", "--compile-bytecode", "--python", py, lock, env=env)
        sh(uv(), "pip", "install", "--python", py, UV, PIP, env=env)
    else:
        # Only what a run imports is compiled (the warm-up below): a third of the bytecode, 80 MB less.
        sh(uv(), "pip", "sync", "--python", py, lock, env=env)
    sh(uv(), "pip", "install", "--python", py, "--no-deps", "-e", ROOT, env=env)
    if kind != "test":
        sh(py, "-c", WARM_UP, env=_writing_bytecode())
    stamp.write_text(wanted[kind])


def _wants_best(args: list[str]) -> bool:
    return any(a in ("--profile=best", "train.profile=best") for a in args) or any(
        a == "--profile" and b == "best" for a, b in zip(args, args[1:]))


def _writing_bytecode() -> dict:
    """This environment, with Python allowed to cache the bytecode of what it imports."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    task, rest = argv[0], argv[1:]
    os.chdir(ROOT)
    if task == "lock":
        sh(uv(), "pip", "compile", "--quiet", "--python-version", "3.11", "--extra", "dev",
           "--no-emit-package", "mlci", "pyproject.toml", "-o", "requirements.lock")
        # What the container image installs: the same pins, without test tools.
        sh(uv(), "pip", "compile", "--quiet", "--python-version", "3.11", "--no-emit-package", "mlci",
           "--constraint", "requirements.lock", "pyproject.toml", "-o", "requirements-runtime.lock")
        # The image's optional `best` extra (docker build --build-arg MLCI_EXTRAS=best): the same pins.
        sh(uv(), "pip", "compile", "--quiet", "--python-version", "3.11", "--no-emit-package", "mlci",
           "--extra", "best", "--constraint", "requirements.lock", "pyproject.toml", "-o", "requirements-best.lock")
        return 0
    # A run of the best profile gets its extra; other runs only what running needs.
    if task == "setup":
        setup("run")
        return 0
    setup(("best" if _wants_best(rest) else "run") if task == "run" else "test")
    if task == "run":
        # Whatever the first run imports beyond the warm-up is cached too.
        return subprocess.call([str(BIN / "mlci"), "run", *rest], env=_writing_bytecode())
    if task == "test":
        return subprocess.call([str(BIN / "python"), "-m", "pytest", *rest])
    if task == "test-unit":
        return subprocess.call([str(BIN / "python"), "-m", "pytest", "-m", "unit", *rest])
    if task == "bench":
        return subprocess.call([str(BIN / "python"), "bench/pipeline.py", *rest])
    if task == "bench-container":
        return subprocess.call([str(BIN / "python"), "bench/container.py", *rest])
    if task == "bench-report":
        return subprocess.call([str(BIN / "python"), "bench/report.py", *rest])
    if task == "bench-tracking":
        return subprocess.call([str(BIN / "python"), "bench/tracking.py", *rest])
    if task == "bench-best":
        return subprocess.call([str(BIN / "python"), "bench/best.py", *rest])
    if task == "bench-split":
        return subprocess.call([str(BIN / "python"), "bench/split.py", *rest])
    if task == "bench-scale":
        return subprocess.call([str(BIN / "python"), "bench/scale.py", *rest])
    if task == "bench-cli":
        return subprocess.call([str(BIN / "python"), "bench/cli_latency.py", *rest])
    if task == "bench-monitor":
        return subprocess.call([str(BIN / "python"), "bench/monitor.py", *rest])
    if task == "bench-serve":
        return subprocess.call([str(BIN / "python"), "bench/serve.py", *rest])
    print(f"unknown task {task!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
