"""``mlci run``, the stage commands, ``mlci status`` and ``mlci predict``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlci.cli.app import (NO_TRACK_HELP, SET_HELP, context, epilog, handle_errors, main, profile_option,
                          with_profile)
from mlci.config import settings as S
from mlci.pipeline.table import STAGE_NAMES, STAGES

#: What ``mlci run`` prints of each stage's output file (the tutorial's last step prints both metadata files).
_OUTPUTS = (("train_metadata", S.TRAIN_METADATA, "train"), ("gate", S.GATE_FILE, "gate"),
            ("test_metadata", S.TEST_METADATA, "test"))


def _tracking(command: str, s, params, enabled: bool):
    if not enabled:
        return None
    from mlci.tracking.session import TrackedRun

    return TrackedRun(command, s, params)


QUIET_HELP = "Print only results and errors: no stage lines, progress or tables."


def _progress(console, quiet: bool):
    """Progress for a command printing on ``console`` (``mlci.progress``): live on a terminal, a line
    every $MLCI_PROGRESS_INTERVAL seconds (default 10) elsewhere, nothing when quiet."""
    import os

    from mlci.progress import for_console

    try:
        interval = float(os.environ.get("MLCI_PROGRESS_INTERVAL", "10"))
    except ValueError:
        interval = 10.0
    return for_console(console, quiet, max(interval, 0.05))


class _Display:
    """The runner's events on stderr; the running stage as a ``progress`` task."""

    def __init__(self, console, progress):
        self.console, self.progress, self.running = console, progress, None

    def event(self, kind: str, name: str, info: dict) -> None:
        c = self.console
        if self.running is not None and kind != "start":
            self.running.close()
            self.running = None
        if kind == "start":
            c.print(f"[bold]{name}[/] ...")
            self.running = self.progress.task(name)
        elif kind == "done":
            c.print(f"[green]✓[/] {name} [dim]{info['seconds']:.1f}s[/]")
        elif kind == "cached":
            c.print(f"[green]✓[/] {name} [dim](up to date, skipped)[/]")
        elif kind == "restored":
            c.print(f"[green]✓[/] {name} [dim](restored from the run cache: made before from these inputs)[/]")
        elif kind == "failed":
            c.print(f"[red]✗[/] {name}")

    def finished(self, result) -> None:
        pass


def _stage_command(name: str, doc: str):
    def command(ctx: click.Context, overrides: tuple[str, ...], wait: float, no_track: bool, quiet: bool,
                profile: str | None = None) -> None:
        from rich.console import Console

        from mlci.pipeline.runner import run
        from mlci.pipeline.workspace import workspace_lock

        s, params = context(ctx, with_profile(overrides, profile))
        progress = _progress(Console(stderr=True, highlight=False), quiet)
        with workspace_lock(s, wait):
            tracked = _tracking(name, s, params, not no_track)
            progress.start()
            try:
                result = run(s, params, only=name, echo=click.echo, observers=[tracked] if tracked else [],
                             champion=tracked.champion if tracked else None, progress=progress)
            finally:
                progress.stop()
        res = result.stages[0]
        if res.status == "ran" and name != "gate":
            click.echo(json.dumps(res.output, indent=2))
        _tracking_line(result.tracking)
        if result.exit_code:
            raise_exit(result)

    # Options only where they act: the profile changes what train does, nothing else.
    f = click.pass_context(handle_errors(command))
    if name == "train":
        f = profile_option(f)
    f = click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)(f)
    f = click.option("--no-track", is_flag=True, envvar="MLCI_NO_TRACK", help=NO_TRACK_HELP)(f)
    f = click.option("--wait", type=float, default=0.0, show_default=True,
                     help="Seconds to wait for a busy workspace.")(f)
    f = click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(f)
    return main.command(name=name, help=doc, epilog=epilog())(f)


def raise_exit(result) -> None:
    click.echo(f"error: {result.error}", err=True)
    sys.exit(result.exit_code)


def _tracking_line(summary: dict | None) -> None:
    if not summary:
        return
    if summary.get("cached"):
        line = f"tracked: nothing changed since run {summary['run_id']} at {summary['tracking_uri']}"
        if summary.get("version"):
            line += f" ({summary['model']} v{summary['version']})"
        click.echo(line, err=True)
        return
    line = f"tracked: run {summary['run_id']} at {summary['tracking_uri']}"
    if "version" in summary:
        line += f"; {summary['model']} v{summary['version']}"
        if summary.get("promoted"):
            line += " is the champion"
        elif summary.get("challenger"):
            line += f" is the {summary['challenger']}"
        if summary.get("note"):
            line += f" ({summary['note']})"
    click.echo(line, err=True)


