"""What mlci says is what it does: status predicts run, the split never moves a row, and the
words it prints (cached or not, tracked or not) are true now."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import cli, kaggle_csv

from mlci import errors


@pytest.fixture
def tracked(workspace, monkeypatch, tmp_path_factory):
    monkeypatch.delenv("MLCI_NO_TRACK")
    return workspace


def stale(*args: str) -> set[str]:
    out = json.loads(cli("status", "--json", *args).stdout)
    return {name for name, state in out.items() if state == "stale"}


def ran(result) -> set[str]:
    """The stages the run did not skip as up to date (ran, failed, or not reached after a failed gate)."""
    assert result.exit_code in (0, errors.GATE_FAILED), result.output
    return {r["name"] for r in json.loads(result.stdout)["stages"] if r["status"] != "cached"}


def test_status_predicts_run_in_every_state(tracked):
    """Each state: `mlci status` first, then `mlci run`; the stages status calls stale are the ones that run."""
    states = [
        ("fresh", (), {}),
        ("cached", (), {}),
        ("parameter changed", ("-S", "train.n_estimators=60"), {}),
        ("back to params.yaml", (), {}),
        ("report parameter changed", ("-S", "report.seed=3"), {}),
        ("untracked", (), {"MLCI_NO_TRACK": "1"}),
        ("tracked after untracked", (), {}),
        ("champion moved", (), "promote"),
        ("data changed", (), "data"),
    ]
    for name, args, env in states:
        if env == "promote":  # another version becomes the champion: the comparing stages are stale
            assert cli("run", "-S", "train.n_estimators=61").exit_code in (0, errors.GATE_FAILED)  # registered
            assert cli("run").exit_code == 0
            v = json.loads(cli("runs", "--json").stdout)[0]["model_version"]
            other = "1" if v != "1" else "2"
            assert cli("promote", other, "--reason", "test").exit_code == 0
            env = {}
        if env == "data":
            raw = tracked / "data" / "raw" / "adult.data"
            lines = raw.read_text().splitlines(True)
            raw.unlink()
            raw.write_text("".join(lines[:-50]))  # the last 50 rows gone
            env = {}
        expected = stale(*args) if not env else {n for n, s in json.loads(
            cli("status", "--json", "--no-track", *args).stdout).items() if s == "stale"}
        got = ran(cli("run", "--json", *args, env=env or None))
        assert got == expected, f"{name}: status said {sorted(expected)}, run ran {sorted(got)}"
    # after all of that, nothing is stale and nothing runs
    assert stale() == set() and ran(cli("run", "--json")) == set()


def test_tracked_after_untracked_reevaluates_only_what_the_champion_changes(tracked):
    assert cli("run").exit_code == 0  # v1, the champion
    assert ran(cli("run", "--json", env={"MLCI_NO_TRACK": "1"})) == {"gate", "report"}
    gate = json.loads((tracked / "results" / "gate.json").read_text())
    assert [r.get("note") for r in gate["rules"] if "relative" in r] == ["not evaluated (tracking off)"] * 2
    # Tracked again: the relative rules are evaluated against v1; the test split is not scored again.
    assert ran(cli("run", "--json")) == {"gate", "report"}


def test_the_split_is_the_same_for_either_file_shape_and_never_moves_a_row(workspace):
    assert cli("run", "--until", "preprocess").exit_code == 0
    uci = {n: pd.read_parquet(workspace / "data" / "processed" / f"{n}.parquet") for n in ("train", "validation", "test")}
    shutil.copy(kaggle_csv(workspace), workspace / "data" / "raw" / "adult.csv")
    assert cli("run", "--until", "preprocess", env={"RAW_DATA_FILE": "adult.csv"}).exit_code == 0
    for n, frame in uci.items():  # the same people in another row order: the very same split files
        pd.testing.assert_frame_equal(frame, pd.read_parquet(workspace / "data" / "processed" / f"{n}.parquet"))
    meta = json.loads((workspace / "results" / "preprocess_metadata.json").read_text())
    assert meta["split"] == {"scheme": "row-hash-v1", "seed": 42, "validation": 0.2, "test": 0.2}
    assert all(abs(s - 0.2408) < 0.01 for s in meta["positive_share"].values())


def test_until_removes_a_report_of_another_model(workspace):
    assert cli("run").exit_code == 0
    result = cli("run", "--until", "test", "-S", "train.n_estimators=80")
    assert result.exit_code == 0 and "report: removed" in result.output
    assert not (workspace / "results" / "report.html").exists()
    assert cli("run", "-S", "train.n_estimators=80").exit_code == 0  # the report comes back, for this model
    card = json.loads((workspace / "models" / "model.json").read_text())
    assert json.loads((workspace / "results" / "report.json").read_text())["model"]["sha256"] == card["sha256"]


def test_a_byte_identical_model_becomes_the_champion_again_and_history_is_kept(tracked):
    assert cli("run").exit_code == 0  # v1
    assert cli("run", "-S", "train.n_estimators=390").exit_code == 0  # v2, promoted (within the tolerances)
    back = cli("run", "--json")  # the same bytes as v1
    assert back.exit_code == 0
    summary = json.loads(back.stdout)["tracking"]
    assert summary["version"] == "1" and summary["promoted"] is True
    history = json.loads(cli("runs", "--promotions", "--json").stdout)
    assert [(e["version"], e["from"]) for e in history] == [("1", None), ("2", "1"), ("1", "2")]
    again = cli("promote", "1", "--reason", "audit")
    assert "already the champion" in again.stdout
    assert json.loads(cli("runs", "--promotions", "--json").stdout)[-1]["reason"] == "audit"


def test_unix_manners(workspace):
    bad = cli("run", "--json", "-S", "train.learnin_rate=0.1")
    assert bad.exit_code == errors.USAGE
    assert json.loads(bad.stdout) == {"error": "-S: train.learnin_rate: unknown key (did you mean train.learning_rate?)",
                                      "exit_code": 2}
    unreachable = cli("run", "--json", env={"MLCI_NO_TRACK": "", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert unreachable.exit_code == errors.TRACKING and json.loads(unreachable.stdout)["exit_code"] == errors.TRACKING


def test_a_pull_request_registers_a_challenger_and_leaves_the_champion(tracked):
    assert cli("run").exit_code == 0  # v1, the champion
    pr = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_HEAD_REF": "feature",
          "GITHUB_REF_NAME": "7/merge"}
    result = cli("run", "--json", "-S", "train.n_estimators=395", env=pr)
    summary = json.loads(result.stdout)["tracking"]
    assert summary["version"] == "2" and summary["promoted"] is False and summary["challenger"] == "challenger"
    assert "a pull request never promotes" in summary["note"]
    diff = cli("diff", "champion", "challenger", "--json")
    d = json.loads(diff.stdout)
    assert d["a_label"] == "champion (v1)" and d["b_label"] == "challenger (v2)"
    off = cli("run", "--json", "--no-promote", "-S", "train.n_estimators=394")
    assert json.loads(off.stdout)["tracking"]["promoted"] is False
    assert json.loads(cli("runs", "--promotions", "--json").stdout)[-1]["version"] == "1"  # never moved


def test_the_other_file_shape_passes_the_gate_against_its_champion(tracked):
    """The issue's case: the champion trained on adult.data, the candidate on adult.csv (the same people in
    another order). The same split, so the champion is compared on rows it never saw: the gate passes."""
    assert cli("run").exit_code == 0
    shutil.copy(kaggle_csv(tracked), tracked / "data" / "raw" / "adult.csv")
    result = cli("run", "--json", env={"RAW_DATA_FILE": "adult.csv"})
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["gate"]["passed"] is True and out["tracking"]["version"] == "1"  # the very same model
