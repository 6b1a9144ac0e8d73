"""Shared fixtures: real data, isolated workspaces, and ways to call the CLI."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlci.config.settings import WORKSPACE_VARS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BUNDLED = ROOT / "data" / "raw"
PATH_VARS = (*WORKSPACE_VARS, "MLFLOW_TRACKING_URI", "MLCI_NO_TRACK")

TIERS = ("unit", "integration", "system")  # tests/<tier>/: the marker each test gets (pyproject.toml)

UCI_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education.num", "marital.status", "occupation",
               "relationship", "race", "sex", "capital.gain", "capital.loss", "hours.per.week",
               "native.country", "income"]


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers
def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, from its folder: ``pytest -m unit`` runs tests/unit only."""
    tests = Path(__file__).resolve().parent
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(tests).parts[0]
        except ValueError:
            continue  # not under tests/ (a file named on the command line from elsewhere)
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


def populate(ws: Path) -> Path:
    """Make ``ws`` a workspace: the repository's params.yaml and the real data (linked)."""
    (ws / "data" / "raw").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    os.symlink(adult_data(), ws / "data" / "raw" / "adult.data")
    return ws


def repo_files() -> list[str]:
    """The repository's files as a fresh clone would have them (tracked, plus new ones not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    return [name for name in listed if name and (ROOT / name).is_file()]


def adult_data() -> Path:
    """The UCI training file: ../shared/data when present, else the bundled copy."""
    shared = SHARED / "adult.data"
    return shared if shared.exists() else BUNDLED / "adult.data"


def kaggle_csv(tmp_dir: Path) -> Path:
    """The tutorial's Kaggle-format CSV: ../shared's, else the bundled copy, else rebuilt from the UCI file."""
    for known in (SHARED / "adult.csv", BUNDLED / "adult.csv"):
        if known.exists():
            return known
    out = tmp_dir / "adult.csv"
    with open(adult_data()) as src, open(out, "w", newline="") as dst:
        w = csv.writer(dst, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(UCI_COLUMNS)
        for line in src:
            if line.strip():
                fields = [f.strip() for f in line.split(",")]
                w.writerow([int(f) if f.isdigit() else f for f in fields])
    return out


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh working directory with the repository's params.yaml and the real data, env cleared."""
    for var in PATH_VARS:
        monkeypatch.delenv(var, raising=False)
    # The core pipeline's tests run untracked; tests/integration/test_tracking.py turns tracking on.
    monkeypatch.setenv("MLCI_NO_TRACK", "1")
    monkeypatch.chdir(tmp_path)
    return populate(tmp_path)


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory) -> Path:
    """One untracked `mlci run` with the repository's params.yaml on the real data, made once per session
    (a full run costs about 25 s of CPU). Never handed to a test itself: ``trained`` copies it."""
    ws = populate(tmp_path_factory.mktemp("trained-template"))
    with pytest.MonkeyPatch.context() as mp:
        for var in PATH_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("MLCI_NO_TRACK", "1")
        mp.chdir(ws)
        result = cli("run")
    assert result.exit_code == 0, result.output
    return ws


def copy_trained(template: Path, ws: Path) -> Path:
    """``template``'s outputs, lock, run cache and state into the workspace ``ws`` (already populated: its
    own params.yaml and data link). A workspace holds no absolute path, so the copy is up to date as it is."""
    def skip(directory: str, names: list[str]) -> list[str]:
        return ["raw"] if Path(directory) == template / "data" else []

    shutil.copytree(template, ws, symlinks=True, dirs_exist_ok=True, ignore=skip)
    return ws


@pytest.fixture
def trained(workspace, trained_template):
    """The workspace as one untracked `mlci run` with the defaults leaves it (outputs, mlci.lock, .mlci's
    run cache): a copy of the session's ``trained_template``, for the tests that start from a finished run
    and change or damage it (each gets its own copy)."""
    return copy_trained(trained_template, workspace)


@pytest.fixture
def small(workspace):
    """The workspace with the first 6,000 rows of the data: every loop runs its full length, in seconds."""
    raw = workspace / "data" / "raw" / "adult.data"
    lines = raw.read_text().splitlines(True)[:6000]
    raw.unlink()
    raw.write_text("".join(lines))
    return workspace


def outputs(ws: Path) -> list[str]:
    """Every file a run may write, relative to the workspace (the raw data excluded)."""
    found = []
    for sub in ("data/processed", "models", "results"):
        d = ws / sub
        if d.exists():
            found += [str(p.relative_to(ws)) for p in d.rglob("*") if p.is_file()]
    return sorted(found)


def cli(*args: str, env: dict | None = None):
    """Run the CLI in-process (fast); returns click's Result with exit_code, stdout, stderr."""
    from click.testing import CliRunner

    from mlci.cli import main

    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def run_mlci(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m mlci`` as a real process: true exit codes, true imports."""
    full_env = {k: v for k, v in os.environ.items() if k not in PATH_VARS}
    full_env["MLCI_NO_TRACK"] = os.environ.get("MLCI_NO_TRACK", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "mlci", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def processes_under(path: Path, but: tuple[int, ...] = ()) -> list[str]:
    """Command lines of live processes that mention ``path`` (what a run may have left behind)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        try:
            if proc.info["pid"] in but or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(path) in text:
            found.append(text.strip())
    return found
