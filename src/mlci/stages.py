"""The pipeline's stages: plain functions with paths in and paths out.

Each stage reads its inputs, computes, and writes its outputs atomically;
none of them knows about caching, locking or the CLI (see ``pipeline.py``
and ``cli.py``). Heavy libraries are imported here, so importing this module
is what makes a run slow: the pipeline imports it only when a stage must run.
"""

from __future__ import annotations

import time
from importlib import metadata as _md
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import settings as S
from .errors import DataError, PrerequisiteError, RejectLimitError
from .gate import gate  # noqa: F401  (a stage like the others)
from .fileio import atomic_path, bytes_hash, file_hash, read_json, write_json
from .gate import now as _now
from .load import describe_rejects, load_table
from .metrics import binary_metrics
from .model import build, categories_of, decision_threshold, fit, fit_best, predict_proba, to_bytes
from .params import DatasetDef, Params

Echo = Callable[[str], None]



def _write_parquet(frame: pd.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")


def _write_csv(frame: pd.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def write_scores(path: Path, y: np.ndarray, proba: np.ndarray, model_sha: str) -> None:
    """Each row's label (1 = positive) and predicted probability, tagged with the model's sha256:
    the report reads the very scores the metrics came from instead of predicting again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"label": np.asarray(y, dtype=np.int8), "probability": np.asarray(proba, dtype=np.float64)})
    table = table.replace_schema_metadata({"model_sha256": model_sha})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# -- preprocess -----------------------------------------------------------------------------


def preprocess(s: S.Settings, params: Params, echo: Echo = lambda _: None) -> dict:
    """Raw CSV -> validated, typed train/validation/test Parquet splits and a rejects file."""
    from sklearn.model_selection import train_test_split

    ds = params.dataset_def(s.params_file.parent)
    loaded = load_table(s.raw_path, ds)
    share = loaded.rows_rejected / loaded.rows_read
    limit = params.preprocess.max_reject_share
    if share > limit:
        raise RejectLimitError(
            f"{s.raw_path}: {loaded.rows_rejected} of {loaded.rows_read} rows rejected "
            f"({share:.1%} > preprocess.max_reject_share {limit:.1%}): {describe_rejects(loaded.rejects)}"
        )
    if loaded.rows_rejected:
        echo(f"{loaded.rows_rejected} rows rejected ({share:.2%}), see {s.rejects_path}")

    frame = loaded.frame
    y = frame[ds.target]
    counts = y.value_counts()
    sp = params.split
    if counts.min() < 5 or len(frame) < 20:
        raise DataError(
            f"{s.raw_path}: too few rows to split: {counts.to_dict()} valid rows per class (need at least 5 of each)"
        )
    try:
        rest, test = train_test_split(frame, test_size=sp.test, stratify=y, random_state=sp.seed)
        train, validation = train_test_split(
            rest, test_size=sp.validation / (1 - sp.test), stratify=rest[ds.target], random_state=sp.seed
        )
    except ValueError as e:
        raise DataError(f"{s.raw_path}: cannot split the data: {e}") from None

    splits = {"train": train, "validation": validation, "test": test}
    for name, part in splits.items():
        _write_parquet(part.reset_index(drop=True), s.split_path(name))
    _write_csv(loaded.rejects, s.rejects_path)
    meta = {
        "source": str(s.raw_path),
        "data_sha256": loaded.sha256,
        "format": "header" if loaded.has_header else "no header (UCI)",
        "rows_read": loaded.rows_read,
        "rows_valid": len(frame),
        "rows_rejected": loaded.rows_rejected,
        "reject_share": round(share, 6),
        "reject_reasons": loaded.reject_reasons,
        "rows": {name: len(part) for name, part in splits.items()},
        "positive_share": {
            name: round(float((part[ds.target] == ds.positive_label).mean()), 6) for name, part in splits.items()
        },
        "missing_values": {k: int(v) for k, v in frame.isna().sum().items() if v},
    }
    write_json(s.result(S.PREPROCESS_METADATA), meta)
    return meta


# -- train ----------------------------------------------------------------------------------


def _read_split(s: S.Settings, name: str) -> pd.DataFrame:
    path = s.split_path(name)
    if not path.exists():
        raise PrerequisiteError(f"{path}: not found; run `mlci preprocess` first")
    return pd.read_parquet(path)


def _versions() -> dict[str, str]:
    return {pkg: _md.version(pkg) for pkg in ("mlci", "scikit-learn", "lightgbm", "pandas", "numpy")}


def train(s: S.Settings, params: Params, echo: Echo = lambda _: None) -> dict:
    """Fit the model on the train split; measure it on the validation split (never on fitted rows)."""
    ds = params.dataset_def(s.params_file.parent)
    tr, va = _read_split(s, "train"), _read_split(s, "validation")
    features = [c.name for c in ds.features]
    missing = [c for c in features + [ds.target] if c not in tr.columns]
    if missing:
        raise PrerequisiteError(
            f"{s.split_path('train')}: lacks {', '.join(missing)}; the dataset changed, rerun `mlci preprocess`"
        )
    profile, search = params.train.profile, None
    started = time.perf_counter()
    if profile == "best":
        model, search = fit_best(tr, ds, params.train, params.best, categories_of(tr, ds), echo)
    else:
        model = fit(build(ds, params.train, categories_of(tr, ds)), tr, ds)
    fit_seconds = time.perf_counter() - started
    threshold = decision_threshold(model)
    proba = predict_proba(model, va[features], ds.positive_label)
    y_va = np.asarray(va[ds.target] == ds.positive_label)
    metrics = binary_metrics(y_va, proba, threshold)
    gaps, groups = {}, params.groups(ds)
    if groups:
        from .groups import validation_gaps

        gaps = validation_gaps(va, y_va, proba >= threshold, groups, params.fairness.min_group_size)

    with atomic_path(s.model_path) as tmp:
        tmp.write_bytes(to_bytes(model))
    model_sha = file_hash(s.model_path)
    data_sha = _data_sha(s)
    card = {
        "format": "sklearn-pipeline/pickle",
        "file": S.MODEL_FILE,
        "sha256": model_sha,
        "positive_label": ds.positive_label,
        "negative_label": ds.negative_label,
        "features": features,
        "dataset": ds.model_dump(mode="json"),
        "profile": profile,
        "threshold": threshold,
        "params": params.section("train") if profile == "default" else {
            "train": params.section("train"), "best": params.section("best")},
        "data_sha256": data_sha,
        "trained_at": _now(),
        "versions": _versions(),
    }
    write_json(s.model_card_path, card)
    write_scores(s.scores_path("validation"), y_va, proba, model_sha)
    meta = {f"validation_{k}": v for k, v in metrics.items()}
    meta.update(gaps)
    meta.update(
        {
            "rows": {"train": len(tr), "validation": len(va)},
            "model": params.train.model if profile == "default" else "ensemble",
            "profile": profile,
            "threshold": threshold,
            "model_sha256": model_sha,
            "model_bytes": s.model_path.stat().st_size,
            "data_sha256": data_sha,
            "fit_seconds": round(fit_seconds, 3),
        }
    )
    if search is not None:
        meta["best"] = search
    write_json(s.result(S.TRAIN_METADATA), meta)
    return meta


def _data_sha(s: S.Settings) -> str | None:
    path = s.result(S.PREPROCESS_METADATA)
    return read_json(path).get("data_sha256") if path.exists() else None


# -- test -----------------------------------------------------------------------------------


def load_model(model_dir: Path):
    """Load the model after checking its sha256 against the card written at training time.

    A pickle is code: the bytes that were hashed are the bytes that get unpickled.
    """
    import pickle

    card_path = model_dir / S.MODEL_CARD
    model_path = model_dir / S.MODEL_FILE
    if not card_path.exists() or not model_path.exists():
        raise PrerequisiteError(f"{model_dir}: no trained model; run `mlci train` first")
    card = read_json(card_path)
    data = model_path.read_bytes()
    actual = bytes_hash(data)
    if actual != card.get("sha256"):
        raise PrerequisiteError(
            f"{model_path}: sha256 {actual} does not match {card_path} ({card.get('sha256')}); "
            "refusing to load a model that was changed after training"
        )
    return pickle.loads(data), card


def test(s: S.Settings, params: Params, echo: Echo = lambda _: None) -> dict:
    """Score the held-out test split once, and only after a passing gate for this very model."""
    gate_path = s.result(S.GATE_FILE)
    train_path = s.result(S.TRAIN_METADATA)
    if not gate_path.exists():
        raise PrerequisiteError(f"{gate_path}: not found; run `mlci gate` first")
    verdict = read_json(gate_path)
    if not verdict.get("passed"):
        raise PrerequisiteError(f"{gate_path}: the gate did not pass; the test split is only scored after it does")
    if not train_path.exists() or verdict.get("train_metadata_sha256") != file_hash(train_path):
        raise PrerequisiteError(f"{gate_path}: is for another model; run `mlci gate` again")
    model, card = load_model(s.model_dir)
    ds = DatasetDef.model_validate(card["dataset"])
    te = _read_split(s, "test")
    proba = predict_proba(model, te[card["features"]], ds.positive_label)
    y_te = np.asarray(te[ds.target] == ds.positive_label)
    metrics = binary_metrics(y_te, proba, decision_threshold(model))
    write_scores(s.scores_path("test"), y_te, proba, card["sha256"])
    meta = {f"test_{k}": v for k, v in metrics.items()}
    meta.update({"rows": {"test": len(te)}, "model_sha256": card["sha256"]})
    write_json(s.result(S.TEST_METADATA), meta)
    return meta


# -- predict --------------------------------------------------------------------------------


def predict(input_path: Path, output_path: Path, model_dir: Path, echo: Echo = print) -> dict:
    """Score raw records (either file shape); keep every input row, in order, plus two columns."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    model, card = load_model(model_dir)
    ds = DatasetDef.model_validate(card["dataset"])
    loaded = load_table(Path(input_path), ds, require_target=False)
    n = loaded.rows_read
    proba = np.full(n, np.nan)
    if len(loaded.frame):
        proba[loaded.valid] = predict_proba(model, loaded.frame[card["features"]], ds.positive_label)
    labels = np.where(proba >= decision_threshold(model), ds.positive_label, ds.negative_label).astype(object)
    labels[~loaded.valid] = None
    out = loaded.raw.append_column("probability", pa.array(proba, pa.float64(), mask=~loaded.valid))
    out = out.append_column("prediction", pa.array(labels, pa.string()))
    with atomic_path(Path(output_path)) as tmp:
        pacsv.write_csv(out, tmp)
    rejects_path = Path(str(output_path) + ".rejects.csv")
    if loaded.rows_rejected:
        _write_csv(loaded.rejects, rejects_path)
        echo(
            f"{loaded.rows_rejected} of {n} rows failed validation and were not scored "
            f"(empty probability/prediction); details in {rejects_path}: {describe_rejects(loaded.rejects)}"
        )
    else:
        rejects_path.unlink(missing_ok=True)  # a stale one from an earlier run would mislead
    return {"rows": n, "scored": int(loaded.valid.sum()), "rejected": loaded.rows_rejected, "output": str(output_path)}


# -- champion comparison --------------------------------------------------------------------


def validation_scores(s: S.Settings, model, positive_label: str, features: list[str], target: str):
    """Labels (1 = positive) and any model's probabilities on this workspace's validation rows."""
    va = _read_split(s, "validation")
    missing = [c for c in features if c not in va.columns]
    if missing:
        raise PrerequisiteError(f"the champion needs columns this data lacks: {', '.join(missing)}")
    return np.asarray(va[target] == positive_label), predict_proba(model, va[features], positive_label)


def validation_metrics(s: S.Settings, model, positive_label: str, features: list[str],
                       target: str) -> tuple[dict, np.ndarray]:
    """Metrics of any model on this workspace's validation rows, at its own decision threshold (to
    compare with the champion), and the probabilities they came from."""
    y, proba = validation_scores(s, model, positive_label, features, target)
    return {f"validation_{k}": v for k, v in binary_metrics(y, proba, decision_threshold(model)).items()}, proba
