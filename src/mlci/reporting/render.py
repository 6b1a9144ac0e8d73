"""``report.json``'s content as Markdown and as one self-contained HTML page.

Both are built from the same list of blocks (heading, paragraph, table,
figure), so the two files never disagree; the HTML embeds the PNGs as data
URIs and needs no network to view.
"""

from __future__ import annotations

import base64
import html as _html

from mlci.evaluation.bootstrap import LOWER_IS_BETTER, METRICS
from mlci.evaluation.gate import rule_label

FIGURES = {
    "roc": "ROC curve",
    "pr": "Precision-recall curve",
    "calibration": "Calibration curve",
    "confusion": "Confusion matrix",
    "importance": "Feature importance",
}


def _f(x, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(m: dict | None) -> str:
    if not m:
        return "–"
    if "low" in m:
        return f"{m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]"
    return f"{m['value']:.4f}"


def blocks(c: dict) -> list[tuple]:
    """The report as ("h", level, text) / ("p", text) / ("table", header, rows) / ("img", key, caption)."""
    out: list[tuple] = []
    for section in (_head, _gate, _metrics, _champion, _figures, _groups, _importance, _data):
        out += section(c)
    return out


def _head(c: dict) -> list[tuple]:
    gate, champ = c.get("gate"), c["champion"]
    verdict = "no gate verdict" if gate is None else ("gate PASSED" if gate["passed"] else "gate FAILED")
    return [("h", 1, f"mlci report: {c['dataset']} model {c['model']['sha256'][7:19]}"),
            ("p", f"{verdict}; trained {c['model'].get('trained_at')}; generated {c['generated_at']}; "
                  f"champion: {('v' + champ['version']) if champ.get('version') else champ.get('note')}.")]


def _gate(c: dict) -> list[tuple]:
    gate = c.get("gate")
    if not gate:
        return [("h", 2, "Gate"), ("p", "The gate has not run for this model.")]
    rows = [[rule_label(r), _f(r["value"]), _f(r.get("threshold")), _f(r.get("champion_value")),
             ("pass" if r["passed"] else "**FAIL**") + (f" ({r['note']})" if r.get("note") else "")]
            for r in gate["rules"]]
    return [("h", 2, "Gate"), ("table", ["rule", "value", "threshold", "champion value", "verdict"], rows)]


def _metrics(c: dict) -> list[tuple]:
    level, splits = f"{c['confidence']:.0%}", list(c["metrics"])
    note = f"Point estimate [{level} bootstrap interval, {c['bootstrap_resamples']} resamples]." \
        if c["bootstrap_resamples"] else "Point estimates (bootstrap off)."
    return [("h", 2, "Metrics"),
            ("p", note + (f" {c['test_note'].capitalize()}." if c.get("test_note") else "")),
            ("table", ["metric", *splits],
             [[name + (" (lower is better)" if key in LOWER_IS_BETTER else ""),
               *(_ci(c["metrics"][sp].get(key)) for sp in splits)] for key, name in METRICS.items()])]


def _champion(c: dict) -> list[tuple]:
    champ, splits = c["champion"], list(c["metrics"])
    if not champ.get("metrics"):
        return [("h", 2, "Compared with the champion"), ("p", champ.get("note", "no champion"))]
    rows = []
    for key, name in METRICS.items():
        row = [name]
        for sp in splits:
            new, old = c["metrics"][sp][key]["value"], champ["metrics"][sp].get(key)
            row += [_f(old), "–" if old is None else f"{new - old:+.4f}"]
        rows.append(row)
    header = ["metric"] + [h for sp in splits for h in (f"champion {sp}", f"delta {sp}")]
    return [("h", 2, "Compared with the champion"),
            ("p", f"Champion v{champ['version']} scored on the same rows; delta = candidate - champion. "
                  "The ROC figure overlays both." + (f" Note: {champ['note']}." if champ.get("note") else "")),
            ("table", header, rows)]


def _figures(c: dict) -> list[tuple]:
    used = c.get("figure_rows") or {}
    note = [("p", f"ROC, precision-recall and calibration curves from a seeded sample of {used['rows']:,} of "
                  f"{used['of']:,} rows (report.figure_rows); the areas in their legends and the confusion "
                  "matrix count every row.")] if used and used["rows"] < used["of"] else []
    return [("h", 2, f"Figures ({c['figures_split']} split)")] + note + [
        ("img", key, caption) for key, caption in FIGURES.items() if key in c.get("plots", {})]


def _groups(c: dict) -> list[tuple]:
    out: list[tuple] = [("h", 2, f"Per-group metrics ({c['figures_split']} split)")]
    if not c["groups"]:
        out.append(("p", "No group columns configured (fairness.groups)."))
    for g in c["groups"]:
        out.append(("h", 3, g["column"] + (" (bands)" if g["bands"] else "")))
        out.append(("p", f"Demographic-parity difference {_f(g['demographic_parity_difference'])}, "
                         f"equalized-odds difference {_f(g['equalized_odds_difference'])} "
                         "(largest gaps between groups; groups marked * are too small to count in them)."))
        out.append(("table", ["group", "count", "accuracy", "selection rate", "TPR", "FPR"],
                    [[r["group"] + ("" if r["in_gaps"] else " *"), f"{r['count']:,}", _f(r["accuracy"]),
                      _f(r["selection_rate"]), _f(r["true_positive_rate"]), _f(r["false_positive_rate"])]
                     for r in g["groups"]]))
    return out


def _importance(c: dict) -> list[tuple]:
    note = [("p", f"Note: {c['importance_note']}.")] if c.get("importance_note") else []
    return [("h", 2, f"Feature importance ({c['figures_split']} split)")] + note + [
            ("table", ["feature", "gain share", "permutation ROC-AUC drop"],
             [[r["feature"], _f(r["gain_share"], 3),
               f"{r['permutation_mean']:.4f} ± {r['permutation_std']:.4f}" if "permutation_mean" in r else "–"]
              for r in c["importance"]])]


def _data(c: dict) -> list[tuple]:
    d = c.get("data")
    if d is None:
        return [("h", 2, "Data"), ("p", "No preprocess metadata found.")]
    out: list[tuple] = [
        ("h", 2, "Data"),
        ("p", f"Source {d['source']} ({d['data_sha256']}): {d['rows_read']:,} rows read, "
              f"{d['rows_valid']:,} valid, {d['rows_rejected']:,} rejected ({d['reject_share']:.2%})."),
        ("table", ["split", "rows", f"positive share ({c['labels']['positive']})"],
         [[sp, f"{n:,}", _f(d["positive_share"].get(sp), 3)] for sp, n in d["rows"].items()])]
    missing = d.get("missing_values") or {}
    out.append(("table", ["column", "missing values"], [[k, f"{v:,}"] for k, v in missing.items()])
               if missing else ("p", "No missing values."))
    reasons = d.get("reject_reasons") or {}
    if reasons:
        out.append(("table", ["reject reason", "rows"], [[k, f"{v:,}"] for k, v in reasons.items()]))
    return out


def markdown(c: dict) -> str:
    lines: list[str] = []
    for b in blocks(c):
        if b[0] == "h":
            lines += ["#" * b[1] + " " + b[2], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "table":
            header, rows = b[1], b[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
            lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |" for row in rows]
            lines.append("")
        elif b[0] == "img":
            lines += [f"![{b[2]}]({c['plots'][b[1]]})", ""]
    return "\n".join(lines)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em}figcaption{text-align:center;color:#555}
"""


def _inline(text: str) -> str:
    out = _html.escape(text)
    while "**" in out:  # the one Markdown mark the blocks use
        out = out.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
    return out


def html(c: dict, pngs: dict[str, bytes]) -> str:
    title = next(b[2] for b in blocks(c) if b[0] == "h")
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for b in blocks(c):
        if b[0] == "h":
            parts.append(f"<h{b[1]}>{_html.escape(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            parts.append(f"<p>{_inline(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{_html.escape(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline(str(x))}</td>" for x in row) + "</tr>" for row in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(pngs[f"{b[1]}.png"]).decode()
            parts.append(f"<figure><img alt=\"{_html.escape(b[2])}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{_html.escape(b[2])}</figcaption></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
