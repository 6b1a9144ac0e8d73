"""The report's content: what a reviewer of a model change reads, built from handed-in data.

``build`` takes the model, its card, the splits' rows, labels and probabilities and the other
stages' verdicts (``mlci.stages.report`` reads them and writes what this returns): ``report.json``'s
content and the figures. The test split appears only once the test stage has scored it for this
very model, i.e. after a passing gate: the report never peeks at it earlier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlci.config.settings import PLOTS_DIR, REPORT_PLOTS
from mlci.timestamps import utc_now


@dataclass
class ReportInputs:
    model: object
    card: dict
    dataset: object  # DatasetDef
    frames: dict  # split name -> its rows (validation; test once scored)
    labels: dict  # split name -> bool array (True = positive)
    probas: dict  # split name -> the model's probabilities
    gate: dict | None
    test_scored: bool
    data_summary: dict | None


def build(inp: ReportInputs, rp, groups: dict, min_group_size: int, champion=None, painter=None) -> tuple[dict, dict]:
    """The report's content and its figures (``{file name: PNG bytes}``).

    ``painter`` (``mlci.reporting.painter``) draws the figures in another process; ``mlci run`` starts
    it with the first stage that runs, so matplotlib is imported while the model trains."""
    from concurrent.futures import ThreadPoolExecutor

    from mlci.modeling.estimator import decision_threshold
    from mlci.reporting.painter import Painter

    painter = painter or Painter()
    model, card, ds, frames, ys, probas, gate = (inp.model, inp.card, inp.dataset, inp.frames, inp.labels,
                                                 inp.probas, inp.gate)
    split = "test" if inp.test_scored else "validation"  # what the figures and group tables show

    # The numeric work (permutation: LightGBM; bootstrap: numpy) mostly releases the GIL, so it
    # runs in one thread while this one prepares the figures and the painter's process draws them.
    # One thread (a second thread measured slower: three busy threads on two cores): the figures'
    # split first (the ROC and PR legends show its exact ROC-AUC and average precision), then
    # importance (the last figure waits for it), then the other split.
    pool = ThreadPoolExecutor(max_workers=1)
    threshold = decision_threshold(model)
    metrics_jobs = {split: pool.submit(_metrics, ys[split], probas[split], rp, threshold)}
    # Permutation importance on the figures' split: the test rows once scored (never learnt from), else
    # validation (rows a refitted model learnt from: the report says so).
    importance_job = pool.submit(_importance, model, frames[split], ys[split], card, rp)
    metrics_jobs.update({k: pool.submit(_metrics, ys[k], probas[k], rp, threshold) for k in frames if k != split})

    content: dict = {
        "generated_at": utc_now(),
        "model": {k: card.get(k) for k in ("sha256", "trained_at", "data_sha256", "profile", "threshold", "params",
                                           "versions")},
        "dataset": ds.name,
        "labels": {"positive": ds.positive_label, "negative": ds.negative_label},
        "gate": gate,
        "figures_split": split,
        "importance_note": None if split == "test" or card.get("fitted_on", "train") == "train" else (
            "permutation drops on validation rows, which this model also learnt from (train.refit_max_rows): "
            "they may be larger than on unseen rows; the test split's, once scored, are not"),
        "test_note": None if inp.test_scored else (
            "test split not scored: the gate did not pass for this model" if gate and not gate.get("passed")
            else "test split not scored yet: run `mlci test`"),
        "confidence": rp.confidence,
        "bootstrap_resamples": rp.bootstrap_resamples,
        "data": inp.data_summary,
    }

    champ_probas = _compare(content, champion, card, frames, ys)
    y, p = ys[split], probas[split]
    matrix = _groups_and_confusion(content, frames[split], y, p >= threshold, ds, groups, min_group_size)
    _figures(painter, content, y, p, champ_probas.get(split), matrix, rp, metrics_jobs[split])
    content["importance"] = importance_job.result()
    _importance_figure(painter, content["importance"])
    content["metrics"] = {k: metrics_jobs[k].result() for k in frames}
    pool.shutdown()
    pngs = painter.results()
    content["plots"] = {name: f"{PLOTS_DIR}/{name}.png" for name in REPORT_PLOTS if f"{name}.png" in pngs}
    return content, pngs


def _compare(content: dict, champion, card: dict, frames: dict, ys: dict) -> dict:
    """The champion's note and metrics on the same rows into ``content``; its probabilities per split."""
    champ_model, content["champion"] = _champion(champion, card)
    if champ_model is None:
        return {}
    from mlci.evaluation.metrics import binary_metrics
    from mlci.modeling.estimator import decision_threshold

    # A champion that learnt from its validation rows is not re-scored on them (it would be measured
    # on rows it learnt): there its figures are those its recipe had before, as the gate uses them.
    refitted = champion.refitted()
    champ_probas = {k: champion.proba(k, f) for k, f in frames.items() if not (k == "validation" and refitted)}
    champ_threshold = decision_threshold(champ_model)
    content["champion"]["metrics"] = {k: binary_metrics(ys[k], p, champ_threshold) for k, p in champ_probas.items()}
    if refitted:
        content["champion"]["metrics"]["validation"] = {
            k.removeprefix("validation_"): v for k, v in champion.metrics().items()}
        content["champion"]["note"] = ("its validation figures are those recorded before it was fitted on its "
                                       "validation rows")
    return champ_probas


