"""The `best` profile: selection by cross-validation only, its own threshold, one raw-record artifact.

The end-to-end tests train it with a tiny budget (few rounds, two trials, three folds): what they
check is the machinery, not the accuracy (that is bench/best.py's job).
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import cli, run_mlci

from mlci import errors
from mlci.modeling.best import accuracy_threshold, ensemble_weights, log_loss

TINY = ["--profile", "best", "-S", "best.folds=3", "-S", "best.tuning_trials=2", "-S", "best.catboost_iterations=40",
        "-S", "best.xgboost_rounds=40"]


def load(ws, name):
    return json.loads((ws / "results" / name).read_text())


def test_accuracy_threshold_is_the_brute_force_optimum():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 200):
        y = rng.integers(0, 2, n)
        p = np.round(rng.random(n), 2)  # rounding makes ties
        t = accuracy_threshold(y, p)
        grid = np.concatenate([[0.0, 1.0], np.unique(p), (np.unique(p)[1:] + np.unique(p)[:-1]) / 2])
        best = max(np.mean((p >= g) == y) for g in grid)
        assert np.mean((p >= t) == y) == pytest.approx(best)
    # Equally good choices: the one nearest 0.5 wins.
    assert accuracy_threshold(np.array([0, 1]), np.array([0.2, 0.9])) == pytest.approx(0.55)


def test_ensemble_weights_fit_out_of_fold_log_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    signal = np.where(y == 1, 0.7, 0.3)
    good = np.clip(signal + rng.normal(0, 0.15, len(y)), 0.01, 0.99)
    noisy = np.clip(signal + rng.normal(0, 0.35, len(y)), 0.01, 0.99)
    useless = rng.random(len(y))
    probas = np.column_stack([good, noisy, useless])
    w = ensemble_weights(y, probas, "average")
    assert w.sum() == pytest.approx(1) and (w >= 0).all()
    assert w[0] > w[1] and w[2] == 0  # pure noise gets nothing
    assert log_loss(y, probas @ w) <= min(log_loss(y, probas[:, j]) for j in range(2)) + 1e-12
    assert list(ensemble_weights(y, probas, "select")) == [1, 0, 0]
    assert ensemble_weights(y, probas, "equal") == pytest.approx([1 / 3] * 3)


def test_best_profile_end_to_end(small):
    result = cli("run", "--json", *TINY)
    assert result.exit_code == 0, result.output
    meta, card = load(small, "train_metadata.json"), json.loads((small / "models" / "model.json").read_text())
    assert meta["profile"] == card["profile"] == "best" and meta["model"] == "ensemble"
    best = meta["best"]
    assert set(best["candidates"]) == {"lightgbm", "catboost", "xgboost"} and best["folds"] == 3
    assert sum(c["weight"] for c in best["candidates"].values()) == pytest.approx(1, abs=1e-5)
    assert best["tuning"]["trials"] >= 1 and 0 < best["threshold"] < 1

    # One artifact that takes raw records: encoder + ensemble, its threshold on it and on the card.
    model = pickle.loads((small / "models" / "model.pkl").read_bytes())
    clf = model[-1]
    assert type(clf).__name__ == "Ensemble" and clf.threshold_ == card["threshold"] == meta["threshold"]
    assert {n for n, _ in clf.members_} == {n for n, c in best["candidates"].items() if c["weight"] > 0}

    # validation_acc is the accuracy at the model's threshold; acc_at_0.5 the plain one.
    scores = pd.read_parquet(small / "results" / "validation_scores.parquet")
    y, p = scores["label"].to_numpy() == 1, scores["probability"].to_numpy()
    assert meta["validation_acc"] == pytest.approx(np.mean((p >= clf.threshold_) == y), abs=1e-6)
    if clf.threshold_ != 0.5:
        assert meta["validation_acc_at_0.5"] == pytest.approx(np.mean((p >= 0.5) == y), abs=1e-6)
    assert "test_acc" in load(small, "test_metadata.json")

    # `mlci predict` labels with the same threshold.
    sample = small / "sample.csv"
    sample.write_text("".join((small / "data" / "raw" / "adult.data").read_text().splitlines(True)[:300]))
    assert cli("predict", str(sample), "-o", "p.csv").exit_code == 0
    out = pd.read_csv(small / "p.csv")
    assert ((out["probability"] >= clf.threshold_) == (out["prediction"] == ">50K")).all()

    # The report works on an ensemble (no gain importance; permutation importance still).
    report = load(small, "report.json")
    assert report["model"]["profile"] == "best"
    assert all(r["gain_share"] is None and r["permutation_mean"] is not None for r in report["importance"])


def _flip(ws, split):
    path = ws / "data" / "processed" / f"{split}.parquet"
    frame = pd.read_parquet(path)
    frame["income"] = frame["income"].map({">50K": "<=50K", "<=50K": ">50K"}).astype(frame["income"].dtype)
    frame.to_parquet(path, index=False)


def _choices(meta):
    best = {k: v for k, v in meta["best"].items() if not k.endswith("seconds")}
    best["tuning"] = {k: v for k, v in best["tuning"].items() if k != "seconds"}
    best["candidates"] = {n: {k: v for k, v in c.items() if k != "cv_seconds"} for n, c in best["candidates"].items()}
    return best


def test_best_profile_choices_never_see_validation_or_test_labels(small, tmp_path):
    """Everything chosen (tuned parameters, weights, threshold) depends on the train split alone.
    Flipping every test label changes not one byte of the model; flipping every validation label
    changes no choice and not the measured model (its validation ROC-AUC becomes 1 - AUC), only the
    deployed one, which learnt from those rows; with train.refit_max_rows=0 not even that."""
    assert cli("run", "--until", "train", *TINY).exit_code == 0
    first = load(small, "train_metadata.json")
    model = (small / "models" / "model.pkl").read_bytes()
    assert first["fitted_on"] == "train+validation" and first["rows"]["fitted"] == (
        first["rows"]["train"] + first["rows"]["validation"])
    _flip(small, "test")
    assert cli("train", *TINY).exit_code == 0
    assert (small / "models" / "model.pkl").read_bytes() == model
    _flip(small, "validation")
    result = cli("train", *TINY)
    assert result.exit_code == 0, result.output
    second = load(small, "train_metadata.json")
    assert _choices(first) == _choices(second)
    assert second["validation_roc_auc"] == pytest.approx(1 - first["validation_roc_auc"], abs=1e-6)
    assert (small / "models" / "model.pkl").read_bytes() != model  # it learnt the flipped labels

    # Measured model deployed as is: the validation labels reach no byte of it.
    assert cli("train", *TINY, "-S", "train.refit_max_rows=0").exit_code == 0
    flipped = (small / "models" / "model.pkl").read_bytes()
    _flip(small, "validation")
    assert cli("train", *TINY, "-S", "train.refit_max_rows=0").exit_code == 0
    assert (small / "models" / "model.pkl").read_bytes() == flipped
    assert load(small, "train_metadata.json")["fitted_on"] == "train"


def test_best_profile_is_reproducible_across_processes(small, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(small, other, symlinks=True)
    assert cli("run", "--until", "train", *TINY).exit_code == 0
    # In a log, progress lines come from the search process through the parent, as it works.
    proc = run_mlci("run", "--until", "train", *TINY, cwd=other, env={"MLCI_PROGRESS_INTERVAL": "0.1"})
    assert proc.returncode == 0, proc.stderr
    fits = [line for line in proc.stderr.splitlines() if line.startswith("train: best profile fits ")]
    # 3 folds x (3 families + 2 trials) + 3 members on train + 3 on train and validation
    assert fits and all("/21" in line for line in fits), proc.stderr
    assert not any(n in proc.stdout + proc.stderr for n in ("[LightGBM]", "Warning", "%|", "Traceback"))
    a, b = load(small, "train_metadata.json"), load(other, "train_metadata.json")
    assert a["model_sha256"] == b["model_sha256"]
    assert {k: v for k, v in a.items() if k.startswith("validation_")} == {
        k: v for k, v in b.items() if k.startswith("validation_")}


@pytest.mark.parametrize("override, message", [
    ("best.candidates=[lightgbm, svm]", "best.candidates.1"),
    ("best.candidates=[xgboost, xgboost]", "candidates must not repeat"),
    ("best.folds=1", "best.folds"),
    ("best.time_budget=0", "best.time_budget"),
])
def test_bad_best_settings_are_usage_errors(workspace, override, message):
    proc = run_mlci("train", "--profile", "best", "-S", override, cwd=workspace)
    assert proc.returncode == errors.USAGE
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (workspace / "models" / "model.pkl").exists()


def test_unknown_profile_is_a_usage_error(workspace):
    proc = run_mlci("run", "-S", "train.profile=fastest", cwd=workspace)
    assert proc.returncode == errors.USAGE and "train.profile" in proc.stderr and "Traceback" not in proc.stderr


def test_members_small_batch_paths_give_the_same_probabilities():
    """Few rows take shortcuts (CatBoost from plain lists, LightGBM's booster without its wrapper):
    the same numbers as the general path, missing categories included."""
    from lightgbm import LGBMClassifier

    from mlci.ensemble import SMALL, CatBoostCodes, Ensemble

    rng = np.random.default_rng(1)
    n = 2000
    X = np.column_stack([rng.integers(0, 5, (n, 3)).astype(float), rng.normal(size=(n, 2))])
    X[::7, 1] = np.nan
    y = np.where(X[:, 3] + (X[:, 0] == 2) + 0.3 * rng.normal(size=n) > 0.5, "yes", "no")
    ens = Ensemble(members=[("catboost", CatBoostCodes(n_categorical=3, iterations=30, thread_count=1)),
                            ("lightgbm", LGBMClassifier(n_estimators=30, verbose=-1))],
                   weights=[0.5, 0.5], n_categorical=3, positive_label="yes").fit(X, y)
    big = ens.predict_proba(X[: SMALL + 100])  # the general path
    small = np.vstack([ens.predict_proba(X[i: i + 1]) for i in range(SMALL + 100)])
    np.testing.assert_allclose(small, big, rtol=0, atol=1e-12)
    cb = ens.members_[0][1]
    np.testing.assert_allclose(cb.predict_proba(X[:SMALL])[:, 1], cb.model_.predict_proba(cb._frame(X[:SMALL]))[:, 1],
                               rtol=0, atol=1e-12)
    assert list(ens.predict(X[:50])) == ["yes" if v >= 0.5 else "no" for v in big[:50, 1]]


def test_an_overrun_time_budget_stops_the_search_instead_of_changing_the_model(small):
    """The search is counted: with a budget too small for it, the train stage stops (exit 14, one line,
    nothing written) rather than fit fewer trials; every trial runs otherwise."""
    assert cli("run", "--until", "train", *TINY).exit_code == 0
    tuning = load(small, "train_metadata.json")["best"]["tuning"]
    assert tuning["trials"] == 2
    before = {p: p.read_bytes() for p in (small / "models").iterdir()}
    before_meta = (small / "results" / "train_metadata.json").read_bytes()
    proc = run_mlci("train", *TINY, "-S", "best.time_budget=0.5", "-S", "best.seed=7", cwd=small)
    assert proc.returncode == errors.TIME_BUDGET, proc.stderr
    assert "best.time_budget" in proc.stderr and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
    assert {p: p.read_bytes() for p in (small / "models").iterdir()} == before
    assert (small / "results" / "train_metadata.json").read_bytes() == before_meta
