"""The model card (``model.json``) and its input example: what both engines' train write beside the model."""

from __future__ import annotations

from importlib import metadata as _md

from mlci.config import settings as S
from mlci.fileio import read_json
from mlci.stages.context import StageContext
from mlci.timestamps import utc_now


def model_card(ctx: StageContext, ds, model_sha: str, threshold: float, example: list[dict],
               fitted_on: str = "train", validation: dict | None = None) -> dict:
    """``model.json``: what a user of the pickle needs to know, readable without unpickling it.

    ``fitted_on`` names the splits the saved model learnt from; ``validation`` is the recipe's figures
    on the validation split, measured before it learnt from that split (a later gate compares with
    these: re-scoring such a model on its own training rows would flatter it)."""
    params, profile = ctx.params, ctx.params.train.profile
    pre_path = ctx.settings.result(S.PREPROCESS_METADATA)
    pre = read_json(pre_path) if pre_path.exists() else {}
    header = pre.get("header_names") or {}
    by_label = {c.name: c.label for c in ds.features if c.label}
    return {
        "format": "sklearn-pipeline/pickle",
        "file": S.MODEL_FILE,
        "sha256": model_sha,
        "positive_label": ds.positive_label,
        "negative_label": ds.negative_label,
        "features": [c.name for c in ds.features],
        # How the training file spelt them: the logged model's signature uses these names.
        "input_names": {c.name: header[c.name] for c in ds.features if c.name in header},
        # A few validation records as pandas reads them from the file (the logged model's input example).
        "input_example": [{header.get(k) or by_label.get(k) or k: v for k, v in row.items()} for row in example],
        "dataset": ds.model_dump(mode="json"),
        "profile": profile,
        "threshold": threshold,
        "params": params.section("train") if profile == "default" else {
            "train": params.section("train"), "best": params.section("best")},
        "data_sha256": pre.get("data_sha256"),
        "split": pre.get("split"),  # which rows it never saw: a champion comparison checks it
        "fitted_on": fitted_on,
        "validation_metrics": validation if fitted_on != "train" else None,
        "trained_at": utc_now(),
        "versions": {pkg: _md.version(pkg) for pkg in _packages(params)},
    }


def input_example(frame, ds, n: int = 3) -> list[dict]:
    """The first ``n`` complete records of ``frame``, typed as pandas reads them from a CSV."""
    frame = frame[[c.name for c in ds.features]]
    rows = frame.iloc[:1000].dropna()  # the first complete rows are nearly always near the top
    rows = (rows if len(rows) >= n else frame.dropna()).head(n)
    cast = {"integer": int, "numeric": float, "categorical": str}
    return [{c.name: cast[c.type](row[c.name]) for c in ds.features} for _, row in rows.iterrows()]


def _packages(params) -> list[str]:
    """The distributions the pickle needs to load (a logged model's requirements are built from them)."""
    base = ["mlci", "scikit-learn", "lightgbm", "pandas", "numpy"]
    if params.train.profile != "best":
        return base
    from mlci.modeling.best import PACKAGES

    return base + [PACKAGES[c][1] for c in params.best.candidates if c in PACKAGES]
