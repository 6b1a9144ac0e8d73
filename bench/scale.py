#!/usr/bin/env python3
"""The whole pipeline against its floor as rows grow: wall time and peak memory, side by side.

    python3 tasks.py bench-scale                       # 1 x, 10 x and 100 x the real rows
    python3 tasks.py bench-scale --sizes 1,10 --repeats 3
    python3 tasks.py bench-scale --src ../other/src    # another checkout's code next to this one
    python3 tasks.py bench-scale --dask --sizes 100,1000 --memory-limit 4GB   # engine: dask as well

For each size, the real rows (``adult.data``) repeated N times into a temporary directory (never
kept); then, in turn (floor, mlci, [other], floor, mlci, ...) so that a drift of this shared
machine's speed falls on all alike, each in a fresh process:

* the *floor*: pandas ``read_csv`` of the whole file and a LightGBM fit with params.yaml's
  ``train`` section on every row; nothing else;
* ``mlci run --no-track --force`` in a fresh workspace (RAW_DATA_DIR, RAW_DATA_FILE,
  PROCESSED_DATA_DIR, MODEL_DIR and RESULTS_DIR point it there): preprocess, train, gate, test
  and report, the report's figure process included.

Wall seconds, rows per second, peak memory two ways: the peak RSS of the largest process (the
kernel's own account, as ``/usr/bin/time -v`` reports it) and the peak PSS of the whole process
tree (polled every 0.1 s; the report's figure process is a forked child, and PSS counts the
pages it shares with its parent once); per-stage seconds from ``mlci run --json``, and mlci's
ratios to the floor (the RSS one). Medians over ``--repeats``.

``--dask`` adds ``mlci run --engine dask`` on a cluster the benchmark starts on loopback: a
``dask scheduler`` and ``--workers`` (2) ``dask worker`` processes with one thread and
``--memory-limit`` each (their nannies enforce it), fresh for each run. Its rows add each worker's
peak RSS (the kernel's high-water mark, read just before the run ends) and how many times a
worker was restarted (the scheduler's log); the client's peak RSS is the mlci process's own. The
floor and the local engine are skipped above ``--local-max`` (100) times the rows: a million-row
pandas frame per 30 x, they do not fit this machine's memory at 1000 x.
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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, env, repeated  # noqa: E402

FLOOR = r"""
import sys, pandas as pd, lightgbm as lgb, yaml
path, params = sys.argv[1], sys.argv[2]
cols = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
        "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income"]
df = pd.read_csv(path, header=None, names=cols, skipinitialspace=True, na_values="?")
df = df.drop(columns=["fnlwgt"])
y = df.pop("income")
for c in df.columns:
    if not pd.api.types.is_numeric_dtype(df[c]):
        df[c] = df[c].astype("category")
p = yaml.safe_load(open(params))["train"]
lgb.LGBMClassifier(n_estimators=p["n_estimators"], learning_rate=p["learning_rate"], num_leaves=p["num_leaves"],
                   max_depth=p["max_depth"], min_child_samples=p["min_child_samples"],
                   colsample_bytree=p["colsample_bytree"], subsample=p["subsample"],
                   subsample_freq=1 if p["subsample"] < 1 else 0, reg_lambda=p["reg_lambda"],
                   cat_smooth=p["cat_smooth"], min_data_per_group=p["min_data_per_group"],
                   n_jobs=p["n_jobs"] or None, random_state=p["seed"], deterministic=True, force_col_wise=True,
                   verbose=-1).fit(df, y)
