"""Split validated rows into train, validation and test."""

from __future__ import annotations

import pandas as pd

from mlci.errors import DataError


def split_frame(frame: pd.DataFrame, target: str, validation: float, test: float, seed: int,
                where: str) -> dict[str, pd.DataFrame]:
    """Stratified train/validation/test split with a fixed seed; ``where`` names the data in errors."""
    from sklearn.model_selection import train_test_split

    y = frame[target]
    counts = y.value_counts()
    if counts.min() < 5 or len(frame) < 20:
        raise DataError(
            f"{where}: too few rows to split: {counts.to_dict()} valid rows per class (need at least 5 of each)"
        )
    try:
        rest, held_out = train_test_split(frame, test_size=test, stratify=y, random_state=seed)
        train, val = train_test_split(rest, test_size=validation / (1 - test), stratify=rest[target],
                                      random_state=seed)
    except ValueError as e:
        raise DataError(f"{where}: cannot split the data: {e}") from None
    return {"train": train, "validation": val, "test": held_out}
