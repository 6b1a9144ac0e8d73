#!/usr/bin/env python3
"""What the report costs, on the bundled data (target: report generation <= 1.5 s).

    python3 tasks.py bench-report

In one workspace: a full untracked run, then ``repeats`` forced runs. For each,
the report stage's own seconds (as ``mlci run --json`` reports them: the
process has pandas, scikit-learn and LightGBM loaded already, as in every
real run) next to the whole run's, and the seconds of a cold ``mlci report``
process (imports included) after the report's parameters change. Medians.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT  # noqa: E402
from common import call as mlci  # noqa: E402


def main() -> int:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="mlci-bench-report-") as t:
        ws = Path(t)
        (ws / "data" / "raw").mkdir(parents=True)
        shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
        os.symlink(DATA, ws / "data" / "raw" / "adult.data")
        mlci(ws, "run")
        stage, run, cold = [], [], []
        for i in range(repeats):
            elapsed, proc = mlci(ws, "run", "--force", "--json")
            seconds = {s["name"]: s["seconds"] for s in json.loads(proc.stdout)["stages"]}
            stage.append(seconds["report"])
            run.append(elapsed)
            cold.append(mlci(ws, "report", "-S", f"report.seed={i + 1}")[0])
    s, r, c = statistics.median(stage), statistics.median(run), statistics.median(cold)
    print(f"| report stage in `mlci run` | {s:.2f} s | {s / r:.0%} of the run ({r:.2f} s) |")
    print(f"| `mlci report`, cold process | {c:.2f} s | imports included |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
