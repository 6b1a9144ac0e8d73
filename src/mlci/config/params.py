"""Pipeline parameters: one versioned ``params.yaml``, validated, overridable per run.

The pydantic models below are the single source of defaults and types;
``params.yaml`` at the repository root spells the defaults out (a test keeps
them equal). Unknown keys and wrong types are rejected with a message that
names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from mlci.data.dataset import (
    DatasetDef,
    Strict,
    check_groups,
    describe_validation_error,
    load_dataset_def,
    normalise_keys,
    read_yaml,
)
from mlci.errors import UsageError


class SplitParams(Strict):
    validation: float = Field(0.2, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(42, ge=0, le=10**15)

    @model_validator(mode="after")
    def _check(self) -> "SplitParams":
        if self.validation + self.test >= 0.9:
            raise ValueError("validation + test must leave at least 10% for training")
        return self


class PreprocessParams(Strict):
    #: The run fails when more than this share of rows is rejected.
    max_reject_share: float = Field(0.01, ge=0, le=1)


class TrainParams(Strict):
    #: ``default``: the one LightGBM below (seconds). ``best``: a tuned ensemble chosen by
    #: cross-validation on the train split (see ``best`` and ``best.py``; about two minutes).
    profile: Literal["default", "best"] = "default"
    model: Literal["lightgbm"] = "lightgbm"
    n_estimators: int = Field(400, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(15, ge=2)
    max_depth: int = -1
    min_child_samples: int = Field(20, ge=1)
    colsample_bytree: float = Field(0.7, gt=0, le=1)
    subsample: float = Field(1.0, gt=0, le=1)
    reg_lambda: float = Field(0.0, ge=0)
    cat_smooth: float = Field(10.0, ge=0)
    min_data_per_group: int = Field(50, ge=1)
    seed: int = Field(42, ge=0, le=10**15)
    #: Threads for LightGBM; 0 means all cores. Results do not depend on it.
    n_jobs: int = Field(0, ge=0)
    #: The model is measured on validation after a fit on the train split; then the same recipe is
    #: fitted again on train + validation (the deployed model: more rows, no choice sees validation)
    #: while those hold at most this many rows. Above it (the gain fades, the cost does not) and at 0,
    #: the measured model is the deployed one. The Dask engine never refits.
    refit_max_rows: int = Field(1_000_000, ge=0)


class GateRule(Strict):
    """An absolute bound (``min``/``max``) or a bound relative to the champion on the same rows.

    ``max_drop: 0.005`` means "may not fall more than 0.005 below the champion";
    ``max_rise`` is the same for metrics where lower is better (log-loss, Brier).
    """

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(None, ge=0)
    max_rise: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "GateRule":
        given = [k for k in ("min", "max", "max_drop", "max_rise") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"gate rule on {self.metric!r} needs exactly one of min, max, max_drop or max_rise")
        return self

    @property
    def relative(self) -> bool:
        return self.max_drop is not None or self.max_rise is not None


class BestParams(Strict):
    """The ``best`` profile: candidates tuned and combined by k-fold cross-validation on the train split.

    The validation split (the gate's) and the test split never take part in a choice; the chosen
    ensemble is refitted on train + validation as ``train.refit_max_rows`` says.
    """

    folds: int = Field(5, ge=2, le=20)
    #: Model families tried; each is cross-validated, then combined (see ``ensemble``).
    candidates: list[Literal["lightgbm", "catboost", "xgboost"]] = Field(
        default_factory=lambda: ["lightgbm", "catboost", "xgboost"], min_length=1)
    #: Optuna trials tuning LightGBM (TPE sampler seeded by ``seed``; 0 = LightGBM as in ``train``).
    tuning_trials: int = Field(6, ge=0)
    #: A guard, not a knob: the search is counted (folds, trials, rounds), so the clock never changes
    #: the model; a search that takes longer than this many seconds stops with exit 14 (null: no limit).
    time_budget: float | None = Field(900.0, gt=0)
    #: ``average``: weights >= 0 summing to 1, fitted to the out-of-fold predictions (log-loss);
    #: ``equal``: the plain mean; ``select``: only the best candidate.
    ensemble: Literal["average", "equal", "select"] = "average"
    #: CatBoost / XGBoost rounds (LightGBM's come from tuning or ``train``).
    catboost_iterations: int = Field(600, ge=1)
    xgboost_rounds: int = Field(500, ge=1)
    seed: int = Field(42, ge=0, le=10**15)
    #: Threads; 0 = all cores. Results do not depend on it.
    n_jobs: int = Field(0, ge=0)

    @field_validator("candidates")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("candidates must not repeat")
        return v


def _default_rules() -> list[GateRule]:
    return [
        GateRule(metric="validation_acc", min=0.8),
        GateRule(metric="validation_roc_auc", min=0.9),
        GateRule(metric="validation_roc_auc", max_drop=0.005),
        GateRule(metric="validation_acc", max_drop=0.01),
    ]


class GateParams(Strict):
    rules: list[GateRule] = Field(default_factory=_default_rules)
    #: An empty gate passes every model: that takes saying so (and gate.json records it).
    allow_no_rules: bool = False

    @model_validator(mode="after")
    def _check(self) -> "GateParams":
        if not self.rules and not self.allow_no_rules:
            raise ValueError("rules is empty: every model would pass; set gate.allow_no_rules: true to accept that")
        return self


class FairnessParams(Strict):
    """Per-group metrics: in the report always; their largest gaps also in train_metadata.json
    (``validation_equalized_odds_difference_<column>``...), where gate rules can use them."""

    #: null = the dataset's declared groups (adult: sex, race, age bands).
    groups: dict[str, list[float] | None] | None = None
    #: Smaller groups are listed but left out of the gaps (their rates are mostly noise).
    min_group_size: int = Field(30, ge=1)

    @field_validator("groups")
    @classmethod
    def _norm_groups(cls, v: dict | None) -> dict | None:
        return None if v is None else normalise_keys(v)


class ReportParams(Strict):
    #: Bootstrap resamples behind each 95 % interval (0: no intervals).
    bootstrap_resamples: int = Field(1000, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    #: Permutation importance: shuffles per feature, on a sample of validation rows.
    permutation_repeats: int = Field(3, ge=0)
    permutation_rows: int = Field(500, ge=50)
    #: The ROC, PR and calibration curves are drawn from at most this many rows of their split (a
    #: seeded sample, each class its share); the legends' areas and the confusion matrix use every row.
    figure_rows: int = Field(200_000, ge=1000)


class MonitorParams(Strict):
    """``mlci monitor``: when a batch of records no longer looks like the training data."""

    #: A feature (or the predictions) drifts when its population stability index reaches this
    #: (0.1: the usual "moderate shift") and its two-sample test rejects at ``p_value``.
    psi_threshold: float = Field(0.1, gt=0)
    p_value: float = Field(0.01, gt=0, lt=1)
    #: A metric fails when even the top of its live 95 % interval (or the estimate, without labels)
    #: is more than this below its validation figure.
    max_drop: dict[str, float] = Field(default_factory=lambda: {"acc": 0.02, "roc_auc": 0.02})
    #: Bootstrap resamples behind the live intervals, and the seed of every sample.
    bootstrap_resamples: int = Field(1000, ge=0)
    seed: int = 0

    @field_validator("max_drop")
    @classmethod
    def _known_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        known = {"acc", "roc_auc", "precision", "recall", "f1"}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; known: {', '.join(sorted(known))}")
        if any(not 0 <= x < 1 for x in v.values()):
            raise ValueError("each drop must be in [0, 1)")
        return v


class DaskParams(Strict):
    """``engine: dask``: how mlci uses the cluster (where it is comes from Dask's own configuration:
    ``DASK_SCHEDULER_ADDRESS`` or ``distributed.scheduler-address``; a LocalCluster when unset).
    Operational settings: none of them changes a result, so none is in the lock."""

    #: Bytes of CSV per partition (Parquet: one partition per file).
    blocksize: int = Field(64 << 20, ge=1 << 20)
    #: Seconds to reach the scheduler before failing (exit 13).
    connect_timeout: float = Field(20.0, gt=0)
    #: Seconds any one distributed step (reading, a fit, scoring) may take before it fails (exit 13).
    step_timeout: float = Field(3600.0, gt=0)
    #: A LocalCluster's workers when no scheduler is configured (0: one per core, one thread each).
    local_workers: int = Field(0, ge=0)
    #: A LocalCluster's memory limit per worker ("4GB"; "auto": the machine's memory shared out).
    local_memory_limit: str = "auto"


class TrackingParams(Strict):
    """MLflow: where runs go and which registered model the pipeline promotes.

    The tracking URI itself is not a parameter (it does not change a result):
    it comes from MLFLOW_TRACKING_URI, default ``sqlite:///mlflow.db``.
    """

    #: The MLflow experiment; unset, the dataset's name (one experiment per dataset).
    experiment: str | None = None
    #: The registered model; unset, the dataset's ``model_name`` or else its name, so a user's own
    #: data never registers versions of the bundled data's model.
    model_name: str | None = None
    alias: str = "champion"
    #: Decides which of two passing models is better when promotions race.
    compare_metric: str = "validation_roc_auc"
    greater_is_better: bool = True
    #: Whether a passing model may become the champion at all (``mlci run --no-promote``: never).
    promote: bool = True
    #: Only runs on these branches promote; elsewhere (other branches, pull requests) a passing model
    #: gets ``challenger_alias`` and the champion stays. An empty list: every branch promotes.
    promote_branches: list[str] = Field(default_factory=lambda: ["main", "master"])
    challenger_alias: str = "challenger"

    @field_validator("experiment", "model_name", "alias", "challenger_alias")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        # They go into MLflow's search filters, which quote with ' and ".
        if v is not None and any(c in v for c in "'\"`"):
            raise ValueError("may not contain quotes or backticks")
        return v


class Params(Strict):
    #: A built-in dataset name (``adult``), a path to a dataset YAML file, or an inline definition.
    dataset: str | DatasetDef = "adult"
    split: SplitParams = SplitParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    best: BestParams = BestParams()
    gate: GateParams = GateParams()
    fairness: FairnessParams = FairnessParams()
    report: ReportParams = ReportParams()
    tracking: TrackingParams = TrackingParams()
    monitor: MonitorParams = MonitorParams()
    #: Where the stages run: ``local`` (this process) or ``dask`` (a Dask cluster: README, "At scale").
    engine: Literal["local", "dask"] = "local"
    dask: DaskParams = DaskParams()

    def section(self, name: str) -> Any:
        """A JSON-able view of one section, as recorded in the lock file."""
        return self.model_dump(mode="json")[name]

    def dataset_def(self, base_dir: Path | None = None) -> DatasetDef:
        if isinstance(self.dataset, DatasetDef):
            return self.dataset
        return load_dataset_def(self.dataset, base_dir)

    def groups(self, ds: DatasetDef) -> dict[str, list[float] | None]:
        """The group columns in force: ``fairness.groups``, else the dataset's."""
        if self.fairness.groups is None:
            return dict(ds.groups)
        try:
            check_groups(ds, self.fairness.groups)
        except ValueError as e:
            raise UsageError(f"fairness.groups: {e}") from None
        return dict(self.fairness.groups)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.learning_rate=0.05`` -> (["train", "learning_rate"], 0.05); the value is YAML."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"override {text!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load(path: Path | None, overrides: list[str] = ()) -> Params:
    """Read params.yaml (absent -> defaults), apply ``-S key=value`` overrides, validate."""
    data: dict = {}
    if path is not None and path.exists():
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"{path}: must be a mapping of sections")
        data = loaded or {}
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            elif not isinstance(child, dict):
                raise UsageError(f"override {text!r}: {k} is not a section")
            node = child
        node[keys[-1]] = value
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        where = path if path is not None and path.exists() else "parameters"
        problem = describe_validation_error(e)
        key = problem.split(":", 1)[0]
        # Name where the bad key came from: an override on the command line, or the file.
        if any(o.partition("=")[0].strip() == key or key.startswith(o.partition("=")[0].strip() + ".")
               for o in overrides):
            where = "-S"
        raise UsageError(f"{where}: {problem}{_suggestion(e)}") from None


def _suggestion(e: ValidationError) -> str:
    """`` (did you mean train.learning_rate?)`` for an unknown key close to a known one."""
    import difflib

    err = e.errors()[0]
    if err["type"] != "extra_forbidden" or not all(isinstance(p, str) for p in err["loc"]):
        return ""
    model, *parents, key = (Params, *err["loc"])
    for part in parents:
        field = model.model_fields.get(part)
        model = getattr(field, "annotation", None) if field else None
        if not (isinstance(model, type) and issubclass(model, Strict)):
            return ""
    close = difflib.get_close_matches(key, list(model.model_fields), n=1)
    return f" (did you mean {'.'.join([*parents, close[0]])}?)" if close else ""
