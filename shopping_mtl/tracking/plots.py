"""Run plots: reliability diagrams of the heads and recall@K curves of the lists, as PNGs.

`plot_calibration` and `plot_recall_curves` write files that `Tracker.log_artifact` attaches to
a run. Figures are drawn by matplotlib's Agg canvas without pyplot, so plotting works headless
and leaves the process's global backend alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float, height: float):
    """A matplotlib Figure drawn by the Agg canvas: no pyplot, no global backend switch, so it
    works headless and beside any backend the caller's process chose."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def calibration_bins(predicted: np.ndarray, labels: np.ndarray,
                     n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability-diagram points: per equal-width bin of [0, 1], the mean predicted probability,
    the observed positive rate and the count (NaN means for an empty bin). A prediction of
    exactly 1.0 falls in the last bin.

    Args:
        predicted: (n,) probabilities in [0, 1].
        labels: (n,) 0/1 outcomes.
        n_bins: number of equal-width bins.

    Returns:
        (mean predicted, observed rate, count), each of shape (n_bins,).

    Raises:
        ValueError: `predicted` and `labels` differ in size.
    """
    predicted, labels = np.ravel(predicted), np.ravel(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.size} predictions but {labels.size} labels")
    counts, predicted_sum, label_sum = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    # A slice at a time: the float64 copies of ~20M test rows at 10^7 events were ~0.8 GB.
    for start in range(0, len(predicted), 1 << 20):
        p = np.asarray(predicted[start:start + (1 << 20)], dtype=np.float64)
        index = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
        counts += np.bincount(index, minlength=n_bins)
        predicted_sum += np.bincount(index, weights=p, minlength=n_bins)
        label_sum += np.bincount(index, weights=np.asarray(labels[start:start + (1 << 20)], np.float64),
                                 minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return predicted_sum / counts, label_sum / counts, counts


def plot_calibration(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """A reliability diagram per head, side by side in one PNG.

    Each panel: mean predicted probability against observed rate in 10 equal-width bins, the
    diagonal of perfect calibration, and the expected calibration error (count-weighted mean
    gap) in the title.

    Args:
        curves: head name ("click", "save", "purchase") -> (predicted probabilities, 0/1 labels).
        path: the PNG to write (parent folders are created).

    Returns:
        `path`.

    Raises:
        ValueError: `curves` is empty, or a head's predictions and labels differ in size.
    """
    if not curves:
        raise ValueError("plot_calibration needs at least one head")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(4.0 * len(curves), 4.2)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (head, (predicted, labels)) in zip(axes, curves.items()):
        try:
            mean_pred, rate, counts = calibration_bins(predicted, labels)
        except ValueError as exc:
            raise ValueError(f"head {head!r}: {exc}") from None
        filled = counts > 0
        ece = float(np.sum(counts[filled] * np.abs(mean_pred[filled] - rate[filled]))
                    / max(counts.sum(), 1))
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
        ax.plot(mean_pred[filled], rate[filled], marker="o", label=head)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability",
               ylabel="observed rate", title=f"{head} (n={int(counts.sum())}, ECE={ece:.3f})")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_recall_curves(metrics: Mapping[str, float], lists: Sequence[str], ks: Sequence[int],
                       path: Path) -> Path:
    """Recall@K against K, one line per list, in one PNG.

    A list is drawn from the keys `f"{name}/recall@{k}"` present in `metrics`; lists with no
    such key are left out.

    Args:
        metrics: flat figures as in `metrics.json` (`pipeline/recall@100`, ...).
        lists: list names, e.g. "pipeline", "retrieval", "baseline/user_history".
        ks: the cut-offs, e.g. (10, 50, 100).
        path: the PNG to write (parent folders are created).

    Returns:
        `path`.

    Raises:
        ValueError: none of the lists has a recall figure (nothing to draw).
    """
    fig = _figure(6.0, 4.2)
    ax = fig.subplots()
    drawn = 0
    for name in lists:
        points = [(k, metrics[f"{name}/recall@{k}"]) for k in sorted(ks)
                  if f"{name}/recall@{k}" in metrics]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="o", label=name)
            drawn += 1
    if not drawn:
        raise ValueError(f"no '<list>/recall@<k>' figures for lists {list(lists)} at k={list(ks)}")
    ax.set(xlabel="K", ylabel="recall@K", title="Recall@K")
    ax.set_xticks(sorted(ks))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
