"""Per-group metrics and their largest gaps (fairlearn's definitions).

A group column is categorical (each value a group) or numeric cut into bands
(``age: [25, 35]`` gives ``<25``, ``25-34``, ``>=35``). Missing values form
their own group, ``(missing)``, rather than silently vanishing. Groups
smaller than ``min_group_size`` are listed but left out of the gaps: a
difference between two rates measured on a dozen rows is mostly noise.

The rates are counted here with one ``bincount`` per column instead of
fairlearn's ``MetricFrame``, which cost most of the report's budget for three
columns, against next to nothing for the counts (README, "Metrics"). The definitions are fairlearn's: demographic-parity difference
is the range of selection rates, equalized-odds difference the larger of the
ranges of true- and false-positive rates; the tests check every number
against ``fairlearn.metrics``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MISSING = "(missing)"


def _edge(x: float) -> str:
    return f"{x:g}"


def band_labels(edges: list[float]) -> list[str]:
    labels = [f"<{_edge(edges[0])}"]
    labels += [f"{_edge(a)}-<{_edge(b)}" for a, b in zip(edges, edges[1:])]
    return labels + [f">={_edge(edges[-1])}"]


def group_of(frame: pd.DataFrame, column: str, edges: list[float] | None) -> pd.Series:
    """The group label of every row (strings, ordered categories for bands)."""
    values = frame[column]
    if edges is None and isinstance(values.dtype, pd.CategoricalDtype):
        # The splits' categoricals: relabel the categories that occur (codes counted once), not
        # every row's value as a string; the same groups in the same (sorted) order as below.
        codes = values.cat.codes.to_numpy()
        seen = np.bincount(codes + 1, minlength=len(values.cat.categories) + 1) > 0  # slot 0: missing
        labels = np.array([MISSING, *map(str, values.cat.categories)], dtype=object)[seen]
        order = np.argsort(labels, kind="stable")
        new_code = np.full(len(seen), -1)
        new_code[np.flatnonzero(seen)[order]] = np.arange(len(labels))
        return pd.Series(pd.Categorical.from_codes(new_code[codes + 1], categories=labels[order]),
                         index=values.index, name=column)
    if edges is None:
        out = values.astype("string").fillna(MISSING)
        return out.astype("category")
    bins = [-np.inf, *edges, np.inf]
    banded = pd.cut(pd.to_numeric(values, errors="coerce"), bins=bins, right=False, labels=band_labels(edges))
    return banded.cat.add_categories([MISSING]).fillna(MISSING).cat.remove_unused_categories()


def rates(y: np.ndarray, pred: np.ndarray, groups: pd.Series) -> pd.DataFrame:
    """Per group: count, accuracy, selection rate, true- and false-positive rates (NaN when undefined)."""
    codes = groups.cat.codes.to_numpy()
    k = len(groups.cat.categories)
    y, pred = np.asarray(y, dtype=bool), np.asarray(pred, dtype=bool)

    def count(mask):
        return np.bincount(codes[mask], minlength=k).astype(float)

    n, pos, neg = count(np.ones_like(y)), count(y), count(~y)
    tp, fp, correct = count(y & pred), count(~y & pred), count(y == pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame({
            "count": n.astype(int),
            "accuracy": correct / n,
            "selection_rate": (tp + fp) / n,
            "true_positive_rate": tp / pos,
            "false_positive_rate": fp / neg,
        }, index=groups.cat.categories)


def _range(values: pd.Series) -> float | None:
    values = values.dropna()
    return None if values.empty else round(float(values.max() - values.min()), 6)


def gaps(y: np.ndarray, pred: np.ndarray, groups: pd.Series, min_group_size: int) -> dict[str, float | None]:
    """Demographic-parity and equalized-odds differences over the groups big enough to count."""
    r = rates(y, pred, groups)
    r = r[r["count"] >= min_group_size]
    if len(r) < 2:
        return {"demographic_parity_difference": None, "equalized_odds_difference": None}
    tpr, fpr = _range(r["true_positive_rate"]), _range(r["false_positive_rate"])
    return {
        "demographic_parity_difference": _range(r["selection_rate"]),
        "equalized_odds_difference": None if tpr is None or fpr is None else max(tpr, fpr),
    }


def validation_gaps(frame: pd.DataFrame, y: np.ndarray, pred: np.ndarray, columns: dict, min_group_size: int) -> dict:
    """The gaps of every group column, flat and prefixed for train_metadata.json (gate-able)."""
    out = {}
    for column, edges in columns.items():
        for name, value in gaps(y, pred, group_of(frame, column, edges), min_group_size).items():
            if value is not None:
                out[f"validation_{name}_{column}"] = value
    return out


def table(frame: pd.DataFrame, y: np.ndarray, pred: np.ndarray, column: str, edges: list[float] | None,
          min_group_size: int) -> dict:
    """One column's per-group rows and gaps, JSON-able."""
    groups = group_of(frame, column, edges)
    rows = []
    for label, r in rates(y, pred, groups).iterrows():
        if r["count"] == 0:
            continue
        rows.append({
            "group": str(label),
            "count": int(r["count"]),
            **{k: None if np.isnan(r[k]) else round(float(r[k]), 6)
               for k in ("accuracy", "selection_rate", "true_positive_rate", "false_positive_rate")},
            "in_gaps": bool(r["count"] >= min_group_size),
        })
    return {"column": column, "bands": edges, "groups": rows, **gaps(y, pred, groups, min_group_size)}
