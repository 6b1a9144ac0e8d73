"""Read a raw CSV in either shape users have, validate it against the dataset definition.

Shapes: the UCI files (no header, ``", "`` separators, ``?`` for missing, labels
with an optional trailing ``.``, an optional ``|``-comment first line, blank
trailing lines) and the Kaggle CSV the tutorial used (dotted header names,
quoted strings). Column names are normalised once, here.

Two kinds of problems:

* **structural** (missing/empty file, header only, missing or extra columns,
  a row with the wrong number of fields, undecodable bytes, a repeated header
  line): :class:`~mlci.errors.DataError` naming file, line and column.
* **row-level** (unknown category, out-of-range or non-numeric number, unknown
  label): the row is set aside with its reason in :attr:`Loaded.rejects`;
  the caller decides whether their share is acceptable.

The fast path parses with pyarrow and validates column-wise; only when
pyarrow rejects the file does a slow line-by-line scan run, to name the exact
line for the error message.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mlci.errors import DataError
from mlci.fileio import bytes_hash
from mlci.data.dataset import Column, DatasetDef, normalise_name

#: The longest line a file may have (a record of a few hundred fields is some kilobytes).
MAX_LINE = 8 << 20
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE))  # the header and diagnostics read lines with csv
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INTEGER = r"^[+-]?\d+(\.0*)?$"


@dataclass
class Loaded:
    frame: pd.DataFrame  # valid rows: features (+ target), typed
    rejects: pd.DataFrame  # line, column, reason, then the raw fields
    rows_read: int
    has_header: bool
    sha256: str
    reject_reasons: dict[str, int] = field(default_factory=dict)
    row_lines: np.ndarray | None = None  # the file line of every row read
    raw: pa.Table | None = None  # every row read, as trimmed strings (for scoring output)
    valid: np.ndarray | None = None  # which rows of ``raw`` are in ``frame``
    #: Values not among a categorical column's declared categories, per column, when they were kept
    #: as missing (``unknown_categories="missing"``) instead of rejecting their row.
    unknown_categories: dict[str, int] = field(default_factory=dict)
    #: {column name: the file's own spelling of it}, for a file with a header (a logged model's
    #: signature names its inputs as the training file did).
    spelling: dict[str, str] = field(default_factory=dict)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejects)


def load_table(path: Path, ds: DatasetDef, *, require_target: bool = True,
               unknown_categories: str = "reject", keep_target: bool = False) -> Loaded:
    """Load and validate ``path``. With ``require_target=False`` (scoring) the label is optional and ignored
    (``keep_target``: kept and validated when the file has it, as monitoring a labelled batch wants).

    ``unknown_categories="missing"`` (scoring): a value outside a column's declared categories is kept
    as missing, as the model treats it, and counted, instead of rejecting the row."""
    path = Path(path)
    return load_bytes(_read_bytes(path), path, ds, require_target=require_target,
                      unknown_categories=unknown_categories, keep_target=keep_target)


def load_bytes(data: bytes, path, ds: DatasetDef, *, require_target: bool = True,
               unknown_categories: str = "reject", keep_target: bool = False) -> Loaded:
    """:func:`load_table` on a file's bytes (or a part of one: the Dask engine's blocks, each with the
    file's header line in front); ``path`` names them in errors."""
    sha = bytes_hash(data)
    data = _decode(path, data, ds.encoding)

    if b"\r" in data and b"\n" not in data:
        data = data.replace(b"\r", b"\n")  # old Mac line endings: CR alone
    start, line0 = _data_start(data)
    # Views, not slices, of the file's bytes from here on: a slice of a large file is a copy of it.
    body = memoryview(data)[start:]
    newlines = _positions(body, 10)  # every line end, found once
    _check_line_lengths(path, len(body), newlines, line0)
    first_end = int(newlines[0]) if len(newlines) else -1
    first = bytes(body if first_end < 0 else body[:first_end]).decode("utf-8").rstrip("\r")
    if not first.strip():
        raise DataError(f"{path}: file is empty (no header and no data rows)")
    fields = _split_line(first, ds.delimiter)
    names, has_header = _columns(path, line0, fields, ds, require_target)

    if has_header:
        body = body[len(body):] if first_end < 0 else body[first_end + 1 :]
        newlines = newlines[1:] - (first_end + 1)
        line0 += 1
    if _blank(body):
        raise DataError(f"{path}: header only, no data rows")

    table = _parse(path, body, line0, names, ds.delimiter)
    lines = _row_lines(body, line0, table.num_rows, newlines)
    ascii_only = data.isascii()
    del body, data, newlines  # the file's bytes: not needed past the parse
    # Fields lose their surrounding blanks (UCI's ", "), one column at a time so that only one
    # column is held twice; pure ASCII (the usual case) trims at twice the speed of UTF-8.
    trim = pc.ascii_trim_whitespace if ascii_only else pc.utf8_trim_whitespace
    columns = table.columns
    del table
    for i, column in enumerate(columns):
        columns[i] = trim(column)
    table = pa.table(columns, names=names)
    del columns
    if has_header:
        _check_repeated_header(path, table, fields, lines)
    # Scoring output keeps the input's own header spelling.
    raw = table.rename_columns(fields) if has_header else table
    spelling = dict(zip(names, fields)) if has_header else {}
    if not require_target and ds.target in names and not keep_target:
        table = table.drop_columns([ds.target])
        names = [n for n in names if n != ds.target]

    unknown: dict[str, int] = {}
    frame, rejects, reasons, valid = _validate(table, names, ds, lines,
                                               unknown if unknown_categories == "missing" else None)
    return Loaded(
        frame=frame,
        rejects=rejects,
        rows_read=table.num_rows,
        has_header=has_header,
        sha256=sha,
        reject_reasons=reasons,
        row_lines=lines,
        raw=raw,
        valid=valid,
        unknown_categories=unknown,
        spelling=spelling,
    )


