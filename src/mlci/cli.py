"""The ``mlci`` command: a thin layer over the library.

Every command resolves settings and parameters, calls one library function,
and turns :class:`~mlci.errors.MlciError` into ``error: <message>`` on stderr
with the error's documented exit code, never a traceback
(set ``MLCI_DEBUG=1`` to see one for unexpected errors).
"""

from __future__ import annotations

import contextlib
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


_PROFILE_HELP = ("Model profile for this run: default (one LightGBM, seconds) or best (an ensemble tuned by "
                 "cross-validation, about two minutes). Same as -S train.profile=...; params.yaml sets it for good.")


def _profile_option(f):
    return click.option("--profile", type=click.Choice(["default", "best"]), default=None, help=_PROFILE_HELP)(f)


def _with_profile(overrides: tuple[str, ...], profile: str | None) -> tuple[str, ...]:
    return overrides if profile is None else (*overrides, f"train.profile={profile}")


_NO_TRACK_HELP = "Do not record this in MLflow (quick offline iteration). Env: MLCI_NO_TRACK=1."


def _stage_command(name: str, doc: str):
    @main.command(name=name, help=doc, epilog=_epilog())
    @click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
    @click.option("--wait", type=float, default=0.0, show_default=True, help="Seconds to wait for a busy workspace.")
    @click.option("--no-track", is_flag=True, envvar="MLCI_NO_TRACK", help=_NO_TRACK_HELP)
    @_profile_option
    @click.pass_context
    @handle_errors
    def command(ctx: click.Context, overrides: tuple[str, ...], wait: float, no_track: bool,
                profile: str | None) -> None:
        from . import pipeline

        overrides = _with_profile(overrides, profile)
        s, params = _context(ctx, overrides)
        with pipeline.workspace_lock(s, wait), _Tracked(name, ctx, overrides, s, enabled=not no_track) as tracked:
            try:
                result = pipeline.run_stage(name, s, params, click.echo, tracked.champion)
            except errors.MlciError as e:
                tracked.finish({name: "failed"}, e.message)
                tracked.report()
                raise
            tracked.finish({name: "ran"})
        if name != "gate":
            click.echo(json.dumps(result, indent=2))
        tracked.report()

    return command


class _ChampionProxy:
    """What the gate needs to know of the champion, asked of the tracking worker when needed."""

    def __init__(self, worker, s):
        self.worker = worker
        self.s = s
        self._metrics: dict | None = None
        self._model: tuple | None = None
        self._validation = None  # the champion's validation probabilities, once the gate scored them

    @property
    def version(self) -> str | None:
        return self.worker.begun()["champion"]

    def model(self) -> tuple[object, dict]:
        """The champion's model and its sha256 (``{"sha256": ...}``): the worker fetches and
        verifies the file, this process (which has scikit-learn loaded already) unpickles it."""
        if self._model is None:
            from .tracking import load_pickle

            got = self.worker.call("champion_model", version=self.version)
            self._model = (load_pickle(got["path"], got["sha256"], f"champion v{self.version}"),
                           {"sha256": got["sha256"]})
        return self._model

    def metrics(self) -> dict:
        """The champion's metrics on our validation rows (what the gate compares with)."""
        if self._metrics is None:
            from .recording import champion_inputs
            from .stages import validation_metrics

            model = self.model()[0]
            self._metrics, self._validation = validation_metrics(self.s, model, *champion_inputs(self.s, model))
        return self._metrics

    def proba(self, split: str, frame):
        """The champion's probabilities on a split's rows (the validation ones the gate computed are reused)."""
        from .model import predict_proba
        from .recording import champion_inputs

        if split == "validation" and self._validation is not None and len(self._validation) == len(frame):
            return self._validation
        model = self.model()[0]
        positive_label, features, _ = champion_inputs(self.s, model)
        return predict_proba(model, frame[features], positive_label)


