"""``mlci serve`` (the model over HTTP), ``mlci webhook`` (pushes run the pipeline) and ``mlci idle``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mlci import errors
from mlci.cli.app import context, epilog, handle_errors, main
from mlci.config import settings as S


@main.command(epilog=epilog())
@click.option("--repo-url", required=True, help="Where to fetch pushed commits from (never taken from a payload).")
@click.option("--branch", "branches", multiple=True, default=("main",), show_default=True,
              help="A branch whose pushes run the pipeline (repeat for more).")
@click.option("--repository", default=None, help="Only events about this owner/name repository.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path(".mlci-webhook"),
              show_default=True, help="Checkouts, logs and the MLflow store of the runs.")
@click.option("--runner", type=click.Choice(["auto", "docker", "host"]), default="auto", show_default=True,
              help="auto: in the commit's image when a Docker engine answers, else on this machine.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--max-body-bytes", type=int, default=1 << 20, show_default=True)
@click.option("--build-ca", type=click.Path(dir_okay=False, exists=True), default=None, metavar="PATH",
              help="A TLS-intercepting proxy's CA certificate (PEM) for pip in `docker build` (in no layer).")
@handle_errors
def webhook(repo_url: str, branches: tuple[str, ...], repository: str | None, workdir: Path, runner: str,
            host: str, port: int, max_body_bytes: int, build_ca: str | None) -> None:
    """Run the pipeline on every signed GitHub push event POSTed to /github-webhook/ (secret: MLCI_WEBHOOK_SECRET)."""
    secret = os.environ.get("MLCI_WEBHOOK_SECRET", "")
    if not secret:
        raise errors.UsageError("MLCI_WEBHOOK_SECRET is not set: the shared secret of the webhook's HMAC signatures")
    import uvicorn

    from mlci.webhook import Config, app

    workdir.mkdir(parents=True, exist_ok=True)
    config = Config(secret=secret.encode(), repo_url=repo_url, workdir=workdir.absolute(), branches=branches,
                    repository=repository, runner=runner, max_body_bytes=max_body_bytes,
                    build_ca=build_ca)
    uvicorn.run(app(config), host=host, port=port, log_level="info")


@main.command(epilog=epilog())
@click.option("--host", envvar="MLCI_SERVE_HOST", show_envvar=True, default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback only unless told otherwise, e.g. 0.0.0.0).")
@click.option("--port", envvar="MLCI_SERVE_PORT", show_envvar=True, type=click.IntRange(0, 65535), default=8000,
              show_default=True, help="0: any free port.")
@click.option("--model-dir", envvar="MLCI_SERVE_MODEL_DIR", show_envvar=True,
              type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Serve this model directory (model.pkl + model.json) instead of the registry's champion.")
@click.option("--poll", envvar="MLCI_SERVE_POLL", show_envvar=True, type=click.FloatRange(min=0), default=30.0,
              show_default=True,
              help="Seconds between looks for a new model (0: never).")
@click.option("--unknown-categories", envvar="MLCI_SERVE_UNKNOWN_CATEGORIES", show_envvar=True,
              type=click.Choice(["reject", "accept"]), default="reject", show_default=True,
              help="An unknown category: a 422, or scored as missing.")
@click.option("--max-batch", envvar="MLCI_SERVE_MAX_BATCH", show_envvar=True, type=click.IntRange(min=1),
              default=10_000, show_default=True, help="Most records per request (413 beyond).")
@click.option("--max-body-bytes", envvar="MLCI_SERVE_MAX_BODY_BYTES", show_envvar=True,
              type=click.IntRange(min=1024), default=8 * 1024 * 1024, show_default=True,
              help="Largest request body (413 beyond).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser requests from ORIGIN (repeatable; default: none).")
@click.option("--access-log", is_flag=True, envvar="MLCI_SERVE_ACCESS_LOG", show_envvar=True,
              help="Log every request, with its request id (it costs throughput).")
@click.option("--log-format", envvar="MLCI_SERVE_LOG_FORMAT", show_envvar=True, type=click.Choice(["text", "json"]),
              default="text", show_default=True, help="json: one JSON object per log line.")
@click.option("--metrics/--no-metrics", envvar="MLCI_SERVE_METRICS", show_envvar=True, default=True,
              show_default=True, help="GET /metrics (Prometheus' text format), live drift included.")
@click.option("--log-predictions", envvar="MLCI_SERVE_LOG_PREDICTIONS", show_envvar=True, metavar="DIR",
              type=click.Path(path_type=Path), default=None,
              help="Log served records and predictions to Parquet files in DIR (personal data).")
@click.option("--log-sample", envvar="MLCI_SERVE_LOG_SAMPLE", show_envvar=True,
              type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Share of requests logged (decided by a hash of the request id).")
@click.option("--log-max-bytes", envvar="MLCI_SERVE_LOG_MAX_BYTES", show_envvar=True,
              type=click.IntRange(min=10_000), default=256 << 20, show_default=True,
              help="Bytes of log files kept in DIR (the oldest go first).")
@click.option("--log-flush-seconds", envvar="MLCI_SERVE_LOG_FLUSH_SECONDS", hidden=True,  # README, "Watching the server"
              type=click.FloatRange(min=0.1), default=10.0,
              help="A log file is written at least this often while records come (and every 10,000 records).")
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a parameter, as for the pipeline, e.g. -S tracking.model_name=churn (repeatable).")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, model_dir: Path | None, poll: float, unknown_categories: str,
          max_batch: int, max_body_bytes: int, cors_origins: tuple[str, ...], access_log: bool, log_format: str,
          metrics: bool, log_predictions: Path | None, log_sample: float, log_max_bytes: int,
          log_flush_seconds: float, overrides: tuple[str, ...]) -> None:
    """Serve the model over HTTP: POST /predict, GET /health, /ready, /model, /metrics; POST /admin/reload.

    The registry's champion (tracking.* in params.yaml), or --model-dir, loaded only if its sha256
    matches training's; a new champion replaces it without a restart. POST /admin/reload needs
    Authorization: Bearer $MLCI_SERVE_TOKEN (disabled when unset).
    """
    from mlci.serving.options import Options
    from mlci.serving.server import serve as run_server
    from mlci.serving.sources import open_source

    s, params = context(ctx, overrides)
    source = open_source(model_dir, params.section("tracking"), s.results_dir)
    opts = Options(host=host, port=port, poll=poll, unknown_categories=unknown_categories, max_batch=max_batch,
                   max_body_bytes=max_body_bytes, cors_origins=cors_origins, access_log=access_log,
                   log_format=log_format, metrics=metrics, log_predictions=log_predictions, log_sample=log_sample,
                   log_max_bytes=log_max_bytes, log_flush_seconds=log_flush_seconds)
    run_server(source, opts, echo=lambda m: click.echo(m, err=True))


@main.command()
def idle() -> None:
    """Do nothing until stopped: keeps a container up for the tutorial's `docker container exec` steps."""
    import signal
    import time

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    while not stop:
        time.sleep(0.2)
