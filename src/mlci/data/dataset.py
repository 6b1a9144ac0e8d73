"""The dataset contract: what a binary-classification CSV looks like, enough to validate and train on it.

A definition is YAML (``datasets/adult.yaml`` is the bundled one, or a user's file, or inline in
``params.yaml``); column names are normalised (``education.num`` -> ``education_num``) so either
file shape of the same data maps to the same columns.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlci.errors import UsageError

_NAME_RE = re.compile(r"[^0-9a-z]+")


def normalise_name(name: str) -> str:
    """``education.num``, ``Education-Num`` and ``education num`` all become ``education_num``."""
    return _NAME_RE.sub("_", name.strip().strip('"').lower()).strip("_")


def normalise_keys(mapping: dict) -> dict:
    return {normalise_name(k): v for k, v in mapping.items()}


class Strict(BaseModel):
    # allow_inf_nan: `-S train.learning_rate=.inf` is YAML for infinity; no parameter means that.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Column(Strict):
    name: str
    type: Literal["categorical", "numeric", "integer", "label"]
    #: Allowed values of a categorical column; None accepts any value.
    categories: list[str] | None = None
    min: float | None = None
    max: float | None = None
    #: The name as the definition spells it (``mean radius``), when that is not already the normalised
    #: ``name``: the server's schema shows it (either spelling is accepted).
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _keep_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str) and data.get("label") is None:
            if normalise_name(data["name"]) != data["name"]:
                data = {**data, "label": data["name"].strip()}
        return data

    @field_validator("name")
    @classmethod
    def _normalise(cls, v: str) -> str:
        return normalise_name(v)


class DatasetDef(Strict):
    """What a binary-classification CSV looks like: enough to validate it and train on it."""

    name: str
    #: Every column in file order (the order matters only for files without a header).
    columns: list[Column]
    target: str
    positive_label: str
    negative_label: str
    #: Other spellings of the labels, e.g. UCI's test file writes ``>50K.``.
    label_aliases: dict[str, str] = Field(default_factory=dict)
    #: Columns that are validated but not used as features.
    drop: list[str] = Field(default_factory=list)
    missing_values: list[str] = Field(default_factory=lambda: ["?", ""])
    encoding: str = "utf-8"
    delimiter: str = ","
    #: The registered model's name when ``tracking.model_name`` does not say (default: ``name``).
    model_name: str | None = None
    #: Columns to report per-group metrics for (``fairness.groups`` overrides it); a numeric
    #: column is cut into bands at the given edges, a categorical one takes ``null``.
    groups: dict[str, list[float] | None] = Field(default_factory=dict)

    @field_validator("groups")
    @classmethod
    def _norm_groups(cls, v: dict) -> dict:
        return normalise_keys(v)

    @field_validator("target")
    @classmethod
    def _norm_target(cls, v: str) -> str:
        return normalise_name(v)

    @field_validator("positive_label", "negative_label", mode="before")
    @classmethod
    def _label_as_text(cls, v: Any) -> Any:
        """Labels as they appear in the data: `positive_label: 1` is the text "1" (YAML reads a number)."""
        if isinstance(v, bool):
            return str(v).lower()
        return str(v) if isinstance(v, (int, float)) else v

    @field_validator("drop")
    @classmethod
    def _norm_drop(cls, v: list[str]) -> list[str]:
        return [normalise_name(x) for x in v]

    @model_validator(mode="after")
    def _check(self) -> "DatasetDef":
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names: {', '.join(dupes)}")
        if self.target not in names:
            raise ValueError(f"target {self.target!r} is not among the columns")
        unknown = [d for d in self.drop if d not in names]
        if unknown:
            raise ValueError(f"drop names unknown columns: {', '.join(unknown)}")
        if self.positive_label == self.negative_label:
            raise ValueError("positive_label and negative_label must differ")
        if len(self.delimiter) != 1:
            raise ValueError("delimiter must be one character")
        if not self.features:
            raise ValueError("no feature columns left")
        check_groups(self, self.groups)
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def features(self) -> list[Column]:
        return [c for c in self.columns if c.name != self.target and c.name not in self.drop]

    @property
    def labels(self) -> dict[str, str]:
        """Every accepted spelling of a label -> its canonical value."""
        out = {self.negative_label: self.negative_label, self.positive_label: self.positive_label}
        out.update(self.label_aliases)
        return out


def check_groups(ds: DatasetDef, groups: dict[str, list[float] | None]) -> None:
    """Group columns must exist; band edges only for numeric columns, strictly increasing."""
    types = {c.name: c.type for c in ds.columns}
    for name, edges in groups.items():
        if name not in types or name == ds.target:
            raise ValueError(f"group column {name!r} is not a feature column of dataset {ds.name!r}")
        if types[name] in ("numeric", "integer"):
            if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
                raise ValueError(f"group column {name!r} is numeric: give strictly increasing band edges")
        elif edges is not None:
            raise ValueError(f"group column {name!r} is categorical: give null, not band edges")


BUILTIN_DATASETS = ("adult",)


def dataset_path(ref: str, base_dir: Path | None = None) -> Path:
    """Where the definition named by ``dataset: <ref>`` lives (relative paths: next to params.yaml)."""
    if ref in BUILTIN_DATASETS:
        return Path(__file__).with_name("datasets") / f"{ref}.yaml"
    path = Path(ref)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise UsageError(f"dataset {ref!r} is neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}) nor a file")
    return path


def load_dataset_def(ref: str, base_dir: Path | None = None) -> DatasetDef:
    path = dataset_path(ref, base_dir)
    data = read_yaml(path)
    try:
        return DatasetDef.model_validate(data)
    except ValidationError as e:
        raise UsageError(f"{path}: {describe_validation_error(e)}") from None


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read: {e}") from None
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UsageError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None


def describe_validation_error(e: ValidationError) -> str:
    errs = e.errors()
    # For `dataset: str | DatasetDef` pydantic reports both branches; a mapping means the definition.
    pruned = [x for x in errs if not (x["type"] == "string_type" and x["loc"][-1:] == ("str",))] or errs
    err = pruned[0]
    loc = ".".join(
        str(p) for p in err["loc"] if not str(p).startswith("function-after") and p not in ("str", "DatasetDef")
    )
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {len(pruned) - 1} more problems)" if len(pruned) > 1 else ""
    return f"{loc}: {msg}{extra}" if loc else f"{msg}{extra}"

