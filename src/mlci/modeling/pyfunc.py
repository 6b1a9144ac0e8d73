"""The model as MLflow's clients see it: a pyfunc that answers the positive class's probability and the label.

MLflow's sklearn flavour can only call ``predict`` (labels) or ``predict_proba`` (one column per
class, no label) on the pickle; a ``PythonModel`` answers both, for every MLflow client
(``mlflow.pyfunc.load_model``, ``mlflow models serve`` and ``predict``, Spark UDFs):

    probability  float  the positive class's probability (``positive_label`` in the model's metadata)
    label        str    the positive label at or above the model's decision threshold, else the negative

It reads records as ``mlci predict`` does: either spelling of a column name (``education.num`` or
``education_num``), whitespace trimmed, the dataset's missing-value markers (``?``) and categories
the model never saw scored as missing. The pickle is the very ``model.pkl`` mlci trained, loaded only
when its bytes match the sha256 in ``model.json`` beside it.

This module is shipped inside every logged model (``code/mlci``), so it needs nothing of mlci's
but ``mlci.data.dataset``'s name rule and ``mlci.fileio``'s hash, and the best profile's ``mlci.ensemble`` unpickles from there too.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from mlci.data.dataset import normalise_name
from mlci.fileio import bytes_hash

#: ``artifacts`` keys of the logged model.
MODEL, CARD = "model", "card"
OUTPUT_COLUMNS = ("probability", "label")
_INTEGER = re.compile(r"^[+-]?\d+$")


class MlciModel(mlflow.pyfunc.PythonModel):
    #: The input is checked against the logged signature (named as the training file spelt its
    #: columns), not against type hints: this tells MLflow so (it would warn at every import).
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        card = json.loads(Path(context.artifacts[CARD]).read_text())
        data = Path(context.artifacts[MODEL]).read_bytes()
        actual = bytes_hash(data)
        if actual != card["sha256"]:
            raise ValueError(f"model.pkl: sha256 {actual} does not match model.json's {card['sha256']}; "
                             "refusing to load a model that was changed after training")
        self.model = pickle.loads(data)
        self.card = card
        self.positive, self.negative = card["positive_label"], card["negative_label"]
        self.threshold = float(card["threshold"])
        self.index = [str(c) for c in self.model.classes_].index(self.positive)
        columns = {c["name"]: c for c in card["dataset"]["columns"]}
        self.features = [(f, columns[f]) for f in card["features"]]
        self.missing = list(card["dataset"].get("missing_values", ["?", ""]))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        frame = frame.rename(columns=normalise_name)
        absent = [f for f, _ in self.features if f not in frame.columns]
        if absent:
            raise ValueError(f"the input lacks column(s) {', '.join(absent)}")
        X = pd.DataFrame({f: self._column(frame[f], col) for f, col in self.features}, index=frame.index)
        proba = self.model.predict_proba(X)[:, self.index]
        label = np.where(proba >= self.threshold, self.positive, self.negative).astype(object)
        return pd.DataFrame({"probability": proba, "label": label}, index=frame.index)

    def _column(self, values: pd.Series, col: dict):
        """One column as mlci's loader types it: categories (unknown = missing) or float64 numbers."""
        text = values.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v)
        missing = text.isna() | text.isin(self.missing)
        if col["type"] == "categorical":
            text = text.map(lambda v: v if isinstance(v, str) else str(v)).where(~missing, None)
            categories = col.get("categories") or sorted(set(text.dropna()))
            return pd.Categorical(text.where(text.isin(categories), None), categories=categories)  # unseen: missing
        numbers = pd.to_numeric(text.where(~missing, None), errors="coerce").astype(np.float64)
        bad = numbers.isna() & ~missing
        if bad.any():
            row = bad.to_numpy().nonzero()[0][0]
            raise ValueError(f"column {col.get('label') or col['name']!r}, row {row}: {text.iloc[row]!r} is not a number")
        return numbers.to_numpy()


def signature_types(card: dict) -> list[tuple[str, str]]:
    """(column name as the training file spelt it, MLflow type) for every feature: the types pandas
    reads from such a file, so a plain ``read_csv`` frame passes MLflow's schema check.

    Integers are ``long``, other numbers ``double``, categories ``string`` (``long`` when every
    declared category is a whole number: pandas reads such a column as int64). MLflow's ``any``
    would also take floats in an integer column (a missing value), but its scoring server cannot
    parse CSV input against it, and ``mlflow models serve`` with CSV matters more."""
    columns = {c["name"]: c for c in card["dataset"]["columns"]}
    spelling = card.get("input_names") or {}

    def kind(col: dict) -> str:
        if col["type"] != "categorical":
            return "long" if col["type"] == "integer" else "double"
        cats = col.get("categories")
        return "long" if cats and all(_INTEGER.match(str(c).strip()) for c in cats) else "string"

    return [(spelling.get(f) or columns[f].get("label") or f, kind(columns[f])) for f in card["features"]]