def load_arrow(table: pa.Table, path, ds: DatasetDef) -> Loaded:
    """The same validation for a table read from a Parquet file (the Dask engine's Parquet input):
    its columns are checked as a header line would be, its values as the CSV's text (a row's
    "line" is its row number in the file, from 1)."""
    fields = list(table.column_names)
    names, _ = _columns(path, 0, fields, ds, True)  # errors say "line 1 (header)": the column names
    filler = pa.scalar(ds.missing_values[0] if ds.missing_values else "", pa.string())
    columns = []
    for column in table.columns:
        text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
        columns.append(pc.utf8_trim_whitespace(pc.fill_null(text, filler)))
    table = pa.table(columns, names=names)
    lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
    frame, rejects, reasons, valid = _validate(table, names, ds, lines)
    return Loaded(frame=frame, rejects=rejects, rows_read=table.num_rows, has_header=True, sha256="",
                  reject_reasons=reasons, row_lines=lines, valid=valid, spelling=dict(zip(names, fields)))


# -- structure ------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if _blank(data):
        raise DataError(f"{path}: file is empty")
    return data


def header_line(sample: bytes, ds: DatasetDef, path) -> bytes | None:
    """The header line of a file that starts with ``sample`` (its first bytes, at least one whole
    line), None for a file without one (UCI's): what each of its parts but the first needs in front."""
    sample = _decode(path, sample, ds.encoding)
    start, line0 = _data_start(sample)
    end = sample.find(b"\n", start)
    first = sample[start:] if end < 0 else sample[start:end]
    text = first.decode("utf-8").rstrip("\r")
    if not text.strip():
        return None
    _, has_header = _columns(path, line0, _split_line(text, ds.delimiter), ds, True)
    return first.rstrip(b"\r") if has_header else None


def _blank(data) -> bool:
    """Whether ``data`` holds only ASCII whitespace (``not data.strip()`` without copying it)."""
    return re.search(rb"\S", data) is None


def _positions(data, byte: int, block: int = 1 << 24) -> np.ndarray:
    """Offsets of every ``byte`` in ``data``, found a block at a time (a whole-file comparison would
    hold a byte-sized mask of the file)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    found = [np.flatnonzero(arr[i:i + block] == byte) + i for i in range(0, len(arr), block)]
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def _decode(path: Path, data: bytes, encoding: str) -> bytes:
    """Return UTF-8 bytes without a BOM; name the line of the first undecodable byte."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if data.isascii():
        return data
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        line_start = data.rfind(b"\n", 0, e.start) + 1
        field_no = data.count(b",", line_start, e.start) + 1
        raise DataError(
            f"{path}, line {line}, field {field_no}: byte 0x{data[e.start]:02x} is not valid {encoding} "
            f"(set dataset.encoding, e.g. latin-1, if the file uses another encoding)"
        ) from None
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r} in dataset.encoding") from None
    return data if encoding.replace("-", "").lower() == "utf8" else text.encode("utf-8")


