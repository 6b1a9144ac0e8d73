"""Promote and rollback without MLflow: which version a rollback goes back to, and every store the
direct path must leave to MLflow's client untouched (tests/integration/test_tracking.py compares
its rows with MLflow's own on a real store)."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from mlci.errors import PrerequisiteError
from mlci.tracking import direct
from mlci.tracking.registry import rollback_target

TRACKING = {"model_name": "m", "alias": "champion"}


def test_a_rollback_goes_to_the_version_promoted_last_before_the_champion():
    tags = lambda at: {"mlci.promoted_at": at}  # noqa: E731
    versions = [("1", tags("2026-01-01")), ("2", tags("2026-01-03")), ("3", tags("2026-01-02")), ("4", {}),
                ("5", tags("2026-01-09"))]  # 5 was promoted after the champion (it was rolled back)
    assert rollback_target("m", "2", tags("2026-01-03"), versions) == "3"
    assert rollback_target("m", "3", tags("2026-01-02"), versions) == "1"
    with pytest.raises(PrerequisiteError, match="only version ever promoted"):
        rollback_target("m", "1", tags("2026-01-01"), versions)


def _store(path, revision="dc11669786a5", workspace="default"):
    """The registry tables as MLflow 3.17 makes them (the columns the direct path touches), one version."""
    con = sqlite3.connect(path)
    con.executescript(f"""
        CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);
        INSERT INTO alembic_version VALUES ('{revision}');
        CREATE TABLE registered_models (name TEXT, workspace TEXT, PRIMARY KEY (workspace, name));
        INSERT INTO registered_models VALUES ('m', '{workspace}');
        CREATE TABLE model_versions (name TEXT, version INTEGER, current_stage TEXT, storage_location TEXT,
                                     workspace TEXT, PRIMARY KEY (workspace, name, version));
        INSERT INTO model_versions VALUES ('m', 1, 'None', 'file://{path.parent}/artifacts', '{workspace}');
        CREATE TABLE registered_model_aliases (alias TEXT, version INTEGER, name TEXT, workspace TEXT,
                                               PRIMARY KEY (workspace, name, alias));
        CREATE TABLE registered_model_tags (key TEXT, value TEXT, name TEXT, workspace TEXT,
                                            PRIMARY KEY (workspace, key, name));
        CREATE TABLE model_version_tags (key TEXT, value TEXT, name TEXT, version INTEGER, workspace TEXT,
                                         PRIMARY KEY (workspace, key, name, version));
    """)
    (path.parent / "artifacts").mkdir(exist_ok=True)
    data = b"model bytes"
    (path.parent / "artifacts" / "model.pkl").write_bytes(data)
    con.execute("INSERT INTO model_version_tags VALUES ('mlci.model_sha256', ?, 'm', 1, ?)",
                ("sha256:" + hashlib.sha256(data).hexdigest(), workspace))
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def _dump(uri):
    con = sqlite3.connect(uri.removeprefix("sqlite:///"))
    rows = [r for t in ("registered_model_aliases", "registered_model_tags", "model_version_tags")
            for r in con.execute(f"SELECT * FROM {t}")]
    con.close()
    return rows


def test_a_known_schema_is_written_in_one_go(tmp_path):
    uri = _store(tmp_path / "mlflow.db")
    assert direct.promote(uri, TRACKING, "1", "first") is None  # no champion before
    con = sqlite3.connect(tmp_path / "mlflow.db")
    assert con.execute("SELECT version FROM registered_model_aliases").fetchall() == [(1,)]
    keys = {k for k, in con.execute("SELECT key FROM model_version_tags")}
    assert {"mlci.promoted_at", "mlci.promoted_by", "mlci.promotion_reason"} <= keys
    assert direct.promote(uri, TRACKING, "1", "again") == "1"
    with pytest.raises(PrerequisiteError, match="has no version 2"):
        direct.promote(uri, TRACKING, "2", "x")


@pytest.mark.parametrize("case", ["other-revision", "workspace-on", "other-workspace", "server", "remote-artifact",
                                  "odd-alias", "long-reason"])
def test_anything_unfamiliar_is_left_to_mlflows_client_with_nothing_written(tmp_path, monkeypatch, case):
    uri = _store(tmp_path / "mlflow.db", revision="0000deadbeef" if case == "other-revision" else "dc11669786a5",
                 workspace="team" if case == "other-workspace" else "default")
    tracking, reason = dict(TRACKING), "why"
    if case == "workspace-on":
        monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    if case == "server":
        uri = "http://127.0.0.1:9"
    if case == "remote-artifact":
        con = sqlite3.connect(tmp_path / "mlflow.db")
        con.execute("UPDATE model_versions SET storage_location = 's3://bucket/m/1'")
        con.commit()
        con.close()
    if case == "odd-alias":
        tracking["alias"] = "1st"  # MLflow takes it; the direct path takes only what it always takes
    if case == "long-reason":
        reason = "x" * 6000
    before = _dump(uri) if uri.startswith("sqlite") else None
    assert direct.promote(uri, tracking, "1", reason) is direct.UNKNOWN
    if case in ("remote-artifact", "long-reason"):  # a store it reads: it says there is no champion yet
        with pytest.raises(PrerequisiteError, match="no champion to roll back"):
            direct.rollback(uri, tracking, reason)
    else:
        assert direct.rollback(uri, tracking, reason) is direct.UNKNOWN
    if before is not None:
        assert _dump(uri) == before


def test_a_damaged_artifact_is_refused_before_anything_is_written(tmp_path):
    from mlci.tracking.store import TrackingError

    uri = _store(tmp_path / "mlflow.db")
    (tmp_path / "artifacts" / "model.pkl").write_bytes(b"other bytes")
    before = _dump(uri)
    with pytest.raises(TrackingError, match="does not match the registry's"):
        direct.promote(uri, TRACKING, "1", "x")
    assert _dump(uri) == before
