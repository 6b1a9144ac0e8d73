"""The loader: both file shapes, name normalisation, validation, and structural errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import adult_data, kaggle_csv

from mlci.errors import DataError
from mlci.data.load import load_table
from mlci.data.dataset import load_dataset_def, normalise_name

ADULT = load_dataset_def("adult")
HEADER = "age,workclass,fnlwgt,education,education.num,marital.status,occupation,relationship,race,sex," \
         "capital.gain,capital.loss,hours.per.week,native.country,income"
ROW = "39,State-gov,77516,Bachelors,13,Never-married,Adm-clerical,Not-in-family,White,Male,2174,0,40,United-States,<=50K"
ROW2 = "50,Self-emp-not-inc,83311,Bachelors,13,Married-civ-spouse,Exec-managerial,Husband,White,Male,0,0,13,United-States,>50K"


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


@pytest.mark.parametrize(
    "raw, expected",
    [("education.num", "education_num"), ("Education-Num", "education_num"), (" hours per week ", "hours_per_week"),
     ('"native.country"', "native_country")],
)
def test_column_names_are_normalised(raw, expected):
    assert normalise_name(raw) == expected


def test_uci_and_kaggle_files_load_to_the_same_rows(tmp_path):
    uci = load_table(adult_data(), ADULT)
    kaggle = load_table(kaggle_csv(tmp_path), ADULT)
    assert not uci.has_header and kaggle.has_header
    assert uci.rows_read == kaggle.rows_read == 32561
    assert uci.rows_rejected == kaggle.rows_rejected == 0
    cols = list(uci.frame.columns)
    a = uci.frame.astype(str).sort_values(cols).reset_index(drop=True)
    b = kaggle.frame[cols].astype(str).sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_missing_values_are_kept_not_dropped():
    loaded = load_table(adult_data(), ADULT)
    assert len(loaded.frame) == 32561  # the tutorial dropped 2,399 of these rows
    missing = loaded.frame.isna().sum()
    assert (missing["workclass"], missing["occupation"], missing["native_country"]) == (1836, 1843, 583)
    assert "fnlwgt" not in loaded.frame.columns  # validated, then dropped as configured


def test_uci_test_file_quirks(tmp_path):
    """UCI's adult.test: a |-comment first line, labels with a trailing dot, ", " separators, blank tail."""
    text = "|1x3 Cross validator\n" + ROW.replace(",", ", ") + ".\n" + ROW2.replace(",", ", ") + ".\n\n\n"
    loaded = load_table(write(tmp_path, text), ADULT)
    assert list(loaded.frame["income"]) == ["<=50K", ">50K"]
    assert list(loaded.row_lines) == [2, 3]
    assert loaded.frame.loc[0, "workclass"] == "State-gov"


@pytest.mark.parametrize(
    "text",
    [
        HEADER + "\r\n" + ROW + "\r\n" + ROW2 + "\r\n",  # CRLF
        "\ufeff" + HEADER + "\n" + ROW + "\n" + ROW2 + "\n",  # UTF-8 BOM
        HEADER + "\n" + ROW + "\n" + ROW2 + "\n\n\n\n",  # trailing blank lines
        HEADER + "\n" + ROW + "\n" + ROW2,  # no final newline
    ],
    ids=["crlf", "bom", "trailing-blank-lines", "no-final-newline"],
)
def test_harmless_variations_load_the_same(tmp_path, text):
    loaded = load_table(write(tmp_path, text), ADULT)
    assert loaded.rows_read == 2 and loaded.rows_rejected == 0
    assert list(loaded.frame["age"]) == [39.0, 50.0]
    assert list(loaded.frame["income"]) == ["<=50K", ">50K"]


def test_latin1_is_accepted_when_declared(tmp_path):
    ds = ADULT.model_copy(update={"encoding": "latin-1"})
    text = (HEADER + "\n" + ROW.replace("Adm-clerical", "Adm-cl\xe9rical") + "\n" + ROW2 + "\n").encode("latin-1")
    loaded = load_table(write(tmp_path, text), ds)
    assert loaded.rows_rejected == 1 and "unknown category in 'occupation'" in loaded.rejects["reason"][0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "file is empty"),
        ("\n\n", "file is empty"),
        (HEADER + "\n", "header only, no data rows"),
        (HEADER.replace("age,", "") + "\n" + ROW.split(",", 1)[1] + "\n", "line 1 (header): missing column 'age'"),
        (HEADER + ",extra\n" + ROW + ",1\n", "line 1 (header): unexpected column 'extra'"),
        (HEADER + "\n" + ROW + "\n" + ROW.rsplit(",", 1)[0] + "\n",
         "line 3, column 'income': expected 15 fields, found 14"),
        (HEADER + "\n" + ROW + ",oops\n", "line 2: expected 15 fields, found 16 (extra field 'oops')"),
        (HEADER + "\n" + ROW + "\n" + HEADER + "\n" + ROW2 + "\n", "line 3: the header line is repeated"),
        ((HEADER + "\n" + ROW.replace("Adm-clerical", "Adm-cl\xe9rical") + "\n").encode("latin-1"),
         "line 2, field 7: byte 0xe9 is not valid utf-8"),
        ("1,2,3\n", "line 1: expected 15 fields (age, workclass"),
    ],
    ids=["empty", "blank-lines-only", "header-only", "missing-column", "extra-column", "short-row", "long-row",
         "duplicated-header", "latin1-bytes", "unknown-shape"],
)
def test_structural_errors_name_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_table(path, ADULT)
    assert str(path) in err.value.message
    assert message in err.value.message
    assert "\n" not in err.value.message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        load_table(tmp_path / "nope.csv", ADULT)