for _st in STAGES:
    _stage_command(_st.name, _st.help)


@main.command(epilog=epilog())
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--force", is_flag=True, help="Rerun every stage, even those that are up to date.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON result instead.")
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@click.option("--wait", type=float, default=0.0, show_default=True, help="Seconds to wait for a busy workspace.")
@click.option("--no-track", is_flag=True, envvar="MLCI_NO_TRACK", help=NO_TRACK_HELP)
@click.option("--until", type=click.Choice(STAGE_NAMES), default=STAGE_NAMES[-1], show_default=True,
              help="Stop after this stage (e.g. `test`: the tutorial's pipeline, no report).")
@click.option("--no-promote", is_flag=True,
              help="Record and register, but never move the champion (same as -S tracking.promote=false).")
@click.option("--engine", type=click.Choice(["local", "dask"]), default=None,
              help="Where the stages run (same as -S engine=...; dask: README, \"At scale\").")
@profile_option
@click.pass_context
@handle_errors
def run(ctx: click.Context, overrides: tuple[str, ...], force: bool, as_json: bool, quiet: bool, wait: float,
        no_track: bool, until: str, no_promote: bool, engine: str | None, profile: str | None) -> None:
    """Run preprocess, train, gate, test and report, skipping stages that are up to date."""
    if no_promote:
        overrides = (*overrides, "tracking.promote=false")
    if engine:
        overrides = (*overrides, f"engine={engine}")
    from rich.console import Console

    from mlci.fileio import read_json
    from mlci.pipeline.runner import run as run_pipeline
    from mlci.pipeline.workspace import workspace_lock

    fresh = not S.from_env(ctx.obj.get("params_file")).state_dir.exists()
    s, params = context(ctx, with_profile(overrides, profile))
    err = Console(stderr=True, highlight=False)
    echo = (lambda line: err.print(line, markup=False)) if as_json else click.echo
    progress = _progress(err, quiet or as_json)
    with workspace_lock(s, wait):
        tracked = _tracking("run", s, params, not no_track)
        observers = ([] if quiet else [_Display(err, progress)]) + ([tracked] if tracked else [])
        progress.start()
        try:
            result = run_pipeline(s, params, force=force, until=until, observers=observers, echo=echo,
                                  champion=tracked.champion if tracked else None, progress=progress)
        finally:
            progress.stop()
    statuses = result.statuses
    if fresh and not any(st in ("ran", "cached", "restored") for st in statuses.values()):
        import shutil

        shutil.rmtree(s.state_dir, ignore_errors=True)  # a first run that made nothing leaves nothing behind

    outputs = {key: read_json(s.result(fname)) for key, fname, stage in _OUTPUTS
               if s.result(fname).exists() and statuses.get(stage) in ("ran", "cached", "restored", "failed")}
    if as_json:
        click.echo(json.dumps({"exit_code": result.exit_code, "error": result.error,
                               "stages": [{k: v for k, v in vars(r).items() if k != "output"} for r in result.stages],
                               **outputs, "tracking": result.tracking}, indent=2))
    else:
        for key, fname in (("train_metadata", S.TRAIN_METADATA), ("test_metadata", S.TEST_METADATA)):
            if key in outputs:
                click.echo(f"{s.result(fname)}:")
                click.echo(json.dumps(outputs[key], indent=2))
        if not quiet:
            _summary(err, result, outputs)
    _tracking_line(result.tracking)
    if result.exit_code:
        raise_exit(result)


def _summary(console, result, outputs: dict) -> None:
    from rich.table import Table

    table = Table(title="mlci run", title_justify="left")
    for col in ("stage", "status", "seconds"):
        table.add_column(col)
    for r in result.stages:
        style = {"ran": "green", "cached": "cyan", "restored": "cyan", "failed": "red"}.get(r.status, "dim")
        table.add_row(r.name, f"[{style}]{r.status}[/]", f"{r.seconds:.2f}" if r.status == "ran" else "")
    console.print(table)
    metrics = Table(title="metrics", title_justify="left")
    metrics.add_column("metric")
    metrics.add_column("validation", justify="right")
    metrics.add_column("test", justify="right")
    tm, te = outputs.get("train_metadata", {}), outputs.get("test_metadata", {})
    for m in ("acc", "roc_auc", "log_loss", "f1"):
        v, t = tm.get(f"validation_{m}"), te.get(f"test_{m}")
        if v is not None or t is not None:
            metrics.add_row(m, f"{v:.4f}" if v is not None else "", f"{t:.4f}" if t is not None else "")
    if metrics.row_count:
        console.print(metrics)


