"""The server's record schema takes the data's own column names and shows them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlci.data.dataset import DatasetDef
from mlci.serving.schema import record_model

DS = DatasetDef.model_validate({
    "name": "cancer", "target": "diagnosis", "positive_label": "1", "negative_label": "0",
    "columns": [{"name": "mean radius", "type": "numeric"}, {"name": "worst.area", "type": "numeric"},
                {"name": "diagnosis", "type": "label"}]})


def test_the_schema_shows_the_definitions_own_names():
    model = record_model(DS, {})
    assert list(model.model_json_schema()["properties"]) == ["mean radius", "worst.area"]
    assert [(c.name, c.label) for c in DS.columns] == [("mean_radius", "mean radius"), ("worst_area", "worst.area"),
                                                       ("diagnosis", None)]


@pytest.mark.parametrize("record", [
    {"mean radius": 14.1, "worst.area": 880.0},  # as the definition writes them
    {"mean_radius": 14.1, "worst_area": 880.0},  # normalised
    {"Mean Radius": 14.1, "worst-area": 880.0},  # another spelling of the same names, as the loader takes
])
def test_any_spelling_the_loader_takes_is_accepted(record):
    got = record_model(DS, {}).model_validate(record)
    assert (got.mean_radius, got.worst_area) == (14.1, 880.0)


def test_a_field_given_twice_is_refused():
    with pytest.raises(ValidationError, match="given twice"):
        record_model(DS, {}).model_validate({"mean radius": 1.0, "mean_radius": 2.0, "worst.area": 3.0})
