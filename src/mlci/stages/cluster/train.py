"""train and test on a Dask cluster.

train fits LightGBM's own Dask estimator (``lightgbm.dask.DaskLGBMClassifier``) on the train
split's part files, encoded on the workers by the model's own encoder, with the parameters of the
``train`` section; the booster it returns (``to_local``) goes into the same Pipeline the local
engine saves (encoder + ``LGBMClassifier``), so ``predict``, the registry, MLflow's clients and
``mlci serve`` take it as they take any model. Validation and test rows are scored on the workers
(:mod:`mlci.stages.cluster.evaluate`); the per-group gaps, the reference profile and the input example
come from a seeded sample of bounded size.

LightGBM's known Dask pitfalls, handled here: two fits sharing a cluster wait on each other's
sockets (one fit at a time: a cluster-wide ``distributed.Lock``); a port taken between LightGBM's
choice and its bind (one retry with fresh ports); a worker lost mid-fit (the watch in
:func:`mlci.stages.cluster.client.watch` fails the step; LightGBM's own socket timeout, ``time_out``,
ends the survivors' tasks).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pandas as pd

from mlci.stages.cluster.client import client, translated, watch
from mlci.stages.cluster.evaluate import metrics, part_files, sample_split, score_split
from mlci.config import settings as S
from mlci.errors import ClusterError, PrerequisiteError
from mlci.stages.context import StageContext

FIT_LOCK = "mlci-lightgbm-fit"
SAMPLE_ROWS = 100_000  # rows of train and validation behind the profile, the gaps and the example


#: Mixed into the row hash that deals the train rows out to the workers (the split's own hash decided
#: which rows are train rows; this one must not be correlated with it).
DEAL_SEED = 0x5EED


def _encoded_part(path: str, enc, features: list[str], target: str, labels: tuple[str, str], worker: int,
                  workers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of one part file that go to worker ``worker`` of ``workers``, as the booster sees
    them: the encoded features and the labels."""
    from mlci.data.split import row_positions
    from mlci.modeling.estimator import encode

    frame = pd.read_parquet(path)
    if workers > 1:
        frame = frame.loc[np.floor(row_positions(frame, seed ^ DEAL_SEED) * workers) == worker]
    x = frame[features]
    z = encode(enc, x)
    # The labels as references to two strings (8 bytes a row), not a string object per row.
    y = np.asarray(labels, dtype=object)[(frame[target] == labels[1]).to_numpy(dtype=np.int8)]
    return (enc.transform(x) if z is None else z), y


def _arrays(c, files: list[str], enc, features: list[str], target: str, labels: tuple[str, str], seed: int):
    """Dask arrays of the encoded train split, computed on the workers, each holding a share of the
    rows dealt by their hash: an unbiased sample of the whole split, whatever the order of the file.

    The deal matters: LightGBM's workers each choose the histogram bins of some features from the
    rows they hold, and every worker uses those bins. Holding whole part files instead (a file's
    consecutive rows, and the bundled adult.csv is ordered) cost 0.035 of validation ROC-AUC on
    two workers, depending on which worker got which features (0.894 or 0.928; local 0.929)."""
    import dask
    import dask.array as da

    workers = sorted(c.scheduler_info()["workers"])
    parts = [c.submit(_encoded_part, f, enc, features, target, labels, w, len(workers), seed, pure=False,
                      workers=[address], allow_other_workers=False)
             for w, address in enumerate(workers) for f in files]
    rows = c.gather([c.submit(lambda p: len(p[1]), p, pure=False) for p in parts])
    xs, ys = [], []
    for part, n in zip(parts, rows):
        if n:
            xs.append(da.from_delayed(dask.delayed(lambda p: p[0])(part), shape=(n, len(features)), dtype=np.float64))
            ys.append(da.from_delayed(dask.delayed(lambda p: p[1])(part), shape=(n,), dtype=object))
    return da.concatenate(xs), da.concatenate(ys), parts


