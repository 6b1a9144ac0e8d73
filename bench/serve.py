#!/usr/bin/env python3
"""The same registered model served by `mlflow models serve` and by `mlci serve`, side by side.

    python3 tasks.py bench-serve [SECONDS]     # needs Debian's wrk: apt-get install wrk

In one workspace: a tracked `mlci run` registers the champion; both servers
serve it (one process each, loopback), one after the other so that they never
share the two cores; the same load generator (wrk, a Lua body) sends the same
record. Printed: single-record requests per second and p50/p99 latency at 1,
10 and 50 connections, and the latency of one 10,000-record batch (median of
5), and the CPU wrk itself took (in cores: the server shares the two cores
with it). Targets (issue 6): >= 3x MLflow's throughput, p99 <= 15 ms at 50
connections, the batch <= 250 ms.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT  # noqa: E402
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, timeout: float = 60) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{url}: {e.code} {e.read()[:1000].decode(errors='replace')}")


def wait_until(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}) before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"{url} did not answer in {timeout:.0f} s")


def wrk(url: str, body: bytes, connections: int, seconds: int, tmp: Path) -> dict:
    script = tmp / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body.decode())}\n")
    threads = min(2, connections)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
    started = time.perf_counter()
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if "Non-2xx" in out:
        sys.exit(f"non-2xx answers from {url}:\n{out}")

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "wrk_cpu": cpu / wall}


def measure(name: str, cmd: list[str], ready: str, url: str, single: bytes, batch: bytes, seconds: int,
            ws: Path, env: dict) -> dict:
    proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=open(ws / f"{name}.log", "w"))
    try:
        wait_until(ready, proc)
        post(url, single)
        post(url, batch)  # warm-up
        out = {c: wrk(url, single, c, seconds, ws) for c in (1, 10, 50)}
        times = []
        for _ in range(5):
            started = time.perf_counter()
            status, _ = post(url, batch)
            times.append(time.perf_counter() - started)
        out["batch_ms"] = statistics.median(times) * 1e3
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="mlci-bench-serve-") as t:
        ws = Path(t)
        (ws / "data" / "raw").mkdir(parents=True)
        shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
        os.symlink(DATA, ws / "data" / "raw" / "adult.data")
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLCI_NO_TRACK")}
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{ws / 'mlflow.db'}",
                   PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # mlflow starts `uvicorn` by name
        subprocess.run([sys.executable, "-m", "mlci", "run", "--until", "gate"], cwd=ws, env=env, check=True,
                       capture_output=True)
        card = json.loads((ws / "models" / "model.json").read_text())
        frame = pd.read_parquet(ws / "data" / "processed" / "validation.parquet")[card["features"]]
        frame = frame.astype({c: object for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})
        # Parquet keeps the integer columns as floats (they may be missing); the API takes integers.
        records = [{k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in r.items()}
                   for r in json.loads(frame.to_json(orient="records"))]
        many = (records * (10_000 // len(records) + 1))[:10_000]
        one = records[0]

        p1, p2 = free_port(), free_port()
        mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/adult-income@champion",
                      "--env-manager", "local", "-h", "127.0.0.1", "-p", str(p1), "-w", "1"]
        ours_cmd = [sys.executable, "-m", "mlci", "serve", "--port", str(p2), "--poll", "0",
                    "--max-batch", "10000", "--max-body-bytes", str(64 << 20)]
        results = {
            "mlflow models serve": measure(
                "mlflow", mlflow_cmd, f"http://127.0.0.1:{p1}/ping", f"http://127.0.0.1:{p1}/invocations",
                json.dumps({"dataframe_records": [one]}).encode(), json.dumps({"dataframe_records": many}).encode(),
                seconds, ws, env),
            "mlci serve": measure(
                "mlci", ours_cmd, f"http://127.0.0.1:{p2}/ready", f"http://127.0.0.1:{p2}/predict",
                json.dumps(one).encode(), json.dumps(many).encode(), seconds, ws, env),
        }
    # wrk's CPU: what the load generator itself took of the two cores (in cores), beside the server.
    print("| server | conns | requests/s | p50 ms | p99 ms | wrk's CPU, cores |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        for c in (1, 10, 50):
            print(f"| {name} | {c} | {r[c]['rps']:.0f} | {r[c]['p50']:.2f} | {r[c]['p99']:.2f} | "
                  f"{r[c]['wrk_cpu']:.2f} |")
    m, o = results["mlflow models serve"], results["mlci serve"]
    print()
    print("| | mlflow models serve | mlci serve | ratio |")
    print("|---|---:|---:|---:|")
    for c in (1, 10, 50):
        print(f"| single-record requests/s, {c} conns | {m[c]['rps']:.0f} | {o[c]['rps']:.0f} | "
              f"{o[c]['rps'] / m[c]['rps']:.1f} x |")
    print(f"| one 10,000-record batch, ms | {m['batch_ms']:.0f} | {o['batch_ms']:.0f} | "
          f"{m['batch_ms'] / o['batch_ms']:.1f} x faster |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