def _data_start(data: bytes) -> tuple[int, int]:
    """Skip leading blank lines and UCI's ``|``-comment lines; return (byte offset, lines skipped)."""
    pos = line = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        text = data[pos:end].strip()
        if text and not text.startswith(b"|"):
            break
        pos, line = end + 1, line + 1
    return pos, line


def _split_line(line: str, delimiter: str) -> list[str]:
    return [f.strip() for f in next(csv.reader([line], delimiter=delimiter, skipinitialspace=True))]


def _columns(
    path: Path, line0: int, fields: list[str], ds: DatasetDef, require_target: bool
) -> tuple[list[str], bool]:
    declared = ds.column_names
    normalised = [normalise_name(f) for f in fields]
    known = sum(n in declared for n in normalised)
    # A header line: mostly declared names, or some declared names and no number at all (a definition
    # that lists only some of the file's columns must hear which ones are missing or extra).
    wordy = known >= 1 and not any(re.fullmatch(_NUMBER, f.strip().strip('"')) for f in fields)
    if known >= max(1, len(fields) // 2) or wordy:
        where = f"{path}, line {line0 + 1} (header)"
        dupes = sorted({n for n in normalised if normalised.count(n) > 1})
        if dupes:
            raise DataError(f"{where}: duplicate column {', '.join(map(repr, dupes))}")
        required = [n for n in declared if require_target or n != ds.target]
        missing = [n for n in required if n not in normalised]
        if missing:
            raise DataError(f"{where}: missing column {', '.join(map(repr, missing))}")
        extra = [f for f, n in zip(fields, normalised) if n not in declared]
        if extra:
            shown = ", ".join(map(repr, extra[:8])) + (f", ... ({len(extra)} in all)" if len(extra) > 8 else "")
            raise DataError(f"{where}: unexpected column {shown}: the dataset definition does not list "
                            f"{'it' if len(extra) == 1 else 'them'} (add {'it' if len(extra) == 1 else 'them'}, "
                            "to its columns or to its drop list)")
        return normalised, True
    if len(fields) == len(declared):
        return declared, False
    without_target = [n for n in declared if n != ds.target]
    if not require_target and len(fields) == len(without_target):
        return without_target, False
    raise DataError(
        f"{path}, line {line0 + 1}: expected {len(declared)} fields "
        f"({', '.join(declared)}) or a header line, found {len(fields)}"
    )


def _parse(path: Path, body, line0: int, names: list[str], delimiter: str) -> pa.Table:
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(body)),  # the bytes as they are: no copy
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as e:
        raise DataError(_diagnose(path, body, line0, names, delimiter) or f"{path}: cannot parse: {e}") from None


def _diagnose(path: Path, body, line0: int, names: list[str], delimiter: str) -> str | None:
    """The slow path: find the first line whose field count is wrong, for the error message."""
    text = bytes(body).decode("utf-8", errors="replace")
    for offset, line in enumerate(text.split("\n"), start=1):
        if not line.strip("\r"):
            continue
        row = next(csv.reader([line.rstrip("\r")], delimiter=delimiter))
        if len(row) != len(names):
            where = f"{path}, line {line0 + offset}"
            if len(row) < len(names):
                return f"{where}, column {names[len(row)]!r}: expected {len(names)} fields, found {len(row)}"
            return f"{where}: expected {len(names)} fields, found {len(row)} (extra field {row[len(names)]!r})"
    return None


