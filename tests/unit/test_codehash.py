"""mlci.codehash: a stage's code is the closure of the mlci modules it imports (read, not imported)."""

from __future__ import annotations

from mlci.codehash import ROOT, closure, code_hash
from mlci.pipeline.lock import stage_code
from mlci.pipeline.table import stage


def modules(st) -> tuple[str, ...]:
    return (st.module, *st.extra_code)


def test_train_runs_the_estimator_not_the_server():
    files = closure(modules(stage("train")))
    assert ROOT / "stages" / "train.py" in files and ROOT / "modeling" / "estimator.py" in files
    assert ROOT / "serving" / "app.py" not in files


def test_a_closure_includes_the_parent_subpackage():
    assert ROOT / "modeling" / "__init__.py" in closure(("mlci.modeling.estimator",))


def test_report_includes_the_renderer_and_the_modules_it_loads_by_name():
    files = closure(modules(stage("report")))
    assert ROOT / "reporting" / "render.py" in files and ROOT / "reporting" / "plots.py" in files


def test_code_hash_is_stable_and_tells_stages_apart():
    train = code_hash(modules(stage("train")))
    assert train == code_hash(modules(stage("train"))) == stage_code(stage("train"))
    assert train.startswith("sha256:") and len(train) == len("sha256:") + 64
    assert train != code_hash(modules(stage("gate")))


def test_an_unknown_module_is_refused_not_hashed_as_nothing():
    import pytest

    from mlci.codehash import closure

    with pytest.raises(ValueError, match="mlci.reporting.plotz"):
        closure(("mlci.reporting.plotz",))
