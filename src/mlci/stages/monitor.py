"""monitor: a batch of records (prediction logs or a CSV of the data's shape) against a model's
reference profile; writes monitor.json, monitor.md, monitor.html and plots, and fails (exit 12)
when a rule of ``params.yaml``'s ``monitor:`` section does, as the gate does for a new model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mlci.config import settings as S
from mlci.data.dataset import DatasetDef
from mlci.errors import DataError, MonitorFailed, PrerequisiteError
from mlci.fileio import read_json, write_set
from mlci.modeling.artifact import load_model
from mlci.modeling.estimator import predict_proba

#: What a prediction-log file holds beside the features (``mlci serve --log-predictions``).
LOG_COLUMNS = ("probability", "prediction", "served_at", "request_id", "model_sha256")


def monitor(batch: Path, model_dir: Path, out_dir: Path, mp, echo=lambda _: None) -> dict:
    """Compare ``batch`` with the reference of the model in ``model_dir``; write the report to ``out_dir``."""
    from mlci.monitoring.drift import compare
    from mlci.monitoring.render import html, markdown, plots

    model, card = load_model(model_dir)
    ref_path = model_dir / S.REFERENCE_PROFILE
    if not ref_path.is_file():
        raise PrerequisiteError(f"{ref_path}: this model has no reference profile (trained before mlci made "
                                "one); retrain it (mlci run --force)")
    profile = read_json(ref_path)
    if profile.get("model_sha256") != card["sha256"]:
        raise PrerequisiteError(f"{ref_path}: describes another model ({profile.get('model_sha256')}, not "
                                f"{card['sha256']}); retrain (mlci run --force)")
    ds = DatasetDef.model_validate(card["dataset"])
    frame, proba, y, source = read_batch(Path(batch), ds, model, echo)
    result = compare(profile, frame, proba, y, mp, resamples=mp.bootstrap_resamples)
    result.update(source=source, model_sha256=card["sha256"], model_trained_at=card.get("trained_at"))
    pngs = plots(profile, frame, proba, result)
    write_set({**{out_dir / "plots" / name: data for name, data in pngs.items()},
               out_dir / "monitor.json": (json.dumps(result, indent=2, default=float) + "\n").encode(),
               out_dir / "monitor.md": markdown(result).encode("utf-8"),
               out_dir / "monitor.html": html(result, pngs).encode("utf-8")})
    summary = {"rows": result["rows"], "labelled": result["labelled"],
               "drifted": [n for n, f in result["features"].items() if f["drift"]],
               "predictions_drifted": result["predictions"]["drift"],
               "acc": result["performance"]["acc"]["value"], "acc_estimated": result["performance"]["estimated"],
               "failed": result["failed"], "report": str(out_dir / "monitor.html")}
    if result["failed"]:
        raise MonitorFailed(f"{len(result['failed'])} monitoring rule(s) failed: {'; '.join(result['failed'][:3])}"
                            + (" ..." if len(result["failed"]) > 3 else "") + f" (report: {out_dir / 'monitor.html'})",
                            summary)
    return summary


def read_batch(path: Path, ds: DatasetDef, model, echo) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None, dict]:
    """The batch's features, the model's probabilities for them, and the labels when it has them."""
    features = [c.name for c in ds.features]
    if path.is_dir() or path.suffix == ".parquet" or any(ch in path.name for ch in "*?["):
        files = sorted(path.glob("*.parquet")) if path.is_dir() else (
            sorted(path.parent.glob(path.name)) if any(ch in path.name for ch in "*?[") else [path])
        files = [f for f in files if f.is_file()]
        if not files:
            raise DataError(f"{path}: no Parquet files of prediction logs here")
        frame = _read_logs(files, ds)
        proba = (frame["probability"].to_numpy(dtype=float) if "probability" in frame.columns
                 else predict_proba(model, frame[features], ds.positive_label))
        y = None
        if ds.target in frame.columns and frame[ds.target].notna().all():
            y = np.asarray(frame[ds.target].astype(str) == ds.positive_label)
        return frame, proba, y, {"kind": "prediction logs", "files": len(files), "path": str(path)}
    from mlci.data.load import describe_rejects, load_table

    if not path.is_file():
        raise DataError(f"{path}: no such file or directory")
    loaded = load_table(path, ds, require_target=False, unknown_categories="missing", keep_target=True)
    if loaded.rows_rejected:
        echo(f"{path}: {loaded.rows_rejected} row(s) failed validation and are left out "
             f"({describe_rejects(loaded.rejects)})")
    frame = loaded.frame
    if not len(frame):
        raise DataError(f"{path}: no valid rows to monitor")
    proba = predict_proba(model, frame[features], ds.positive_label)
    y = np.asarray(frame[ds.target] == ds.positive_label) if ds.target in frame.columns else None
    return frame, proba, y, {"kind": "csv", "path": str(path), "sha256": loaded.sha256,
                             "rows_rejected": loaded.rows_rejected}


def _read_logs(files: list[Path], ds: DatasetDef) -> pd.DataFrame:
    import pyarrow.parquet as pq

    features = [c.name for c in ds.features]
    wanted = [*features, ds.target, *LOG_COLUMNS]
    frames = []
    for f in files:
        try:
            schema = pq.read_schema(f)
            table = pq.read_table(f, columns=[c for c in wanted if c in schema.names])
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file is named, not a traceback
            raise DataError(f"{f}: not a readable Parquet file ({type(e).__name__}: {str(e)[:120]})") from None
        missing = [c for c in features if c not in table.column_names]
        if missing:
            raise DataError(f"{f}: lacks {', '.join(missing[:5])}: not prediction logs of this model's data")
        frames.append(table.to_pandas())
    frame = pd.concat(frames, ignore_index=True)
    for col in ds.features:  # the model's encoder wants the declared categories
        if col.type == "categorical":
            frame[col.name] = frame[col.name].astype(object).where(frame[col.name].notna(), None)
    return frame
