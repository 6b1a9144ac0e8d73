"""``mlci init``: a new project for a CSV file (not a pipeline stage).

``DIR/dataset.yaml`` (inferred, see ``mlci.data.infer``), ``DIR/params.yaml`` (the dataset, and gate
rules fitted to this data from a quick baseline) and ``DIR/data/raw/<the file>``; after it, ``cd DIR &&
mlci run`` works. The project is made in a temporary directory beside DIR and renamed into place: a
failure leaves nothing behind, and an existing DIR is never touched.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mlci.data.dataset import DatasetDef
from mlci.data.infer import infer_dataset
from mlci.errors import DataError, UsageError
from mlci.stages.context import Echo
from mlci.timestamps import utc_now

#: The baseline: the default profile's LightGBM with fewer trees, on the default split.
BASELINE_TREES = 100
#: How far below the baseline's figures the first gate rules sit.
MARGIN = 0.02


def init(data: Path, target: str, directory: Path, *, name: str | None = None, positive: str | None = None,
         echo: Echo = print) -> dict:
    data, directory = Path(data), Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory}: exists and is not empty; mlci init makes a new project (choose another --dir)")
    if not data.is_file():
        raise DataError(f"{data}: file not found")
    definition = infer_dataset(data, target, name, positive)
    try:
        ds = DatasetDef.model_validate(definition)
    except ValueError as e:  # pydantic's, on a definition it cannot be (two columns normalising alike, say)
        raise DataError(f"{data}: cannot be described as a dataset: {str(e).splitlines()[-1][:200]}") from None
    baseline = _baseline(data, ds)
    echo(f"baseline (LightGBM, {BASELINE_TREES} trees, train split -> validation): accuracy "
         f"{baseline['acc']:.3f}, ROC-AUC {baseline['roc_auc']:.3f}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.init-", dir=directory.parent))
    try:
        (staging / "data" / "raw").mkdir(parents=True)
        # A .csv name: with RAW_DATA_FILE unset, the one data file of data/raw is the data.
        shutil.copyfile(data, staging / "data" / "raw" / (data.name if data.suffix.lower() in (".csv", ".data")
                                                            else f"{data.stem}.csv"))
        (staging / "dataset.yaml").write_text(_dataset_yaml(definition, data))
        (staging / "params.yaml").write_text(_params_yaml(ds, data, baseline))
        if directory.exists():
            directory.rmdir()  # empty (checked above): the rename takes its place
        staging.chmod(0o755)  # mkdtemp's 0700 is for the making, not for the project
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    features = [c for c in ds.features]
    return {"dir": str(directory), "dataset": ds.name, "target": ds.target, "positive_label": ds.positive_label,
            "rows": baseline["rows"], "features": len(features),
            "categorical": sum(c.type == "categorical" for c in features), "dropped": ds.drop,
            "baseline": {"validation_acc": baseline["acc"], "validation_roc_auc": baseline["roc_auc"]},
            "gate": _rules(baseline)[:2]}


def _baseline(data: Path, ds: DatasetDef) -> dict:
    """The default model, smaller, on the default split: what a first gate can ask of this data."""
    from mlci.config.params import SplitParams, TrainParams
    from mlci.data.load import load_table
    from mlci.data.split import split_frame
    from mlci.evaluation.metrics import binary_metrics
    from mlci.modeling.estimator import build, categories_of, fit, predict_proba

    loaded = load_table(data, ds)
    sp, tp = SplitParams(), TrainParams(n_estimators=BASELINE_TREES)
    parts = split_frame(loaded.frame, ds.target, sp.validation, sp.test, sp.seed, str(data))
    tr, va = parts["train"], parts["validation"]
    model = fit(build(ds, tp, categories_of(tr, ds)), tr, ds)
    proba = predict_proba(model, va[[c.name for c in ds.features]], ds.positive_label)
    metrics = binary_metrics(np.asarray(va[ds.target] == ds.positive_label), proba)
    return {"acc": metrics["acc"], "roc_auc": metrics["roc_auc"], "rows": loaded.rows_read}


def _floor2(x: float) -> float:
    return math.floor(x * 100) / 100


def _rules(baseline: dict) -> list[dict]:
    return [{"metric": "validation_acc", "min": _floor2(baseline["acc"] - MARGIN)},
            {"metric": "validation_roc_auc", "min": _floor2(baseline["roc_auc"] - MARGIN)},
            {"metric": "validation_roc_auc", "max_drop": 0.005},
            {"metric": "validation_acc", "max_drop": 0.01}]


def _dataset_yaml(definition: dict, data: Path) -> str:
    import yaml

    head = (f"# {definition['name']}: inferred by `mlci init` from {data.name} on {utc_now()}. Read it and amend it:\n"
            "# types come from the values seen, ranges have headroom, categories are those seen (a value\n"
            "# outside them is a rejected row), `drop` holds columns that look like identifiers.\n")
    return head + yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, width=110)


def _params_yaml(ds: DatasetDef, data: Path, baseline: dict) -> str:
    import yaml

    gate = yaml.safe_dump({"gate": {"rules": _rules(baseline)}}, sort_keys=False)
    return (f"# Made by `mlci init` from {data.name}. Every parameter not set here has its default\n"
            "# (mlci's README, \"Parameters\"); add a section to change one.\n"
            "dataset: dataset.yaml\n\n"
            f"# Fitted to this data from a quick baseline (LightGBM, {BASELINE_TREES} trees, fitted on the train\n"
            f"# split, scored on validation: accuracy {baseline['acc']:.4f}, ROC-AUC {baseline['roc_auc']:.4f}),\n"
            f"# less {MARGIN}: a first bar, not a target. Relative rules compare with the champion.\n"
            + gate)
