#!/usr/bin/env python3
"""What monitoring costs: the reference profile's size as training rows grow, and ``mlci monitor``'s
time on a million records, as a CSV and as the server's Parquet prediction logs.

    python3 tasks.py bench-monitor                  # train at 1 x and 100 x; monitor 1,000,000 records
    python3 tasks.py bench-monitor --train 1,10 --records 200000

For each ``--train`` multiple, ``adult.data`` repeated that many times, ``mlci train`` on it
(``--no-track``) and the size of ``models/reference.json``. Then, with the 1 x model, ``mlci
monitor`` (fresh processes, ``--repeats`` each, median) on ``--records`` records: the rows of
``adult.data`` repeated, with every fourth age moved up by 15 (so there is drift to find), as a
labelled CSV and as Parquet prediction logs of the server's columns (``LOG_COLUMNS``) in files of
100,000 records. Generated data lives in a temporary directory and is never kept.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, mlci, repeated, workspace  # noqa: E402


def batches(ws: Path, records: int, tmp: Path) -> tuple[Path, Path]:
    """The same ``records`` records as a labelled CSV and as prediction logs of the 1 x model."""
    import numpy as np
    import pandas as pd

    from mlci.config.params import Params
    from mlci.data.load import load_table
    from mlci.modeling.artifact import load_model
    from mlci.modeling.estimator import decision_threshold, predict_proba
    from mlci.stages.monitor import LOG_COLUMNS

    ds = Params().dataset_def()
    raw = pd.read_csv(DATA, header=None, names=ds.column_names, skipinitialspace=True, keep_default_na=False,
                      dtype=str).iloc[:-0 or None]
    raw = raw[raw["age"].str.strip() != ""]
    raw = raw.iloc[np.arange(records) % len(raw)].reset_index(drop=True)
    moved = raw.index % 4 == 0
    raw.loc[moved, "age"] = (raw.loc[moved, "age"].astype(int) + 15).astype(str)
    csv = tmp / "batch.csv"
    raw.to_csv(csv, index=False)
    frame = load_table(csv, ds).frame
    model, card = load_model(ws / "models")
    features = [c.name for c in ds.features]
    proba = predict_proba(model, frame[features], ds.positive_label)
    logs = tmp / "predictions"
    logs.mkdir()
    pred = np.where(proba >= decision_threshold(model), ds.positive_label, ds.negative_label)
    out = frame.assign(**dict(zip(LOG_COLUMNS, (proba, pred, pd.Timestamp("2026-12-03T00:00:00Z"),
                                                [f"r{i}" for i in range(len(frame))], card["sha256"]))))
    for i, start in enumerate(range(0, records, 100_000)):
        out.iloc[start:start + 100_000].to_parquet(logs / f"predictions-{i:05d}.parquet", index=False)
    return csv, logs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default="1,100", help="training-row multiples whose profile size is measured")
    ap.add_argument("--records", type=int, default=1_000_000, help="records mlci monitor reads")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlci-bench-monitor-") as t:
        tmp = Path(t)
        sizes, first = {}, None
        for n in (int(x) for x in args.train.split(",")):
            data = repeated(n, tmp)
            ws = workspace(tmp, f"x{n}", data=data)
            wall, _, _ = mlci(ws, "run", "--until", "train", "-q")
            sizes[n] = ((ws / "models" / "reference.json").stat().st_size, wall)
            print(f"x{n}: trained in {wall:.1f} s", file=sys.stderr, flush=True)
            if first is None:
                first = ws
            else:
                shutil.rmtree(ws)
            if data != DATA:
                data.unlink()
        csv, logs = batches(first, args.records, tmp)
        times = {"CSV": [], "prediction logs": []}
        for _ in range(args.repeats):
            for what, batch in (("CSV", csv), ("prediction logs", logs)):
                wall, rss, _ = mlci(first, "monitor", str(batch), "--model-dir", "models", "--no-track",
                                    "-o", str(tmp / "out"), ok=(0, 12))
                times[what].append((wall, rss))
        print("| training rows | reference.json |")
        print("|---:|---:|")
        rows_1x = sum(1 for line in DATA.read_bytes().splitlines() if line.strip())
        for n, (size, _) in sizes.items():
            print(f"| {rows_1x * n:,} | {size / 1024:,.1f} kB |")
        print()
        print(f"| mlci monitor on {args.records:,} records | wall s (median of {args.repeats}) | peak RSS MB |")
        print("|---|---:|---:|")
        for what, got in times.items():
            print(f"| {what} | {statistics.median(w for w, _ in got):.1f} | {statistics.median(r for _, r in got):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
