"""Run plots: reliability diagrams of the heads and recall@K curves of the lists, as PNGs.

`plot_calibration` and `plot_recall_curves` write files that `Tracker.log_artifact` attaches to
a run. Figures are drawn by matplotlib's Agg canvas without pyplot, so plotting works headless
and leaves the process's global backend alone.

Both are meant to be read at a glance in the MLflow UI: each calibration panel is zoomed to where
its head's probabilities lie (save and purchase sit near 0.01, where a [0, 1] panel shows a flat
smudge at the origin), and recall curves that coincide are told apart by marker, line style and
a legend entry naming the list they equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

# Rows a calibration pass reads at once: the float64 copies of ~20M test rows at 10^7 events
# were ~0.8 GB.
_SLICE = 1 << 20
# Quantile edges are estimated on at most this many evenly strided rows: a sort of the full
# ~20M rows would cost a copy of them, and the edges only need to be roughly equal-count.
_QUANTILE_SAMPLE = 1 << 20
# Recall figures closer than this are one curve: far below anything a plot or a reader resolves.
COINCIDE_ATOL = 1e-6

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")


def _figure(width: float, height: float):
    """A matplotlib Figure drawn by the Agg canvas: no pyplot, no global backend switch, so it
    works headless and beside any backend the caller's process chose."""
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """`fig` written to `path` as a PNG, parent folders created; returns `path` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _quantile_edges(predicted: np.ndarray, n_bins: int) -> np.ndarray:
    """The n_bins - 1 interior edges that split `predicted` into ~equal-count bins, estimated on
    an evenly strided sample of at most `_QUANTILE_SAMPLE` rows."""
    step = max(1, -(-len(predicted) // _QUANTILE_SAMPLE))
    sample = np.asarray(predicted[::step], dtype=np.float64)
    return np.quantile(sample, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])


def calibration_bins(predicted: np.ndarray, labels: np.ndarray, n_bins: int = 10,
                     strategy: Literal["uniform", "quantile"] = "uniform",
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability-diagram points: per bin, the mean predicted probability, the observed
    positive rate and the count (NaN means for an empty bin).

    Args:
        predicted: (n,) probabilities in [0, 1].
        labels: (n,) 0/1 outcomes.
        n_bins: number of bins.
        strategy: "uniform": equal-width bins of [0, 1], a prediction of exactly 1.0 in the last
            bin (the bins of the `<head>/ece` metric). "quantile": ~equal-count bins at the
            quantiles of `predicted`, so the points spread over where the predictions are
            (with probabilities ~0.01, nine of ten equal-width bins are empty). A value on an
            edge goes to the upper bin.

    Returns:
        (mean predicted, observed rate, count), each of shape (n_bins,), in increasing order
        of predicted probability.

    Caveats:
        Quantile edges come from an evenly strided sample of at most 2^20 rows, so counts are
        equal only roughly on larger inputs. Predictions tied at one value cannot be split:
        with a mass of ties, bins collapse and some come back empty (count 0, NaN means).

    Raises:
        ValueError: `predicted` and `labels` differ in size, or `strategy` is unknown.
    """
    predicted, labels = np.ravel(predicted), np.ravel(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.size} predictions but {labels.size} labels")
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    edges = _quantile_edges(predicted, n_bins) if strategy == "quantile" and len(predicted) else None
    counts, predicted_sum, label_sum = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    for start in range(0, len(predicted), _SLICE):
        p = np.asarray(predicted[start:start + _SLICE], dtype=np.float64)
        if edges is None:
            index = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
        else:
            index = np.searchsorted(edges, p, side="right")
        counts += np.bincount(index, minlength=n_bins)
        predicted_sum += np.bincount(index, weights=p, minlength=n_bins)
        label_sum += np.bincount(index, weights=np.asarray(labels[start:start + _SLICE], np.float64),
                                 minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return predicted_sum / counts, label_sum / counts, counts


def _wilson(rate: np.ndarray, counts: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson interval of binomial rates (sane at a rate of 0, unlike the normal one)."""
    n = np.maximum(counts, 1)
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _zoom(values: np.ndarray, margin: float = 0.08) -> tuple[float, float]:
    """Axis range holding `values` with `margin` of the span each side, within [0, 1]; a range
    that would reach down to near 0 starts at 0, so the origin is not cut off by a sliver."""
    lo, hi = float(np.min(values)), float(np.max(values))
    span = max(hi - lo, 0.02 * max(hi, 1e-3), 1e-4)  # one bin, or all points equal
    lo, hi = max(0.0, lo - margin * span), min(1.0, hi + margin * span)
    if lo < 0.25 * (hi - lo):
        lo = 0.0
    return lo, hi


def plot_calibration(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path,
                     n_bins: int = 10) -> Path:
    """`calibration_figure(curves, n_bins)` written to `path` as a PNG (parent folders are
    created); returns `path`. Raises as `calibration_figure` does, before writing anything."""
    fig = calibration_figure(curves, n_bins)
    return _save(fig, path)


def calibration_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       n_bins: int = 10) -> Figure:
    """A reliability diagram per head, side by side in one figure, each zoomed to its data.

    Each panel: mean predicted probability against observed rate in `n_bins` equal-count
    (quantile) bins with 95% Wilson intervals, the diagonal of perfect calibration over the
    panel's range, and in the title the head, its rows, its positives and the expected
    calibration error. Both axes of a panel share one range, from the smallest to the largest
    mean prediction or interval end with a small margin (from 0 when that is near), so the
    diagonal stays at 45 degrees; a panel zoomed below 0.5 says so in a corner note.

    Args:
        curves: head name ("click", "save", "purchase") -> (predicted probabilities, 0/1 labels).
        n_bins: quantile bins per head.

    Returns:
        The figure: one Axes per head in `curves`' order (`fig.axes[i]`), drawn by Agg.

    Caveats:
        The ECE in the title is over 10 equal-width bins, as the `<head>/ece` metric is, not over
        the plotted quantile bins; it is the same figure as the metric when fed the same rows.
        A bin with few rows has a wide interval and so widens its panel's range.
        A head with no rows gets an empty panel saying so.

    Raises:
        ValueError: `curves` is empty, or a head's predictions and labels differ in size.
    """
    if not curves:
        raise ValueError("plot_calibration needs at least one head")
    fig = _figure(4.3 * len(curves), 4.6)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (head, (predicted, labels)) in zip(axes, curves.items()):
        try:
            mean_pred, rate, counts = calibration_bins(predicted, labels, n_bins, "quantile")
            uniform_pred, uniform_rate, uniform_counts = calibration_bins(predicted, labels)
        except ValueError as exc:
            raise ValueError(f"head {head!r}: {exc}") from None
        rows = int(counts.sum())
        ax.set(xlabel="mean predicted probability", ylabel="observed rate")
        if not rows:
            ax.set_title(f"{head}: no rows")
            continue
        positives = int(round(float(np.nansum(rate * counts))))
        filled = counts > 0
        ece = float(np.nansum(uniform_counts * np.abs(uniform_pred - uniform_rate)) / rows)
        mean_pred, rate, counts = mean_pred[filled], rate[filled], counts[filled]
        low, high = _wilson(rate, counts)
        # The whole interval in view, so a panel shows how sure each point is.
        lo, hi = _zoom(np.concatenate([mean_pred, low, high]))
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1, label="perfect")
        # Clipped at 0: at a rate of 0 or 1 the Wilson bound can miss it by a rounding error.
        ax.errorbar(mean_pred, rate, yerr=[np.maximum(rate - low, 0.0), np.maximum(high - rate, 0.0)],
                    marker="o", markersize=5,
                    capsize=2, linewidth=1.5, label=f"{head} ({len(counts)} equal-count bins)")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal")
        ax.set_title(f"{head}: n={rows:,}, positives={positives:,} ({positives / rows:.2%})\n"
                     f"ECE={ece:.4f}, mean p={mean_pred @ counts / rows:.4f}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="both", style="plain", useOffset=False)
        ax.legend(loc="upper left", fontsize=8)
        if hi < 0.5:
            # Zoomed: say so, so nobody reads a 0-0.03 panel as a 0-1 one.
            ax.text(0.97, 0.03, f"zoomed: axes span {lo:.3g} to {hi:.3g}\n(probabilities run 0 to 1)",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="dimgrey",
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "lightgrey"})
    fig.tight_layout()
    return fig


def coinciding_lists(series: Mapping[str, tuple[Sequence[int], Sequence[float]]],
                     atol: float = COINCIDE_ATOL) -> dict[str, str]:
    """Which lists draw the same curve as an earlier one.

    Args:
        series: list name -> (ks, recall at each k), in drawing order.
        atol: largest absolute recall difference still counted as the same curve.

    Returns:
        later list -> the first earlier list with the same ks and recall within `atol` at every
        k; lists that equal no earlier one are absent. Three equal lists all map to the first.
    """
    equal_to: dict[str, str] = {}
    names = list(series)
    for i, name in enumerate(names):
        ks, values = series[name]
        for earlier in names[:i]:
            if earlier in equal_to:
                continue  # compare with the first of a group only
            other_ks, other_values = series[earlier]
            if (list(ks) == list(other_ks)
                    and np.allclose(values, other_values, rtol=0.0, atol=atol)):
                equal_to[name] = earlier
                break
    return equal_to


def plot_recall_curves(metrics: Mapping[str, float], lists: Sequence[str], ks: Sequence[int],
                       path: Path) -> Path:
    """`recall_figure(metrics, lists, ks)` written to `path` as a PNG (parent folders are
    created); returns `path`. Raises as `recall_figure` does, before writing anything."""
    fig = recall_figure(metrics, lists, ks)
    return _save(fig, path)


def recall_figure(metrics: Mapping[str, float], lists: Sequence[str], ks: Sequence[int]) -> Figure:
    """Recall@K against K, one line per list, in one figure.

    A list is drawn from the keys `f"{name}/recall@{k}"` present in `metrics`; lists with no
    such key are left out. Each list has its own marker and line style, later lists drawn on top
    with smaller markers, so a curve lying on another still shows; a list whose curve equals an
    earlier one's (within `COINCIDE_ATOL` at every k) is labelled "<list> (= <earlier>)". The
    legend gives each list's recall at its largest K. K is on a log axis when the ks span a
    decade or more.

    Args:
        metrics: flat figures as in `metrics.json` (`pipeline/recall@100`, ...).
        lists: list names, e.g. "pipeline", "retrieval", "baseline/user_history".
        ks: the cut-offs, e.g. (10, 50, 100).

    Returns:
        The figure, one Axes (`fig.axes[0]`), drawn by Agg.

    Raises:
        ValueError: none of the lists has a recall figure (nothing to draw).
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for name in lists:
        points = [(k, float(metrics[f"{name}/recall@{k}"])) for k in sorted(ks)
                  if f"{name}/recall@{k}" in metrics]
        if points:
            x, y = zip(*points)
            series[name] = (list(x), list(y))
    if not series:
        raise ValueError(f"no '<list>/recall@<k>' figures for lists {list(lists)} at k={list(ks)}")
    equal_to = coinciding_lists(series)
    fig = _figure(8.0, 4.4)
    ax = fig.subplots()
    for i, (name, (x, y)) in enumerate(series.items()):
        label = f"{name} (= {equal_to[name]})" if name in equal_to else name
        ax.plot(x, y, marker=_MARKERS[i % len(_MARKERS)],
                linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                # Earlier lists bigger and below: a later list lying on one leaves its rim showing.
                markersize=max(10 - 1.5 * i, 4), linewidth=max(2.8 - 0.4 * i, 1.2),
                alpha=0.85, zorder=2 + i, label=f"{label}: R@{x[-1]}={y[-1]:.3f}")
    ticks = sorted(set(ks))
    if ticks[-1] >= 10 * ticks[0]:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # only the ks are labelled
    ax.set_xticks(ticks, labels=[str(k) for k in ticks])
    ax.set(xlabel="K", ylabel="recall@K", title="Recall@K")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    fig.tight_layout()
    return fig