def _row_lines(body, line0: int, rows: int | None = None, newlines: np.ndarray | None = None) -> np.ndarray:
    """File line number (1-based) of the first line of every row of ``body`` (``rows``: how many the
    parser found, when known).

    A newline inside a quoted field does not end a row: a row ends at a newline after an even
    number of quote characters (``""``, the escaped quote, keeps the count even). A stray quote
    inside an unquoted field (``12" pipe``) is text to the parser and would upset that count: then
    the count of rows tells, and each line is a row."""
    arr = np.frombuffer(body, dtype=np.uint8)
    newlines = _positions(body, 10) if newlines is None else newlines
    quotes = _positions(body, 34)  # '"'
    if len(quotes):
        before = np.searchsorted(quotes, newlines)  # quote characters before each newline
        lines = _line_numbers(arr, newlines, newlines[before % 2 == 0], line0)
        if rows is None or len(lines) == rows:
            return lines
    lines = _line_numbers(arr, newlines, newlines, line0)
    if rows is not None and len(lines) != rows:  # neither fits: number the rows as they come
        lines = np.resize(lines, rows) if len(lines) else np.arange(rows) + 1 + line0
    return lines


def _line_numbers(arr: np.ndarray, newlines: np.ndarray, ends: np.ndarray, line0: int) -> np.ndarray:
    if len(arr) and arr[-1] != 10:
        ends = np.append(ends, len(arr))
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts
    # A line holding only "\r" (CRLF file) is as empty as a line holding nothing.
    cr_only = (length == 1) & (arr[np.minimum(starts, len(arr) - 1)] == 13)
    empty = (length == 0) | cr_only
    return np.searchsorted(newlines, starts[~empty]) + 1 + line0


def _check_line_lengths(path: Path, size: int, newlines: np.ndarray, line0: int) -> None:
    """A line longer than :data:`MAX_LINE` is named here (the parser's blocks and Python's csv
    module would otherwise fail on it without saying where). ``newlines``: their offsets in the
    ``size`` bytes."""
    bounds = np.concatenate(([-1], newlines, [size]))
    lengths = np.diff(bounds) - 1
    longest = int(np.argmax(lengths)) if len(lengths) else 0
    if len(lengths) and lengths[longest] > MAX_LINE:
        raise DataError(f"{path}, line {line0 + longest + 1}: {lengths[longest]:,} bytes long, more than the "
                        f"{MAX_LINE // (1 << 20)} MiB a line may hold (is it a CSV file of records?)")


def _check_repeated_header(path: Path, table: pa.Table, header: list[str], lines: np.ndarray) -> None:
    same = None
    for col, name in zip(table.columns[:3], header[:3]):
        eq = pc.equal(col, name)
        same = eq if same is None else pc.and_(same, eq)
    hits = np.flatnonzero(same.to_numpy(zero_copy_only=False))
    if len(hits):
        raise DataError(f"{path}, line {lines[hits[0]]}: the header line is repeated (were files concatenated?)")


# -- row-level validation -------------------------------------------------------------------


def _validate(
    table: pa.Table, names: list[str], ds: DatasetDef, lines: np.ndarray, unknown: dict[str, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int], np.ndarray]:
    """Typed columns and rejected rows. ``unknown``: count unseen categories here instead of rejecting."""
    n = table.num_rows
    missing_set = pa.array(ds.missing_values, pa.string())
    reason = np.full(n, -1, dtype=np.int32)  # index into `reasons`, first problem wins
    bad_value_col = np.full(n, -1, dtype=np.int32)
    reasons: list[str] = []
    columns: dict[str, pd.Series | pd.Categorical] = {}
    keep = [c.name for c in ds.features] + ([ds.target] if ds.target in names else [])
    by_name = {c.name: c for c in ds.columns}

    def flag(mask: np.ndarray, text: str, col_idx: int) -> None:
        fresh = mask & (reason < 0)
        if fresh.any():
            reasons.append(text)
            reason[fresh] = len(reasons) - 1
            bad_value_col[fresh] = col_idx

    def categorical(arr, missing, col, ds, flag):
        return _categorical_column(arr, missing, col, ds, flag, unknown)

    checks = {"label": _label_column, "categorical": categorical}
    for idx, name in enumerate(names):
        col: Column = by_name[name]
        arr = table.column(name)
        missing = pc.is_in(arr, value_set=missing_set)
        values = checks.get(col.type, _number_column)(arr, missing, col, ds, lambda m, text: flag(m, text, idx))
        if name in keep:
            columns[name] = values

    valid = reason < 0
    frame = pd.DataFrame({k: columns.pop(k) for k in keep if k in columns})  # in ``keep``'s order
    if not valid.all():
        frame = frame.loc[valid].reset_index(drop=True)
    bad = np.flatnonzero(~valid)
    rejects = _rejects_frame(table, names, bad, reason, bad_value_col, reasons, lines)
    counts = {}
    if len(bad):
        uniq, cnt = np.unique(reason[bad], return_counts=True)
        counts = {reasons[u]: int(c) for u, c in zip(uniq, cnt)}
    return frame, rejects, counts, valid


