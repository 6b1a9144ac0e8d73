"""Scoring a split on the workers: each part file's task predicts its rows, writes their scores and
returns counts; the client adds the counts up (a tree of additions on the workers) and computes
the metrics from them.

Exact from the counts: accuracy, balanced accuracy, precision, recall, F1 (confusion counts at
the model's threshold and at 0.5), log-loss and Brier score (sums). ROC-AUC and average precision
from a histogram of the scores in :data:`BINS` bins of width 1/1024 on the logit scale: scores in
one bin count as tied, which moves either by far less than 1e-4 on the bundled data (a test
compares with scikit-learn's on every row).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from mlci.stages.cluster.client import gather

LOGIT_MAX = 18.0
#: Mixed into the seed of the row hash that picks a sample: the split chose its rows by the same
#: hash under the split's seed, so a sample under that seed would take none of a split's rows.
SAMPLE_SEED = 0x5A3B1E
BINS = int(2 * LOGIT_MAX * 1024)


def part_files(split_dir: Path) -> list[str]:
    # Absolute: a worker runs in its own directory.
    return [str(p.resolve()) for p in sorted(Path(split_dir).glob("part-*.parquet"))]


def _bin(proba: np.ndarray) -> np.ndarray:
    p = np.clip(proba, 1e-300, 1 - 1e-16)
    z = np.clip(np.log(p) - np.log1p(-p), -LOGIT_MAX, LOGIT_MAX - 1e-9)
    return ((z + LOGIT_MAX) * 1024).astype(np.int64)


def counts(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict:
    """The sums every metric here is made of, for rows ``y`` (1 = positive) scored ``proba``."""
    y = np.asarray(y, dtype=bool)
    hist = np.zeros((2, BINS), dtype=np.int64)
    b = _bin(proba)
    np.add.at(hist[1], b[y], 1)
    np.add.at(hist[0], b[~y], 1)
    clipped = np.clip(proba, 1e-15, 1 - 1e-15)
    out = {"n": len(y), "hist": hist,
           "log_loss": float(-(np.log(clipped[y]).sum() + np.log1p(-clipped[~y]).sum())),
           "brier": float(((proba - y) ** 2).sum())}
    for name, t in (("at_threshold", threshold), ("at_half", 0.5)):
        pred = proba >= t
        out[name] = np.array([np.sum(pred & y), np.sum(pred & ~y), np.sum(~pred & y), np.sum(~pred & ~y)],
                             dtype=np.int64)  # tp, fp, fn, tn
    return out


def add(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in a}


def metrics(c: dict, threshold: float) -> dict[str, float]:
    """``mlci.evaluation.metrics.binary_metrics``' figures from :func:`counts`."""
    tp, fp, fn, tn = (int(x) for x in c["at_threshold"])
    n = c["n"]
    pos, neg = tp + fn, fp + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    out = {
        "acc": (tp + tn) / n,
        "balanced_acc": 0.5 * ((tp / pos if pos else 0.0) + (tn / neg if neg else 0.0)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "log_loss": c["log_loss"] / n,
        "brier": c["brier"] / n,
    }
    if threshold != 0.5:
        h = c["at_half"]
        out["acc_at_0.5"] = (int(h[0]) + int(h[3])) / n
    if pos and neg:
        p_hist, n_hist = c["hist"][1].astype(np.float64), c["hist"][0].astype(np.float64)
        below = np.cumsum(n_hist) - n_hist  # negatives scored in lower bins
        out["roc_auc"] = float(np.sum(p_hist * (below + 0.5 * n_hist)) / (pos * neg))
        # average precision: over thresholds from the top bin down, precision at each weighted by recall gained
        tp_at = np.cumsum(p_hist[::-1])
        fp_at = np.cumsum(n_hist[::-1])
        gained = p_hist[::-1] / pos
        seen = (tp_at + fp_at) > 0
        out["pr_auc"] = float(np.sum(gained[seen] * tp_at[seen] / (tp_at[seen] + fp_at[seen])))
    return {k: round(float(v), 6) for k, v in out.items()}


def _sampled(frame: pd.DataFrame, seed: int, share: float) -> np.ndarray:
    """Which rows of ``frame`` a seeded sample of ``share`` of them keeps (a row's fate depends on
    its values only, so the same rows whatever the partitions)."""
    from mlci.data.split import row_positions

    return row_positions(frame, seed ^ SAMPLE_SEED) < share if share < 1 else np.ones(len(frame), dtype=bool)


def score_part(path: str, model, features: list[str], target: str, positive: str, threshold: float,
               scores_dir: str, sample: float, seed: int, sha: str) -> dict:
    """One part file's task: its rows' probabilities (written beside the others in ``scores_dir``),
    their :func:`counts`, and a seeded sample of its rows (``sample``: the share kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlci.modeling.estimator import predict_proba

    frame = pd.read_parquet(path)
    proba = predict_proba(model, frame[features], positive)
    y = np.asarray(frame[target] == positive)
    table = pa.table({"label": y.astype(np.int8), "probability": proba.astype(np.float64)})
    out = Path(scores_dir) / Path(path).name  # the client made the directory (see files.remove_dir)
    pq.write_table(table.replace_schema_metadata({"model_sha256": sha}), out)
    keep = _sampled(frame, seed, sample)
    picked = frame.loc[keep].assign(__probability=proba[keep]).reset_index(drop=True)
    return {"counts": counts(y, proba, threshold), "sample": picked}


def sample_part(path: str, seed: int, sample: float) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return frame.loc[_sampled(frame, seed, sample)].reset_index(drop=True)


def score_split(c, split_dir: Path, model, ds, threshold: float, scores_path: Path, sample_rows: int,
                total_rows: int, seed: int, sha: str, timeout: float) -> tuple[dict, pd.DataFrame]:
    """The split's summed counts and a seeded sample of about ``sample_rows`` of its rows (with
    their probability in ``__probability``); its scores written to ``scores_path`` (a directory
    of part files)."""
    from mlci.fileio import TMP_PREFIX
    from mlci.stages.cluster.files import remove_dir, replace_dir

    files = part_files(split_dir)
    share = min(1.0, sample_rows / max(total_rows, 1))
    model_future = c.scatter(model, broadcast=True, hash=False)
    tmp = scores_path.parent / f"{TMP_PREFIX}dask-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    features = [col.name for col in ds.features]
    try:
        futures = [c.submit(score_part, f, model_future, features, ds.target, ds.positive_label, threshold,
                            str(tmp.resolve()), share, seed, sha, pure=False)
                   for f in files]
        results = gather(c, futures, timeout, f"scoring {split_dir}")
        replace_dir(tmp, scores_path)
    finally:
        remove_dir(tmp)
    total = results[0]["counts"]
    for r in results[1:]:
        total = add(total, r["counts"])
    sample = pd.concat([r["sample"] for r in results], ignore_index=True)
    return total, sample


def sample_split(c, split_dir: Path, sample_rows: int, total_rows: int, seed: int, timeout: float) -> pd.DataFrame:
    share = min(1.0, sample_rows / max(total_rows, 1))
    futures = [c.submit(sample_part, f, seed, share, pure=False) for f in part_files(split_dir)]
    return pd.concat(gather(c, futures, timeout, f"sampling {split_dir}"), ignore_index=True)
