#!/usr/bin/env python3
"""How long the registry commands take to answer on a store of N runs, measured side by side in one run.

    python3 tasks.py bench-cli [--runs 40] [--repeats 5] [--vs OTHER/.venv/bin/mlci]

The store is a SQLite ``mlflow.db`` in a temporary workspace: ``--real`` pipeline runs (``mlci run``
with a different learning rate each: real stage runs, datasets, logged models and versions), then
copies of them made with MLflow's client until there are ``--runs`` command runs, every fourth
registering another version of a real model. Each figure is the median wall time of fresh
processes: ``mlci runs`` (piped: tab-separated), ``mlci runs --json``, ``mlci diff`` (champion vs
latest), ``mlci promote 1`` and ``mlci rollback``; and, as the floor of any command that goes
through MLflow's client, a bare ``python -c`` that opens that client on the store and reads the
champion's version. ``--vs`` times another mlci executable (e.g.
another checkout's ``.venv/bin/mlci``, which runs that checkout's code) on the same store,
interleaved with this checkout's code (``python -m mlci`` with this ``src``), and prints both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, call, env, timed, workspace  # noqa: E402

COMMANDS = {
    "runs": ["runs"],
    "runs --json": ["runs", "--json"],
    "diff": ["diff"],
    "promote": ["promote", "1", "--reason", "bench"],
    "rollback": ["rollback", "--reason", "bench"],
}
FLOOR = ("import os; os.environ['MLFLOW_DISABLE_TELEMETRY'] = 'true'\n"
         "from mlflow import MlflowClient\n"
         "MlflowClient('sqlite:///mlflow.db', 'sqlite:///mlflow.db').get_model_version_by_alias('adult-income', 'champion')")


def make_store(ws: Path, runs: int, real: int) -> None:
    """``real`` pipeline runs, then copies of them through MLflow's client up to ``runs`` command runs."""
    for i in range(real):
        call(ws, "run", "-S", f"train.learning_rate={0.04 + 0.01 * i}", track=True)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from mlci.tracking.store import use_uri

    uri = f"sqlite:///{ws / 'mlflow.db'}"
    use_uri(uri)  # MLflow's registry looks a version's logged model up through the fluent API's URI
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("adult").experiment_id
    originals = client.search_runs([exp], "tags.`mlci.command` = 'run'")
    versions = client.search_model_versions("name = 'adult-income'")
    now = int(time.time() * 1000)
    for i in range(runs - len(originals)):
        r = originals[i % len(originals)]
        start = now - (runs - i) * 60_000  # older than the real runs: `latest` stays a real one
        new = client.create_run(exp, start_time=start, tags={k: v for k, v in r.data.tags.items()
                                                              if k != "mlflow.parentRunId"}).info.run_id
        client.log_batch(new, metrics=[Metric(k, v, start, 0) for k, v in r.data.metrics.items()],
                         params=[Param(k, v) for k, v in r.data.params.items()],
                         tags=[RunTag("mlci.bench_copy", "true")])
        if i % 4 == 0:
            mv = versions[i % len(versions)]
            client.create_model_version("adult-income", mv.source, run_id=new, tags=mv.tags, model_id=mv.model_id)
        client.set_terminated(new, "FINISHED", end_time=start + 5000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40, help="command runs in the store")
    ap.add_argument("--real", type=int, default=3, help="of which real pipeline runs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vs", type=Path, default=None, help="another mlci executable to time side by side")
    args = ap.parse_args()
    code = {"this": ([sys.executable, "-m", "mlci"], env(ROOT / "src", track=True))}
    if args.vs:
        code["vs"] = ([str(args.vs.absolute())], env(track=True))
    got: dict[str, dict[str, list[float]]] = {v: {c: [] for c in COMMANDS} for v in code}
    floor: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mlci-bench-cli-") as t:
        ws = workspace(Path(t), "ws")
        make_store(ws, args.runs, args.real)
        for name, cmd in COMMANDS.items():
            for v, (exe, environ) in code.items():  # one warm-up each (page cache, .pyc files)
                timed([*exe, *cmd], ws, environ)
            for _ in range(args.repeats):
                for v, (exe, environ) in code.items():
                    got[v][name].append(timed([*exe, *cmd], ws, environ)[0])
                if name == "promote":  # the floor, interleaved with the command it bounds
                    floor.append(timed([sys.executable, "-c", FLOOR], ws, env())[0])
    print(f"store: {args.runs} command runs ({args.real} real pipeline runs); median of {args.repeats} fresh "
          "processes, interleaved")
    print("| command | " + " | ".join(f"{v} s" for v in code) + (" | this/vs |" if args.vs else " |"))
    print("|---|" + "---:|" * (len(code) + bool(args.vs)))
    for name in COMMANDS:
        med = {v: statistics.median(got[v][name]) for v in code}
        ratio = f" | {med['this'] / med['vs']:.2f} |" if args.vs else " |"
        print(f"| mlci {COMMANDS[name][0]}{' --json' if name.endswith('--json') else ''} | "
              + " | ".join(f"{med[v]:.2f}" for v in code) + ratio)
    print(f"| floor: MLflow's client, one read | {statistics.median(floor):.2f} |"
          + " |" * (len(code) - 1 + bool(args.vs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