def _label_column(arr, missing, col: Column, ds: DatasetDef, flag) -> pd.Categorical:
    canonical = _labels(arr, ds)
    flag(_np(missing), f"missing label in {col.name!r}")
    flag(_np(pc.and_(pc.invert(missing), pc.is_null(canonical))), f"unknown label in {col.name!r}")
    codes = pc.index_in(canonical, value_set=pa.array([ds.negative_label, ds.positive_label]))
    return pd.Categorical.from_codes(_np(pc.fill_null(codes, -1)), categories=[ds.negative_label, ds.positive_label])


def _categorical_column(arr, missing, col: Column, ds: DatasetDef, flag, unknown=None) -> pd.Categorical:
    cats = col.categories
    if cats is None:
        cats = sorted(pc.unique(pc.filter(arr, pc.invert(missing))).to_pylist())
    else:
        unseen = _np(pc.and_(pc.invert(missing), pc.invert(pc.is_in(arr, value_set=pa.array(cats)))))
        if unknown is None:
            flag(unseen, f"unknown category in {col.name!r}")
        elif unseen.any():
            unknown[col.name] = int(unseen.sum())
    codes = pc.index_in(arr, value_set=pa.array(cats, pa.string()))
    return pd.Categorical.from_codes(_np(pc.fill_null(codes, -1)), categories=cats)


def _number_column(arr, missing, col: Column, ds: DatasetDef, flag) -> np.ndarray:
    ok = pc.match_substring_regex(arr, _INTEGER if col.type == "integer" else _NUMBER)
    flag(_np(pc.and_(pc.invert(missing), pc.invert(ok))),
         f"{col.name!r} is not {'an integer' if col.type == 'integer' else 'a number'}")
    values = pc.cast(pc.if_else(ok, arr, pa.scalar("nan")), pa.float64()).to_numpy()
    values = np.where(_np(missing), np.nan, values)
    if col.min is not None:
        flag(values < col.min, f"{col.name!r} below minimum {col.min:g}")
    if col.max is not None:
        flag(values > col.max, f"{col.name!r} above maximum {col.max:g}")
    return values


def _labels(arr: pa.ChunkedArray, ds: DatasetDef) -> pa.ChunkedArray:
    """Map every accepted spelling to its canonical label; anything else becomes null."""
    mapping = ds.labels
    keys = pa.array(list(mapping), pa.string())
    values = pa.array(list(mapping.values()), pa.string())
    return pc.take(values, pc.index_in(arr, value_set=keys))


def _rejects_frame(table, names, bad, reason, bad_value_col, reasons, lines) -> pd.DataFrame:
    raw = table.take(pa.array(bad, pa.int64())).to_pandas() if len(bad) else pd.DataFrame(columns=names)
    head = pd.DataFrame(
        {
            "line": lines[bad] if len(bad) else np.array([], dtype=np.int64),
            "column": [names[i] for i in bad_value_col[bad]],
            "reason": [reasons[i] for i in reason[bad]],
        }
    )
    return pd.concat([head, raw.reset_index(drop=True).astype(object)], axis=1)


def _np(arr) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.to_numpy(zero_copy_only=False)


def describe_rejects(rejects: pd.DataFrame, limit: int = 3) -> str:
    """A one-line summary such as ``line 7: unknown category in 'sex' ('Robot')``."""
    parts = []
    for row in rejects.head(limit).itertuples(index=False):
        value = getattr(row, row.column, None) if re.match(r"^\w+$", row.column) else None
        parts.append(f"line {row.line}: {row.reason}" + (f" ({value!r})" if value is not None else ""))
    more = len(rejects) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
