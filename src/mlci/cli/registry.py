"""``mlci promote``, ``rollback``, ``runs`` and ``diff``: the registry and the run history."""

from __future__ import annotations

import json

import click

from mlci import errors
from mlci.cli.app import epilog, handle_errors, main
from mlci.config import settings as S


def _store(ctx: click.Context):
    """Settings, the tracking URI (checked reachable) and the tracking parameters; no MLflow import."""
    from mlci.config.resolve import resolve
    from mlci.tracking.store import check_reachable, tracking_uri

    s = S.from_env(ctx.obj.get("params_file"))
    params = resolve(s.params_file, [], s.state_dir)
    uri = tracking_uri()
    check_reachable(uri)
    return s, uri, params.section("tracking")


def _registry(ctx: click.Context):
    from mlci.tracking.registry import Registry

    s, uri, tracking = _store(ctx)
    return s, Registry(uri, tracking)


@main.command(epilog=epilog())
@click.argument("version")
@click.option("--reason", required=True, help="Why (recorded on the version with who and when).")
@click.pass_context
@handle_errors
def promote(ctx: click.Context, version: str, reason: str) -> None:
    """Make VERSION the champion (checks its artifact first)."""
    from mlci.tracking import promotion

    s, uri, tracking = _store(ctx)
    version = version.lstrip("vV")
    version = str(int(version)) if version.isdigit() else version  # v01 is version 1, as the registry says
    name, alias = tracking["model_name"], tracking["alias"]
    previous = promotion.promote(uri, tracking, version, reason)
    if previous == version:
        click.echo(f"{name} v{version} is already the {alias} (this promotion is recorded in its history)")
    else:
        was = f" (was v{previous})" if previous else ""
        click.echo(f"{name} v{version} is now the {alias}{was}")


@main.command(epilog=epilog())
@click.option("--reason", required=True, help="Why (recorded with who and when).")
@click.pass_context
@handle_errors
def rollback(ctx: click.Context, reason: str) -> None:
    """Move the champion back to the version that held it before."""
    from mlci.tracking import promotion

    s, uri, tracking = _store(ctx)
    moved = promotion.rollback(uri, tracking, reason)
    old, new = moved
    click.echo(f"{tracking['model_name']}: {tracking['alias']} moved back from v{old} to v{new}")


@main.command(epilog=epilog())
@click.option("-n", "--limit", type=click.IntRange(1, 50000), default=20, show_default=True,
              help="At most this many runs (MLflow's bound: 50000).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--promotions", is_flag=True, help="Every promotion and rollback of the champion instead, oldest first.")
@click.option("--branch", default=None, help="Only runs on this git branch.")
@click.option("--status", type=click.Choice(["FINISHED", "FAILED", "RUNNING", "KILLED"], case_sensitive=False),
              default=None, help="Only runs in this state.")
@click.option("--filter", "where", default=None, metavar="EXPR",
              help="More of MLflow's run filter, e.g. \"metrics.validation_acc > 0.87\" or \"params.train.num_leaves = '31'\".")
