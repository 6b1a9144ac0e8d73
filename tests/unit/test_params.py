"""mlci.config.params: -S overrides and params.yaml, validated (pydantic, no pipeline)."""

from __future__ import annotations

import pytest
from conftest import ROOT

from mlci.config.params import GateRule, Params, load, parse_override
from mlci.errors import UsageError

PARAMS = ROOT / "params.yaml"


@pytest.mark.parametrize("text, expected", [
    ("train.learning_rate=0.03", (["train", "learning_rate"], 0.03)),
    ("train.n_estimators=200", (["train", "n_estimators"], 200)),
    ("tracking.greater_is_better=false", (["tracking", "greater_is_better"], False)),
    ("fairness.groups=null", (["fairness", "groups"], None)),
    ("best.candidates=[lightgbm, xgboost]", (["best", "candidates"], ["lightgbm", "xgboost"])),
    ("fairness.groups={sex: null}", (["fairness", "groups"], {"sex": None})),
    ("tracking.experiment=a=b", (["tracking", "experiment"], "a=b")),  # the first = splits
    (" tracking.experiment =", (["tracking", "experiment"], "")),
    ("tracking.experiment=[unclosed", (["tracking", "experiment"], "[unclosed")),  # not YAML: the text
])
def test_parse_override_reads_the_value_as_yaml(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["train.learning_rate", "=0.03", " =1"])
def test_parse_override_needs_a_key_and_an_equals_sign(text):
    with pytest.raises(UsageError, match="must look like section.key=value"):
        parse_override(text)


def test_overrides_set_nested_keys_on_top_of_the_file():
    p = load(PARAMS, ["train.learning_rate=0.03", "best.candidates=[lightgbm]", "split.seed=7",
                      "gate.rules=[{metric: validation_acc, min: 0.7}]"])
    assert (p.train.learning_rate, p.best.candidates, p.split.seed) == (0.03, ["lightgbm"], 7)
    assert p.gate.rules == [GateRule(metric="validation_acc", min=0.7)]
    assert p.train.n_estimators == 400 and p.split.validation == 0.2  # the rest as in the file


def test_overrides_keep_the_files_other_keys(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  n_estimators: 10\n")
    p = load(f, ["train.learning_rate=0.2"])
    assert (p.train.n_estimators, p.train.learning_rate) == (10, 0.2)


@pytest.mark.parametrize("override, named", [
    ("train.learnin_rate=0.1", "train.learnin_rate: unknown key"),
    ("trian.learning_rate=0.1", "trian: unknown key"),
    ("train.n_estimators=many", "train.n_estimators"),
    ("split.test=0.8", "validation + test must leave at least 10%"),
])
def test_bad_overrides_are_usage_errors_naming_the_key(override, named):
    with pytest.raises(UsageError) as e:
        load(PARAMS, [override])
    assert named in e.value.message


def test_an_unknown_key_in_the_file_names_the_file_and_key(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("report:\n  seeds: 3\n")
    with pytest.raises(UsageError, match=r"params.yaml: report.seeds: unknown key"):
        load(f)


@pytest.mark.parametrize("override, section", [("train.learning_rate.x=1", "learning_rate"),
                                                ("dataset.name=x", "dataset")])
def test_an_override_below_a_value_is_not_a_section(override, section):
    with pytest.raises(UsageError, match=f"{section} is not a section"):
        load(PARAMS, [override])


def test_a_params_file_that_is_not_a_mapping_is_a_usage_error(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("- train\n- gate\n")
    with pytest.raises(UsageError, match="must be a mapping of sections"):
        load(f)


def test_an_absent_params_file_means_the_repositorys_values(tmp_path):
    defaults = load(None, [])
    assert load(PARAMS, []) == defaults == Params()
    assert load(tmp_path / "missing.yaml", []) == defaults
    assert load(tmp_path / "missing.yaml", ["train.seed=1"]).train.seed == 1


def test_a_misspelt_override_names_minus_s_and_the_nearest_key():
    from mlci.config.params import load

    with pytest.raises(UsageError, match=r"^-S: train.learnin_rate: unknown key \(did you mean train.learning_rate\?\)$"):
        load(None, ["train.learnin_rate=0.1"])


def test_labels_may_be_written_as_numbers():
    from mlci.data.dataset import DatasetDef

    ds = DatasetDef.model_validate({"name": "x", "target": "y", "positive_label": 1, "negative_label": 0,
                                    "columns": [{"name": "a", "type": "numeric"}, {"name": "y", "type": "label"}]})
    assert (ds.positive_label, ds.negative_label) == ("1", "0")