def _groups_and_confusion(content: dict, frame, y, pred, ds, groups: dict, min_group_size: int) -> np.ndarray:
    if groups:
        from mlci.evaluation.groups import table

        content["groups"] = [table(frame, y, pred, col, edges, min_group_size) for col, edges in groups.items()]
    else:
        content["groups"] = []
    matrix = np.array([[np.sum(~y & ~pred), np.sum(~y & pred)], [np.sum(y & ~pred), np.sum(y & pred)]])
    content["confusion"] = {"split": content["figures_split"], "labels": [ds.negative_label, ds.positive_label],
                            "matrix": matrix.tolist()}
    return matrix


def _metrics(y: np.ndarray, proba: np.ndarray, rp, threshold: float) -> dict:
    if rp.bootstrap_resamples:
        from mlci.evaluation.bootstrap import intervals

        return intervals(y, proba, resamples=rp.bootstrap_resamples, seed=rp.seed, level=rp.confidence,
                         threshold=threshold)
    from mlci.evaluation.metrics import binary_metrics

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
    repeat (re-encoding every time, then a small LightGBM predict). Encoding is row
    by row, so shuffling an encoded column is shuffling the raw one; this encodes once and
    scores every shuffled copy in a single predict call (the same definition, several times faster;
    README, "Reports").
    """
    from mlci.evaluation.bootstrap import roc_auc_rows
    from mlci.modeling.estimator import positive_index

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


def sample_rows(y: np.ndarray, limit: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a seeded sample of at most ``limit`` rows in which each class keeps its
    share (and at least one row); None when every row fits."""
    n = len(y)
    if n <= limit:
        return None
    rng = np.random.default_rng(seed)
    parts = []
    for label in (True, False):
        rows = np.flatnonzero(y == label)
        parts.append(rng.choice(rows, size=min(len(rows), max(1, round(limit * len(rows) / n))), replace=False))
    return np.sort(np.concatenate(parts))


def _figures(painter, content: dict, y, p, champ_p, matrix, rp, split_metrics) -> None:
    """The ROC, PR, calibration and confusion figures. The curves are drawn from at most
    ``report.figure_rows`` rows (a seeded sample, each class its share): a curve of 200,000 rows
    is drawn at 400 points and moves by well under a line's width from one sample to another;
    the areas in the legends and the confusion matrix are exact, on every row."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    split = content["figures_split"]
    rows = sample_rows(y, rp.figure_rows, rp.seed)
    content["figure_rows"] = {"rows": len(y) if rows is None else len(rows), "of": len(y)}
    pick = (lambda a: a) if rows is None else (lambda a: np.asarray(a)[rows])
    ys = pick(y)
    observed, predicted = calibration_curve(ys, pick(p), n_bins=10, strategy="quantile")
    painter.draw("calibration.png", "plots.calibration", predicted, observed, split)
    painter.draw("confusion.png", "plots.confusion", np.asarray(matrix), content["confusion"]["labels"], split)
    exact = {"candidate": split_metrics.result()}
    models = [("candidate", p)]
    if champ_p is not None:
        label = f"champion v{content['champion']['version']}"
        models.append((label, champ_p))
        exact[label] = {k: {"value": v} for k, v in content["champion"]["metrics"][split].items()}
    roc_curves, pr_curves = [], []
    for label, proba in models:
        fpr, tpr, _ = roc_curve(ys, pick(proba))
        roc_curves.append((label, fpr, tpr, exact[label]["roc_auc"]["value"]))
        precision, recall, _ = precision_recall_curve(ys, pick(proba))
        pr_curves.append((label, recall, precision, exact[label]["pr_auc"]["value"]))
    painter.draw("roc.png", "plots.roc", roc_curves, split)
    painter.draw("pr.png", "plots.pr", pr_curves, float(y.mean()), split)


def _importance_figure(painter, imp: list[dict]) -> None:
    names = [r["feature"] for r in imp]
    gain = np.array([r["gain_share"] for r in imp]) if imp and imp[0]["gain_share"] is not None else None
    perm = (np.array([r["permutation_mean"] for r in imp]), np.array([r["permutation_std"] for r in imp])) \
        if imp and "permutation_mean" in imp[0] else (None, None)
    painter.draw("importance.png", "plots.importance", names, gain, *perm)
