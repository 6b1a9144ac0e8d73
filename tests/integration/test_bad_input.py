"""The bad-input table, through the CLI: exact exit code, one-line message, nothing written."""

from __future__ import annotations

import pytest
from conftest import adult_data, cli, outputs, run_mlci
from test_load import HEADER, ROW, ROW2

from mlci import errors

# 120 valid, distinct rows, enough to split (identical rows would all land in one split: they go by content).
GOOD = [r for i in range(60) for r in (ROW.replace(",40,United-States", f",{20 + i},United-States"),
                                       ROW2.replace(",13,United-States", f",{10 + i},United-States"))]


def body(rows):
    return HEADER + "\n" + "\n".join(rows) + "\n"


CASES = [
    # (id, file content or None for "missing", exit code, message fragment)
    ("missing-file", None, errors.DATA, "file not found"),
    ("empty-file", "", errors.DATA, "file is empty"),
    ("header-only", HEADER + "\n", errors.DATA, "header only, no data rows"),
    ("missing-column", HEADER.replace(",race", "") + "\n" + ROW.replace(",White", "") + "\n",
     errors.DATA, "missing column 'race'"),
    ("extra-column", HEADER + ",bonus\n" + ROW + ",1\n", errors.DATA, "unexpected column 'bonus'"),
    ("short-row", body(GOOD[:5] + [ROW.rsplit(",", 2)[0]] + GOOD[5:]), errors.DATA,
     "line 7, column 'native_country': expected 15 fields, found 13"),
    ("non-numeric-age", body([ROW.replace("39,", "x,", 1)] * 30 + GOOD), errors.REJECTS,
     "30 of 150 rows rejected (20.0% > preprocess.max_reject_share 1.0%): line 2: 'age' is not an integer ('x')"),
    ("unknown-label", body([ROW.replace("<=50K", "rich")] * 30 + GOOD), errors.REJECTS,
     "line 2: unknown label in 'income' ('rich')"),
    ("unknown-category", body(GOOD + [ROW.replace("State-gov", "Moon-gov")] * 2), errors.REJECTS,
     "line 122: unknown category in 'workclass' ('Moon-gov')"),
    ("latin1-bytes", (body(GOOD).replace("Bachelors", "Bachel\xf6rs", 1)).encode("latin-1"), errors.DATA,
     "line 2, field 4: byte 0xf6 is not valid utf-8"),
    ("duplicated-header", body(GOOD[:50] + [HEADER] + GOOD[50:]), errors.DATA,
     "line 52: the header line is repeated"),
    ("all-rejected", body([ROW.replace("Male", "?x")] * 40), errors.REJECTS, "40 of 40 rows rejected (100.0%"),
    ("50-mb-field", body(GOOD[:3] + [ROW.replace("State-gov", "x" * 50_000_000)] + GOOD[3:]), errors.DATA,
     "line 5: 50,000,"),
]
HARMLESS = [
    ("crlf", body(GOOD).replace("\n", "\r\n")),
    ("cr-only", body(GOOD).replace("\n", "\r")),  # old Mac line endings
    ("utf8-bom", "\ufeff" + body(GOOD)),
    ("trailing-blank-lines", body(GOOD) + "\n\n\n"),
]


