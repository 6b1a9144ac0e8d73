"""A definition that lists only some of a file's columns hears which ones, not "line 1 is not a header"."""

from __future__ import annotations

import pytest

from mlci.data.dataset import DatasetDef
from mlci.data.load import load_table
from mlci.errors import DataError


def test_a_partial_column_list_names_the_extra_columns(tmp_path):
    names = ["mean radius", "mean texture", "worst area", "target"]
    (tmp_path / "d.csv").write_text(",".join(names) + "\n" + "\n".join(f"{i}.5,{i}.1,{i}00,{i % 2}" for i in range(30)))
    ds = DatasetDef.model_validate({"name": "bc", "target": "target", "positive_label": 1, "negative_label": 0,
                                    "columns": [{"name": "mean radius", "type": "numeric"},
                                                {"name": "target", "type": "label"}]})
    with pytest.raises(DataError, match=r"line 1 \(header\): unexpected column 'mean texture', 'worst area': "
                                        r"the dataset definition does not list them"):
        load_table(tmp_path / "d.csv", ds)
