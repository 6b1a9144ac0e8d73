"""The ``best`` profile: choose, tune and combine models by cross-validation on the train split.

Only the train split is used for choices. Its k folds give every candidate family out-of-fold
(OOF) probabilities for every training row; the tuning, the ensemble weights and the decision
threshold are all chosen on those, so the validation split (the gate's) and the test split take no
part in any choice. The chosen ensemble is fitted on the train split and measured on validation
(the gate's figures); then, unless ``train.refit_max_rows`` says otherwise, the same ensemble (same
members, parameters, weights and threshold) is fitted again on train + validation: the deployed
model, which ``mlci test`` scores on the untouched test split. The result is the default profile's
Pipeline with an ``Ensemble`` as its last step: one artifact that takes raw records.

The search is counted, never timed: folds, trials and rounds are parameters, so the model is the
same on a fast machine and a loaded one. ``best.time_budget`` is only a guard: a search that
overruns it stops with exit 14 (nothing written) instead of changing what it fits.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from mlci.config.params import BestParams, TrainParams
from mlci.progress import NONE, Progress, Task

Echo = Callable[[str], None]


#: The import name of what each part needs, and the PyPI distribution that provides it.
PACKAGES = {"catboost": ("catboost", "catboost"), "xgboost": ("xgboost", "xgboost-cpu"), "tuning": ("optuna", "optuna")}


def check_installed(bp: BestParams) -> None:
    """Fail before any work when a candidate's library is missing (they are the ``best`` extra:
    CatBoost alone is 270 MB, so the default install and image leave them out)."""
    from importlib.util import find_spec

    from mlci.errors import UsageError

    needed = [c for c in bp.candidates if c in PACKAGES]
    if "lightgbm" in bp.candidates and bp.tuning_trials:
        needed.append("tuning")
    missing = [PACKAGES[n][1] for n in needed if find_spec(PACKAGES[n][0]) is None]
    if missing:
        raise UsageError(
            f"the best profile needs {', '.join(missing)}, not installed here: pip install 'mlci[best]' (a "
            "checkout: python3 tasks.py run --profile best; the image: docker build --build-arg MLCI_EXTRAS=best), "
            "or leave them out with best.candidates / best.tuning_trials=0")


def candidate(name: str, bp: BestParams, tp: TrainParams, n_categorical: int, n_features: int,
              tuned: dict | None = None):
    """An unfitted member of family ``name`` for the encoded matrix."""
    from mlci.modeling.estimator import threads as _threads

    threads = _threads(bp.n_jobs)
    if name == "lightgbm":
        from lightgbm import LGBMClassifier

        from mlci.modeling.estimator import lightgbm_params

        return LGBMClassifier(**lightgbm_params(tp, threads, bp.seed, **(tuned or {})))
    if name == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=bp.xgboost_rounds, learning_rate=0.03, max_depth=5, min_child_weight=2, subsample=0.8,
            colsample_bytree=0.6, tree_method="hist", max_cat_to_onehot=1, enable_categorical=True,
            feature_types=["c"] * n_categorical + ["q"] * (n_features - n_categorical),
            random_state=bp.seed, n_jobs=threads,
        )
    if name == "catboost":
        from mlci.ensemble import CatBoostCodes

        return CatBoostCodes(n_categorical=n_categorical, iterations=bp.catboost_iterations, random_seed=bp.seed,
                             thread_count=threads)
    raise ValueError(f"unknown candidate {name!r}")


def oof(est, X: np.ndarray, y: np.ndarray, folds, n_categorical: int, fits: Task | None = None) -> np.ndarray:
    """Out-of-fold positive-class probabilities of ``est`` for every row (each fold's fit advances ``fits``)."""
    from sklearn.base import clone

    from mlci.ensemble import fit_member

    out = np.empty(len(y))
    for fit_rows, held_rows in folds:
        m = fit_member(clone(est), X[fit_rows], y[fit_rows], n_categorical)
        out[held_rows] = m.predict_proba(X[held_rows])[:, 1]
        if fits is not None:
            fits.advance()
    return out


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ensemble_weights(y: np.ndarray, probas: np.ndarray, how: str) -> np.ndarray:
    """Non-negative weights summing to one over the columns of ``probas`` (OOF, one column a family)."""
    k = probas.shape[1]
    if how == "equal" or k == 1:
        return np.full(k, 1 / k)
    if how == "select":
        return np.eye(k)[int(np.argmin([log_loss(y, probas[:, j]) for j in range(k)]))]
    from scipy.optimize import minimize

    res = minimize(lambda w: log_loss(y, probas @ w), np.full(k, 1 / k), method="SLSQP",
                   bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
    w = np.clip(res.x, 0, None)
    w[w < 1e-3] = 0  # a member with no weight is not worth its prediction time
    return w / w.sum()


def accuracy_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold that maximises accuracy on (OOF) probabilities ``p``.

    Candidates are midpoints between consecutive distinct probabilities; ties go to the one
    nearest 0.5 (the least surprising choice when several are equally good).
    """
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order].astype(np.int64)
    # Predicting positive from index i on: correct = negatives before i + positives from i on.
    neg_before = np.concatenate([[0], np.cumsum(1 - ys)])
    pos_from = np.concatenate([np.cumsum(ys[::-1])[::-1], [0]])
    correct = neg_before + pos_from
    # Only cut between distinct values.
    cuts = np.concatenate([[True], ps[1:] != ps[:-1], [True]])
    idx = np.flatnonzero(cuts)
    edges = np.concatenate([[0.0], (ps[:-1] + ps[1:]) / 2, [1.0]])
    best = correct[idx].max()
    ties = idx[correct[idx] == best]
    return float(edges[ties[np.argmin(np.abs(edges[ties] - 0.5))]])


# Optuna's search space for LightGBM (the default profile's values lie inside it).
def _suggest(trial) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 200, 600, step=50),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.1, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 32, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 50.0, log=True),
        "min_data_per_group": trial.suggest_int("min_data_per_group", 10, 200, log=True),
    }


def search(X: np.ndarray, labels: np.ndarray, positive_label: str, n_categorical: int, tp: TrainParams,
           bp: BestParams, X_final: np.ndarray | None = None, labels_final: np.ndarray | None = None,
           echo: Echo = lambda _: None, progress: Progress = NONE):
    """Cross-validate the candidates, tune LightGBM, fit the ensemble on ``X`` and, when given, again on
    ``X_final`` (the deployed model's rows).

    ``X`` is the encoded train split (categorical codes first), ``labels`` its target values; every
    choice is made on them alone. Returns the ensemble fitted on ``X``, the one fitted on ``X_final``
    (None without it) and a summary for train_metadata.json. The caller has checked that the
    candidates' libraries are installed (``check_installed``). Every model fitted (a fold, a trial's
    fold, a member's fit) advances one ``progress`` task.
    """
    from sklearn.model_selection import StratifiedKFold

    started = time.perf_counter()
    y = (labels == positive_label).astype(np.int64)
    folds = list(StratifiedKFold(bp.folds, shuffle=True, random_state=bp.seed).split(X, y))
    trials = bp.tuning_trials if "lightgbm" in bp.candidates else 0
    total = bp.folds * (len(bp.candidates) + trials) + len(bp.candidates) * (1 if X_final is None else 2)
    with progress.task("train: best profile fits", total=total) as task:
        fits = Budget(task, bp.time_budget, started)
        ensemble, summary = _search(X, labels, y, folds, positive_label, n_categorical, tp, bp, echo, fits)
        final = None
        if X_final is not None:
            from sklearn.base import clone

            t = time.perf_counter()
            final = clone(ensemble).fit(X_final, labels_final)
            fits.advance(len(ensemble.members_))
            summary["final_fit_seconds"] = round(time.perf_counter() - t, 2)
            echo(f"best: the same ensemble fitted again on {len(X_final):,} rows (train + validation) in "
                 f"{summary['final_fit_seconds']:.0f} s")
        summary["seconds"] = round(time.perf_counter() - started, 2)
        return ensemble, final, summary


class Budget:
    """A progress task that also guards ``best.time_budget``: the search is counted, so the clock may
    stop it (exit 14, nothing written) but never change what it fits."""

    def __init__(self, task: Task, seconds: float | None, started: float):
        self.task, self.seconds, self.started = task, seconds, started

    def advance(self, n: int = 1) -> None:
        self.task.advance(n)
        spent = time.perf_counter() - self.started
        if self.seconds is not None and spent > self.seconds:
            from mlci.errors import BudgetError

            raise BudgetError(
                f"the best profile's search overran best.time_budget ({self.seconds:g} s) after "
                f"{int(self.task.completed)} of {int(self.task.total)} fits ({spent:.0f} s); the search is counted, so "
                "it stops rather than fit less: raise best.time_budget (null: no limit) or lower "
                "best.tuning_trials, best.folds or the candidates' rounds")


def _search(X, labels, y, folds, positive_label, n_categorical, tp, bp, echo, fits: Budget):
    from mlci.ensemble import Ensemble

    n_features = X.shape[1]
    families: dict[str, dict] = {}

    def cross_validate(name: str, est) -> dict:
        t = time.perf_counter()
        p = oof(est, X, y, folds, n_categorical, fits)
        seconds = time.perf_counter() - t
        out = {"estimator": est, "oof": p, "cv_seconds": seconds, "oof_log_loss": log_loss(y, p),
               "oof_roc_auc": _auc(y, p)}
        echo(f"best: {name}: {bp.folds}-fold OOF log-loss {out['oof_log_loss']:.4f}, "
             f"ROC-AUC {out['oof_roc_auc']:.4f} ({seconds:.1f} s)")
        return out

    for name in [c for c in bp.candidates if c != "lightgbm"]:
        families[name] = cross_validate(name, candidate(name, bp, tp, n_categorical, n_features))

    tuning = None
    if "lightgbm" in bp.candidates:
        base = candidate("lightgbm", bp, tp, n_categorical, n_features)
        families["lightgbm"] = cross_validate("lightgbm", base)
        if bp.tuning_trials:
            tuning = _tune(X, y, folds, n_categorical, tp, bp, families["lightgbm"], echo, fits)
            tuned = tuning.pop("best_family")
            if tuned is not None:  # a trial beat the train section's parameters
                families["lightgbm"] = tuned

    names = list(families)
    probas = np.column_stack([families[n]["oof"] for n in names])
    weights = ensemble_weights(y, probas, bp.ensemble)
    p = probas @ weights
    threshold = accuracy_threshold(y, p)
    members = [(n, families[n]["estimator"]) for n, w in zip(names, weights) if w > 0]
    kept = [w for w in weights if w > 0]
    t = time.perf_counter()
    ensemble = Ensemble(members=members, weights=kept, threshold=threshold, n_categorical=n_categorical,
                        positive_label=positive_label).fit(X, labels)
    fits.advance(len(members))
    refit_seconds = time.perf_counter() - t
    summary = _summary(bp, y, families, weights, p, threshold, tuning, refit_seconds)
    echo(f"best: ensemble of {', '.join(f'{n} {w:.2f}' for (n, _), w in zip(members, kept))}; "
         f"OOF ROC-AUC {summary['oof_roc_auc']:.4f}, accuracy {summary['oof_acc']:.4f} at threshold "
         f"{threshold:.3f} ({summary['oof_acc_at_0.5']:.4f} at 0.5)")
    return ensemble, summary


def _summary(bp: BestParams, y, families: dict, weights, p, threshold: float, tuning, refit_seconds: float) -> dict:
    """What the search did, for train_metadata.json."""
    return {
        "folds": bp.folds,
        "candidates": {n: {"oof_log_loss": round(f["oof_log_loss"], 6), "oof_roc_auc": round(f["oof_roc_auc"], 6),
                           "oof_acc": round(float(np.mean((f["oof"] >= 0.5) == y)), 6),
                           "cv_seconds": round(f["cv_seconds"], 2), "weight": round(float(w), 6)}
                       for (n, f), w in zip(families.items(), weights)},
        "ensemble": bp.ensemble,
        "oof_log_loss": round(log_loss(y, p), 6),
        "oof_roc_auc": round(_auc(y, p), 6),
        "oof_acc_at_0.5": round(float(np.mean((p >= 0.5) == y)), 6),
        "threshold": round(threshold, 6),
        "oof_acc": round(float(np.mean((p >= threshold) == y)), 6),
        "tuning": tuning,
        "refit_seconds": round(refit_seconds, 2),
    }


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _tune(X, y, folds, n_categorical, tp, bp, baseline: dict, echo: Echo, fits: Budget | None = None) -> dict:
    """Optuna (seeded TPE) over LightGBM's parameters, on OOF log-loss: ``best.tuning_trials`` trials,
    every one of them whatever the clock says."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    best = {"loss": baseline["oof_log_loss"], "family": None, "params": None}
    t0 = time.perf_counter()

    def objective(trial) -> float:
        params = _suggest(trial)
        est = candidate("lightgbm", bp, tp, n_categorical, X.shape[1], tuned=params)
        t = time.perf_counter()
        p = oof(est, X, y, folds, n_categorical, fits)
        loss = log_loss(y, p)
        if loss < best["loss"]:
            best.update(loss=loss, params=params, family={
                "estimator": est, "oof": p, "cv_seconds": time.perf_counter() - t, "oof_log_loss": loss,
                "oof_roc_auc": _auc(y, p)})
        return loss

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=bp.seed))
    study.optimize(objective, n_trials=bp.tuning_trials)
    seconds = time.perf_counter() - t0
    improved = best["params"] is not None
    echo(f"best: LightGBM tuning: {bp.tuning_trials} trials in {seconds:.0f} s"
         + (f"; OOF log-loss {baseline['oof_log_loss']:.4f} -> {best['loss']:.4f}" if improved
            else "; no trial beat the train section's parameters"))
    return {"trials": bp.tuning_trials, "seconds": round(seconds, 2), "best_params": best["params"],
            "best_oof_log_loss": round(best["loss"], 6), "best_family": best["family"]}


def search_in_child(*args):
    """``search(*args)`` in a fresh process whose OpenMP runtimes spin only briefly when idle; its
    lines come back to ``echo``, its progress to ``progress`` (the last two arguments) as they happen.

    Two copies of libgomp end up loaded (LightGBM links the system's, XGBoost the one scikit-learn
    vendors), and by default each one's idle threads spin for a long while before sleeping: on two
    busy cores the spinning of one can take the CPU from the other's work. Sleeping at once
    (``OMP_WAIT_POLICY=PASSIVE``) made every small LightGBM fit wait on waking threads instead (6x
    slower on a quiet machine); a short spin (``GOMP_SPINCOUNT``) costs neither. Both are read when a
    runtime loads, hence a fresh process (README, "The best profile": the figures).
    """
    import multiprocessing as mp

    *rest, echo, progress = args
    tasks: dict[int, Task] = {}  # the child's tasks, by its id, as this process's ``progress`` shows them
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    # The child sets GOMP_SPINCOUNT itself: changing this process's environment while another
    # thread may start a process (tracking opens the store beside the stages) can hand the new
    # process a torn environment; a spawned child that dies before reading its start-up data leaves
    # multiprocessing's parent blocked on the pipe forever.
    proc = ctx.Process(target=_child, args=(child, rest), daemon=True)
    proc.start()
    child.close()
    try:
        while True:
            try:
                kind, payload = parent.recv()
            except EOFError:
                proc.join()
                raise RuntimeError(f"the best profile's search process died (exit code {proc.exitcode})") from None
            if kind == "echo":
                echo(payload)
            elif kind == "task":
                key, description, total, unit = payload
                tasks[key] = progress.task(description, total, unit)
            elif kind == "advance":
                key, completed = payload
                tasks[key].advance(completed - tasks[key].completed)
            elif kind == "done":
                tasks.pop(payload).close()
            elif kind == "error":
                raise payload
            else:
                return payload
    finally:
        for task in tasks.values():
            task.close()
        parent.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()


class _ToParent(Progress):
    """The search process's progress, sent to the parent (``search_in_child``) as it happens."""

    def __init__(self, conn):
        self.conn = conn

    def _started(self, task: Task) -> None:
        self.conn.send(("task", (id(task), task.description, task.total, task.unit)))

    def _advanced(self, task: Task) -> None:
        self.conn.send(("advance", (id(task), task.completed)))

    def _finished(self, task: Task) -> None:
        self.conn.send(("done", id(task)))


def _child(conn, args) -> None:
    # Before any OpenMP runtime loads: none has yet (unpickling the arguments imports numpy and the
    # parameter classes only); LightGBM, CatBoost and XGBoost are imported by ``search``.
    os.environ["GOMP_SPINCOUNT"] = "10000"
    try:
        result = search(*args, echo=lambda line: conn.send(("echo", line)), progress=_ToParent(conn))
        conn.send(("result", result))
    except BaseException as e:  # noqa: BLE001  (sent to the parent, which raises it)
        try:
            conn.send(("error", e))
        except Exception:  # an exception that cannot be pickled
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        conn.close()


def fit_best(frame, ds, tp: TrainParams, bp: BestParams, categories: dict[str, list[str]], final_frame=None,
             echo=lambda _: None, progress: Progress = NONE):
    """The ``best`` profile: the default profile's encoder, then an ensemble chosen by cross-validation on
    ``frame`` (the train split). Returns the Pipeline fitted on ``frame``, the same Pipeline fitted on
    ``final_frame`` (None without it) and the search's summary."""
    from sklearn.pipeline import Pipeline

    from mlci.modeling.estimator import encoder, n_categorical

    check_installed(bp)
    features = [c.name for c in ds.features]
    enc = encoder(ds, categories)
    X = np.ascontiguousarray(enc.fit_transform(frame[features]), dtype=np.float64)
    labels = np.asarray(frame[ds.target], dtype=object)
    X_final = labels_final = None
    if final_frame is not None:  # the encoder's categories are fixed: the same codes for every row
        X_final = np.ascontiguousarray(enc.transform(final_frame[features]), dtype=np.float64)
        labels_final = np.asarray(final_frame[ds.target], dtype=object)
    ensemble, final, summary = search_in_child(X, labels, ds.positive_label, n_categorical(ds), tp, bp, X_final,
                                               labels_final, echo, progress)
    measured = Pipeline([("encode", enc), ("classify", ensemble)])
    deployed = None if final is None else Pipeline([("encode", enc), ("classify", final)])
    return measured, deployed, summary
