"""The webhook's run: what a run may see of the server's environment, and how its verdict is read."""

from __future__ import annotations

import json

from mlci.webhook.model import Run
from mlci.webhook.runner import _verdict, scrubbed_env


def test_the_webhook_secret_never_reaches_a_run(monkeypatch):
    monkeypatch.setenv("MLCI_WEBHOOK_SECRET", "s3cret")
    monkeypatch.setenv("RAW_DATA_DIR", "/server/own/data")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    env = scrubbed_env()
    assert "MLCI_WEBHOOK_SECRET" not in env and "RAW_DATA_DIR" not in env
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000" and "PATH" in env


def _results(tmp_path, gate=None, train=None, test=None):
    for name, content in (("gate.json", gate), ("train_metadata.json", train), ("test_metadata.json", test)):
        if content is not None:
            (tmp_path / name).write_text(json.dumps(content))
    return tmp_path


def test_passed_needs_the_pipelines_own_files_not_only_exit_0(tmp_path):
    run = Run("r1", "main", "a" * 40, None)
    _verdict(run, 0, _results(tmp_path))  # exit 0, but no pipeline ran (e.g. a stand-in `mlci`)
    assert run.status == "failed" and "do not show a complete run" in run.error

    run = Run("r2", "main", "a" * 40, None)
    good = _results(tmp_path, gate={"passed": True}, train={"model_sha256": "x", "validation_acc": 0.87},
                    test={"model_sha256": "x", "test_acc": 0.88})
    _verdict(run, 0, good)
    assert run.status == "passed" and run.metrics == {"validation_acc": 0.87, "test_acc": 0.88}


def test_a_gate_failure_is_read_from_the_verdict(tmp_path):
    run = Run("r3", "main", "a" * 40, None)
    _verdict(run, 3, _results(tmp_path, gate={"passed": False}, train={"model_sha256": "x"}))
    assert run.status == "gate-failed"
    run = Run("r4", "main", "a" * 40, None)
    (tmp_path / "empty").mkdir()
    _verdict(run, 3, tmp_path / "empty")  # exit 3 without a verdict: not a gate failure
    assert run.status == "failed"


def test_a_damaged_result_file_is_a_failed_run_not_a_crash(tmp_path):
    (tmp_path / "gate.json").write_text("{not json")
    (tmp_path / "train_metadata.json").write_text("[1, 2]")
    run = Run("r5", "main", "a" * 40, None)
    _verdict(run, 0, tmp_path)
    assert run.status == "failed" and run.gate is None
