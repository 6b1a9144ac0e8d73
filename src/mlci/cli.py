"""The ``mlci`` command: a thin layer over the library.

Every command resolves settings and parameters, calls one library function,
and turns :class:`~mlci.errors.MlciError` into ``error: <message>`` on stderr
with the error's documented exit code, never a traceback
(set ``MLCI_DEBUG=1`` to see one for unexpected errors).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import errors
from . import settings as S

_SET_HELP = "Override a parameter for this run, e.g. -S train.learning_rate=0.05 (repeatable)."


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except errors.MlciError as e:
            _fail(e.message, e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: say so in one line unless asked for the traceback
            if os.environ.get("MLCI_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (set MLCI_DEBUG=1 for a traceback)", errors.INTERNAL)

    return wrapper


def _context(ctx: click.Context, overrides: tuple[str, ...]):
    from .resolve import resolve

    s = S.from_env(ctx.obj.get("params_file"))
    return s, resolve(s.params_file, list(overrides), s.state_dir)


def _epilog() -> str:
    return "Exit codes: " + "; ".join(f"{k} {v}" for k, v in errors.EXIT_CODES.items())


@click.group(epilog=_epilog(), context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--params",
    "params_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Parameters file (default: $MLCI_PARAMS or ./params.yaml; built-in defaults when absent).",
)
@click.version_option(package_name="mlci")
@click.pass_context
def main(ctx: click.Context, params_file: str | None) -> None:
    """mlci: preprocess, train, gate and test a binary classifier, reproducibly.

    Paths come from the tutorial's environment variables RAW_DATA_DIR,
    RAW_DATA_FILE, PROCESSED_DATA_DIR, MODEL_DIR and RESULTS_DIR.
    """
    ctx.ensure_object(dict)
    ctx.obj["params_file"] = params_file


def _stage_command(name: str, doc: str):
    @main.command(name=name, help=doc, epilog=_epilog())
    @click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
    @click.option("--wait", type=float, default=0.0, show_default=True, help="Seconds to wait for a busy workspace.")
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, overrides: tuple[str, ...], wait: float) -> None:
        from . import pipeline

        s, params = _context(ctx, overrides)
        with pipeline.workspace_lock(s, wait):
            result = pipeline.run_stage(name, s, params, click.echo)
        if name != "gate":
            click.echo(json.dumps(result, indent=2))

    return command


_stage_command("preprocess", "Load and validate the raw CSV; write train/validation/test Parquet splits.")
_stage_command("train", "Fit the model on the train split; write the model and train_metadata.json.")
_stage_command("gate", "Check train_metadata.json against the gate rules; write gate.json (exit 3 on failure).")
_stage_command("test", "Score the test split (only after a passing gate); write test_metadata.json.")


@main.command(epilog=_epilog())
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--force", is_flag=True, help="Rerun every stage, even those that are up to date.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON result instead.")
@click.option("--wait", type=float, default=0.0, show_default=True, help="Seconds to wait for a busy workspace.")
@click.pass_context
@handle_errors
def run(ctx: click.Context, overrides: tuple[str, ...], force: bool, as_json: bool, wait: float) -> None:
    """Run preprocess, train, gate and test, skipping stages that are up to date."""
    from . import pipeline
    from .fileio import read_json

    s, params = _context(ctx, overrides)
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    echo = (lambda line: err.print(line, markup=False)) if as_json else click.echo

    def on_event(kind: str, name: str, info: dict) -> None:
        if kind == "start":
            err.print(f"[bold]{name}[/] ...")
        elif kind == "done":
            err.print(f"[green]✓[/] {name} [dim]{info['seconds']:.1f}s[/]")
        elif kind == "cached":
            err.print(f"[green]✓[/] {name} [dim](up to date, skipped)[/]")
        elif kind == "failed":
            err.print(f"[red]✗[/] {name}")

    with pipeline.workspace_lock(s, wait):
        result = pipeline.run(s, params, force=force, on_event=on_event, echo=echo)

    outputs = {}
    for key, fname in (("train_metadata", S.TRAIN_METADATA), ("gate", S.GATE_FILE), ("test_metadata", S.TEST_METADATA)):
        path = s.result(fname)
        ran = {r.name: r.status for r in result.stages}
        stage_of = {"train_metadata": "train", "gate": "gate", "test_metadata": "test"}[key]
        if path.exists() and ran.get(stage_of) in ("ran", "cached", "failed"):
            outputs[key] = read_json(path)

    if as_json:
        click.echo(
            json.dumps(
                {
                    "exit_code": result.exit_code,
                    "error": result.error,
                    "stages": [vars(r) for r in result.stages],
                    **outputs,
                },
                indent=2,
            )
        )
    else:
        # The tutorial's last step: print both metadata files.
        for key, fname in (("train_metadata", S.TRAIN_METADATA), ("test_metadata", S.TEST_METADATA)):
            if key in outputs:
                click.echo(f"{s.result(fname)}:")
                click.echo(json.dumps(outputs[key], indent=2))
        _summary(err, result, outputs)
    if result.exit_code:
        click.echo(f"error: {result.error}", err=True)
        sys.exit(result.exit_code)


def _summary(console, result, outputs: dict) -> None:
    from rich.table import Table

    table = Table(title="mlci run", title_justify="left")
    for col in ("stage", "status", "seconds"):
        table.add_column(col)
    for r in result.stages:
        style = {"ran": "green", "cached": "cyan", "failed": "red"}.get(r.status, "dim")
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


@main.command(epilog=_epilog())
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV to write: the input rows in order plus probability and prediction.")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model directory (default: $MODEL_DIR).")
@click.pass_context
@handle_errors
def predict(ctx: click.Context, input_path: Path, output: Path, model_dir: Path | None) -> None:
    """Score raw records (either file shape; a label column is ignored)."""
    from .stages import predict as score

    s = S.from_env(ctx.obj.get("params_file"))
    summary = score(input_path, output, model_dir or s.model_dir, echo=lambda m: click.echo(m, err=True))
    click.echo(json.dumps(summary))


@main.command(epilog=_epilog())
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handle_errors
def status(ctx: click.Context, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show which stages are up to date and which would rerun (like `dvc status`)."""
    from . import pipeline

    s, params = _context(ctx, overrides)
    from .resolve import code_hash

    code = code_hash()
    lock = pipeline.read_lock(s.lock_path)
    out, stale = {}, False
    for st in pipeline.STAGES:
        stale = stale or not pipeline.is_up_to_date(st, s, params, code, lock.get(st.name))
        out[st.name] = "stale" if stale else "up to date"
    if as_json:
        click.echo(json.dumps(out))
    else:
        for name, state in out.items():
            click.echo(f"{name}: {state}")


@main.command(name="exit-codes")
def exit_codes() -> None:
    """List the documented exit codes."""
    for code, meaning in errors.EXIT_CODES.items():
        click.echo(f"{code}\t{meaning}")