def test_row_level_problems_go_to_rejects_with_line_and_reason(tmp_path):
    rows = [
        ROW,
        ROW.replace("39,", "abc,", 1),  # non-numeric age
        ROW.replace("39,", "150,", 1),  # out of range
        ROW.replace("<=50K", "maybe"),  # unknown label
        ROW.replace("Male", "Robot"),  # unknown category
        ROW.replace("39,", "39.5,", 1),  # not an integer
        ROW2,
    ]
    loaded = load_table(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"), ADULT)
    assert loaded.rows_read == 7 and len(loaded.frame) == 2
    rj = loaded.rejects
    assert list(rj["line"]) == [3, 4, 5, 6, 7]
    assert list(rj["reason"]) == [
        "'age' is not an integer", "'age' above maximum 120", "unknown label in 'income'",
        "unknown category in 'sex'", "'age' is not an integer",
    ]
    assert list(rj["column"]) == ["age", "age", "income", "sex", "age"]
    assert rj.loc[0, "age"] == "abc"  # the raw value is kept for the user to fix
    assert sum(loaded.reject_reasons.values()) == 5


def test_scoring_ignores_the_label_and_accepts_files_without_it(tmp_path):
    no_label = HEADER.rsplit(",", 1)[0] + "\n" + ROW.rsplit(",", 1)[0] + "\n"
    loaded = load_table(write(tmp_path, no_label), ADULT, require_target=False)
    assert "income" not in loaded.frame.columns and loaded.rows_rejected == 0
    with_bad_label = HEADER + "\n" + ROW.replace("<=50K", "whatever") + "\n"
    loaded = load_table(write(tmp_path, with_bad_label, "b.csv"), ADULT, require_target=False)
    assert loaded.rows_rejected == 0
    headerless = ROW.rsplit(",", 1)[0].replace(",", ", ") + "\n"
    loaded = load_table(write(tmp_path, headerless, "c.csv"), ADULT, require_target=False)
    assert loaded.frame.loc[0, "age"] == 39.0


def test_interior_blank_lines_keep_line_numbers_right(tmp_path):
    text = HEADER + "\n" + ROW + "\n\n" + ROW.replace("Male", "Robot") + "\n"
    loaded = load_table(write(tmp_path, text), ADULT)
    assert list(loaded.rejects["line"]) == [4]
    assert np.array_equal(loaded.row_lines, [2, 4])


def test_a_stray_quote_inside_a_field_keeps_rows_and_their_lines(tmp_path):
    """`12" pipe` is text to the parser (a quote opens a field only at its start): the rows after it
    keep their own line numbers (the quote-parity count would have swallowed them)."""
    rows = [ROW, ROW.replace("Adm-clerical", 'Adm-12" clerical'), ROW2, ROW.replace("Male", "Robot"), ROW2]
    loaded = load_table(write(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n"), ADULT)
    assert loaded.rows_read == 5
    assert list(loaded.rejects["line"]) == [3, 5]
    assert list(loaded.rejects["column"]) == ["occupation", "sex"]


def test_init_ranges_hold_every_value_seen(tmp_path):
    from mlci.data.infer import infer_dataset

    csv = tmp_path / "places.csv"
    csv.write_text("lat,price,y\n" + "\n".join(f"{40.712 + i * 0.0001:.4f},{10234.5 + i * 0.1:.1f},{i % 2}"
                                                 for i in range(70)) + "\n")
    cols = {c["name"]: c for c in infer_dataset(csv, "y")["columns"]}
    assert cols["lat"]["min"] <= 40.712 and cols["lat"]["max"] >= 40.7189
    assert cols["price"]["min"] <= 10234.5 and cols["price"]["max"] >= 10241.4
