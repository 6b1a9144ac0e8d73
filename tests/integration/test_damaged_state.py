"""Damaged state and unwritable places: a clear one-line error naming the file and the way out, a
documented exit code, never an internal error; or, where the lock notices, just a rerun."""

from __future__ import annotations

import json

import pytest
from conftest import cli, outputs

from mlci import errors


def one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and "internal error" not in err and "Traceback" not in result.output
    for w in words:
        assert w in err, err


@pytest.fixture
def ran(trained):
    """A finished untracked run (a copy of the session's one: conftest's ``trained``), damaged below."""
    return trained


@pytest.mark.parametrize("name", ["train_metadata.json", "gate.json"])
def test_a_damaged_metadata_file_is_named(ran, name):
    (ran / "results" / name).write_text("{not json")
    stage = {"train_metadata.json": "gate", "gate.json": "test"}[name]
    one_line_error(cli(stage), errors.STATE, f"results/{name}: damaged", "--force")
    # `mlci run` notices the changed output and simply makes it again.
    assert cli("run").exit_code == 0
    assert json.loads((ran / "results" / name).read_text())


def test_a_model_card_that_is_not_json(ran):
    (ran / "models" / "model.json").write_text("[1, 2")
    one_line_error(cli("predict", str(ran / "data" / "raw" / "adult.data"), "-o", "out.csv"), errors.STATE,
                   "models/model.json: damaged")
    assert not (ran / "out.csv").exists()


def test_a_model_whose_bytes_match_but_do_not_load(ran):
    from mlci.fileio import bytes_hash

    junk = b"not a pickle at all"
    (ran / "models" / "model.pkl").write_bytes(junk)
    card = json.loads((ran / "models" / "model.json").read_text())
    card["sha256"] = bytes_hash(junk)
    (ran / "models" / "model.json").write_text(json.dumps(card))
    one_line_error(cli("test"), errors.STATE, "models/model.pkl", "does not load")


def test_a_truncated_split_file(ran):
    path = ran / "data" / "processed" / "train.parquet"
    path.write_bytes(path.read_bytes()[:1000])
    one_line_error(cli("train"), errors.STATE, "data/processed/train.parquet: damaged", "mlci preprocess")
    assert cli("run").exit_code == 0  # preprocess's output changed: it reruns, and all is well


@pytest.mark.parametrize("lock", [
    "schema: 1\nstages: [preprocess, train]\n",
    "schema: 1\nstages: {preprocess: just a string, train: {code: x, deps: [1, 2], outs: 7}}\n",
    ": : not yaml : [",
])
def test_a_damaged_lock_only_costs_a_rerun(ran, lock):
    (ran / "mlci.lock").write_text(lock)
    status = cli("status")
    assert status.exit_code == 0 and "preprocess: stale" in status.stdout
    result = cli("run", "--json")
    assert result.exit_code == 0
    assert cli("status").stdout.count("up to date") == 5


def test_results_dir_that_is_a_file(workspace):
    (workspace / "not-a-dir").write_text("x")
    result = cli("run", env={"RESULTS_DIR": "not-a-dir"})
    one_line_error(result, errors.IO, "not-a-dir", "a file is where a directory should be")


def test_parameters_that_slip_through_no_more(small):
    workspace = small  # 6,000 rows: the final run only shows an acknowledged empty gate runs
    for args, words in [
        (("-S", "split.seed=-1"), ("split.seed",)),
        (("-S", "train.learning_rate=.inf"), ("train.learning_rate", "finite")),
        (("-S", "gate.rules=[]"), ("gate", "allow_no_rules")),
        (("--params", "nope.yaml"), ("nope.yaml: no such parameters file",)),
    ]:
        cmd = [*args[:2], "run"] if args[0] == "--params" else ["run", *args]
        one_line_error(cli(*cmd), errors.USAGE, *words)
    assert outputs(workspace) == []  # nothing was made before the parameters were checked
    # An empty gate, acknowledged: it runs, and says so in gate.json.
    assert cli("run", "-S", "gate.rules=[]", "-S", "gate.allow_no_rules=true").exit_code == 0


def test_a_report_that_fails_leaves_the_previous_one_whole(tmp_path):
    from mlci.fileio import write_set

    good = {tmp_path / "a.txt": b"old a", tmp_path / "b.txt": b"old b"}
    write_set(good)
    (tmp_path / "blocker").write_text("a file, where the next write wants a directory")
    with pytest.raises(OSError):
        write_set({tmp_path / "a.txt": b"new a", tmp_path / "blocker" / "c.txt": b"c"})
    assert (tmp_path / "a.txt").read_bytes() == b"old a" and (tmp_path / "b.txt").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "blocker"]  # no temporaries left


def test_a_first_run_without_data_leaves_nothing_behind(tmp_path, monkeypatch):
    from conftest import PATH_VARS

    for var in PATH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # an empty directory, tracking on (the default)
    result = cli("run", env={"RAW_DATA_FILE": "mine.csv"})  # the tutorial's variables win over the bundled data
    one_line_error(result, errors.DATA, "data/raw/mine.csv: file not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlflow.db, no run, no .mlci


def test_a_full_disk_is_one_line_and_keeps_the_previous_outputs(small, tmp_path_factory):
    """The results directory on a small tmpfs, filled up: the stage that cannot write fails with exit 11
    in one line, and every earlier output is still whole (no half-written file, no temporary left)."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root: mounting a small tmpfs must work there")
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path_factory.mktemp("small-disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        env = {"RESULTS_DIR": str(disk)}
        assert cli("run", env=env).exit_code == 0
        before = {p.relative_to(disk): p.read_bytes() for p in disk.rglob("*") if p.is_file()}
        (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 8 * 1024))  # 8 KiB left
        result = cli("run", "--force", env=env)
        one_line_error(result, errors.IO, "no space left on the device")
        assert str(disk) in result.stderr  # the file it could not write
        after = {p.relative_to(disk): p.read_bytes() for p in disk.rglob("*") if p.is_file() and p.name != "filler"}
        assert set(after) == set(before)  # nothing half-written left beside them
        changed = [str(p) for p in before if after[p] != before[p]]
        assert changed == [], changed
    finally:
        subprocess.run(["umount", str(disk)], check=True)
