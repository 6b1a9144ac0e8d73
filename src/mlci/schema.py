"""The server's request record, generated from the declared dataset schema.

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

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, create_model

from .params import DatasetDef

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
        fields[col.name] = (_field_type(col, categories.get(col.name), unknown), Field(...))
    by_name = {c.name: c for c in ds.columns}
    for name in ds.drop:
        # A dropped column's declared type still applies (the record is in the data's schema).
        fields[name] = (_field_type(by_name[name], None, "accept"), Field(None, description="Ignored by the model."))
    return create_model(
        "Record",
        __config__=ConfigDict(extra="forbid", frozen=True, title="Record"),
        __doc__=f"One raw record of dataset {ds.name!r}; null means missing.",
        **fields,
    )


def _field_type(col, known: list[str] | None, unknown: str):
    if col.type == "categorical":
        cats = known if known is not None else col.categories
        if unknown == "reject" and cats:
            return Literal[tuple(cats)] | None  # type: ignore[valid-type]
        hint = f"Known categories: {', '.join(cats)}; any other value is treated as missing." if cats else None
        return Annotated[str, Field(max_length=200, description=hint)] | None
    # Strict: "39" or true is a wrong type, not a number (the model would otherwise score a guess).
    base = StrictInt if col.type == "integer" else StrictFloat
    bounds = {k: v for k, v in (("ge", col.min), ("le", col.max)) if v is not None}
    if col.type == "integer":
        bounds = {k: int(v) if float(v).is_integer() else v for k, v in bounds.items()}
    # JSON has no NaN or infinity; a float field must not accept them either.
    extra = {} if col.type == "integer" else {"allow_inf_nan": False}
    return Annotated[base, Field(**bounds, **extra)] | None


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
