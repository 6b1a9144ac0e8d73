#!/usr/bin/env python3
"""Benchmark the core pipeline against its floor, side by side in one run.

    python3 tasks.py bench                 # scales 1, 10 and 100 (about 10 minutes here)
    python3 tasks.py bench --scales 1      # the bundled data only

For each scale it measures, each in a fresh process:
* cold ``mlci run --no-track --until test`` (empty workspace) wall time and peak
  RSS: the tutorial's pipeline (tracking's own cost is measured by
  bench/tracking.py, the report's by bench/report.py);
* the no-op rerun (median of 3);
* the *floor*: a bare script that imports the same libraries, reads the same
  CSV with pandas and fits the same default model on as many rows as mlci
  trains on; nothing else (no validation, no split files, no model file);
* the ratio run/floor, and validation/test accuracy and ROC-AUC.
Scales above 1 resample the real rows with small noise on the numbers.
Figures are ratios measured in the same run: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
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
from common import DATA, ROOT, timed  # noqa: E402

FLOOR = r"""
import sys, pandas as pd, lightgbm as lgb, yaml
path, frac = sys.argv[1], float(sys.argv[2])
cols = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
        "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income"]
df = pd.read_csv(path, header=None, names=cols, skipinitialspace=True, na_values="?")
df = df.drop(columns=["fnlwgt"]).sample(frac=frac, random_state=0)
y = df.pop("income")
for c in df.columns:
    if df[c].dtype == object or str(df[c].dtype).startswith("str"):
        df[c] = df[c].astype("category")
p = yaml.safe_load(open(sys.argv[3]))["train"]
lgb.LGBMClassifier(n_estimators=p["n_estimators"], learning_rate=p["learning_rate"], num_leaves=p["num_leaves"],
                   colsample_bytree=p["colsample_bytree"], cat_smooth=p["cat_smooth"],
                   min_data_per_group=p["min_data_per_group"], min_child_samples=p["min_child_samples"],
                   random_state=p["seed"], deterministic=True, force_col_wise=True, verbose=-1).fit(df, y)
"""


def make_scaled(scale: int, out: Path) -> Path:
    """``scale`` x the real rows, resampled, with small noise on age and hours (kept in range)."""
    if scale == 1:
        return DATA
    import numpy as np
    import pandas as pd

    cols = list(range(15))
    df = pd.read_csv(DATA, header=None, names=cols, skipinitialspace=True, dtype=str)
    rng = np.random.default_rng(scale)
    big = df.sample(n=len(df) * scale, replace=True, random_state=scale).reset_index(drop=True)
    for col, lo, hi in ((0, 17, 90), (12, 1, 99)):
        v = big[col].astype(int) + rng.integers(-1, 2, len(big))
        big[col] = v.clip(lo, hi).astype(str)
    big.to_csv(out, header=False, index=False, sep=",")
    return out


def bench_scale(scale: int, tmp: Path, py: str) -> dict:
    ws = tmp / f"x{scale}"
    (ws / "data" / "raw").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    data = make_scaled(scale, ws / "data" / "raw" / "adult.data")
    if data == DATA:
        os.symlink(DATA, ws / "data" / "raw" / "adult.data")
    frac = 0.6  # what mlci trains on with the default split (0.2 validation, 0.2 test)
    floor_t, floor_rss, _ = timed([py, "-c", FLOOR, str(data), str(frac), str(ws / "params.yaml")], ws)
    # The core pipeline alone; what tracking adds is bench/tracking.py's business.
    # Up to `test`: the tutorial's pipeline, like for like with the floor (the report's own cost
    # is measured by bench/report.py).
    run_t, run_rss, _ = timed([py, "-m", "mlci", "run", "--no-track", "--until", "test"], ws)
    timed([py, "-m", "mlci", "run", "--no-track"], ws)  # the report, so all is up to date
    noop = [timed([py, "-m", "mlci", "run", "--no-track"], ws)[0] for _ in range(3)]
    train = json.loads((ws / "results" / "train_metadata.json").read_text())
    test = json.loads((ws / "results" / "test_metadata.json").read_text())
    return {
        "scale": scale,
        "rows": 32561 * scale,
        "floor_s": round(floor_t, 2),
        "run_s": round(run_t, 2),
        "ratio": round(run_t / floor_t, 2),
        "noop_s": round(statistics.median(noop), 2),
        "run_peak_rss_mb": round(run_rss),
        "floor_peak_rss_mb": round(floor_rss),
        "validation_acc": train["validation_acc"],
        "validation_roc_auc": train["validation_roc_auc"],
        "test_acc": test["test_acc"],
        "test_roc_auc": test["test_roc_auc"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1,10,100", help="comma-separated multiples of the real rows")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlci-bench-") as tmp:
        for scale in (int(s) for s in args.scales.split(",")):
            rows.append(bench_scale(scale, Path(tmp), py))
            print(f"done x{scale}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    base = rows[0]
    print(f"| rows | floor s | mlci run s | run/floor | no-op rerun s | peak RSS MB (run / floor) "
          f"| time per row vs x{base['scale']} | val acc | val AUC | test acc | test AUC |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        growth = (r["run_s"] / r["rows"]) / (base["run_s"] / base["rows"])
        print(f"| {r['rows']:,} | {r['floor_s']} | {r['run_s']} | {r['ratio']} | {r['noop_s']} "
              f"| {r['run_peak_rss_mb']:,} / {r['floor_peak_rss_mb']:,} | {growth:.2f} "
              f"| {r['validation_acc']:.4f} | {r['validation_roc_auc']:.4f} | {r['test_acc']:.4f} | {r['test_roc_auc']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
