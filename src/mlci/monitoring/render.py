"""``mlci monitor``'s report: monitor.md, a self-contained monitor.html, and its figures."""

from __future__ import annotations

import base64
import html as _html
import io

import numpy as np
import pandas as pd

from mlci.monitoring.profile import OTHER

MAX_FIGURES = 6  # the features with the largest PSI get a figure (drifted ones first)


def _verdict(result: dict) -> str:
    return "FAILED: " + "; ".join(result["failed"]) if result["failed"] else "passed: no drift, no drop in performance"


def _rows(result: dict) -> list[list[str]]:
    rows = []
    for name, f in sorted(result["features"].items(), key=lambda kv: -kv[1]["psi"]):
        rows.append([name, f"{f['psi']:.4f}", f"{f['p_value']:.3g}", f["test"],
                     f"{f['missing']:.3f} ({f['reference_missing']:.3f})", "**drift**" if f["drift"] else "ok"])
    return rows


def _performance(result: dict) -> list[list[str]]:
    perf, out = result["performance"], []
    for metric, v in perf.items():
        if not isinstance(v, dict):
            continue
        interval = f" [{v['low']:.4f}, {v['high']:.4f}]" if "low" in v else ""
        ref = result["validation"].get(metric)
        out.append([metric, f"{v['value']:.4f}{interval}", "" if ref is None else f"{ref:.4f}"])
    return out


def markdown(result: dict) -> str:
    src = result["source"]
    perf = "estimated from calibrated probabilities (no labels)" if result["performance"]["estimated"] else "measured"
    lines = [f"# mlci monitor", "", f"**{_verdict(result)}**", "",
             f"{result['rows']} records ({src['kind']}: {src['path']}); model {result['model_sha256'][:19]}", "",
             "## Features", "", "| feature | PSI | p-value | test | missing (reference) | |", "|---|---:|---:|---|---:|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    p = result["predictions"]
    lines += ["", "## Predictions", "", f"PSI {p['psi']:.4f}, p-value {p['p_value']:.3g}, mean probability "
              f"{p['mean']:.4f} (validation {p['reference_mean']:.4f}): {'**drift**' if p['drift'] else 'ok'}",
              "", f"## Performance ({perf})", "", "| metric | this batch | validation |", "|---|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in _performance(result)]
    return "\n".join(lines) + "\n"


def html(result: dict, pngs: dict[str, bytes]) -> str:
    def table(head: list[str], rows: list[list[str]]) -> str:
        cells = "".join(f"<th>{_html.escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{_html.escape(c).replace('**', '')}</td>" for c in r) + "</tr>"
                       for r in rows)
        return f"<table><tr>{cells}</tr>{body}</table>"

    figures = "".join(f'<figure><img alt="{_html.escape(n)}" src="data:image/png;base64,'
                      f'{base64.b64encode(d).decode()}"><figcaption>{_html.escape(n)}</figcaption></figure>'
                      for n, d in pngs.items())
    ok = not result["failed"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>mlci monitor</title>
<style>body{{font-family:sans-serif;max-width:70rem;margin:2rem auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2rem .5rem}}.v{{color:{'#060' if ok else '#a00'}}}img{{max-width:32rem}}
figure{{display:inline-block}}</style></head><body><h1>mlci monitor</h1>
<p class="v"><strong>{_html.escape(_verdict(result))}</strong></p>
<p>{result['rows']} records ({_html.escape(result['source']['kind'])}: {_html.escape(result['source']['path'])})</p>
<h2>Features</h2>{table(["feature", "PSI", "p-value", "test", "missing (reference)", ""], _rows(result))}
<h2>Performance{' (estimated, no labels)' if result['performance']['estimated'] else ''}</h2>
{table(["metric", "this batch", "validation"], _performance(result))}
<h2>Figures</h2>{figures}</body></html>
"""


def plots(profile: dict, frame: pd.DataFrame, proba: np.ndarray, result: dict) -> dict[str, bytes]:
    """Reference against batch, for the predictions and the features that moved most."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})  # no version stamp: same bytes
        plt.close(fig)
        out[f"{name}.png"] = buf.getvalue()

    fig, ax = plt.subplots(figsize=(5, 3))
    ref = profile["predictions"]
    bins = np.linspace(0, 1, len(ref["edges"]) + 2)
    ax.hist(ref["sample"], bins=bins, density=True, alpha=0.5, label="validation")
    ax.hist(np.asarray(proba, dtype=float), bins=bins, density=True, alpha=0.5, label="batch")
    ax.set_title("predicted probability")
    ax.legend()
    save(fig, "predictions")
    ranked = sorted(result["features"], key=lambda n: (not result["features"][n]["drift"], -result["features"][n]["psi"]))
    for name in ranked[:MAX_FIGURES]:
        f, r = result["features"][name], profile["features"][name]
        fig, ax = plt.subplots(figsize=(5, 3))
        if r["type"] == "categorical":
            keys = list(f["reference_shares"])[:15]
            x = np.arange(len(keys))
            ax.bar(x - 0.2, [f["reference_shares"][k] for k in keys], 0.4, label="training")
            ax.bar(x + 0.2, [f["shares"].get(k, 0) for k in keys], 0.4, label="batch")
            ax.set_xticks(x, [k.replace(OTHER, "(other)") for k in keys], rotation=60, fontsize=7)
        else:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            both = np.concatenate([r["sample"], values[:20_000]])
            edges = np.histogram_bin_edges(both, bins=30) if len(both) else 10
            ax.hist(r["sample"], bins=edges, density=True, alpha=0.5, label="training")
            ax.hist(values, bins=edges, density=True, alpha=0.5, label="batch")
        ax.set_title(f"{name}: PSI {f['psi']:.3f}" + (" (drift)" if f["drift"] else ""))
        ax.legend()
        fig.tight_layout()
        save(fig, f"feature_{name}")
    return out
