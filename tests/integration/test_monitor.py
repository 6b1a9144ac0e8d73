"""`mlci monitor` end to end: a resample of the training data is quiet, a shifted batch names
exactly the shifted features (exit 12), the estimate without labels holds, prediction logs and
bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import kaggle_csv, run_mlci


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import populate

    ws = populate(tmp_path_factory.mktemp("monitor"))
    # Split seed 1, not the project's 42: 42's test split is 1.6 points harder than its validation
    # split (README, "What changed"), a chance difference no estimate without labels can see.
    proc = run_mlci("run", "--no-track", "--until", "test", "-q", "-S", "split.seed=1", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    return ws


def monitor(ws, *args):
    proc = run_mlci("monitor", *args, "--no-track", "--json", cwd=ws)
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_the_reference_profile_is_small_and_beside_the_model(trained):
    ref = trained / "models" / "reference.json"
    profile = json.loads(ref.read_text())
    assert ref.stat().st_size < 1_000_000
    card = json.loads((trained / "models" / "model.json").read_text())
    assert profile["model_sha256"] == card["sha256"] and set(profile["features"]) == set(card["features"])
    assert all(len(f.get("sample", [])) <= 1000 for f in profile["features"].values())


def test_a_resample_of_the_data_does_not_drift(trained, tmp_path):
    batch = pd.read_csv(kaggle_csv(tmp_path)).sample(frac=1.0, replace=True, random_state=7)
    batch.to_csv(tmp_path / "resample.csv", index=False)
    proc, out = monitor(trained, str(tmp_path / "resample.csv"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert out["drifted"] == [] and not out["predictions_drifted"] and out["labelled"] and not out["acc_estimated"]
    for name in ("monitor.md", "monitor.html", "monitor.json", "plots/predictions.png"):
        assert (tmp_path / "out" / name).is_file(), name


def test_a_shifted_batch_names_exactly_the_shifted_features(trained, tmp_path):
    batch = pd.read_csv(kaggle_csv(tmp_path)).sample(n=20_000, replace=True, random_state=3).reset_index(drop=True)
    batch["age"] = batch["age"] + 15
    # One category's share tripled, no other column touched.
    rng = np.random.default_rng(3)
    target = "Self-emp-not-inc"
    share = (batch["workclass"] == target).mean()
    others = np.flatnonzero(batch["workclass"] != target)
    batch.loc[rng.choice(others, size=int(round(2 * share * len(batch))), replace=False), "workclass"] = target
    batch.drop(columns=["income"]).to_csv(tmp_path / "shifted.csv", index=False)
    proc, out = monitor(trained, str(tmp_path / "shifted.csv"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 12, proc.stderr
    assert sorted(out["drifted"]) == ["age", "workclass"] and out["acc_estimated"] and not out["labelled"]
    assert proc.stderr.count("\n") == 1 and "feature age drifted" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert report["features"]["age"]["psi"] > 1 and report["features"]["education"]["drift"] is False


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_labels_the_estimate_holds_on_unseen_rows(tmp_path, seed):
    """On each split's untouched test rows, without their labels, the estimate agrees with the true
    accuracy within its own uncertainty: 1.5 half-widths of its 95 % interval (about three standard
    errors), a check that a wrong calibration, threshold or variance fails by points, not chance.

    Not "the truth inside the 95 % interval" on each seed: the interval is a 95 % one, and the
    calibration learnt on one split's rows is compared with another split's outcomes (with seed 42
    the test split is 1.6 points harder, README "What changed"). Measured over split seeds 0-9 and
    42 (refitted default model): truth - estimate from -0.013 to +0.014, mean +0.002, standard
    deviation 0.0075; 9 of 11 truths inside the 95 % interval (half-width 0.011), all 11 inside 1.5
    half-widths."""
    from conftest import populate
    from mlci.evaluation.bootstrap import intervals

    ws = populate(tmp_path / "ws")
    assert run_mlci("run", "--no-track", "--until", "test", "-q", "-S", f"split.seed={seed}", cwd=ws).returncode == 0
    test = pd.read_parquet(ws / "data" / "processed" / "test.parquet")
    # The data's shape: every column of the definition (fnlwgt is one, though not a feature).
    test.drop(columns=["income"]).assign(fnlwgt=0).to_csv(tmp_path / "unlabelled.csv", index=False)
    proc, out = monitor(ws, str(tmp_path / "unlabelled.csv"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    est = json.loads((tmp_path / "out" / "monitor.json").read_text())["performance"]["acc"]
    scores = pd.read_parquet(ws / "results" / "test_scores.parquet")
    truth = intervals(scores["label"].to_numpy(), scores["probability"].to_numpy(), resamples=1000)["acc"]
    half = (est["high"] - est["low"]) / 2
    assert out["acc_estimated"] and 0.005 < half < 0.02, est  # an interval as wide as ~6,500 rows allow
    assert abs(est["value"] - truth["value"]) <= 1.5 * half, (est, truth)


def test_prediction_logs_are_read_as_a_batch(trained, tmp_path):
    test = pd.read_parquet(trained / "data" / "processed" / "test.parquet")
    logs = tmp_path / "predictions"
    logs.mkdir()
    half = len(test) // 2
    for i, part in enumerate((test.iloc[:half], test.iloc[half:])):
        part = part.drop(columns=["income"]).assign(probability=0.3, prediction="<=50K", request_id="r")
        part.to_parquet(logs / f"part-{i}.parquet")
    proc, out = monitor(trained, str(logs), "-o", str(tmp_path / "out"))
    # Every logged probability is 0.3: the predictions drifted, the features did not.
    assert proc.returncode == 12 and out["drifted"] == [] and out["predictions_drifted"], proc.stderr
    assert out["rows"] == len(test)


@pytest.mark.parametrize("make, code, words", [
    (lambda p: p.mkdir(), 4, "no Parquet files"),
    (lambda p: p.write_text("a,b\n1,2\n"), 4, "expected"),
    (lambda p: None, 4, "no such file"),
])
def test_bad_batches_get_one_line(trained, tmp_path, make, code, words):
    target = tmp_path / ("batch.csv" if code == 4 and words != "no Parquet files" else "empty")
    make(target)
    proc, out = monitor(trained, str(target))
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("\n") == 1 and words in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_without_a_reference_is_a_prerequisite_error(trained, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained / "models", models)
    (models / "reference.json").unlink()
    proc, _ = monitor(trained, str(kaggle_csv(tmp_path)), "--model-dir", str(models))
    assert proc.returncode == 6 and "no reference profile" in proc.stderr
