#!/usr/bin/env python3
"""What MLflow tracking costs a run, measured side by side in one run.

    python3 tasks.py bench-tracking

Each figure is the median of interleaved fresh processes, tracked and
untracked (``--no-track``), on the bundled data:
* first use: a workspace with no ``mlflow.db`` yet (the database is created);
* warm, new model: a training parameter changes every run, so every tracked
  run logs, registers and promotes a new model version;
* warm, nothing changed: every stage is cached; the tracked run still records
  a "cached" run.
Warm runs are served by the workspace's tracking daemon (MLflow already
imported, its store open), as they are for a user; the same "new model" case
is measured again with ``MLCI_TRACKING_DAEMON=0`` (a fresh tracking worker per
run, as in a CI job that runs once).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "adult.data"
DATA = SHARED if SHARED.exists() else ROOT / "data" / "raw" / "adult.data"


def workspace(tmp: Path, name: str) -> Path:
    ws = tmp / name
    (ws / "data" / "raw").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    os.symlink(DATA, ws / "data" / "raw" / "adult.data")
    return ws


def timed(ws: Path, *args: str, daemon: bool = True) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLCI_NO_TRACK", "MLCI_TRACKING_DAEMON", "MLCI_TRACKING_DAEMON_IDLE")}
    env["MLCI_TRACKING_DAEMON"] = "1" if daemon else "0"
    env["MLCI_TRACKING_DAEMON_IDLE"] = "120"  # the bench's daemons leave soon after it
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mlci", "run", *args], cwd=ws, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 3):
        sys.exit(f"mlci run {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    repeats = 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlci-bench-tracking-") as t:
        tmp = Path(t)
        first_t, first_u = [], []
        for i in range(repeats):
            first_t.append(timed(workspace(tmp, f"first-t{i}")))
            first_u.append(timed(workspace(tmp, f"first-u{i}"), "--no-track"))
        rows.append(("first use (new database)", first_t, first_u))

        wt, wu = workspace(tmp, "warm-t"), workspace(tmp, "warm-u")
        timed(wt), timed(wu, "--no-track")
        new_t, new_u = [], []
        for i in range(repeats):
            new_t.append(timed(wt, "-S", f"train.n_estimators={401 + i}"))
            new_u.append(timed(wu, "--no-track", "-S", f"train.n_estimators={401 + i}"))
        rows.append(("warm, new model (train+gate+test rerun)", new_t, new_u))

        noop_t, noop_u = [], []
        for _ in range(repeats):
            noop_t.append(timed(wt, "-S", f"train.n_estimators={400 + repeats}"))
            noop_u.append(timed(wu, "--no-track", "-S", f"train.n_estimators={400 + repeats}"))
        rows.append(("warm, nothing changed (all cached)", noop_t, noop_u))

        cold_t, cold_u = [], []
        for i in range(repeats):
            cold_t.append(timed(wt, "-S", f"train.n_estimators={411 + i}", daemon=False))
            cold_u.append(timed(wu, "--no-track", "-S", f"train.n_estimators={411 + i}"))
        rows.append(("new model, no daemon (`MLCI_TRACKING_DAEMON=0`)", cold_t, cold_u))
        for ws in (wt, *(tmp / f"first-t{i}" for i in range(repeats))):  # stop the daemons it started
            lock = ws / ".mlci" / "tracking-daemon.lock"
            pid = lock.read_text().strip() if lock.exists() else ""
            if pid:
                try:
                    os.kill(int(pid), 15)
                except ProcessLookupError:
                    pass

    print("| case | tracked s | untracked s | tracking overhead s |")
    print("|---|---:|---:|---:|")
    for name, t, u in rows:
        mt, mu = statistics.median(t), statistics.median(u)
        print(f"| {name} | {mt:.2f} | {mu:.2f} | {mt - mu:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