@main.command(epilog=epilog())
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--no-track", is_flag=True, envvar="MLCI_NO_TRACK", help="Answer as for `mlci run --no-track`.")
@click.pass_context
@handle_errors
def status(ctx: click.Context, overrides: tuple[str, ...], as_json: bool, no_track: bool) -> None:
    """Show which stages `mlci run` would skip and which it would rerun, and why (like `dvc status`)."""
    from mlci.pipeline.runner import staleness

    s, params = context(ctx, overrides)
    champion = None
    if not no_track:
        from mlci.tracking.champion import Champion
        from mlci.tracking.store import check_reachable, tracking_uri

        uri = tracking_uri()
        check_reachable(uri)  # a damaged store is named, with the way out, as `mlci run` names it
        champion = Champion(uri, params.section("tracking"), s)
    why = staleness(s, params, champion)
    if as_json:
        states = {name: "stale" if w else "up to date" for name, w in why.items()}
        click.echo(json.dumps({**states, "why": {name: w for name, w in why.items() if w}}))
    else:
        for name, w in why.items():
            click.echo(f"{name}: stale ({w})" if w else f"{name}: up to date")


@main.command(epilog=epilog())
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV to write: the input rows in order plus probability and prediction.")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model directory (default: $MODEL_DIR).")
@click.option("--strict", is_flag=True, help="Reject rows with a category the model never saw (default: scored as missing).")
@click.option("--allow-rejects", is_flag=True, help="Exit 0 even when some rows failed validation (they stay unscored).")
@click.pass_context
@handle_errors
def predict(ctx: click.Context, input_path: Path, output: Path, model_dir: Path | None, strict: bool,
            allow_rejects: bool) -> None:
    """Score raw records (either file shape; a label column is ignored)."""
    from mlci.stages.predict import predict as score

    s = S.from_env(ctx.obj.get("params_file"))
    summary = score(input_path, output, model_dir or s.model_dir, echo=lambda m: click.echo(m, err=True),
                    strict=strict, allow_rejects=allow_rejects)
    click.echo(json.dumps(summary))


@main.command(epilog=epilog())
@click.argument("data", metavar="DATA.csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", required=True, help="The label column (two distinct values).")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="The new project's directory (default: the file's name without extension); must not exist or be empty.")
@click.option("--name", default=None, help="The dataset's name (default: the file's): its MLflow experiment and registered model.")
@click.option("--positive", default=None, help="The positive label, as written in the data (default: 1/yes/true, else the rarer one).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def init(data: Path, target: str, directory: Path | None, name: str | None, positive: str | None,
         as_json: bool) -> None:
    """Make a project for your own CSV: a dataset definition inferred from it, params.yaml with gate rules
    fitted to it, and the data; then `cd DIR && mlci run`."""
    from mlci.stages.init import init as make

    directory = directory or Path(data.stem)
    summary = make(data, target, directory, name=name, positive=positive, echo=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"{summary['dir']}: dataset {summary['dataset']!r}, {summary['rows']} rows, {summary['features']} "
                   f"features ({summary['categorical']} categorical), label {summary['target']!r} "
                   f"(positive {summary['positive_label']!r})" +
                   (f", dropped {', '.join(summary['dropped'])}" if summary["dropped"] else ""))
        click.echo(f"next: cd {summary['dir']} && mlci run")


@main.group(epilog=epilog())
def cache() -> None:
    """The run cache: stage outputs kept by the inputs that made them (`<state dir>/cache`)."""


@cache.command(epilog=epilog())
@click.option("--max-mb", type=click.FloatRange(min=0), default=None,
              help="Keep at most this many MiB (default: $MLCI_CACHE_MAX_MB, else 2048).")
@click.option("--all", "everything", is_flag=True, help="Empty the cache.")
@click.pass_context
@handle_errors
def gc(ctx: click.Context, max_mb: float | None, everything: bool) -> None:
    """Drop the least recently used entries until the cache fits its limit."""
    from mlci.pipeline.cache import gc as collect
    from mlci.pipeline.cache import limit_bytes
    from mlci.pipeline.workspace import workspace_lock

    s = S.from_env(ctx.obj.get("params_file"))
    limit = 0 if everything else limit_bytes(max_mb)
    with workspace_lock(s, 0.0):  # not while a run reads the cache
        click.echo(json.dumps(collect(s, limit)))