@pytest.mark.parametrize("case_id, content, code, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly_and_writes_nothing(workspace, case_id, content, code, message):
    raw = workspace / "data" / "raw" / "bad.csv"
    if content is not None:
        raw.write_bytes(content.encode() if isinstance(content, str) else content)
    result = cli("preprocess", env={"RAW_DATA_FILE": "bad.csv"})
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(f"error: {raw.relative_to(workspace)}")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert outputs(workspace) == []


@pytest.mark.parametrize("case_id, content", HARMLESS, ids=[c[0] for c in HARMLESS])
def test_harmless_variations_preprocess_fine(workspace, case_id, content):
    (workspace / "data" / "raw" / "ok.csv").write_text(content, newline="")
    result = cli("preprocess", env={"RAW_DATA_FILE": "ok.csv"})
    assert result.exit_code == 0, result.output
    assert '"rows_valid": 120' in result.stdout


def test_rejects_under_the_limit_are_kept_aside_and_counted(workspace):
    rows = GOOD * 2 + [ROW.replace("39,", "200,", 1)]  # 1 of 241 rows: 0.4 %
    (workspace / "data" / "raw" / "some.csv").write_text(body(rows))
    result = cli("preprocess", env={"RAW_DATA_FILE": "some.csv"})
    assert result.exit_code == 0, result.output
    rejects = (workspace / "data" / "processed" / "rejects.csv").read_text().splitlines()
    assert rejects[0].startswith("line,column,reason,age,")
    assert rejects[1].startswith("242,age,'age' above maximum 120,200,")
    import json

    meta = json.loads((workspace / "results" / "preprocess_metadata.json").read_text())
    assert meta["rows_rejected"] == 1 and meta["reject_reasons"] == {"'age' above maximum 120": 1}


def test_the_limit_is_a_parameter(workspace):
    (workspace / "data" / "raw" / "bad.csv").write_text(body([ROW.replace("Male", "Robot")] * 30 + GOOD))
    result = cli("preprocess", "-S", "preprocess.max_reject_share=0.5", env={"RAW_DATA_FILE": "bad.csv"})
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["-S", "train.learnin_rate=0.1"], "train.learnin_rate: unknown key"),
        (["-S", "train.n_estimators=many"], "train.n_estimators: Input should be a valid integer"),
        (["-S", "split.test=2"], "split.test: Input should be less than 1"),
        (["-S", "nonsense"], "override 'nonsense' must look like section.key=value"),
        (["-S", "dataset=nowhere.yaml"], "dataset 'nowhere.yaml' is neither a built-in dataset"),
    ],
)
def test_bad_parameters_are_usage_errors(workspace, args, message):
    result = cli("preprocess", *args)
    assert result.exit_code == errors.USAGE
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert outputs(workspace) == []


def test_bad_params_file(workspace):
    (workspace / "params.yaml").write_text("train:\n  n_estimators: 10\n  colour: blue\n")
    result = cli("run")
    assert result.exit_code == errors.USAGE
    assert "params.yaml: train.colour: unknown key" in result.stderr
    (workspace / "params.yaml").write_text("train: [unclosed\n")
    result = cli("run")
    assert result.exit_code == errors.USAGE and "invalid YAML" in result.stderr


def test_a_real_process_prints_no_traceback(workspace):
    """Through a real interpreter: the documented code and a single line on stderr."""
    (workspace / "data" / "raw" / "empty.csv").write_text("")
    proc = run_mlci("run", cwd=workspace, env={"RAW_DATA_FILE": "empty.csv"})
    assert proc.returncode == errors.DATA
    assert proc.stderr.strip().splitlines()[-1] == "error: data/raw/empty.csv: file is empty"
    assert "Traceback" not in proc.stderr
    assert outputs(workspace) == []
    assert adult_data().exists()


def test_rejects_name_the_first_line_of_rows_with_quoted_newlines(workspace):
    """Quoted fields holding commas and newlines: every row after them keeps its own line number."""
    quoted = [ROW.replace("State-gov", '"Sta\nte, gov"'), ROW.replace("Bachelors", '"Bach\nelors"'),
              ROW.replace("Adm-clerical", '"Adm,\ncler\nical"')]
    rows = GOOD[:3] + [quoted[0]] + GOOD[3:6] + [quoted[1]] + GOOD[6:20] + [quoted[2]] + GOOD[20:]
    (workspace / "data" / "raw" / "bad.csv").write_text(body(rows))
    result = cli("preprocess", "-S", "preprocess.max_reject_share=0.5", env={"RAW_DATA_FILE": "bad.csv"})
    assert result.exit_code == 0, result.output
    import pandas as pd

    rejects = pd.read_csv(workspace / "data" / "processed" / "rejects.csv")
    # Line 1 is the header; the rows start on lines 5, 10 (after one extra line) and 26 (after two).
    assert rejects["line"].tolist() == [5, 10, 26]
    assert rejects["column"].tolist() == ["workclass", "education", "occupation"]
