"""The report stage: what a reviewer of a model change reads.

Reads the model, the validation and test splits and the other stages'
JSON; writes ``report.json`` (everything, machine-readable), the figures in
``plots/``, ``report.md`` (for a pull-request comment) and a self-contained
``report.html`` (images embedded). The test split appears only once the test
stage has scored it for this very model, i.e. after a passing gate: the
report never peeks at it earlier.
"""

from __future__ import annotations

import numpy as np

from . import settings as S
from .fileio import atomic_path, read_json, write_bytes, write_json
from .gate import now


def report(s: S.Settings, params, echo=lambda _: None, champion=None, painter=None) -> dict:
    """``painter`` (see painter.py) draws the figures in another process; `mlci run` starts it
    with the first stage that runs, so matplotlib is imported while the model trains."""
    from concurrent.futures import ThreadPoolExecutor

    from .model import decision_threshold
    from .painter import Painter
    from .params import DatasetDef
    from .stages import _read_split, load_model

    painter = painter or Painter()  # first: its process imports matplotlib while this one reads
    model, card = load_model(s.model_dir)
    ds = DatasetDef.model_validate(card["dataset"])
    rp = params.report
    gate = _read(s.result(S.GATE_FILE))
    test_meta = _read(s.result(S.TEST_METADATA))
    test_scored = bool(gate and gate.get("passed") and test_meta and test_meta.get("model_sha256") == card["sha256"])

    frames = {"validation": _read_split(s, "validation")}
    if test_scored:
        frames["test"] = _read_split(s, "test")
    ys = {k: np.asarray(f[ds.target] == ds.positive_label) for k, f in frames.items()}
    probas = {k: _scores(s.scores_path(k), card) for k in frames}
    probas = {k: p if p is not None and len(p) == len(frames[k]) else _proba(model, frames[k], card, ds)
              for k, p in probas.items()}
    split = "test" if test_scored else "validation"  # what the figures and group tables show

    # The numeric work (permutation: LightGBM; bootstrap: numpy) mostly releases the GIL, so it
    # runs in one thread while this one prepares the figures and the painter's process draws them.
    # One thread, importance first: the last figure waits for it (a second thread measured slower:
    # three busy threads on two cores).
    pool = ThreadPoolExecutor(max_workers=1)
    importance_job = pool.submit(_importance, model, frames["validation"], ys["validation"], card, rp)
    threshold = decision_threshold(model)
    metrics_jobs = {k: pool.submit(_metrics, ys[k], probas[k], rp, threshold) for k in frames}

    content: dict = {
        "generated_at": now(),
        "model": {k: card.get(k) for k in ("sha256", "trained_at", "data_sha256", "profile", "threshold", "params",
                                           "versions")},
        "dataset": ds.name,
        "labels": {"positive": ds.positive_label, "negative": ds.negative_label},
        "gate": gate,
        "figures_split": split,
        "test_note": None if test_scored else (
            "test split not scored: the gate did not pass for this model" if gate and not gate.get("passed")
            else "test split not scored yet: run `mlci test`"),
        "confidence": rp.confidence,
        "bootstrap_resamples": rp.bootstrap_resamples,
        "data": _data_summary(s),
    }

    champ_model, content["champion"] = _champion(champion, card)
    champ_probas = {}
    if champ_model is not None:
        from .metrics import binary_metrics

        champ_probas = {k: champion.proba(k, f) for k, f in frames.items()}
        champ_threshold = decision_threshold(champ_model)
        content["champion"]["metrics"] = {k: binary_metrics(ys[k], champ_probas[k], champ_threshold) for k in frames}

    y, p = ys[split], probas[split]
    pred = p >= threshold
    groups = params.groups(ds)
    if groups:
        from .groups import table

        content["groups"] = [table(frames[split], y, pred, col, edges, params.fairness.min_group_size)
                             for col, edges in groups.items()]
    else:
        content["groups"] = []
    matrix = np.array([[np.sum(~y & ~pred), np.sum(~y & pred)], [np.sum(y & ~pred), np.sum(y & pred)]])
    content["confusion"] = {"split": split, "labels": [ds.negative_label, ds.positive_label],
                            "matrix": matrix.tolist()}

    _figures(painter, content, y, p, champ_probas.get(split), matrix)
    content["importance"] = importance_job.result()
    _importance_figure(painter, content["importance"])
    content["metrics"] = {k: job.result() for k, job in metrics_jobs.items()}
    pool.shutdown()
    pngs = painter.results()
    plots_dir = s.result(S.PLOTS_DIR)
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, data in pngs.items():
        write_bytes(plots_dir / name, data)
    content["plots"] = {name.removesuffix(".png"): f"{S.PLOTS_DIR}/{name}" for name in pngs}

    from .render import html, markdown

    write_json(s.result(S.REPORT_JSON), content)
    with atomic_path(s.result(S.REPORT_MD)) as tmp:
        tmp.write_text(markdown(content), encoding="utf-8")
    with atomic_path(s.result(S.REPORT_HTML)) as tmp:
        tmp.write_text(html(content, pngs), encoding="utf-8")
    return {"report": str(s.result(S.REPORT_HTML)), "markdown": str(s.result(S.REPORT_MD)), "figures_split": split}


def _read(path):
    return read_json(path) if path.exists() else None


def _scores(path, card) -> np.ndarray | None:
    """The probabilities train/test wrote for this very model, if they are there."""
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    table = pq.read_table(path)
    if (table.schema.metadata or {}).get(b"model_sha256", b"").decode() != card["sha256"]:
        return None
    return table.column("probability").to_numpy()


def _proba(model, frame, card, ds) -> np.ndarray:
    from .model import predict_proba

    return predict_proba(model, frame[card["features"]], ds.positive_label)


