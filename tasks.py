#!/usr/bin/env python3
"""Set up and run mlci with nothing but python3 (3.11+) and access to PyPI.

    python3 tasks.py run      # set up .venv (what running needs), then run the whole pipeline
    python3 tasks.py test     # set up .venv (with every test tool), then run the test suite
    python3 tasks.py test-unit  # only the fast unit tier (tests/unit: pytest -m unit, seconds)
    python3 tasks.py bench    # the pipeline benchmark (bench/pipeline.py)
    python3 tasks.py bench-report     # what the report costs (bench/report.py)
    python3 tasks.py bench-tracking   # what MLflow tracking costs a run (bench/tracking.py)
    python3 tasks.py bench-container  # image size, build times (bench/container.py; needs DOCKER_HOST)
    python3 tasks.py bench-serve      # mlci serve vs mlflow models serve (bench/serve.py; needs wrk)
    python3 tasks.py bench-best       # the default and best profiles side by side (bench/best.py)
    python3 tasks.py bench-split      # the row-hash split against a stratified split (bench/split.py)
    python3 tasks.py bench-cli        # how fast runs, diff, promote and rollback answer (bench/cli_latency.py)
    python3 tasks.py lock     # re-pin requirements.lock from pyproject.toml

Set-up creates ``.venv`` and installs exactly the versions pinned in
``requirements-runtime.lock`` for ``run`` (no test tools, no best profile, no MLflow
server) or ``requirements.lock`` for everything else (with uv, itself pinned below,
for speed), then the project in editable mode. It is skipped when nothing it
depends on changed (a test set-up serves ``run`` as it is).
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


def sh(*cmd: str | os.PathLike, **kw) -> None:
    print("+", " ".join(map(str, cmd)), file=sys.stderr, flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


RUNTIME_LOCK = ROOT / "requirements-runtime.lock"


def _digest(lock: Path) -> str:
    return hashlib.sha256(
        b"".join(p.read_bytes() for p in (lock, ROOT / "pyproject.toml", Path(__file__))) + UV.encode()
    ).hexdigest()


def setup(kind: str = "test") -> None:
    """``.venv`` with the pins of ``kind``: "run" (what running needs: the runtime lock) or "test" (the
    whole development lock: test tools, the best profile, MLflow's server). A test set-up serves a
    run too, so `run` after `test` installs nothing."""
    if sys.version_info < (3, 11):
        sys.exit(f"mlci needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    stamp = VENV / ".mlci-setup"
    current = stamp.read_text() if stamp.exists() and (BIN / "mlci").exists() else ""
    wanted = {"test": f"test {_digest(LOCK)}", "run": f"run {_digest(RUNTIME_LOCK)}"}
    if current in (wanted["test"], wanted[kind]):
        return
    lock = LOCK if kind == "test" else RUNTIME_LOCK
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    sh(BIN / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", UV)
    env = {**os.environ, "VIRTUAL_ENV": str(VENV)}
    # --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on our CI machines) every import would
    # otherwise compile from source, which triples the start-up time of a run.
    sh(BIN / "uv", "pip", "sync", "--compile-bytecode", "--python", BIN / "python", lock, env=env)
    sh(BIN / "uv", "pip", "install", "--python", BIN / "python", "--no-deps", "-e", ROOT, env=env)
    stamp.write_text(wanted[kind])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    task, rest = argv[0], argv[1:]
    os.chdir(ROOT)
    if task == "lock":
        if not (BIN / "uv").exists():
            setup()
        sh(BIN / "uv", "pip", "compile", "--quiet", "--python-version", "3.11", "--extra", "dev",
           "--no-emit-package", "mlci", "pyproject.toml", "-o", "requirements.lock")
        # What the container image installs: the same pins, without test tools.
        sh(BIN / "uv", "pip", "compile", "--quiet", "--python-version", "3.11", "--no-emit-package", "mlci",
           "--constraint", "requirements.lock", "pyproject.toml", "-o", "requirements-runtime.lock")
        # The image's optional `best` extra (docker build --build-arg MLCI_EXTRAS=best): the same pins.
        sh(BIN / "uv", "pip", "compile", "--quiet", "--python-version", "3.11", "--no-emit-package", "mlci",
           "--extra", "best", "--constraint", "requirements.lock", "pyproject.toml", "-o", "requirements-best.lock")
        return 0
    setup("run" if task == "run" else "test")
    if task == "run":
        return subprocess.call([str(BIN / "mlci"), "run", *rest])
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
    if task == "bench-cli":
        return subprocess.call([str(BIN / "python"), "bench/cli_latency.py", *rest])
    if task == "bench-serve":
        return subprocess.call([str(BIN / "python"), "bench/serve.py", *rest])
    print(f"unknown task {task!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
