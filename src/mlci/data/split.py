"""Split validated rows into train, validation and test by a hash of each row's content.

A row's split depends on nothing but its own values and the seed: reordering the file, appending
rows or reading it in partitions never moves an existing row to another split, and identical rows
always land together (so a duplicate can never be both a training and a validation row). Within
each split the rows are ordered by the same hash, so the same rows in another order give the same
split files, byte for byte, and the same model. Stratification is approximate: each split's class
balance is whatever the hash gives (preprocess_metadata.json and the report show it; on the
bundled data each split is within a point of the whole).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlci.errors import DataError

#: Recorded with every model, so a comparison across different schemes can say so.
SCHEME = "row-hash-v1"


def row_positions(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Each row's place in [0, 1): a function of its values and ``seed`` only.

    pandas' row hash (stable, documented) of the values, then the seed mixed in with SplitMix64's
    finaliser (pandas' own key only reaches text columns)."""
    h = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = h + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_frame(frame: pd.DataFrame, target: str, validation: float, test: float, seed: int,
                where: str) -> dict[str, pd.DataFrame]:
    """``{"train", "validation", "test"}`` frames; ``where`` names the data in errors."""
    y = frame[target]
    counts = y.value_counts()
    if counts.min() < 5 or len(frame) < 20:
        raise DataError(
            f"{where}: too few rows to split: {counts.to_dict()} valid rows per class (need at least 5 of each)"
        )
    u = row_positions(frame, seed)
    order = np.argsort(u, kind="stable")
    # Sorted by position, each split is a slice: [0, test) test, [test, test + validation) validation.
    cut_test, cut_validation = np.searchsorted(u[order], [test, test + validation])
    frame = frame.take(order)
    parts = {"test": frame.iloc[:cut_test], "validation": frame.iloc[cut_test:cut_validation],
             "train": frame.iloc[cut_validation:]}
    for name, part in parts.items():
        if not len(part):
            raise DataError(f"{where}: cannot split the data: the {name} split is empty ({len(frame)} rows, "
                            f"{frame.drop_duplicates().shape[0]} distinct; identical rows go to the same split): "
                            f"more rows or a larger split.{name} fraction")
        present = set(part[target].dropna().unique())
        lacking = [str(c) for c in counts.index if c not in present]
        if lacking:
            raise DataError(f"{where}: cannot split the data: the {name} split has no rows labelled "
                            f"{', '.join(lacking)} ({len(part)} rows); more rows or a larger split.{name} fraction")
    return {"train": parts["train"], "validation": parts["validation"], "test": parts["test"]}