@click.option("--dataset", default=None, help="Runs of another dataset's experiment (default: this project's).")
@click.option("--param", "params", multiple=True, metavar="KEY", help="Add a parameter column, e.g. train.learning_rate.")
@click.option("--metric", "metrics", multiple=True, metavar="KEY", help="Add a metric column, e.g. test_roc_auc.")
@click.pass_context
@handle_errors
def runs(ctx: click.Context, limit: int, as_json: bool, promotions: bool, branch: str | None, status: str | None,
         where: str | None, dataset: str | None, params: tuple[str, ...], metrics: tuple[str, ...]) -> None:
    """Recent tracked runs: id, commit, time, key metrics, gate verdict, promotion."""
    from mlci.tracking import peek
    from mlci.tracking.runs import run_row

    s, uri, tracking = _store(ctx)
    experiment = dataset or tracking["experiment"]
    status = status.upper() if status else None
    conditions = [where] if where else []
    if branch:
        quote = '"' if "'" in branch else "'"
        if quote in branch:
            raise errors.UsageError(f"--branch {branch!r}: a name with both kinds of quote cannot be searched for")
        conditions.append(f"tags.`mlflow.source.git.branch` = {quote}{branch}{quote}")
    if status:
        conditions.append(f"attributes.status = '{status}'")
    # The listing without MLflow's start-up where a read-only look at a SQLite store answers it;
    # a --filter is MLflow's grammar, so MLflow's client reads it.
    found = peek.UNKNOWN if promotions or where else peek.runs(uri, experiment, limit, branch, status)
    if found is peek.UNKNOWN:
        from mlci.tracking.registry import Registry

        reg = Registry(uri, tracking)
        if promotions:
            _promotions(reg, as_json)
            return
        try:
            found = reg.runs(limit, " and ".join(conditions), experiment=dataset)
        except Exception as e:  # noqa: BLE001 - MLflow's own words for a filter it cannot parse
            if where and "filter" in str(e).lower():
                raise errors.UsageError(f"--filter {where!r}: {str(e).splitlines()[0][:200]}") from None
            raise
    rows = []
    for r in found:
        row = run_row(r)
        row.update({f"params.{k}": r.data.params.get(k) for k in params})
        row.update({f"metrics.{k}": r.data.metrics.get(k) for k in metrics})
        rows.append(row)
    extra = [*(f"params.{k}" for k in params), *(f"metrics.{k}" for k in metrics)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    import sys

    from rich.console import Console
    from rich.table import Table

    if not sys.stdout.isatty():  # a pipe: plain tab-separated lines, whole values, for cut/grep/awk
        keys = ["run_id", "command", "start_time", "git_commit", "validation_acc", "validation_roc_auc", "test_acc",
                "gate", "model_version", "promoted", "status", *extra]
        click.echo("\t".join(keys))
        for r in rows:
            click.echo("\t".join("" if r[k] is None else str(r[k]) for k in keys))
        return
    table = Table(title=f"runs of experiment {experiment!r}", title_justify="left")
    for col in ("run", "command", "started (UTC)", "commit", "val acc", "val AUC", "test acc", "gate", "model",
                "promoted", "status", *(k.split(".", 1)[1] for k in extra)):
        table.add_column(col)
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        commit = r["git_commit"][:7] + ("*" if r["git_dirty"] else "")
        table.add_row(r["run_id"][:8], r["command"] + (" (cached)" if r["cached"] else ""),
                      r["start_time"][:19].replace("T", " "), commit, fmt(r["validation_acc"]),
                      fmt(r["validation_roc_auc"]), fmt(r["test_acc"]), r["gate"] or "",
                      f"v{r['model_version']}" if r["model_version"] else "", "yes" if r["promoted"] else "",
                      r["status"], *(_cell(r[k]) for k in extra))
    Console().print(table)  # the terminal's width (80 columns when not a terminal)


def _cell(v) -> str:
    if v is None:
        return ""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _promotions(reg, as_json: bool) -> None:
    events = reg.history()
    if as_json:
        click.echo(json.dumps(events, indent=2))
        return
    if not events:
        click.echo(f"{reg.name}: no promotion yet")
    for e in events:
        was = f" (was v{e['from']})" if e.get("from") else ""
        click.echo(f"{e['at']}  {e['kind']:8}  v{e['version']}{was}  by {e['by']}: {e['reason']}")


@main.command(epilog=epilog())
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--md", "as_md", is_flag=True, help="Print a Markdown table (for a pull-request comment).")
@click.option("--all", "show_all", is_flag=True, help="Show unchanged metrics too.")
@click.option("--across-datasets", is_flag=True, help="Compare runs of different datasets (refused otherwise).")
@click.pass_context
@handle_errors
def diff(ctx: click.Context, a: str | None, b: str | None, as_json: bool, as_md: bool, show_all: bool,
         across_datasets: bool) -> None:
    """Metrics and parameters of two runs side by side (default: the champion vs the latest run).

    A and B may be run ids or unique prefixes of 4+ characters, model versions (v3, version:3, or a
    number under 4 digits), git revisions, `latest` or `champion`. The change is B - A; unchanged
    metrics are counted, and listed with --all.
    """
    from mlci.tracking.runs import diff as compute, resolve_ref

    s, reg = _registry(ctx)
    run_a, label_a = resolve_ref(reg, a, "champion", s.workdir)
    run_b, label_b = resolve_ref(reg, b, "latest", s.workdir)
    data_a, data_b = run_a.data.params.get("dataset"), run_b.data.params.get("dataset")
    if data_a != data_b and not across_datasets:
        raise errors.UsageError(f"{label_a} is a run on dataset {data_a!r}, {label_b} on {data_b!r}: their metrics "
                                "are not comparable; --across-datasets compares them anyway")
    d = compute(run_a, run_b)
    d.update(a_label=label_a, b_label=label_b, same_run=run_a.info.run_id == run_b.info.run_id)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    rows = [(k, v) for k, v in d["metrics"].items() if show_all or v["change"] != 0]
    unchanged = sum(v["change"] == 0 for v in d["metrics"].values())
    notes = []
    if d["same_run"]:
        notes.append(f"{label_a} and {label_b} are the same run ({run_a.info.run_id}): nothing to compare.")
    if unchanged and not show_all:
        notes.append(f"{unchanged} metric(s) unchanged (--all lists them).")
    (_diff_markdown if as_md else _diff_table)(d, rows, label_a, label_b)
    for note in notes:
        click.echo(note)


def _num(v) -> str:
    """Counts as integers, everything else to four decimals."""
    if v is None:
        return "—"
    return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.4f}"


def _change(v) -> str:
    if v is None:
        return "—"
    return f"{int(v):+,}" if float(v).is_integer() and v != 0 else f"{v:+.4f}"


def _diff_markdown(d: dict, rows, label_a: str, label_b: str) -> None:
    click.echo(f"### Model metrics: {label_a} → {label_b}\n")
    click.echo(f"| metric | {label_a} | {label_b} | change |\n|---|---:|---:|---:|")
    for k, v in rows:
        click.echo(f"| {k} | {_num(v['a'])} | {_num(v['b'])} | {_change(v['change'])} |")
    if d["params"]:
        click.echo(f"\n| parameter | {label_a} | {label_b} |\n|---|---|---|")
        for k, v in d["params"].items():
            click.echo(f"| {k} | {v['a'] if v['a'] is not None else '—'} | {v['b'] if v['b'] is not None else '—'} |")
    if not rows and not d["params"]:
        click.echo("No metric or parameter changed.")


def _diff_table(d: dict, rows, label_a: str, label_b: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"{label_a} → {label_b}", title_justify="left")
    for col in ("metric", label_a, label_b, "change"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for k, v in rows:
        t.add_row(k, _num(v["a"]), _num(v["b"]), _change(v["change"]))
    console.print(t)
    if d["params"]:
        p = Table(title="parameters that differ", title_justify="left")
        for col in ("parameter", label_a, label_b):
            p.add_column(col)
        for k, v in d["params"].items():
            p.add_row(k, str(v["a"]), str(v["b"]))
        console.print(p)
