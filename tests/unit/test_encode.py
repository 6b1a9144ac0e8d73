"""The model's fast encoding path gives what the Pipeline's own encoder gives, float for float.

``estimator.encode`` replaces scikit-learn's OrdinalEncoder.transform (a Python lookup per value)
in fit and predict_proba; the model file must be the one ``Pipeline.fit`` makes, and its
probabilities the ones ``Pipeline.predict_proba`` gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlci.config.params import Params, TrainParams
from mlci.config.settings import BUNDLED_DATA
from mlci.data.load import load_table
from mlci.modeling.artifact import to_bytes
from mlci.modeling.estimator import build, categories_of, encode, encoder, fit, n_categorical, predict_proba


@pytest.fixture(scope="module")
def adult():
    ds = Params().dataset_def()
    frame = load_table(BUNDLED_DATA, ds).frame.iloc[:3000].reset_index(drop=True)
    return ds, frame


def fitted_encoder(ds, frame):
    return encoder(ds, categories_of(frame, ds)).fit(frame[[c.name for c in ds.features]])


def test_encode_equals_the_encoders_transform(adult):
    ds, frame = adult
    enc, x = fitted_encoder(ds, frame), frame[[c.name for c in ds.features]]
    assert np.isnan(enc.transform(x)).any()  # the data has missing values: they are compared too
    np.testing.assert_array_equal(encode(enc, x), enc.transform(x))


def test_unknown_missing_and_other_spellings_of_strings_encode_alike(adult):
    ds, frame = adult
    enc = fitted_encoder(ds, frame)
    x = frame[[c.name for c in ds.features]].head(40).copy()
    x["sex"] = x["sex"].astype(object)
    x.loc[0, "sex"], x.loc[1, "sex"] = "Robot", None  # unknown, missing
    x["workclass"] = x["workclass"].astype("string")
    x.loc[2, "workclass"] = None
    races = sorted(set(x["race"].astype(str)))
    x["race"] = pd.Categorical(x["race"].astype(str), categories=[*races[::-1], "Martian"])  # another order
    got = encode(enc, x)
    np.testing.assert_array_equal(got, enc.transform(x))
    assert np.isnan(got[0, 6]) and np.isnan(got[1, 6]) and np.isnan(got[2, 0])


def test_what_encode_cannot_match_is_left_to_the_encoder(adult):
    ds, frame = adult
    enc = fitted_encoder(ds, frame)
    x = frame[[c.name for c in ds.features]].head(10).copy()
    mixed = x.assign(sex=x["sex"].astype(object))
    mixed.loc[0, "sex"] = 1
    assert encode(enc, mixed) is None
    assert encode(enc, x.assign(age=x["age"].astype(str))) is None  # numbers as text
    assert encode(enc, x.drop(columns="age")) is None


def test_fit_makes_the_model_pipeline_fit_makes(adult):
    ds, frame = adult
    tp = TrainParams(n_estimators=30)
    ours = fit(build(ds, tp, categories_of(frame, ds)), frame, ds)
    theirs = build(ds, tp, categories_of(frame, ds)).fit(
        frame[[c.name for c in ds.features]], np.asarray(frame[ds.target], dtype=object),
        classify__categorical_feature=list(range(n_categorical(ds))))
    assert to_bytes(ours) == to_bytes(theirs)
    x = frame[[c.name for c in ds.features]]
    np.testing.assert_array_equal(predict_proba(ours, x, ds.positive_label),
                                  theirs.predict_proba(x)[:, list(theirs.classes_).index(ds.positive_label)])


def test_a_dataset_without_categoricals_fits_and_encodes(adult):
    """No categorical column: the encoder's empty selection is never fitted (it has no
    ``categories_``); encode and fit must pass over it, as ``ColumnTransformer`` does."""
    ds, frame = adult
    numeric = ds.model_copy(update={
        "columns": [c for c in ds.columns if c.type != "categorical" or c.name == ds.target],
        "groups": {}, "drop": [d for d in ds.drop if ds.columns and d not in
                                 {c.name for c in ds.columns if c.type == "categorical"}]})
    assert n_categorical(numeric) == 0
    x = frame[[c.name for c in numeric.features]]
    enc = fitted_encoder(numeric, frame)
    np.testing.assert_array_equal(encode(enc, x), enc.transform(x))
    tp = TrainParams(n_estimators=10)
    ours = fit(build(numeric, tp, {}), frame, numeric)
    theirs = build(numeric, tp, {}).fit(x, np.asarray(frame[numeric.target], dtype=object))
    assert to_bytes(ours) == to_bytes(theirs)
