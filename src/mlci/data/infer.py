"""A dataset definition inferred from a CSV file: what ``mlci init`` writes, for a person to read and amend.

Every column is read as text, then typed by what all its values are: whole numbers (``integer``),
other numbers (``numeric``), else ``categorical``. Numbers get a range with headroom (half the
observed span on each side, never below 0 when no value is), so new data a little outside what was
seen is not rejected; categories are listed when there are at most :data:`MAX_CATEGORIES` (else any
value is accepted). A text column whose values are nearly all different looks like an identifier and
is dropped (validated, not used as a feature). The values that mark a missing entry are those of
:data:`MISSING_MARKERS` the file uses, plus the empty field.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from mlci.data.dataset import normalise_name
from mlci.errors import DataError, UsageError

MISSING_MARKERS = ("", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "-")
MAX_CATEGORIES = 100
#: Column names (normalised) that read as people's groups: the report's per-group metrics use them.
GROUP_COLUMNS = ("sex", "gender", "race", "ethnicity")
AGE_BANDS = [25, 35, 45, 55, 65]
_INTEGER = re.compile(r"^[+-]?\d+$")
#: Label pairs whose positive member is plain (else the rarer label is the positive one).
_POSITIVE = {frozenset({"0", "1"}): "1", frozenset({"no", "yes"}): "yes", frozenset({"false", "true"}): "true",
             frozenset({"n", "y"}): "y", frozenset({"negative", "positive"}): "positive"}


def infer_dataset(path: Path, target: str, name: str | None = None, positive: str | None = None) -> dict:
    """The definition of ``path`` (a CSV with a header line) with ``target`` as its label column."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot be read as CSV ({str(e).splitlines()[0][:200]})") from None
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    header = [str(c).strip() for c in frame.columns]
    if all(_number(h) for h in header):
        raise DataError(f"{path}, line 1: looks like data, not a header line; mlci init needs the columns named")
    frame.columns = header
    by_norm = {normalise_name(h): h for h in header}
    if normalise_name(target) not in by_norm:
        raise UsageError(f"--target {target!r}: {path} has no such column (it has: {', '.join(header)})")
    target = by_norm[normalise_name(target)]

    text = {h: frame[h].str.strip() for h in header}
    markers = sorted({v for h in header for v in set(text[h].unique()) & set(MISSING_MARKERS)} | {""})
    columns, drop, groups = [], [], {}
    for h in header:
        present = text[h][~text[h].isin(markers)]
        if h == target:
            columns.append({"name": h, "type": "label"})
            continue
        col = _column(h, present, len(frame))
        columns.append(col)
        if col.pop("_drop", False):
            drop.append(h)
        elif normalise_name(h) in GROUP_COLUMNS and col["type"] == "categorical":
            groups[h] = None
        elif normalise_name(h) == "age" and col["type"] != "categorical":
            groups[h] = AGE_BANDS
    pos, neg = _labels(path, target, text[target][~text[target].isin(markers)], positive)
    return {
        "name": normalise_name(name or Path(path).stem) or "data",  # also the MLflow experiment and model
        "target": target,
        "positive_label": pos,
        "negative_label": neg,
        "missing_values": markers,
        "columns": columns,
        **({"drop": drop} if drop else {}),
        **({"groups": groups} if groups else {}),
    }


def _number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _column(name: str, values, rows: int) -> dict:
    """One feature's definition from its non-missing values."""
    import pandas as pd

    if values.empty:
        return {"name": name, "type": "categorical", "_drop": True}  # never filled in: nothing to learn
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all() and numbers.map(math.isfinite).all():
        whole = values.str.fullmatch(_INTEGER).all()
        lo, hi = float(numbers.min()), float(numbers.max())
        room = (hi - lo) / 2 or max(abs(hi), 1.0)
        low, high = lo - room, hi + room
        if lo >= 0:
            low = max(0.0, low)
        if whole:
            return {"name": name, "type": "integer", "min": math.floor(low), "max": math.ceil(high)}
        return {"name": name, "type": "numeric", "min": _round(low, math.floor), "max": _round(high, math.ceil)}
    distinct = sorted(values.unique())
    if len(distinct) > MAX_CATEGORIES:
        # Nearly every row different: an identifier (a name, an id), not a feature.
        return {"name": name, "type": "categorical", **({"_drop": True} if len(distinct) > rows / 2 else {})}
    return {"name": name, "type": "categorical", "categories": distinct}


def _round(x: float, direction) -> float:
    """A readable bound, 3 significant digits, rounded outward (``direction``: ``math.floor`` for a
    minimum, ``math.ceil`` for a maximum), so every value seen stays inside."""
    if x == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(x))) - 2)
    return float(f"{direction(x / scale) * scale:.12g}")


def _labels(path: Path, target: str, values, positive: str | None) -> tuple[str, str]:
    counts = values.value_counts()
    labels = sorted(counts.index)
    if len(labels) != 2:
        shown = ", ".join(map(repr, labels[:8])) + (" ..." if len(labels) > 8 else "")
        raise DataError(f"{path}: column {target!r} has {len(labels)} distinct values ({shown}); a binary "
                        "label has exactly two")
    if positive is not None:
        if str(positive) not in labels:
            raise UsageError(f"--positive {positive!r}: not a value of {target!r} ({labels[0]!r} or {labels[1]!r})")
        pos = str(positive)
    else:
        plain = _POSITIVE.get(frozenset(v.lower() for v in labels))
        pos = next((v for v in labels if v.lower() == plain), None) if plain else None
        pos = pos or min(labels, key=lambda v: (counts[v], v))  # the rarer one
    return pos, next(v for v in labels if v != pos)