"""


def _tree_pss(pid: int) -> int:
    """PSS bytes of ``pid`` and all its descendants (Linux /proc): pages a forked child shares
    with its parent count once, split between them, where a sum of RSS would count them twice."""
    total = 0
    for p in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total


def measure(cmd: list[str], cwd: Path, environ: dict) -> dict:
    """Wall seconds, peak RSS of the largest process (what ``/usr/bin/time -v`` reports), peak PSS
    of the whole process tree (polled every 0.1 s), both in MB, and stdout of one fresh process."""
    peak = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=environ, stdout=out, stderr=err)
        done = threading.Event()

        def poll():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_pss(proc.pid))
                done.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        poller.join()
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                     f"{err.read().decode(errors='replace')[-3000:]}")
        return {"wall": wall, "rss": usage.ru_maxrss / 1024, "pss": peak / 1e6, "out": out.read().decode()}


def run_mlci(data: Path, tmp: Path, name: str, src: Path | None) -> dict:
    ws = tmp / name
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    params = src.parent / "params.yaml" if src is not None and (src.parent / "params.yaml").is_file() else None
    shutil.copy(params or ROOT / "params.yaml", ws / "params.yaml")
    environ = env(src, RAW_DATA_DIR=str(data.parent), RAW_DATA_FILE=data.name,
                  PROCESSED_DATA_DIR=str(ws / "data" / "processed"), MODEL_DIR=str(ws / "models"),
                  RESULTS_DIR=str(ws / "results"))
    got = measure([sys.executable, "-m", "mlci", "run", "--no-track", "--force", "--json"], ws, environ)
    got["stages"] = {s["name"]: s["seconds"] for s in json.loads(got.pop("out"))["stages"]}
    shutil.rmtree(ws, ignore_errors=True)  # 100 x leaves some hundreds of MB
    return got


def run_dask(data: Path, tmp: Path, name: str, workers: int, memory_limit: str) -> dict:
    """``mlci run --engine dask`` against a fresh loopback cluster; worker peaks and restarts."""
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import DaskCluster

    ws = tmp / name
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    cluster = DaskCluster(tmp / f"{name}-cluster", workers=workers, memory_limit=memory_limit).start()
    peaks: dict[int, int] = {}  # per nanny: the largest high-water mark among its descendants
    done = threading.Event()

    def poll():  # the workers are the nannies' descendants (spawned): their high-water marks
        while not done.is_set():
            for nanny in cluster.workers:
                for pid in _descendants(nanny.pid):
                    try:
                        with open(f"/proc/{pid}/status") as fh:
                            hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
                        peaks[nanny.pid] = max(peaks.get(nanny.pid, 0), hwm)
                    except (OSError, StopIteration):
                        pass
            done.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        environ = env(None, RAW_DATA_DIR=str(data.parent), RAW_DATA_FILE=data.name,
                      PROCESSED_DATA_DIR=str(ws / "data" / "processed"), MODEL_DIR=str(ws / "models"),
                      RESULTS_DIR=str(ws / "results"), DASK_SCHEDULER_ADDRESS=cluster.address)
        got = measure([sys.executable, "-m", "mlci", "run", "--engine", "dask", "--no-track", "--force", "--json"],
                      ws, environ)
    finally:
        done.set()
        poller.join()
        restarts = cluster.log("scheduler").count("Remove worker")
        cluster.stop()
        shutil.rmtree(ws, ignore_errors=True)
        shutil.rmtree(tmp / f"{name}-cluster", ignore_errors=True)
    got["stages"] = {s["name"]: s["seconds"] for s in json.loads(got.pop("out"))["stages"]}
    got["workers_rss"] = sorted(v / 1024 for v in peaks.values())
    got["restarts"] = restarts  # read before the cluster stops: a removal meanwhile is a lost worker
    return got


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def run_floor(data: Path, tmp: Path) -> dict:
    got = measure([sys.executable, "-c", FLOOR, str(data), str(ROOT / "params.yaml")], tmp, env())
    got.pop("out")
    return dict(got, stages={})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,100", help="comma-separated multiples of the real rows")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each command per size (medians are shown)")
    ap.add_argument("--src", type=Path, action="append", default=[],
                    help="another checkout's src/ to run next to this one (repeatable)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--dask", action="store_true", help="also mlci run --engine dask on a loopback cluster")
    ap.add_argument("--workers", type=int, default=2, help="--dask: worker processes (one thread each)")
    ap.add_argument("--memory-limit", default="4GB", help="--dask: each worker's memory limit")
    ap.add_argument("--local-max", type=int, default=100, help="largest multiple the floor and local mlci run at")
    args = ap.parse_args()
    rows_1x = sum(1 for line in DATA.read_bytes().splitlines() if line.strip())
    local = [("floor", None), ("mlci", None)] + [(f"mlci ({s.resolve().parent.name})", s.resolve()) for s in args.src]
    results = []
    with tempfile.TemporaryDirectory(prefix="mlci-bench-scale-") as t:
        tmp = Path(t)
        for n in (int(s) for s in args.sizes.split(",")):
            data = repeated(n, tmp)
            whats = (local if n <= args.local_max else []) + ([("mlci dask", None)] if args.dask else [])
            runs: dict[str, list[dict]] = {w: [] for w, _ in whats}
            for r in range(args.repeats):
                for what, src in whats:
                    if what == "mlci dask":
                        runs[what].append(run_dask(data, tmp, f"ws{n}", args.workers, args.memory_limit))
                        continue
                    runs[what].append(run_floor(data, tmp) if what == "floor" else
                                      run_mlci(data, tmp, f"ws{n}", src))
                    print(f"x{n} {what} run {r + 1}: {runs[what][-1]['wall']:.1f} s", file=sys.stderr, flush=True)
            for what, got in runs.items():
                stages = {k: statistics.median(g["stages"][k] for g in got) for k in got[0]["stages"]}
                results.append({"size": n, "rows": rows_1x * n, "what": what,
                                "wall": statistics.median(g["wall"] for g in got),
                                "rss": statistics.median(g["rss"] for g in got),
                                "pss": statistics.median(g["pss"] for g in got), "stages": stages,
                                **({"workers_rss": got[-1]["workers_rss"], "restarts": max(g["restarts"] for g in got)}
                                   if "restarts" in got[0] else {})})
            if data != DATA:
                data.unlink()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    floor = {r["size"]: r for r in results if r["what"] == "floor"}
    print("| rows | what | wall s | rows/s | peak RSS MB | tree PSS MB | preprocess | train | gate | test | report "
          "| wall / floor | RSS / floor | workers' peak RSS MB | restarts |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in results:
        f, st = floor.get(r["size"]), r["stages"]
        cells = [f"{st[k]:.1f}" if k in st else "" for k in ("preprocess", "train", "gate", "test", "report")]
        ratio = "" if r["what"] == "floor" or f is None else f"{r['wall'] / f['wall']:.2f}"
        rss_ratio = "" if r["what"] == "floor" or f is None else f"{r['rss'] / f['rss']:.2f}"
        workers = ", ".join(f"{w:,.0f}" for w in r.get("workers_rss", []))
        print(f"| {r['rows']:,} | {r['what']} | {r['wall']:.1f} | {r['rows'] / r['wall']:,.0f} | {r['rss']:,.0f} "
              f"| {r['pss']:,.0f} | "
              + " | ".join(cells) + f" | {ratio} | {rss_ratio} | {workers} | {r.get('restarts', '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