def fit(c, train_dir, ds, tp, categories: dict, timeout: float):
    """The fitted Pipeline: the encoder, then the booster LightGBM's Dask estimator grew."""
    from distributed import Lock
    from lightgbm.basic import LightGBMError
    from lightgbm.dask import DaskLGBMClassifier

    from mlci.modeling.estimator import build, encoder, lightgbm_params, n_categorical, threads

    files = part_files(train_dir)
    if not files:
        raise PrerequisiteError(f"{train_dir}: no part files; rerun `mlci preprocess`")
    features = [col.name for col in ds.features]
    enc = encoder(ds, categories).fit(pd.read_parquet(files[0]).head(100)[features])
    # One chunk per part file, read and encoded on the workers: nothing comes to this process.
    x, y, _parts = _arrays(c, files, enc, features, ds.target, (ds.negative_label, ds.positive_label), tp.seed)
    params = lightgbm_params(tp, 1, tp.seed)
    params.pop("n_jobs")  # LightGBM's Dask module gives each worker its own thread count
    params["time_out"] = max(1, min(120, math.ceil(timeout / 60)))  # minutes, LightGBM's socket timeout
    params["pre_partition"] = True  # each worker holds its own rows (LightGBM's Parallel Learning Guide)
    lock = Lock(FIT_LOCK)  # on the default client's scheduler: every mlci process using this cluster
    if not lock.acquire(timeout=timeout):
        raise ClusterError(f"another LightGBM fit held the cluster for dask.step_timeout {timeout:g} s")
    try:
        # The workers holding the rows: losing any of them loses rows no other worker can recompute
        # (they are placed), so the watch fails the step instead of letting the fit wait.
        holders = set(c.scheduler_info()["workers"])

        def grow(clf):
            return clf.fit(x, y, categorical_feature=list(range(n_categorical(ds))))

        _quiet_lightgbm()
        for attempt in (1, 2):
            clf = DaskLGBMClassifier(client=c, **params)
            try:
                watch(c, lambda: grow(clf), timeout, "train on the Dask cluster", holders)
                break
            except LightGBMError as e:
                # A port LightGBM chose was taken before it bound it: once more, with fresh ports.
                # Anything else (a peer gone: "socket", "recv") is not retried.
                if attempt == 2 or "bind" not in str(e).lower():
                    _say_who_left(c, holders)
                    raise ClusterError(f"train on the Dask cluster: LightGBM failed: {str(e)[:200]}") from None
    finally:
        lock.release()
    local = _without_network(clf.to_local())
    local._other_params.pop("num_threads", None)  # each worker's: predicting here uses this machine's cores
    local.__dict__.pop("num_threads", None)
    local.set_params(n_jobs=threads(tp.n_jobs))
    expected = sorted([ds.positive_label, ds.negative_label])
    if [str(k) for k in local.classes_] != expected:
        raise ClusterError(f"train on the Dask cluster: the booster's classes {list(local.classes_)} are not "
                           f"{expected} (a worker held rows of one class only: a smaller dask.blocksize helps)")
    model = build(ds, tp, categories)
    model.steps[0] = ("encode", enc)
    model.steps[-1] = ("classify", local)
    return model


class _NotNews(logging.Filter):
    #: n_jobs is a scikit-learn parameter of every LightGBM estimator; the Dask one says it ignores
    #: it (it sets each worker's threads), which is what we want.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Parameter n_jobs will be ignored" not in record.getMessage()


def _quiet_lightgbm() -> None:
    """LightGBM's Dask module prints its progress ("Finding random open ports for workers") on
    stdout, where ``--json`` puts its document: its messages go to a logger instead, warnings only."""
    import lightgbm

    log = logging.getLogger("mlci.lightgbm")
    log.setLevel(logging.WARNING)
    if not log.filters:
        log.addFilter(_NotNews())
    lightgbm.register_logger(log)


def _say_who_left(c, holders: set[str], wait: float = 5.0) -> None:
    """A fit that failed because a worker went away says so (the scheduler may take a moment to see it)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        lost = holders - set(c.scheduler_info()["workers"])
        if lost:
            raise ClusterError(f"train on the Dask cluster: worker {sorted(lost)[0]} left the cluster mid-step "
                               f"({len(holders) - len(lost)} of {len(holders)} remain); rerun when the cluster is whole")
        time.sleep(0.5)


#: What LightGBM writes into the model about the cluster it was grown on: ports change every fit.
NETWORK_PARAMS = ("machines", "local_listen_port", "num_machines", "time_out", "pre_partition", "tree_learner")


def _without_network(local):
    """The local model with no trace of the cluster's addresses and ports (the same fit, the same bytes)."""
    import lightgbm as lgb

    text = local.booster_.model_to_string()
    kept = [line for line in text.split("\n")
            if not any(line.startswith(f"[{p}:") for p in NETWORK_PARAMS)]
    local._Booster = lgb.Booster(model_str="\n".join(kept))
    for p in NETWORK_PARAMS:
        local._other_params.pop(p, None)
        local.__dict__.pop(p, None)  # the Dask estimator's extra parameters, copied on as attributes
    return local


