"""Installed from its wheel into a fresh virtualenv, mlci runs in an empty directory (the bundled data)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

UV = Path(sys.executable).with_name("uv")


def test_the_wheel_runs_anywhere(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("mlci-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mlci/py.typed", "mlci/data/datasets/adult.data", "mlci/data/datasets/adult.names",
            "mlci/data/datasets/adult.yaml"} <= names
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run([str(UV), "pip", "install", "-q", "--python", str(py), "-r",
                              str(ROOT / "requirements-runtime.lock"), str(wheel)], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    empty = tmp_path / "anywhere"
    empty.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([str(venv / "bin" / "mlci"), "run", "--no-track", "--json"], cwd=empty, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["test_metadata"]["test_acc"] > 0.85
    meta = json.loads((empty / "results" / "preprocess_metadata.json").read_text())
    assert meta["rows_read"] == 32561 and meta["source"].endswith("mlci/data/datasets/adult.data")
    assert "site-packages" in meta["source"]  # the installed copy, not this checkout


def test_the_sdist_holds_what_its_tests_need(tmp_path):
    import tarfile

    from setuptools import build_meta

    name = build_meta.build_sdist(str(tmp_path))
    members = {m.split("/", 1)[1] for m in tarfile.open(tmp_path / name).getnames() if "/" in m}
    assert {"tests/conftest.py", "devtools/docker_harness.py", "tasks.py", "params.yaml", "requirements.lock",
            "data/raw/adult.data", "src/mlci/py.typed", "src/mlci/data/datasets/adult.data"} <= members
