"""mlci.data.split.split_frame: stratified, seeded train/validation/test splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlci.data.split import split_frame
from mlci.errors import DataError


def frame(n: int, positive_share: float = 0.24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n),
                         "y": (rng.random(n) < positive_share).astype(int)})


def test_sizes_match_the_fractions():
    parts = split_frame(frame(1003), "y", validation=0.15, test=0.25, seed=42, where="adult.data")
    assert abs(len(parts["test"]) - 0.25 * 1003) <= 1
    assert abs(len(parts["validation"]) - 0.15 * 1003) <= 1
    assert sum(map(len, parts.values())) == 1003


def test_no_row_is_in_two_splits():
    parts = split_frame(frame(500), "y", 0.2, 0.2, 1, "x")
    ids = [set(p["id"]) for p in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(range(500))


def test_the_same_seed_gives_the_same_splits():
    data = frame(400)
    a, b = split_frame(data, "y", 0.2, 0.2, 7, "x"), split_frame(data, "y", 0.2, 0.2, 7, "x")
    for name in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(a[name], b[name])
    assert list(split_frame(data, "y", 0.2, 0.2, 8, "x")["test"]["id"]) != list(a["test"]["id"])


def test_stratification_keeps_the_class_share():
    data = frame(2000, positive_share=0.24)
    overall = data["y"].mean()
    for part in split_frame(data, "y", 0.2, 0.2, 3, "x").values():
        assert abs(part["y"].mean() - overall) <= 0.01


@pytest.mark.parametrize("data", [
    frame(19, positive_share=0.5),  # fewer than 20 rows
    pd.DataFrame({"y": [1] * 4 + [0] * 96}),  # a class with fewer than 5 rows
], ids=["few-rows", "rare-class"])
def test_too_few_rows_is_a_data_error_naming_the_data(data):
    with pytest.raises(DataError, match="^adult.data: too few rows to split"):
        split_frame(data, "y", 0.2, 0.2, 42, "adult.data")
