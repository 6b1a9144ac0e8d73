"""What the benchmarks share: the data, fresh workspaces, and timing one ``mlci`` process.

Every figure is a whole fresh process, as a user runs it. ``src`` runs another checkout's code
(``PYTHONPATH=<its src>``) with this environment's packages, so two versions can be measured
side by side, interleaved, in one run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlci.config.settings import WORKSPACE_VARS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "adult.data"
DATA = SHARED if SHARED.exists() else ROOT / "data" / "raw" / "adult.data"
#: Variables of the caller's shell that would change what a benchmarked run does.
_SCRUB = (*WORKSPACE_VARS, "MLFLOW_TRACKING_URI", "MLCI_NO_TRACK", "PYTHONPATH")


def workspace(parent: Path, name: str, data: Path = DATA, src: Path | None = None) -> Path:
    """A fresh workspace: the params.yaml of the checkout whose code runs there (``src``'s, else this
    repository's) and the raw data (linked)."""
    ws = parent / name
    (ws / "data" / "raw").mkdir(parents=True)
    params = src.parent / "params.yaml" if src is not None and (src.parent / "params.yaml").is_file() else None
    shutil.copy(params or ROOT / "params.yaml", ws / "params.yaml")
    os.symlink(data, ws / "data" / "raw" / "adult.data")
    return ws


def env(src: Path | None = None, track: bool = False, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    if not track:
        out["MLCI_NO_TRACK"] = "1"
    if src is not None:
        out["PYTHONPATH"] = str(src)
    out.update(extra)
    return out


def timed(cmd: list[str], cwd: Path, environ: dict | None = None, ok=(0,)) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and stderr of one fresh process; exits the benchmark if it failed."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=environ if environ is not None else env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({code}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, err


def mlci(ws: Path, *args: str, src: Path | None = None, track: bool = False, ok=(0,), **extra: str):
    """``python -m mlci ARGS`` in ``ws``: (wall seconds, peak RSS MB, stderr)."""
    return timed([sys.executable, "-m", "mlci", *args], ws, env(src, track, **extra), ok)


def call(ws: Path, *args: str, src: Path | None = None, track: bool = False, ok=(0,),
         **extra: str) -> tuple[float, subprocess.CompletedProcess]:
    """``python -m mlci ARGS`` in ``ws`` with its output kept: (wall seconds, the completed process)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mlci", *args], cwd=ws, env=env(src, track, **extra),
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in ok:
        sys.exit(f"mlci {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, proc


def repeated(n: int, tmp: Path) -> Path:
    """``adult.data`` repeated ``n`` times into ``tmp`` (its trailing blank line once, at the end);
    the file itself for 1."""
    if n == 1:
        return DATA
    out = tmp / f"adult_x{n}.data"
    body = DATA.read_bytes().rstrip(b"\n") + b"\n"
    with open(out, "wb") as fh:
        for _ in range(n):
            fh.write(body)
    return out
