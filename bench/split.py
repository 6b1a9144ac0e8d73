#!/usr/bin/env python3
"""The split's cost: mlci's row-hash split against scikit-learn's stratified split, side by side.

    python3 tasks.py bench-split [--scales 1,10,100]

Both split the same validated frame (the bundled data, its rows repeated ``scale`` times) into
train/validation/test with the project's fractions; the figure is the median of 3 in-process runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1,10,100")
    args = ap.parse_args()
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from mlci.data.dataset import load_dataset_def
    from mlci.data.load import load_table
    from mlci.data.split import split_frame

    ds = load_dataset_def("adult")
    base = load_table(DATA, ds).frame
    print("| rows | row-hash split s | stratified train_test_split s | ratio | per row vs 1x |")
    print("|---:|---:|---:|---:|---:|")
    first = None
    for scale in (int(s) for s in args.scales.split(",")):
        frame = pd.concat([base] * scale, ignore_index=True) if scale > 1 else base

        def ours():
            split_frame(frame, ds.target, 0.2, 0.2, 42, "bench")

        def sklearn():
            rest, _ = train_test_split(frame, test_size=0.2, stratify=frame[ds.target], random_state=42)
            train_test_split(rest, test_size=0.25, stratify=rest[ds.target], random_state=42)

        times = {}
        for name, fn in (("ours", ours), ("sklearn", sklearn)):
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t)
            times[name] = statistics.median(runs)
        first = first or times["ours"] / len(frame)
        print(f"| {len(frame):,} | {times['ours']:.3f} | {times['sklearn']:.3f} | {times['ours'] / times['sklearn']:.2f} "
              f"| {times['ours'] / len(frame) / first:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
