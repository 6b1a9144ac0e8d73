"""``mlci promote`` and ``mlci rollback`` on a SQLite store without importing MLflow.

Importing MLflow and opening its SQL store takes 2-3 s on a quiet 2-core machine, more than these
two commands' budget (2 s, README "Runs and promotions"); what they write is a few rows. So for a
SQLite store at a schema revision in :data:`WRITE_SCHEMAS`, this module reads the version and the
alias and writes, in one transaction, exactly the rows MLflow's ``set_registered_model_alias``,
``set_model_version_tag`` and ``set_registered_model_tag`` would (upserts on their primary keys,
nothing else touched: MLflow's store updates no timestamp for these either). The version's
artifact is checked by its bytes against the registered sha256 (no unpickling: that would import
scikit-learn and LightGBM) where its storage location is a local directory.

Anything else returns ``UNKNOWN`` before anything is written, and the caller uses MLflow's client:
a tracking server (its REST API goes through MLflow, and its webhooks fire there), another schema
revision, MLflow's workspaces switched on, an artifact on remote storage, an alias name MLflow
might refuse. ``tests/integration/test_tracking.py`` compares the rows this writes with MLflow's
own on a real store, and reads them back with MLflow's client; add a revision to
:data:`WRITE_SCHEMAS` only after that test passes on it.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from mlci.errors import PrerequisiteError
from mlci.fileio import bytes_hash
from mlci.tracking.peek import UNKNOWN
from mlci.tracking.registry import artifact_mismatch, champion_event, promotion_lock, rollback_target, rolled_back
from mlci.tracking.store import T, TrackingError

#: Schema revisions (``alembic_version``) whose tables the statements below were checked against.
WRITE_SCHEMAS = frozenset({"dc11669786a5"})  # MLflow 3.17
WORKSPACE = "default"  # MLflow's, when its workspaces are off
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,255}$")  # MLflow takes more; these it always takes
DELETED = "Deleted_Internal"  # MLflow's stage for a version being deleted
MAX_TAG_VALUE = 5000  # MLflow's bound on a registered model's tag value (a version's is larger)


class _Skip(Exception):
    """This store or version is not one the direct path handles: ask MLflow's client."""


def promote(uri: str, tracking: dict, version: str, reason: str):
    """Make ``version`` the champion; returns the previous champion's version (or None), or ``UNKNOWN``."""
    try:
        with promotion_lock(uri, tracking["model_name"]), _Store(uri, tracking) as st:
            mv = st.version(version)
            if mv is None:
                raise PrerequisiteError(f"{st.name} has no version {version}")
            st.check_artifact(mv)
            previous = st.champion()
            st.set_champion(mv.version, previous, reason, "promote")
            return previous
    except _Skip:
        return UNKNOWN


def rollback(uri: str, tracking: dict, reason: str) -> tuple[str, str] | object:
    """Move the champion back to the version promoted before it: (from, to), or ``UNKNOWN``."""
    try:
        with promotion_lock(uri, tracking["model_name"]), _Store(uri, tracking) as st:
            current = st.champion()
            if current is None:
                raise PrerequisiteError(f"{st.name} has no {st.alias} to roll back")
            held = st.version(current)
            if held is None:
                raise _Skip  # the alias names a version being deleted: MLflow's client knows what to say
            target = rollback_target(st.name, current, held.tags, st.versions())
            st.set_champion(target, current, f"rollback from v{current}: {reason}", "rollback")
            st.upsert_version_tags(current, rolled_back(reason))
            return current, target
    except _Skip:
        return UNKNOWN


