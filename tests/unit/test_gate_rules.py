"""mlci.evaluation.gate: the gate's rules as a pure function (no files, no MLflow)."""

from __future__ import annotations

import pytest

from mlci.config.params import GateRule
from mlci.errors import UsageError
from mlci.evaluation.gate import TUTORIAL_FAIL, TUTORIAL_PASS, evaluate, failure_summary, gate_messages, rule_label

ACC_MIN = GateRule(metric="validation_acc", min=0.8)
AUC_DROP = GateRule(metric="validation_roc_auc", max_drop=0.005)
LOSS_RISE = GateRule(metric="validation_log_loss", max_rise=0.01)
LOSS_MAX = GateRule(metric="validation_log_loss", max=0.4)


def champ(**metrics) -> dict:
    return {"version": "3", "metrics": metrics}


def test_min_rule_passes_at_and_above_the_threshold_and_fails_below():
    at, below = evaluate([ACC_MIN], {"validation_acc": 0.8}), evaluate([ACC_MIN], {"validation_acc": 0.79})
    assert at["passed"] is True and at["rules"][0] == {
        "metric": "validation_acc", "value": 0.8, "champion_value": None, "op": ">=", "threshold": 0.8, "passed": True}
    assert below["passed"] is False and below["rules"][0]["passed"] is False


def test_max_rule_bounds_from_above():
    assert evaluate([LOSS_MAX], {"validation_log_loss": 0.3})["passed"] is True
    bad = evaluate([LOSS_MAX], {"validation_log_loss": 0.5})
    assert bad["passed"] is False and bad["rules"][0]["op"] == "<=" and bad["rules"][0]["threshold"] == 0.4


def test_relative_rules_pass_without_a_champion_and_say_why():
    result = evaluate([AUC_DROP, LOSS_RISE], {"validation_roc_auc": 0.1, "validation_log_loss": 9.0})
    assert result["passed"] is True and result["champion"] is None
    assert [r["note"] for r in result["rules"]] == ["no champion yet: relative rule passes"] * 2
    assert [r["threshold"] for r in result["rules"]] == [None, None]
    off = evaluate([AUC_DROP], {"validation_roc_auc": 0.1}, no_champion="tracking is off")
    assert off["rules"][0]["note"] == "tracking is off: relative rule passes"


def test_max_drop_against_the_champion():
    ok = evaluate([AUC_DROP], {"validation_roc_auc": 0.896}, champ(validation_roc_auc=0.9))
    bad = evaluate([AUC_DROP], {"validation_roc_auc": 0.894}, champ(validation_roc_auc=0.9))
    assert ok["passed"] is True and bad["passed"] is False
    r = bad["rules"][0]
    assert (r["op"], r["threshold"], r["champion_value"], r["relative"]) == (">=", 0.895, 0.9, {"max_drop": 0.005})
    assert bad["champion"] == {"version": "3"}


def test_max_rise_against_the_champion():
    ok = evaluate([LOSS_RISE], {"validation_log_loss": 0.305}, champ(validation_log_loss=0.3))
    bad = evaluate([LOSS_RISE], {"validation_log_loss": 0.32}, champ(validation_log_loss=0.3))
    assert ok["passed"] is True and bad["passed"] is False
    assert (bad["rules"][0]["op"], bad["rules"][0]["threshold"]) == ("<=", 0.31)


def test_a_champion_without_the_metric_counts_as_no_champion():
    result = evaluate([AUC_DROP], {"validation_roc_auc": 0.5}, champ(validation_acc=0.9))
    assert result["passed"] is True and "relative rule passes" in result["rules"][0]["note"]


def test_one_failing_rule_fails_the_gate():
    result = evaluate([ACC_MIN, LOSS_MAX], {"validation_acc": 0.9, "validation_log_loss": 0.5})
    assert result["passed"] is False and [r["passed"] for r in result["rules"]] == [True, False]


def test_a_metric_missing_from_meta_is_a_usage_error_naming_it():
    with pytest.raises(UsageError, match="'validation_f1' is not in results/train_metadata.json") as e:
        evaluate([GateRule(metric="validation_f1", min=0.5)], {"validation_acc": 0.9, "model": "lgbm"},
                 where="results/train_metadata.json")
    assert "known: validation_acc)" in e.value.message  # the numeric keys only


def test_a_non_numeric_metric_is_a_usage_error():
    with pytest.raises(UsageError, match="validation_acc"):
        evaluate([ACC_MIN], {"validation_acc": "0.9"})


def test_gate_messages_are_the_tutorials_for_the_accuracy_rule():
    assert gate_messages(evaluate([ACC_MIN], {"validation_acc": 0.85})) == [TUTORIAL_PASS]
    assert gate_messages(evaluate([ACC_MIN], {"validation_acc": 0.75})) == [TUTORIAL_FAIL]
    assert TUTORIAL_PASS == "validation accuracy is higher than the threshold"
    assert TUTORIAL_FAIL == "validation accuracy is lower than the threshold, process stopped"


def test_gate_messages_describe_the_other_rules():
    lines = gate_messages(evaluate([LOSS_MAX, GateRule(metric="validation_acc", max_drop=0.01)],
                                   {"validation_log_loss": 0.5, "validation_acc": 0.85}, champ(validation_acc=0.8)))
    assert lines == ["validation_log_loss = 0.5000 (must be <= 0.4): FAIL",
                     "validation_acc = 0.8500 (must be >= 0.79, champion 0.8000 - 0.01): pass"]


def test_failure_summary_lists_only_the_failing_rules():
    result = evaluate([ACC_MIN, LOSS_MAX, AUC_DROP],
                      {"validation_acc": 0.7, "validation_log_loss": 0.3, "validation_roc_auc": 0.8})
    assert failure_summary(result) == "gate failed: validation_acc = 0.7000 (must be >= 0.8)"


def test_rule_label_reads_like_the_rule():
    result = evaluate([ACC_MIN, LOSS_MAX, AUC_DROP, LOSS_RISE],
                      {"validation_acc": 0.9, "validation_log_loss": 0.3, "validation_roc_auc": 0.9},
                      champ(validation_roc_auc=0.9, validation_log_loss=0.3))
    assert [rule_label(r) for r in result["rules"]] == [
        "validation_acc >= 0.8", "validation_log_loss <= 0.4",
        "validation_roc_auc >= champion - 0.005", "validation_log_loss <= champion + 0.01"]
