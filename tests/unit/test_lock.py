"""mlci.pipeline.lock: whether a stage's last run still holds, and what changed when it does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from mlci.config.resolve import resolve
from mlci.config.settings import from_env
from mlci.pipeline.lock import read_lock, record, stage_code, stage_record, why_stale, write_lock
from mlci.pipeline.table import stage

GATE, TRAIN = stage("gate"), stage("train")
META, GATE_JSON, JUNIT = Path("results/train_metadata.json"), Path("results/gate.json"), Path("results/junit.xml")


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace whose gate stage has run (files written, lock recorded, no champion)."""
    monkeypatch.chdir(tmp_path)  # Settings' paths are relative to the working directory
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    s = from_env(tmp_path / "params.yaml", environ={})
    params = resolve(s.params_file, [], s.state_dir)
    META.parent.mkdir()
    for path, text in ((META, '{"validation_acc": 0.86}'), (GATE_JSON, '{"passed": true}'), (JUNIT, "<testsuite/>")):
        path.write_text(text)
    record(GATE, s, params, champion=None)
    return s, params


def gate_record(s) -> dict:
    return read_lock(s.lock_path)["gate"]


def test_a_recorded_stage_is_up_to_date(ws):
    s, params = ws
    assert s.lock_path == s.params_file.with_name("mlci.lock") and s.lock_path.is_file()
    assert why_stale(GATE, s, params, gate_record(s), None) is None


def test_a_stage_with_no_record_never_ran(ws):
    s, params = ws
    assert why_stale(GATE, s, params, None, None) == why_stale(TRAIN, s, params, {}) == "never ran (no lock record)"


def test_other_code_makes_it_stale(ws):
    s, params = ws
    assert gate_record(s)["code"] == stage_code(GATE)
    assert why_stale(GATE, s, params, gate_record(s) | {"code": "sha256:older"}, None) == "its code changed"


def test_a_changed_parameter_names_its_section(ws):
    s, params = ws
    stricter = resolve(s.params_file, ["gate.rules=[{metric: validation_acc, min: 0.9}]"], s.state_dir)
    assert why_stale(GATE, s, stricter, gate_record(s), None) == "parameters changed: gate"


def test_the_best_section_counts_only_for_the_best_profile(ws):
    s, params = ws
    rec = stage_record(TRAIN, s, params)
    other_best = resolve(s.params_file, ["best.folds=3"], s.state_dir)
    assert why_stale(TRAIN, s, other_best, rec) == "dependency data/processed/train.parquet is missing"  # not params
    best = resolve(s.params_file, ["train.profile=best"], s.state_dir)
    assert why_stale(TRAIN, s, best, rec) == "parameters changed: best, train"


def test_another_champion_makes_it_stale(ws):
    s, params = ws
    assert why_stale(GATE, s, params, gate_record(s), "4") == "the champion changed (None -> 4)"
    record(GATE, s, params, champion="4")
    assert why_stale(GATE, s, params, gate_record(s), "5") == "the champion changed (4 -> 5)"


def test_a_changed_or_missing_dependency_makes_it_stale(ws):
    s, params = ws
    META.write_text('{"validation_acc": 0.5}')
    assert why_stale(GATE, s, params, gate_record(s), None) == f"dependency {META} changed"
    META.unlink()
    assert why_stale(GATE, s, params, gate_record(s), None) == f"dependency {META} is missing"


def test_a_changed_or_missing_output_makes_it_stale(ws):
    s, params = ws
    GATE_JSON.write_text('{"passed": false}')
    assert why_stale(GATE, s, params, gate_record(s), None) == f"output {GATE_JSON} changed"
    record(GATE, s, params, champion=None)
    JUNIT.unlink()
    assert why_stale(GATE, s, params, gate_record(s), None) == f"output {JUNIT} is missing"


def test_write_then_read_keeps_the_records(tmp_path):
    lock = tmp_path / "mlci.lock"
    stages = {"gate": {"code": "c", "params": {"champion": None}}, "train": {"code": "t"}}
    write_lock(lock, stages)
    assert read_lock(lock) == stages and list(read_lock(lock)) == ["train", "gate"]  # the table's order


@pytest.mark.parametrize("text", [
    "stages: {gate: [unclosed\n",  # not YAML
    "just a string\n",
    "- schema: 1\n",
    "schema: 1\nstages: [gate, train]\n",
    "schema: 2\nstages: {gate: {code: c}}\n",
    "stages: {gate: {code: c}}\n",  # no schema
])
def test_a_damaged_lock_reads_as_empty(tmp_path, text):
    lock = tmp_path / "mlci.lock"
    lock.write_text(text)
    assert read_lock(lock) == {}


def test_undecodable_or_absent_locks_read_as_empty(tmp_path):
    (tmp_path / "mlci.lock").write_bytes(b"\xff\xfe\x00schema")
    assert read_lock(tmp_path / "mlci.lock") == {} and read_lock(tmp_path / "absent.lock") == {}


def test_wrong_shaped_stage_records_are_dropped(tmp_path):
    lock = tmp_path / "mlci.lock"
    lock.write_text("schema: 1\nstages:\n  gate: a string\n  train: {code: t}\n  deploy: {code: d}\n")
    assert read_lock(lock) == {"train": {"code": "t"}}


def test_a_record_with_deps_of_the_wrong_shape_is_stale_not_a_crash(ws):
    s, params = ws
    assert why_stale(GATE, s, params, gate_record(s) | {"deps": [str(META)]}, None) is not None


def test_a_file_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    """Staleness, the run-cache key and the lock share one read of each input; any rewrite is seen."""
    import hashlib

    from mlci import fileio

    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(fileio.hashlib, "file_digest", lambda fh, name: reads.append(fh.name) or real(fh, name))
    p = tmp_path / "split.parquet"
    p.write_bytes(b"one")
    first = fileio.file_hash(p)
    assert fileio.file_hash(p) == first and len(reads) == 1
    fileio.write_bytes(p, b"two")  # our writes replace the file
    assert fileio.file_hash(p) == fileio.bytes_hash(b"two") and len(reads) == 2
    import os

    with open(p, "r+b") as fh:  # an edit in place, same size, its time set back: the ctime still moves
        fh.write(b"six")
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    assert fileio.file_hash(p) == fileio.bytes_hash(b"six")
