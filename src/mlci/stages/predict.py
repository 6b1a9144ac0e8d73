"""``mlci predict``: score a file of raw records with a trained model (batch scoring; not a pipeline stage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlci.data.dataset import DatasetDef
from mlci.data.load import describe_rejects, load_table
from mlci.errors import RejectLimitError
from mlci.fileio import atomic_path
from mlci.modeling.artifact import load_model
from mlci.modeling.estimator import decision_threshold, predict_proba
from mlci.stages.context import Echo
from mlci.stages.io import write_csv


def predict(input_path: Path, output_path: Path, model_dir: Path, echo: Echo = print, *, strict: bool = False,
            allow_rejects: bool = False) -> dict:
    """Score raw records (either file shape); keep every input row, in order, plus two columns.

    A category the model never saw is scored as missing, as the model itself treats it, and counted
    (``strict``: its row is rejected instead). Rows that fail validation are left unscored and listed
    in ``<output>.rejects.csv``; unless ``allow_rejects``, they make the command fail (exit 5) once
    the output is written."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    model, card = load_model(model_dir)
    ds = DatasetDef.model_validate(card["dataset"])
    loaded = load_table(Path(input_path), ds, require_target=False,
                        unknown_categories="reject" if strict else "missing")
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
        write_csv(loaded.rejects, rejects_path)
        echo(
            f"{loaded.rows_rejected} of {n} rows failed validation and were not scored "
            f"(empty probability/prediction); details in {rejects_path}: {describe_rejects(loaded.rejects)}"
        )
    else:
        rejects_path.unlink(missing_ok=True)  # a stale one from an earlier run would mislead
    if loaded.unknown_categories:
        echo("categories the model never saw, scored as missing (--strict rejects them): "
             + ", ".join(f"{k} {v}" for k, v in loaded.unknown_categories.items()))
    summary = {"rows": n, "scored": int(loaded.valid.sum()), "rejected": loaded.rows_rejected,
               "unknown_categories": loaded.unknown_categories, "output": str(output_path)}
    if loaded.rows_rejected and not allow_rejects:
        raise RejectLimitError(f"{input_path}: {loaded.rows_rejected} of {n} rows failed validation and were not "
                               f"scored ({rejects_path}); --allow-rejects accepts that")
    return summary
