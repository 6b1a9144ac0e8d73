#!/usr/bin/env python3
"""What MLflow tracking costs a run, measured side by side in one run.

    python3 tasks.py bench-tracking [--repeats 3] [--vs OTHER/src]

Each figure is the median of interleaved fresh processes, tracked and untracked (``--no-track``),
on the bundled data:
* first use: a workspace with no ``mlflow.db`` yet (the database is created);
* warm, new model: a training parameter changes every run, so every tracked run logs, registers
  and promotes a new model version;
* warm, nothing changed: every stage is cached;
* forced: ``--force``, every stage reruns (the whole pipeline's cost).
``--vs`` runs the same cases with another checkout's code (e.g. the previous commit's ``src``,
from ``git worktree add``), interleaved with this one's, and prints both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, mlci, workspace  # noqa: E402


def cases(tmp: Path, code: dict[str, Path | None], repeats: int) -> dict:
    """{version: {case: (tracked seconds, untracked seconds)}} of medians."""
    got = {v: {} for v in code}

    def run(ws, *args, version, track):
        return mlci(ws, "run", *args, src=code[version], track=track, ok=(0, 3))[0]

    first = {v: ([], []) for v in code}
    for i in range(repeats):
        for v in code:
            first[v][0].append(run(workspace(tmp, f"{v}-first-t{i}", src=code[v]), version=v, track=True))
            first[v][1].append(run(workspace(tmp, f"{v}-first-u{i}", src=code[v]), "--no-track", version=v,
                                   track=False))
    warm = {v: (workspace(tmp, f"{v}-warm-t", src=code[v]), workspace(tmp, f"{v}-warm-u", src=code[v]))
            for v in code}
    for v, (wt, wu) in warm.items():
        run(wt, version=v, track=True)
        run(wu, "--no-track", version=v, track=False)
    new = {v: ([], []) for v in code}
    noop = {v: ([], []) for v in code}
    for i in range(repeats):
        for v, (wt, wu) in warm.items():
            new[v][0].append(run(wt, "-S", f"train.n_estimators={401 + i}", version=v, track=True))
            new[v][1].append(run(wu, "--no-track", "-S", f"train.n_estimators={401 + i}", version=v, track=False))
    for _ in range(repeats):
        for v, (wt, wu) in warm.items():
            noop[v][0].append(run(wt, "-S", f"train.n_estimators={400 + repeats}", version=v, track=True))
            noop[v][1].append(run(wu, "--no-track", "-S", f"train.n_estimators={400 + repeats}", version=v,
                                  track=False))
    forced = {v: ([], []) for v in code}
    for _ in range(repeats):
        for v, (wt, wu) in warm.items():
            forced[v][0].append(run(wt, "--force", "-S", f"train.n_estimators={400 + repeats}", version=v, track=True))
            forced[v][1].append(run(wu, "--no-track", "--force", "-S", f"train.n_estimators={400 + repeats}",
                                    version=v, track=False))
    for v in code:
        for name, (t, u) in (("first use (new database)", first[v]), ("warm, new model (train+gate+test+report)", new[v]),
                             ("warm, nothing changed (all cached)", noop[v]), ("forced (every stage)", forced[v])):
            got[v][name] = (statistics.median(t), statistics.median(u))
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vs", type=Path, default=None, help="another checkout's src/ to measure side by side")
    args = ap.parse_args()
    code = {"this": ROOT / "src"} | ({"vs": args.vs.resolve()} if args.vs else {})
    with tempfile.TemporaryDirectory(prefix="mlci-bench-tracking-") as t:
        got = cases(Path(t), code, args.repeats)
    print("| case | code | tracked s | untracked s | tracking overhead s |")
    print("|---|---|---:|---:|---:|")
    for name in got["this"]:
        for v in code:
            mt, mu = got[v][name]
            print(f"| {name} | {v} | {mt:.2f} | {mu:.2f} | {mt - mu:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
