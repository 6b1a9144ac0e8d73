"""Answers from the tracking store without importing MLflow (2-3 s of start-up, more than a no-op
rerun's budget or a listing's).

``mlci run`` and ``mlci status`` need to know whether the champion moved since the gate and the
report compared with it. For the two stores mlci is used with, one small read answers that:

* a SQLite file: MLflow's ``registered_model_aliases`` table, opened read-only;
* a tracking server: the public REST call ``GET /api/2.0/mlflow/registered-models/alias``.

``mlci runs`` lists the latest runs of a SQLite store the same way (:func:`runs`): the runs,
tags, params and latest-metrics tables, read-only, and only at schema revisions checked against
MLflow's own ``search_runs`` (``tests/integration/test_tracking.py`` compares the two on a real
store).

Anything else, or any surprise (another schema, an unexpected answer), returns ``UNKNOWN`` and
the caller asks MLflow's client instead. This is the one place mlci reads MLflow's storage
directly; it must only ever read.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

UNKNOWN = object()

#: MLflow schema revisions (``alembic_version``) the listing's queries were checked against: a store
#: at any other one is listed by MLflow's client. Add one only after the comparison test passes on it.
LISTING_SCHEMAS = frozenset({"dc11669786a5"})  # MLflow 3.17


def champion_version(uri: str, name: str, alias: str, timeout: float = 5.0):
    """The version (a string) the alias points at, None when there is none, or ``UNKNOWN``."""
    try:
        if uri.startswith("sqlite:///"):
            return _sqlite(Path(uri.removeprefix("sqlite:///")), name, alias)
        if uri.startswith(("http://", "https://")):
            return _rest(uri, name, alias, timeout)
    except (OSError, sqlite3.Error, ValueError, KeyError, TypeError):
        pass
    return UNKNOWN


def runs(uri: str, experiment: str, limit: int, branch: str | None = None, status: str | None = None):
    """What :meth:`mlci.tracking.registry.Registry.runs` returns for ``experiment`` (the latest
    ``limit`` runs of mlci commands, newest first; ``branch``/``status``: only runs with that
    ``mlflow.source.git.branch`` tag / in that state), each shaped like MLflow's ``Run``
    (``info.run_id``, ``info.start_time``, ``info.status``, ``data.tags``, ``.params``, ``.metrics``);
    or ``UNKNOWN``."""
    # A workspace-aware MLflow store scopes experiments by workspace: its rules, its client.
    workspaces = os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() not in ("", "0", "false")
    if not uri.startswith("sqlite:///") or workspaces or not 1 <= limit <= 50000:  # MLflow's own bounds
        return UNKNOWN
    try:
        return _sqlite_runs(Path(uri.removeprefix("sqlite:///")), experiment, limit, branch, status)
    except (OSError, sqlite3.Error, ValueError, KeyError, TypeError):
        return UNKNOWN


def _sqlite_runs(db: Path, experiment: str, limit: int, branch: str | None, status: str | None):
    if not db.exists():
        return []  # no store yet: no runs (and none is created, as MLflow's client would)
    con = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        con.execute("BEGIN")  # one snapshot for all the reads below, while a run may be writing
        schema = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
        if len(schema) != 1 or schema[0] not in LISTING_SCHEMAS:
            return UNKNOWN
        exp = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (experiment,)).fetchall()
        if len(exp) != 1:
            return [] if not exp else UNKNOWN
        # MLflow's search_runs: active runs, `tags.`mlci.command` != ''` (and the CLI's conditions),
        # ordered by start time (missing last), newest first, then by run id.
        query = ["SELECT r.run_uuid, r.start_time, r.status FROM runs r",
                 "JOIN tags c ON c.run_uuid = r.run_uuid AND c.key = 'mlci.command' AND c.value != ''"]
        args: list = []
        if branch is not None:
            query.append("JOIN tags b ON b.run_uuid = r.run_uuid AND b.key = 'mlflow.source.git.branch' AND b.value = ?")
            args.append(branch)
        query.append("WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'")
        args.append(exp[0][0])
        if status is not None:
            query.append("AND r.status = ?")
            args.append(status)
        query.append("ORDER BY r.start_time IS NULL, r.start_time DESC, r.run_uuid LIMIT ?")
        found = con.execute(" ".join(query), (*args, limit)).fetchall()
        ids = [r[0] for r in found]
        tags, params, metrics = ({i: {} for i in ids} for _ in range(3))
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound values
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value, run in con.execute(f"SELECT key, value, run_uuid FROM tags WHERE run_uuid IN ({marks})",
                                               chunk):
                tags[run][key] = value
            for key, value, run in con.execute(f"SELECT key, value, run_uuid FROM params WHERE run_uuid IN ({marks})",
                                               chunk):
                params[run][key] = value
            for key, value, is_nan, run in con.execute(
                    f"SELECT key, value, is_nan, run_uuid FROM latest_metrics WHERE run_uuid IN ({marks})", chunk):
                metrics[run][key] = float("nan") if is_nan else float(value)
    finally:
        con.close()
    return [SimpleNamespace(info=SimpleNamespace(run_id=run, start_time=start_time, status=state),
                            data=SimpleNamespace(tags=tags[run], params=params[run], metrics=metrics[run]))
            for run, start_time, state in found]


def _sqlite(db: Path, name: str, alias: str):
    if not db.exists():
        return None  # no store yet: no champion
    con = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "registered_model_aliases" not in tables:
            return None if "registered_models" not in tables else UNKNOWN
        row = con.execute("SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                          (name, alias)).fetchone()
        return None if row is None else str(row[0])
    finally:
        con.close()


def _rest(uri: str, name: str, alias: str, timeout: float):
    query = urllib.parse.urlencode({"name": name, "alias": alias})
    req = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias?{query}")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    elif user and password:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return str(json.load(resp)["model_version"]["version"])
    except urllib.error.HTTPError as e:
        if e.code == 404:
            body = json.loads(e.read() or b"{}")
            if body.get("error_code") == "RESOURCE_DOES_NOT_EXIST":
                return None
        return UNKNOWN