class _Tracked:
    """Begin an MLflow run before the work and finish it after; a no-op with --no-track.

    The MLflow side runs in a helper process (``tracking_worker``) started here, so its
    start-up overlaps the pipeline's work instead of adding to it.
    """

    def __init__(self, command: str, ctx: click.Context, overrides: tuple[str, ...], s, enabled: bool):
        self.command, self.ctx, self.overrides, self.s, self.enabled = command, ctx, overrides, s, enabled
        self.worker = self.champion = None
        self.summary: dict | None = None
        self.pending = False

    def __enter__(self) -> "_Tracked":
        if self.enabled:
            from .tracking import check_reachable, tracking_uri
            from .tracking_worker import start

            check_reachable(tracking_uri())  # fail fast, before any work
            self.worker = start(self.command, self.ctx.obj.get("params_file"), list(self.overrides), self.s.state_dir)
            self.pending = True
            if self.command in ("gate", "run"):
                self.champion = _ChampionProxy(self.worker, self.s)
        return self

    def model_ready(self) -> None:
        """Train wrote a new model: the worker registers it while the later stages run."""
        if self.pending:
            with contextlib.suppress(errors.MlciError):  # finish() reports a worker that is gone
                self.worker.call("model_ready")

    def finish(self, statuses: dict[str, str], error: str | None = None) -> None:
        if not self.pending:
            return
        from . import pipeline

        self.pending = False
        self.summary = self.worker.call("finish", statuses=statuses, error=error)["summary"]
        if self.summary.get("promoted") and self.summary.get("champion"):
            pipeline.note_promoted(self.s, self.summary["champion"])

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.worker is None:
            return
        if self.pending:  # interrupted or crashed before finish(): never leave the run RUNNING
            self.pending = False
            try:
                self.worker.call("abort", status="KILLED" if exc_type is KeyboardInterrupt else "FAILED")
            except errors.MlciError:
                pass
        self.worker.close()

    def report(self) -> None:
        if self.summary:
            click.echo(_tracking_line(self.summary), err=True)


def _tracking_line(summary: dict) -> str:
    line = f"tracked: run {summary['run_id']} at {summary['tracking_uri']}"
    if "version" in summary:
        line += f"; {summary['model']} v{summary['version']}"
        if summary.get("promoted"):
            line += " is the champion"
        if summary.get("note"):
            line += f" ({summary['note']})"
    return line


_stage_command("preprocess", "Load and validate the raw CSV; write train/validation/test Parquet splits.")
_stage_command("train", "Fit the model on the train split; write the model and train_metadata.json.")
_stage_command("gate", "Check train_metadata.json against the gate rules; write gate.json (exit 3 on failure).")
_stage_command("test", "Score the test split (only after a passing gate); write test_metadata.json.")
_stage_command("report", "Write report.md, report.html (self-contained), report.json and plots/ to RESULTS_DIR.")


@main.command(epilog=_epilog())
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--force", is_flag=True, help="Rerun every stage, even those that are up to date.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON result instead.")
@click.option("--wait", type=float, default=0.0, show_default=True, help="Seconds to wait for a busy workspace.")
@click.option("--no-track", is_flag=True, envvar="MLCI_NO_TRACK", help=_NO_TRACK_HELP)
@click.option("--until", type=click.Choice(["preprocess", "train", "gate", "test", "report"]), default="report",
              show_default=True, help="Stop after this stage (e.g. `test`: the tutorial's pipeline, no report).")
@_profile_option
@click.pass_context
@handle_errors
def run(ctx: click.Context, overrides: tuple[str, ...], force: bool, as_json: bool, wait: float,
        no_track: bool, until: str, profile: str | None) -> None:
    """Run preprocess, train, gate, test and report, skipping stages that are up to date."""
    from . import pipeline
    from .fileio import read_json

    overrides = _with_profile(overrides, profile)
    s, params = _context(ctx, overrides)
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    echo = (lambda line: err.print(line, markup=False)) if as_json else click.echo

    def on_event(kind: str, name: str, info: dict) -> None:
        if kind == "start":
            err.print(f"[bold]{name}[/] ...")
        elif kind == "done":
            err.print(f"[green]✓[/] {name} [dim]{info['seconds']:.1f}s[/]")
            if name == "train":
                tracked.model_ready()
        elif kind == "cached":
            err.print(f"[green]✓[/] {name} [dim](up to date, skipped)[/]")
        elif kind == "failed":
            err.print(f"[red]✗[/] {name}")

    with pipeline.workspace_lock(s, wait), _Tracked("run", ctx, overrides, s, enabled=not no_track) as tracked:
        result = pipeline.run(s, params, force=force, until=until, on_event=on_event, echo=echo,
                              champion=tracked.champion)
        tracked.finish({r.name: r.status for r in result.stages}, result.error)

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
                    "tracking": tracked.summary,
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
    tracked.report()
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


def _registry(ctx: click.Context):
    from . import params as _  # noqa: F401
    from .resolve import resolve
    from .tracking import Registry, check_reachable, tracking_uri

    s = S.from_env(ctx.obj.get("params_file"))
    params = resolve(s.params_file, [], s.state_dir)
    uri = tracking_uri()
    check_reachable(uri)
    return s, Registry(uri, params.section("tracking"))


