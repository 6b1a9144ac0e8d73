"""``mlci monitor``: a batch of records against the champion's (or a model directory's) reference."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from mlci.cli.app import NO_TRACK_HELP, SET_HELP, context, epilog, handle_errors, main

DEFAULT_LOGS = "predictions"  # where `mlci serve --log-predictions` writes unless told (MLCI_PREDICTION_LOGS)


@main.command(epilog=epilog())
@click.argument("data", metavar="[DATA]", required=False, type=click.Path(path_type=Path))
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Compare with this model directory's reference (default: the registry's champion; "
                   "$MODEL_DIR with --no-track).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where monitor.md, monitor.html, monitor.json and plots/ go (default: $RESULTS_DIR/monitor).")
@click.option("--no-track", is_flag=True, envvar="MLCI_NO_TRACK", help=NO_TRACK_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
@handle_errors
def monitor(ctx: click.Context, data: Path | None, overrides: tuple[str, ...], model_dir: Path | None,
            out: Path | None, no_track: bool, as_json: bool) -> None:
    """Compare a batch (prediction logs: a directory or glob of Parquet files, default
    $MLCI_PREDICTION_LOGS or ./predictions; or a CSV of the data's shape, labelled or not) with the
    model's training data and validation figures. Exit 12 when a `monitor:` rule fails."""
    from mlci.errors import MonitorFailed
    from mlci.stages.monitor import monitor as compare

    s, params = context(ctx, overrides)
    mp = params.model.monitor
    data = data or Path(os.environ.get("MLCI_PREDICTION_LOGS") or DEFAULT_LOGS)
    out = out or s.result("monitor")
    echo = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        if model_dir is not None or no_track:
            summary = compare(data, model_dir or s.model_dir, out, mp, echo)
        else:
            with tempfile.TemporaryDirectory(prefix="mlci-monitor-") as tmp:
                summary = compare(data, _champion(params, Path(tmp)), out, mp, echo)
    except MonitorFailed as e:
        if as_json:
            click.echo(json.dumps({**e.summary, "exit_code": e.exit_code, "error": e.message}))
        click.echo(f"error: {e.message}", err=True)
        raise SystemExit(e.exit_code) from None
    if as_json:
        click.echo(json.dumps({**summary, "exit_code": 0}))
    else:
        drifted = ", ".join(summary["drifted"]) or "none"
        click.echo(f"{summary['rows']} records: drifted features: {drifted}; predictions "
                   f"{'drifted' if summary['predictions_drifted'] else 'stable'}; accuracy "
                   f"{'estimated ' if summary['acc_estimated'] else ''}{summary['acc']:.4f}; report {summary['report']}")


def _champion(params, tmp: Path) -> Path:
    """The champion's model directory (downloaded and checked against the registry's sha256)."""
    from mlci.errors import PrerequisiteError
    from mlci.tracking.registry import Registry
    from mlci.tracking.store import check_reachable, tracking_uri

    uri = tracking_uri()
    check_reachable(uri)
    reg = Registry(uri, params.section("tracking"))
    mv = reg.champion()
    if mv is None:
        raise PrerequisiteError(f"{reg.name} has no {reg.alias} yet: run `mlci run`, or pass --model-dir / --no-track")
    return reg.fetch(str(mv.version), tmp).parent