class _Store:
    """One write transaction on the store (``BEGIN IMMEDIATE``: other writers wait, then see it all)."""

    def __init__(self, uri: str, tracking: dict):
        if not uri.startswith("sqlite:///") or any(os.environ.get(v) for v in (
                "MLFLOW_ENABLE_WORKSPACES", "MLFLOW_WORKSPACE", "MLFLOW_WORKSPACE_STORE_URI")):
            raise _Skip
        self.db = Path(uri.removeprefix("sqlite:///"))
        self.name, self.alias = tracking["model_name"], tracking["alias"]
        if not self.db.is_file() or not _ALIAS.match(self.alias) or self.alias.lower() == "latest" \
                or re.match(r"^v\d+$", self.alias, re.I):
            raise _Skip

    def __enter__(self) -> "_Store":
        try:
            self.con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
            self.con.execute("BEGIN IMMEDIATE")
            schema = {r[0] for r in self.con.execute("SELECT version_num FROM alembic_version")}
            workspaces = {r[0] for r in self.con.execute(
                "SELECT DISTINCT workspace FROM registered_models WHERE name = ?", (self.name,))}
        except sqlite3.Error:
            self._close(commit=False)
            raise _Skip from None
        if len(schema) != 1 or not schema <= WRITE_SCHEMAS or workspaces != {WORKSPACE}:
            self._close(commit=False)
            raise _Skip
        return self

    def __exit__(self, kind, error, tb) -> None:
        self._close(commit=kind is None)
        if isinstance(error, sqlite3.Error):
            raise TrackingError(f"{self.db}: the registry could not be written ({error}); nothing changed") from None

    def _close(self, commit: bool) -> None:
        con, self.con = getattr(self, "con", None), None
        if con is None:
            return
        try:
            if con.in_transaction:
                con.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            con.close()

    # -- reads --------------------------------------------------------------------------------

    def version(self, version: str):
        """The version's number, storage location and tags; None when there is no such version."""
        if not str(version).isdigit():
            return None
        row = self.con.execute(
            "SELECT version, storage_location FROM model_versions WHERE workspace = ? AND name = ? AND version = ?"
            " AND current_stage != ?", (WORKSPACE, self.name, int(version), DELETED)).fetchone()
        if row is None:
            return None
        return SimpleNamespace(version=str(row[0]), storage_location=row[1], tags=self._tags(row[0]))

    def _tags(self, version: int) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ?"
                                     " AND version = ?", (WORKSPACE, self.name, int(version))))

    def champion(self) -> str | None:
        row = self.con.execute("SELECT version FROM registered_model_aliases WHERE workspace = ? AND name = ?"
                               " AND alias = ?", (WORKSPACE, self.name, self.alias)).fetchone()
        return None if row is None else str(row[0])

    def versions(self) -> list[tuple[str, dict[str, str]]]:
        tags: dict[str, dict[str, str]] = {}
        for v, in self.con.execute("SELECT version FROM model_versions WHERE workspace = ? AND name = ?"
                                   " AND current_stage != ?", (WORKSPACE, self.name, DELETED)):
            tags[str(v)] = {}
        for v, k, value in self.con.execute("SELECT version, key, value FROM model_version_tags"
                                            " WHERE workspace = ? AND name = ?", (WORKSPACE, self.name)):
            if str(v) in tags:
                tags[str(v)][k] = value
        return list(tags.items())

    def check_artifact(self, mv) -> None:
        """The version's model.pkl is there and is the bytes that were registered (as ``Registry.fetch``)."""
        location = mv.storage_location or ""
        if not location.startswith("file://"):
            raise _Skip  # remote storage: MLflow's artifact repositories fetch it
        root = Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
        where, expected = f"{self.name} v{mv.version}", mv.tags.get(T + "model_sha256")
        local = next((p for p in (root / "model.pkl", root / "artifacts" / "model.pkl") if p.is_file()), None)
        try:
            data = local.read_bytes() if local else None
        except OSError as e:
            data, why = None, f"{type(e).__name__}: {e}"
        else:
            why = f"no model.pkl under {root}"
        if data is None:
            raise TrackingError(f"{where}: its model artifact cannot be read ({why}); nothing was promoted")
        if bytes_hash(data) != expected:
            raise artifact_mismatch(expected, where)(bytes_hash(data))

    # -- writes: the rows MLflow's client would write, one transaction --------------------------

    def set_champion(self, version: str, previous: str | None, reason: str, kind: str) -> None:
        version_tags, model_tags = champion_event(version, previous, reason, kind=kind)
        if max(len(v) for v in (*version_tags.values(), *model_tags.values())) > MAX_TAG_VALUE:
            raise _Skip  # MLflow's client says what its limit is
        self.con.execute(
            "INSERT INTO registered_model_aliases (workspace, name, alias, version) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (workspace, name, alias) DO UPDATE SET version = excluded.version",
            (WORKSPACE, self.name, self.alias, int(version)))
        self.upsert_version_tags(version, version_tags)
        self.con.executemany(
            "INSERT INTO registered_model_tags (workspace, name, key, value) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (workspace, key, name) DO UPDATE SET value = excluded.value",
            [(WORKSPACE, self.name, k, v) for k, v in model_tags.items()])

    def upsert_version_tags(self, version: str, tags: dict[str, str]) -> None:
        self.con.executemany(
            "INSERT INTO model_version_tags (workspace, name, version, key, value) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (workspace, key, name, version) DO UPDATE SET value = excluded.value",
            [(WORKSPACE, self.name, int(version), k, v) for k, v in tags.items()])
