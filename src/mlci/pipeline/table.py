"""The stage table: the one place a stage is declared (like ``dvc.yaml``).

A stage names its function (imported only when it runs, so a no-op rerun never loads pandas or
scikit-learn), the parameter sections it reads, the files it reads and writes, and its traits.
The CLI's stage commands and choices, ``--until`` and the lock's sections all come from here:
adding a stage is adding a row.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlci.config import settings as S
from mlci.config.resolve import Resolved

Paths = Callable[[S.Settings], list[Path]]


@dataclass(frozen=True)
class Stage:
    name: str
    #: ``module:function``; the function takes a :class:`~mlci.stages.context.StageContext`.
    function: str
    help: str
    params: tuple[str, ...]
    deps: Paths
    outs: Paths
    #: Whether, with these parameters, it compares with the champion (then its lock record names the
    #: champion it compared with, and a new champion makes it stale).
    compares: Callable[[Resolved], bool] | None = None
    #: Runs after a failed gate too (a reviewer needs the report most then).
    after_failed_gate: bool = False
    #: Wants the report's figure process started early, when the run has work to do.
    needs_painter: bool = False
    #: ``module:function`` called instead of the stage when it is up to date (the gate replays its verdict).
    replay: str | None = None
    #: Modules it loads by name (not seen by the import scan of ``mlci.codehash``).
    extra_code: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return self.function.partition(":")[0]

    def uses_champion(self, params: Resolved) -> bool:
        return self.compares is not None and self.compares(params)

    def load(self) -> Callable:
        return _resolve(self.function)

    def load_replay(self) -> Callable | None:
        return _resolve(self.replay) if self.replay else None


def _resolve(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _report_outputs(s: S.Settings) -> list[Path]:
    plots = s.result(S.PLOTS_DIR)
    return [s.result(S.REPORT_JSON), s.result(S.REPORT_MD), s.result(S.REPORT_HTML),
            *(plots / f"{name}.png" for name in S.REPORT_PLOTS)]


STAGES: tuple[Stage, ...] = (
    Stage(
        "preprocess", "mlci.stages.preprocess:preprocess",
        "Load and validate the raw CSV; write train/validation/test Parquet splits.",
        ("dataset", "split", "preprocess", "engine"),
        lambda s: [s.raw_source],
        lambda s: [*(s.split_path(x) for x in S.SPLITS), s.rejects_path, s.result(S.PREPROCESS_METADATA)],
    ),
    Stage(
        "train", "mlci.stages.train:train",
        "Fit the model on the train split; write the model and train_metadata.json.",
        ("dataset", "train", "best", "fairness", "engine"),
        # preprocess_metadata.json: the card carries the data's sha256, header spelling and split.
        lambda s: [s.split_path("train"), s.split_path("validation"), s.result(S.PREPROCESS_METADATA)],
        lambda s: [s.model_path, s.model_card_path, s.result(S.TRAIN_METADATA), s.scores_path("validation"),
                   s.reference_path],
        extra_code=("mlci.monitoring.profile",),
    ),
    Stage(
        "gate", "mlci.stages.gate:gate",
        "Check train_metadata.json against the gate rules; write gate.json (exit 3 on failure).",
        ("gate",),
        lambda s: [s.result(S.TRAIN_METADATA)],
        lambda s: [s.result(S.GATE_FILE), s.result(S.JUNIT_FILE)],
        compares=lambda p: any(r.get("max_drop") is not None or r.get("max_rise") is not None
                               for r in p.section("gate")["rules"]),
        replay="mlci.stages.gate:replay",
    ),
    Stage(
        "test", "mlci.stages.test:test",
        "Score the test split (only after a passing gate); write test_metadata.json.",
        ("engine",),
        # Not gate.json: a verdict re-evaluated against a new champion does not change the test's answer
        # (the stage itself refuses to run unless the gate passed for this very model).
        lambda s: [s.model_path, s.model_card_path, s.split_path("test")],
        lambda s: [s.result(S.TEST_METADATA), s.scores_path("test")],
    ),
    Stage(
        "report", "mlci.stages.report:report",
        "Write report.md, report.html (self-contained), report.json and plots/ to RESULTS_DIR.",
        ("fairness", "report", "engine"),
        lambda s: [s.model_path, s.model_card_path, s.split_path("validation"), s.split_path("test"),
                   *(s.result(n) for n in (S.PREPROCESS_METADATA, S.TRAIN_METADATA, S.GATE_FILE, S.TEST_METADATA)),
                   s.scores_path("validation"), s.scores_path("test")],
        _report_outputs,
        compares=lambda p: True,
        after_failed_gate=True,
        needs_painter=True,
        extra_code=("mlci.reporting.plots",),
    ),
)
STAGE_NAMES = tuple(st.name for st in STAGES)


def stage(name: str) -> Stage:
    return next(st for st in STAGES if st.name == name)