@main.command(epilog=_epilog())
@click.argument("version")
@click.option("--reason", required=True, help="Why (recorded on the version with who and when).")
@click.pass_context
@handle_errors
def promote(ctx: click.Context, version: str, reason: str) -> None:
    """Make VERSION the champion (checks that its artifact loads first)."""
    s, reg = _registry(ctx)
    version = version.lstrip("vV")
    try:
        reg.version(version)
    except Exception:  # noqa: BLE001
        raise errors.PrerequisiteError(f"{reg.name} has no version {version}") from None
    reg.load(version)  # refuse a version whose artifact is missing or corrupt
    with reg.promotion_lock():
        previous = reg.champion()
        reg.set_champion(version, reason)
    was = f" (was v{previous.version})" if previous else ""
    click.echo(f"{reg.name} v{version} is now the {reg.alias}{was}")


@main.command(epilog=_epilog())
@click.option("--reason", required=True, help="Why (recorded with who and when).")
@click.pass_context
@handle_errors
def rollback(ctx: click.Context, reason: str) -> None:
    """Move the champion back to the version that held it before."""
    s, reg = _registry(ctx)
    with reg.promotion_lock():
        old, new = reg.rollback(reason)
    click.echo(f"{reg.name}: {reg.alias} moved back from v{old} to v{new}")


