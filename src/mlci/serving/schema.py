"""The server's request and answer bodies; the request record generated from the declared dataset schema.

One pydantic model per served model: field names are the data's own
(normalised) column names; categorical fields are enums of the categories the
model was fitted with (or free strings, when unknown categories are accepted:
the model encodes them as missing); numbers carry the declared ranges. So the
OpenAPI document shows what a valid record is, and a wrong type, a missing
field or an out-of-range value is a 422 naming the field.

``null`` is allowed for every feature: the data has missing values (``?``)
and the model handles them, exactly as in training.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, create_model, model_validator

from mlci.data.dataset import DatasetDef, normalise_name

UNKNOWN_CATEGORIES = ("reject", "accept")


def schema_key(ds: DatasetDef, categories: dict[str, list[str]]) -> tuple:
    """What the request model depends on: two models with the same key take the same records."""
    cols = tuple((c.name, c.type, c.min, c.max, tuple(categories.get(c.name, ()))) for c in ds.features)
    return cols, tuple(ds.drop)


def record_model(ds: DatasetDef, categories: dict[str, list[str]], unknown: str = "reject") -> type[BaseModel]:
    """The pydantic model of one raw record.

    ``categories``: for each categorical feature, the categories the fitted encoder knows.
    Dropped columns (validated but not used, e.g. adult's ``fnlwgt``) may be sent and are ignored;
    any other extra field is an error, so a misspelt field name is not silently scored as missing.
    """
    if unknown not in UNKNOWN_CATEGORIES:
        raise ValueError(f"unknown categories must be one of {UNKNOWN_CATEGORIES}, not {unknown!r}")
    fields: dict[str, Any] = {}
    for col in ds.features:
        # The schema shows the data's own spelling when it differs (either is accepted).
        alias = {"alias": col.label} if col.label else {}
        fields[col.name] = (_field_type(col, categories.get(col.name), unknown), Field(..., **alias))
    by_name = {c.name: c for c in ds.columns}
    for name in ds.drop:
        # A dropped column's declared type still applies (the record is in the data's schema).
        fields[name] = (_field_type(by_name[name], None, "accept"), Field(None, description="Ignored by the model."))
    return create_model(
        "Record",
        __base__=_RecordBase,
        __doc__=f"One raw record of dataset {ds.name!r}; null means missing. Field names may also be spelt as in "
                "the data's header (`education.num`, `mean radius`): they are normalised as the loader does.",
        **fields,
    )


class _RecordBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, title="Record", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _data_names(cls, data: Any) -> Any:
        """Accept the data's own spellings of the field names (``education.num``), as the loader does."""
        if not isinstance(data, dict) or all(k in cls.model_fields for k in data):
            return data  # the normalised names (the common case): nothing to do
        out: dict = {}
        for key, value in data.items():
            name = normalise_name(key) if isinstance(key, str) else key
            if name in out:
                raise ValueError(f"field {key!r} is given twice (as {name!r})")
            out[name] = value
        return out


def _field_type(col, known: list[str] | None, unknown: str):
    if col.type == "categorical":
        cats = _enum(col, known, unknown)
        if cats:
            return Literal[tuple(cats)] | None  # type: ignore[valid-type]
        cats = known if known is not None else col.categories
        hint = f"Known categories: {', '.join(cats)}; any other value is treated as missing." if cats else None
        return Annotated[str, Field(max_length=MAX_STRING, description=hint)] | None
    # Strict: "39" or true is a wrong type, not a number (the model would otherwise score a guess).
    base = StrictInt if col.type == "integer" else StrictFloat
    bounds = {k: v for k, v in zip(("ge", "le"), _bounds(col)) if v is not None}
    # JSON has no NaN or infinity; a float field must not accept them either.
    extra = {} if col.type == "integer" else {"allow_inf_nan": False}
    return Annotated[base, Field(**bounds, **extra)] | None


MAX_STRING = 200  # a free-string category's longest value (when unknown categories are accepted)


def _enum(col, known: list[str] | None, unknown: str) -> list[str] | None:
    """A categorical field's allowed values; None when any string is (unknown categories accepted)."""
    cats = known if known is not None else col.categories
    return list(cats) if unknown == "reject" and cats else None


def _bounds(col) -> tuple:
    """(min, max) of a number field, None where open; an integer field's integral bounds as ints."""
    if col.type != "integer":
        return col.min, col.max
    return tuple(v if v is None or not float(v).is_integer() else int(v) for v in (col.min, col.max))


def request_decoder(ds: DatasetDef, categories: dict[str, list[str]], unknown: str = "reject",
                    max_batch: int = 10_000):
    """A msgspec decoder of a request body -- one record or 1 to ``max_batch`` of them -- with
    ``record_model``'s rules, for the request path's common case: a valid body.

    msgspec decodes and validates JSON into these in one pass in C: a 10,000-record batch in about
    a tenth of the time orjson takes to parse it and pydantic to validate it (measured), and the
    scorer reads its columns off the structs several times faster than off dicts. It is only ever
    *stricter* than the pydantic model: whatever it refuses (and everything, when it cannot express
    the schema: then this returns None) is validated again by the pydantic model,
    which accepts it after all or makes the 422 -- so the answers are the pydantic model's.
    ``tests/test_serve.py`` checks both on the same good and bad bodies. The rules, shared:
    strict types (no "39" or true for a number, no 39.0 for an integer), the declared ranges,
    categories as enums (or strings up to ``MAX_STRING``), every feature required and nullable,
    dropped columns optional, no other field.
    """
    import sys

    import msgspec

    def field(col, known, unknown_mode):
        if col.type == "categorical":
            cats = _enum(col, known, unknown_mode)
            base = Literal[tuple(cats)] if cats else Annotated[str, msgspec.Meta(max_length=MAX_STRING)]
        else:
            lo, hi = _bounds(col)
            # Floats: finite, as allow_inf_nan=False (JSON has no NaN). Integers: at most 2**53 in size,
            # where orjson (the pydantic path's parser) makes every integer an int, not a float.
            big = 2**53 if col.type == "integer" else sys.float_info.max
            lo, hi = max(-big, -big if lo is None else lo), min(big, big if hi is None else hi)
            number = int if col.type == "integer" else float
            base = Annotated[number, msgspec.Meta(ge=lo, le=hi)]
        return base | None

    by_name = {c.name: c for c in ds.columns}
    try:
        fields = [(c.name, field(c, categories.get(c.name), unknown)) for c in ds.features]
        fields += [(name, field(by_name[name], None, "accept"), None) for name in ds.drop]
        # gc=False: a record holds only str, int, float and None, so it can be in no reference cycle.
        record = msgspec.defstruct("Record", fields, forbid_unknown_fields=True, gc=False)
        batch = Annotated[list[record], msgspec.Meta(min_length=1, max_length=max_batch)]
        return msgspec.json.Decoder(record | batch)  # type: ignore[operator]
    except (TypeError, ValueError):  # something a Struct cannot express: every body goes to pydantic
        return None


class Prediction(BaseModel):
    probability: float = Field(..., ge=0, le=1, description="Probability of the positive class.")
    prediction: str = Field(..., description="The predicted class label.")


def response_model(positive: str, negative: str) -> type[BaseModel]:
    pred = create_model(
        "Prediction",
        __base__=Prediction,
        prediction=(Literal[negative, positive], Field(..., description="The predicted class label.")),
    )
    return create_model(
        "PredictResponse",
        model=(str, Field(..., description="Registered model name (or the model directory).")),
        version=(str, Field(..., description="Model version (or the model's sha256 for a directory).")),
        predictions=(list[pred], Field(..., description="One per record, in request order.")),
    )


# -- the other answers' bodies (the same for every model) -----------------------------------------


class Detail(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    ready: bool
    version: str | None = None


class LoadError(BaseModel):
    version: str | None
    error: str
    at: str


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str | None
    source: Literal["registry", "directory"]
    metrics: dict[str, float]
    trained_at: str | None
    git_commit: str | None
    data_sha256: str | None
    model_sha256: str | None
    run_id: str | None
    loaded_at: str
    last_check: str | None = Field(None, description="When the source was last looked at.")
    last_error: LoadError | None = Field(None, description="Why the latest new model was not installed.")


class ReloadResult(BaseModel):
    status: Literal["swapped", "unchanged", "kept"]
    version: str | None
    previous: str | None = None
    error: str | None = None
