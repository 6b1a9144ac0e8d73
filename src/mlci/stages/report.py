"""report: report.md, report.html (self-contained), report.json and plots/ in RESULTS_DIR."""

from __future__ import annotations

import numpy as np

from mlci.config import settings as S
from mlci.data.dataset import DatasetDef
from mlci.fileio import read_json_or_none, write_set
from mlci.modeling.artifact import load_model
from mlci.modeling.estimator import predict_proba
from mlci.reporting.content import ReportInputs, build
from mlci.stages.context import StageContext
from mlci.stages.io import read_scores, read_split


def report(ctx: StageContext) -> dict:
    from mlci.reporting.painter import Painter
    from mlci.reporting.render import html, markdown

    s, params = ctx.settings, ctx.params
    painter = ctx.painter or Painter()  # first: its process imports matplotlib while this one reads
    inputs = _inputs_on_cluster(s, params) if params.engine == "dask" else _inputs(s)
    content, pngs = build(inputs, params.report, params.groups(inputs.dataset), params.fairness.min_group_size,
                          ctx.champion, painter)
    import json

    # One output: on any failure (a full disk) the previous report, its figures included, stays whole.
    plots_dir = s.result(S.PLOTS_DIR)
    write_set({**{plots_dir / name: data for name, data in pngs.items()},
               s.result(S.REPORT_JSON): (json.dumps(content, indent=2) + "\n").encode(),
               s.result(S.REPORT_MD): markdown(content).encode("utf-8"),
               s.result(S.REPORT_HTML): html(content, pngs).encode("utf-8")})
    return {"report": str(s.result(S.REPORT_HTML)), "markdown": str(s.result(S.REPORT_MD)),
            "figures_split": content["figures_split"]}


def _inputs(s: S.Settings) -> ReportInputs:
    model, card = load_model(s.model_dir)
    ds = DatasetDef.model_validate(card["dataset"])
    gate, test_meta = read_json_or_none(s.result(S.GATE_FILE)), read_json_or_none(s.result(S.TEST_METADATA))
    test_scored = bool(gate and gate.get("passed") and test_meta and test_meta.get("model_sha256") == card["sha256"])
    frames = {"validation": read_split(s, "validation")}
    if test_scored:
        frames["test"] = read_split(s, "test")
    labels = {k: np.asarray(f[ds.target] == ds.positive_label) for k, f in frames.items()}
    probas = {}
    for k, f in frames.items():
        p = read_scores(s.scores_path(k), card["sha256"])  # the very scores the metrics came from
        probas[k] = p if p is not None and len(p) == len(f) else predict_proba(model, f[card["features"]],
                                                                              ds.positive_label)
    return ReportInputs(model, card, ds, frames, labels, probas, gate, test_scored, _data_summary(s))


def _inputs_on_cluster(s: S.Settings, params) -> ReportInputs:
    """engine dask: the report's tables and figures from a seeded sample of each split of at most
    ``report.figure_rows`` rows, scored on the workers (the headline figures of train and test
    metadata come from every row); the report says so."""
    from mlci.stages.cluster.client import client, translated
    from mlci.stages.cluster.evaluate import sample_split

    model, card = load_model(s.model_dir)
    ds = DatasetDef.model_validate(card["dataset"])
    gate, test_meta = read_json_or_none(s.result(S.GATE_FILE)), read_json_or_none(s.result(S.TEST_METADATA))
    test_scored = bool(gate and gate.get("passed") and test_meta and test_meta.get("model_sha256") == card["sha256"])
    pre = read_json_or_none(s.result(S.PREPROCESS_METADATA)) or {}
    c = client(params.dask)
    frames, labels, probas = {}, {}, {}
    with translated("report on the Dask cluster"):
        # The sample only comes here, and only it is scored (here: it is bounded).
        samples = {name: sample_split(c, s.split_path(name), params.report.figure_rows,
                                      pre.get("rows", {}).get(name, 0), params.report.seed, params.dask.step_timeout)
                   for name in (("validation", "test") if test_scored else ("validation",))}
    for name, sample in samples.items():
        sample["__probability"] = predict_proba(model, sample[card["features"]], ds.positive_label)
        for col in ds.features:
            if col.type == "categorical":
                sample[col.name] = sample[col.name].astype("category")
        probas[name] = sample.pop("__probability").to_numpy()
        frames[name] = sample
        labels[name] = np.asarray(sample[ds.target] == ds.positive_label)
    summary = _data_summary(s)
    if summary is not None:
        summary["sampled_rows"] = {k: len(f) for k, f in frames.items()}
    return ReportInputs(model, card, ds, frames, labels, probas, gate, test_scored, summary)


def _data_summary(s: S.Settings) -> dict | None:
    pre = read_json_or_none(s.result(S.PREPROCESS_METADATA))
    if pre is None:
        return None
    keys = ("source", "data_sha256", "rows_read", "rows_valid", "rows_rejected", "reject_share", "reject_reasons",
            "rows", "positive_share", "missing_values")
    return {k: pre.get(k) for k in keys}