@translated("train on the Dask cluster")
def train(ctx: StageContext) -> dict:
    from mlci.fileio import atomic_path, file_hash, read_json, write_json
    from mlci.modeling.artifact import to_bytes
    from mlci.modeling.estimator import decision_threshold
    from mlci.stages.card import input_example, model_card

    s, params = ctx.settings, ctx.params
    if params.train.profile != "default":
        raise PrerequisiteError("engine dask trains the default profile (LightGBM); the best profile runs locally")
    ds = params.dataset_def(s.params_file.parent)
    pre = read_json(s.result(S.PREPROCESS_METADATA))
    if pre.get("engine") != "dask":
        raise PrerequisiteError(f"{s.split_path('train')}: written by the local engine; rerun `mlci preprocess`")
    categories = {col.name: list(col.categories) if col.categories is not None else pre["categories"][col.name]
                  for col in ds.features if col.type == "categorical"}
    dp = params.dask
    c = client(dp)
    started = time.perf_counter()
    model = fit(c, s.split_path("train"), ds, params.train, categories, dp.step_timeout)
    fit_seconds = time.perf_counter() - started
    with atomic_path(s.model_path) as tmp:
        tmp.write_bytes(to_bytes(model))
    sha = file_hash(s.model_path)
    threshold = decision_threshold(model)
    total, va = score_split(c, s.split_path("validation"), model, ds, threshold, s.scores_path("validation"),
                            SAMPLE_ROWS, pre["rows"]["validation"], params.train.seed, sha, dp.step_timeout)
    found = metrics(total, threshold)
    card = model_card(ctx, ds, sha, threshold, input_example(va, ds))
    write_json(s.model_card_path, card)
    y_va = np.asarray(va[ds.target] == ds.positive_label)
    proba = va.pop("__probability").to_numpy()
    gaps, groups = {}, params.groups(ds)
    if groups:
        from mlci.evaluation.groups import validation_gaps

        gaps = validation_gaps(va, y_va, proba >= threshold, groups, params.fairness.min_group_size)
    from mlci.monitoring.profile import build as reference_profile

    tr = sample_split(c, s.split_path("train"), SAMPLE_ROWS, pre["rows"]["train"], params.train.seed, dp.step_timeout)
    for col in ds.features:  # the parts hold categoricals as text
        if col.type == "categorical":
            tr[col.name] = pd.Categorical(tr[col.name], categories=categories[col.name])
    reference = reference_profile(tr, ds, y_va, proba, threshold, found, sha, seed=params.train.seed)
    write_json(s.reference_path, reference)
    meta = {f"validation_{k}": v for k, v in found.items()}
    meta.update(gaps)
    meta.update({
        "rows": {"train": pre["rows"]["train"], "validation": pre["rows"]["validation"],
                 "fitted": pre["rows"]["train"]},
        # At the Dask engine's sizes a refit on train + validation costs a whole fit more for a gain
        # that has faded (train.refit_max_rows); the measured model is the deployed one.
        "fitted_on": "train", "validation_figures": "the saved model",
        "model": "lightgbm", "profile": "default", "threshold": threshold, "model_sha256": sha,
        "model_bytes": s.model_path.stat().st_size, "data_sha256": card["data_sha256"],
        "fit_seconds": round(fit_seconds, 3), "engine": "dask",
        # What came from a sample rather than every row: the group gaps and the reference profile.
        "sample_rows": {"train": len(tr), "validation": len(va)},
    })
    write_json(s.result(S.TRAIN_METADATA), meta)
    return meta


@translated("test on the Dask cluster")
def test(ctx: StageContext, model, card, ds) -> dict:
    from mlci.fileio import read_json, write_json
    from mlci.modeling.estimator import decision_threshold

    s, dp = ctx.settings, ctx.params.dask
    pre = read_json(s.result(S.PREPROCESS_METADATA))
    c = client(dp)
    threshold = decision_threshold(model)
    total, _ = score_split(c, s.split_path("test"), model, ds, threshold, s.scores_path("test"), 0,
                           pre["rows"]["test"], 0, card["sha256"], dp.step_timeout)
    meta = {f"test_{k}": v for k, v in metrics(total, threshold).items()}
    meta.update({"rows": {"test": int(total["n"])}, "model_sha256": card["sha256"], "engine": "dask"})
    write_json(s.result(S.TEST_METADATA), meta)
    return meta
