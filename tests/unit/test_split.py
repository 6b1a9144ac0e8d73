"""mlci.data.split.split_frame: a row's split is a function of its content and the seed, nothing else."""

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
    n = 20_000
    parts = split_frame(frame(n), "y", validation=0.15, test=0.25, seed=42, where="adult.data")
    for name, share in (("test", 0.25), ("validation", 0.15)):  # binomial: within 4 standard deviations
        assert abs(len(parts[name]) - share * n) <= 4 * (n * share * (1 - share)) ** 0.5
    assert sum(map(len, parts.values())) == n


def test_reordering_the_rows_changes_nothing():
    data = frame(3000)
    a = split_frame(data, "y", 0.2, 0.2, 7, "x")
    b = split_frame(data.sample(frac=1, random_state=1), "y", 0.2, 0.2, 7, "x")
    for name in a:  # the same rows in the same order: the same split files, the same model
        pd.testing.assert_frame_equal(a[name].reset_index(drop=True), b[name].reset_index(drop=True))


def test_appending_rows_moves_no_existing_row():
    old = frame(3000)
    new = pd.concat([old, frame(1000, seed=5).assign(id=lambda f: f["id"] + 3000)], ignore_index=True)
    before = {name: set(p["id"]) for name, p in split_frame(old, "y", 0.2, 0.2, 7, "x").items()}
    after = {name: set(p["id"]) for name, p in split_frame(new, "y", 0.2, 0.2, 7, "x").items()}
    for name in before:
        assert before[name] <= after[name]


def test_identical_rows_land_together():
    data = frame(1000)
    dup = pd.concat([data, data.iloc[:200]], ignore_index=True)
    for part in split_frame(dup, "y", 0.2, 0.2, 3, "x").values():
        counts = part["id"].value_counts()
        assert (counts[counts.index < 200] == 2).all()


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


def test_the_class_share_stays_close_without_stratifying():
    data = frame(20_000, positive_share=0.24)
    overall = data["y"].mean()
    for part in split_frame(data, "y", 0.2, 0.2, 3, "x").values():
        assert abs(part["y"].mean() - overall) <= 0.02


@pytest.mark.parametrize("data", [
    frame(19, positive_share=0.5),  # fewer than 20 rows
    pd.DataFrame({"y": [1] * 4 + [0] * 96}),  # a class with fewer than 5 rows
], ids=["few-rows", "rare-class"])
def test_too_few_rows_is_a_data_error_naming_the_data(data):
    with pytest.raises(DataError, match="^adult.data: too few rows to split"):
        split_frame(data, "y", 0.2, 0.2, 42, "adult.data")


def test_the_dask_engines_samples_are_not_the_splits_own_hash(tmp_path):
    """A sample of a split drawn by the row hash under the split's own seed would be empty (the
    split took rows by that hash): the Dask engine's samples mix another seed in."""
    from mlci.config.params import Params
    from mlci.config.settings import BUNDLED_DATA
    from mlci.data.load import load_table
    from mlci.data.split import split_frame
    from mlci.stages.cluster.evaluate import sample_part

    ds = Params().dataset_def()
    frame = load_table(BUNDLED_DATA, ds).frame
    validation = split_frame(frame, ds.target, 0.2, 0.2, 42, "adult")["validation"]
    path = tmp_path / "part.parquet"
    validation.to_parquet(path)
    sample = sample_part(str(path), 42, 0.1)  # the split's seed
    assert abs(len(sample) - 0.1 * len(validation)) < 0.02 * len(validation)
