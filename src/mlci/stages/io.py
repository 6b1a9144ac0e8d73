"""What the stages share: reading the splits, writing tables and scores atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlci.config import settings as S
from mlci.errors import PrerequisiteError, StateError
from mlci.fileio import atomic_path


def read_split(s: S.Settings, name: str) -> pd.DataFrame:
    path = s.split_path(name)
    if not path.exists():
        raise PrerequisiteError(f"{path}: not found; run `mlci preprocess` first")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise StateError(f"{path}: damaged ({type(e).__name__}: {str(e)[:120]}); rerun `mlci preprocess` "
                         "(or `mlci run --force`)") from None


def write_parquet(frame: pd.DataFrame, target: Path) -> None:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")


def write_csv(frame: pd.DataFrame, target: Path) -> None:
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


def read_scores(path: Path, model_sha: str) -> np.ndarray | None:
    """The probabilities train/test wrote for the model with this sha256, if they are there."""
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    table = pq.read_table(path)
    if (table.schema.metadata or {}).get(b"model_sha256", b"").decode() != model_sha:
        return None
    return table.column("probability").to_numpy()