def _metrics(y: np.ndarray, proba: np.ndarray, rp, threshold: float) -> dict:
    if rp.bootstrap_resamples:
        from .bootstrap import intervals

        return intervals(y, proba, resamples=rp.bootstrap_resamples, seed=rp.seed, level=rp.confidence,
                         threshold=threshold)
    from .metrics import binary_metrics

    return {k: {"value": v} for k, v in binary_metrics(y, proba, threshold).items()}


def _champion(champion, card) -> tuple[object | None, dict]:
    if champion is None:
        return None, {"version": None, "note": "tracking is off: no champion to compare with"}
    if champion.version is None:
        return None, {"version": None, "note": "no champion yet"}
    model, champ_card = champion.model()
    if champ_card.get("sha256") == card["sha256"]:
        return None, {"version": champion.version, "note": "this model is the champion"}
    return model, {"version": champion.version}


def _data_summary(s: S.Settings) -> dict | None:
    pre = _read(s.result(S.PREPROCESS_METADATA))
    if pre is None:
        return None
    keys = ("source", "data_sha256", "rows_read", "rows_valid", "rows_rejected", "reject_share", "reject_reasons",
            "rows", "positive_share", "missing_values")
    return {k: pre.get(k) for k in keys}


def _importance(model, frame, y, card, rp) -> list[dict]:
    """Model gain (share of the total) and permutation importance (mean ROC-AUC drop) per input column."""
    features = card["features"]
    gain = None
    clf = model[-1] if hasattr(model, "steps") else model
    booster = getattr(clf, "booster_", None)
    if booster is not None:
        raw = booster.feature_importance(importance_type="gain")
        names = list(model[:-1].get_feature_names_out()) if hasattr(model, "steps") else features
        by_name = dict(zip(names, raw))
        total = sum(raw) or 1.0
        gain = {f: float(by_name.get(f, 0.0)) / total for f in features}
    perm = permutation(model, frame, y, features, card["positive_label"], rp) if rp.permutation_repeats else None
    out = []
    for i, f in enumerate(features):
        row = {"feature": f, "gain_share": round(gain[f], 6) if gain else None}
        if perm:
            row.update(permutation_mean=round(float(perm[0][i]), 6), permutation_std=round(float(perm[1][i]), 6))
        out.append(row)
    return sorted(out, key=lambda r: -(r.get("permutation_mean") or r["gain_share"] or 0))


def permutation(model, frame, y, features, positive_label, rp) -> tuple[np.ndarray, np.ndarray]:
    """Permutation importance: mean and std of the ROC-AUC drop when one input column is shuffled.

    scikit-learn's ``permutation_importance`` calls the whole Pipeline once per column and
    repeat (re-encoding every time, then a small LightGBM predict): ~4 s here. Encoding is row
    by row, so shuffling an encoded column is shuffling the raw one; this encodes once and
    scores every shuffled copy in a single predict call (~10x faster, same definition).
    """
    from .bootstrap import roc_auc_rows
    from .model import positive_index

    rng = np.random.default_rng(rp.seed)
    rows = np.sort(rng.choice(len(frame), size=min(rp.permutation_rows, len(frame)), replace=False))
    x, y = frame[features].iloc[rows], np.asarray(y)[rows]
    if hasattr(model, "steps"):
        z, clf = np.asarray(model[:-1].transform(x), dtype=float), model[-1]
        column = {name: i for i, name in enumerate(model[:-1].get_feature_names_out())}
    else:
        z, clf, column = x.to_numpy(dtype=float), model, {name: i for i, name in enumerate(features)}
    pos = positive_index(clf, positive_label)
    repeats, m = rp.permutation_repeats, len(z)
    # Row block 0: the unshuffled rows (the baseline); then one block per column and repeat.
    batch = np.repeat(z[None], 1 + len(features) * repeats, axis=0)
    for f, name in enumerate(features):
        for r in range(repeats):
            batch[1 + f * repeats + r, :, column[name]] = z[rng.permutation(m), column[name]]
    auc = roc_auc_rows(y, clf.predict_proba(batch.reshape(-1, z.shape[1]))[:, pos].reshape(-1, m))
    drops = (auc[0] - auc[1:]).reshape(len(features), repeats)
    return drops.mean(axis=1), drops.std(axis=1)


def _figures(painter, content: dict, y, p, champ_p, matrix) -> None:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    split = content["figures_split"]
    models = [("candidate", p)] + ([(f"champion v{content['champion']['version']}", champ_p)] if champ_p is not None
                                   else [])
    roc_curves, pr_curves = [], []
    for label, proba in models:
        fpr, tpr, _ = roc_curve(y, proba)
        roc_curves.append((label, fpr, tpr, roc_auc_score(y, proba)))
        precision, recall, _ = precision_recall_curve(y, proba)
        pr_curves.append((label, recall, precision, average_precision_score(y, proba)))
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    painter.draw("roc.png", "plots.roc", roc_curves, split)
    painter.draw("pr.png", "plots.pr", pr_curves, float(y.mean()), split)
    painter.draw("calibration.png", "plots.calibration", predicted, observed, split)
    painter.draw("confusion.png", "plots.confusion", np.asarray(matrix), content["confusion"]["labels"], split)


def _importance_figure(painter, imp: list[dict]) -> None:
    names = [r["feature"] for r in imp]
    gain = np.array([r["gain_share"] for r in imp]) if imp and imp[0]["gain_share"] is not None else None
    perm = (np.array([r["permutation_mean"] for r in imp]), np.array([r["permutation_std"] for r in imp])) \
        if imp and "permutation_mean" in imp[0] else (None, None)
    painter.draw("importance.png", "plots.importance", names, gain, *perm)
