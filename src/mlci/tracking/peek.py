"""The champion's version without importing MLflow (2-3 s of start-up, more than a no-op rerun's budget).

``mlci run`` and ``mlci status`` need to know whether the champion moved since the gate and the
report compared with it. For the two stores mlci is used with, one small read answers that:

* a SQLite file: MLflow's ``registered_model_aliases`` table, opened read-only;
* a tracking server: the public REST call ``GET /api/2.0/mlflow/registered-models/alias``.

Anything else, or any surprise (an older schema, an unexpected answer), returns ``UNKNOWN`` and
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

UNKNOWN = object()


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
