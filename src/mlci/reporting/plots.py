"""The report's figures: matplotlib, headless (Agg, no pyplot), fixed names and sizes.

Each function takes plain arrays and returns PNG bytes; ``report.py`` decides
where they go. PNG metadata carries no timestamp, so the same inputs give the
same bytes.
"""

from __future__ import annotations

import io

import numpy as np

DPI = 100
CANDIDATE, CHAMPION = "#1f77b4", "#ff7f0e"


def warm_up() -> None:
    """Import what drawing needs (most of a figure's cost is the first one's imports)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def _figure(width: float = 5.0, height: float = 4.0, left: float = 0.13):
    # Figure + the Agg canvas directly: no pyplot, no backend selection, no GUI toolkit probe.
    # Fixed margins: the constrained-layout solver doubles the cost of a figure.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=left, right=0.97, bottom=0.12, top=0.92, wspace=0.08)
    FigureCanvasAgg(fig)
    return fig


def _thin(x: np.ndarray, y: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` points of a monotone curve (always keeping both ends): invisible at
    this size, and drawing all 6,000 costs more than the rest of the figure."""
    if len(x) <= points:
        return x, y
    keep = np.unique(np.r_[np.linspace(0, len(x) - 1, points).astype(int), len(x) - 1])
    return x[keep], y[keep]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def roc(curves: list[tuple[str, np.ndarray, np.ndarray, float]], split: str) -> bytes:
    """``curves``: (label, fpr, tpr, auc) per model; the candidate first, the champion overlaid."""
    fig = _figure()
    ax = fig.add_subplot()
    for (label, fpr, tpr, auc), color in zip(curves, (CANDIDATE, CHAMPION)):
        ax.plot(*_thin(fpr, tpr), color=color, lw=1.5, label=f"{label} (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC curve ({split})",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def pr(curves: list[tuple[str, np.ndarray, np.ndarray, float]], base_rate: float, split: str) -> bytes:
    """``curves``: (label, recall, precision, average precision) per model."""
    fig = _figure()
    ax = fig.add_subplot()
    for (label, recall, precision, ap), color in zip(curves, (CANDIDATE, CHAMPION)):
        ax.step(*_thin(recall, precision), where="post", color=color, lw=1.5, label=f"{label} (AP {ap:.4f})")
    ax.axhline(base_rate, color="0.7", lw=1, ls="--", label=f"positive share {base_rate:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall curve ({split})", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def calibration(mean_predicted: np.ndarray, observed: np.ndarray, split: str) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="perfectly calibrated")
    ax.plot(mean_predicted, observed, "o-", color=CANDIDATE, lw=1.5, ms=4, label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive share",
           title=f"Calibration ({split}, {len(observed)} quantile bins)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def confusion(matrix: np.ndarray, labels: list[str], split: str) -> bytes:
    fig = _figure(4.2, 3.6, left=0.2)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    total = matrix.sum()
    for i in range(2):
        for j in range(2):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, f"{matrix[i, j]:,}\n{matrix[i, j] / total:.1%}", ha="center", va="center", color=color)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="actual", title=f"Confusion matrix ({split})")
    return _png(fig)


def importance(names: list[str], gain: np.ndarray | None, perm_mean: np.ndarray | None,
               perm_std: np.ndarray | None) -> bytes:
    """Model gain (share of total) and permutation importance (ROC-AUC drop) side by side."""
    panels = [p for p in ((gain, "model gain (share)"), (perm_mean, "permutation (ROC-AUC drop)")) if p[0] is not None]
    fig = _figure(3.5 * len(panels) + 1.6, 0.28 * len(names) + 1.2, left=1.5 / (3.5 * len(panels) + 1.6))
    key = perm_mean if perm_mean is not None else gain
    order = np.argsort(key)
    for k, (values, title) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), k)
        err = perm_std[order] if values is perm_mean and perm_std is not None else None
        ax.barh(np.arange(len(names)), values[order], xerr=err, color=CANDIDATE)
        ax.set_yticks(np.arange(len(names)), [names[i] for i in order] if k == 1 else [""] * len(names),
                      fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.axvline(0, color="0.5", lw=0.8)
    return _png(fig)