@main.command(epilog=_epilog())
@click.option("-n", "--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@handle_errors
def runs(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Recent tracked runs: id, commit, time, key metrics, gate verdict, promotion."""
    from .tracking import run_row

    s, reg = _registry(ctx)
    rows = [run_row(r) for r in reg.runs(limit)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs of experiment {reg.experiment!r}", title_justify="left")
    for col in ("run", "command", "started (UTC)", "commit", "val acc", "val AUC", "test acc", "gate", "model",
                "promoted", "status"):
        table.add_column(col)
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        commit = r["git_commit"][:7] + ("*" if r["git_dirty"] else "")
        table.add_row(r["run_id"][:8], r["command"] + (" (cached)" if r["cached"] else ""),
                      r["start_time"][:19].replace("T", " "), commit, fmt(r["validation_acc"]),
                      fmt(r["validation_roc_auc"]), fmt(r["test_acc"]), r["gate"] or "",
                      f"v{r['model_version']}" if r["model_version"] else "", "yes" if r["promoted"] else "",
                      r["status"])
    Console(width=160).print(table)


@main.command(epilog=_epilog())
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--md", "as_md", is_flag=True, help="Print a Markdown table (for a pull-request comment).")
@click.option("--all", "show_all", is_flag=True, help="Show unchanged metrics too.")
@click.pass_context
@handle_errors
def diff(ctx: click.Context, a: str | None, b: str | None, as_json: bool, as_md: bool, show_all: bool) -> None:
    """Metrics and parameters of two runs side by side (default: the champion vs the latest run).

    A and B may be run ids (or unique prefixes), model versions (3, v3), git revisions,
    `latest` or `champion`. The change is B - A.
    """
    from .tracking import diff as compute, resolve_ref

    s, reg = _registry(ctx)
    run_a, label_a = resolve_ref(reg, a, "champion", s.workdir)
    run_b, label_b = resolve_ref(reg, b, "latest", s.workdir)
    d = compute(run_a, run_b)
    d.update(a_label=label_a, b_label=label_b)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    sign = lambda v: "—" if v is None else f"{v:+.4f}"  # noqa: E731
    rows = [(k, v) for k, v in d["metrics"].items() if show_all or v["change"] != 0]
    if as_md:
        click.echo(f"### Model metrics: {label_a} → {label_b}\n")
        click.echo(f"| metric | {label_a} | {label_b} | change |\n|---|---:|---:|---:|")
        for k, v in rows:
            click.echo(f"| {k} | {fmt(v['a'])} | {fmt(v['b'])} | {sign(v['change'])} |")
        if d["params"]:
            click.echo(f"\n| parameter | {label_a} | {label_b} |\n|---|---|---|")
            for k, v in d["params"].items():
                click.echo(f"| {k} | {v['a'] if v['a'] is not None else '—'} | {v['b'] if v['b'] is not None else '—'} |")
        if not rows and not d["params"]:
            click.echo("No metric or parameter changed.")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    t = Table(title=f"{label_a} → {label_b}", title_justify="left")
    for col in ("metric", label_a, label_b, "change"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for k, v in rows:
        t.add_row(k, fmt(v["a"]), fmt(v["b"]), sign(v["change"]))
    console.print(t)
    if d["params"]:
        p = Table(title="parameters that differ", title_justify="left")
        for col in ("parameter", label_a, label_b):
            p.add_column(col)
        for k, v in d["params"].items():
            p.add_row(k, str(v["a"]), str(v["b"]))
        console.print(p)


@main.command(epilog=_epilog())
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
@click.option("--build-secret", "build_secrets", multiple=True, metavar="ID=PATH",
              help="A BuildKit secret for `docker build` (e.g. pip_ca=/etc/ssl/certs/ca-certificates.crt).")
@handle_errors
def webhook(repo_url: str, branches: tuple[str, ...], repository: str | None, workdir: Path, runner: str,
            host: str, port: int, max_body_bytes: int, build_secrets: tuple[str, ...]) -> None:
    """Run the pipeline on every signed GitHub push event POSTed to /github-webhook/ (secret: MLCI_WEBHOOK_SECRET)."""
    secret = os.environ.get("MLCI_WEBHOOK_SECRET", "")
    if not secret:
        raise errors.UsageError("MLCI_WEBHOOK_SECRET is not set: the shared secret of the webhook's HMAC signatures")
    import uvicorn

    from .webhook import Config, app

    workdir.mkdir(parents=True, exist_ok=True)
    config = Config(secret=secret.encode(), repo_url=repo_url, workdir=workdir.absolute(), branches=branches,
                    repository=repository, runner=runner, max_body_bytes=max_body_bytes,
                    build_secrets=build_secrets)
    uvicorn.run(app(config), host=host, port=port, log_level="info")


@main.command(epilog=_epilog())
@click.option("--host", envvar="MLCI_SERVE_HOST", show_envvar=True, default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback only unless told otherwise, e.g. 0.0.0.0).")
@click.option("--port", envvar="MLCI_SERVE_PORT", show_envvar=True, type=click.IntRange(0, 65535), default=8000,
              show_default=True, help="0: any free port.")
@click.option("--model-dir", envvar="MLCI_SERVE_MODEL_DIR", show_envvar=True,
              type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Serve this model directory (model.pkl + model.json) instead of the registry's champion.")
@click.option("--poll", envvar="MLCI_SERVE_POLL", show_envvar=True, type=click.FloatRange(min=0), default=30.0,
              show_default=True,
              help="Seconds between looks at the model source for a new model (0: never; see POST /admin/reload).")
@click.option("--unknown-categories", envvar="MLCI_SERVE_UNKNOWN_CATEGORIES", show_envvar=True,
              type=click.Choice(["reject", "accept"]), default="reject", show_default=True,
              help="An unknown category: a 422 naming the field, or accepted and scored as missing.")
@click.option("--max-batch", envvar="MLCI_SERVE_MAX_BATCH", show_envvar=True, type=click.IntRange(min=1),
              default=10_000, show_default=True, help="Most records per request (413 beyond).")
@click.option("--max-body-bytes", envvar="MLCI_SERVE_MAX_BODY_BYTES", show_envvar=True,
              type=click.IntRange(min=1024), default=8 * 1024 * 1024, show_default=True,
              help="Largest request body (413 beyond).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser requests from ORIGIN (repeatable). Default: no CORS headers at all.")
@click.option("--access-log", is_flag=True, help="Log every request (off by default: it costs throughput).")
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, model_dir: Path | None, poll: float, unknown_categories: str,
          max_batch: int, max_body_bytes: int, cors_origins: tuple[str, ...], access_log: bool) -> None:
    """Serve the model over HTTP: POST /predict, GET /health, /ready, /model; POST /admin/reload.

    The model is the registry's champion (tracking.model_name and tracking.alias in params.yaml,
    MLFLOW_TRACKING_URI), or --model-dir. Its pickle is loaded only after its sha256 matches the
    one recorded at training time. A new champion is picked up without restarting; one that fails
    to load leaves the old one serving. POST /admin/reload needs Authorization: Bearer
    $MLCI_SERVE_TOKEN and is disabled when that variable is unset.
    """
    from .resolve import resolve
    from .serve import Options, open_source, serve as run_server

    s = S.from_env(ctx.obj.get("params_file"))
    params = resolve(s.params_file, [], s.state_dir)
    source = open_source(model_dir, params.section("tracking"), s.results_dir)
    opts = Options(host=host, port=port, poll=poll, unknown_categories=unknown_categories, max_batch=max_batch,
                   max_body_bytes=max_body_bytes, cors_origins=cors_origins, access_log=access_log)
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
