"""Behaviour of the run plots: calibration panels zoomed to the data, recall curves that stay
distinguishable when lists coincide, equal-count calibration bins, and the PNG files."""

from __future__ import annotations

import numpy as np
import pytest

from shopping_mtl.tracking import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _head(rng, n, low, high):
    """Predictions uniform on [low, high] and labels drawn at those rates (calibrated)."""
    p = rng.uniform(low, high, size=n)
    return p, (rng.uniform(size=n) < p).astype(np.float32)


@pytest.fixture
def curves():
    rng = np.random.default_rng(0)
    return {"click": _head(rng, 20_000, 0.02, 0.6), "save": _head(rng, 20_000, 0.005, 0.03)}


def test_quantile_bins_have_equal_counts_and_uniform_keeps_its_bins():
    rng = np.random.default_rng(1)
    predicted = rng.beta(2, 150, size=10_000)  # skewed to ~0.01, as save probabilities are
    labels = (rng.uniform(size=predicted.size) < predicted).astype(int)
    mean_pred, rate, counts = plots.calibration_bins(predicted, labels, 10, "quantile")
    assert counts.sum() == predicted.size
    assert counts.min() >= 950 and counts.max() <= 1050
    assert np.all(np.diff(mean_pred) > 0)
    assert np.all((rate >= 0) & (rate <= 1))
    _, _, uniform_counts = plots.calibration_bins(predicted, labels)
    assert uniform_counts[0] > 0.99 * predicted.size  # why equal-width bins say nothing here


def test_quantile_bins_with_ties_leave_bins_empty_not_wrong():
    predicted = np.r_[np.zeros(900), np.linspace(0.1, 0.9, 100)]
    labels = np.r_[np.zeros(900), np.ones(100)]
    mean_pred, rate, counts = plots.calibration_bins(predicted, labels, 10, "quantile")
    assert counts.sum() == 1000
    filled = counts > 0
    assert np.isnan(rate[~filled]).all()
    # Every zero lands in one bin, whose rate is exactly theirs.
    zero_bin = np.flatnonzero(filled & (mean_pred == 0.0))
    assert zero_bin.size == 1 and counts[zero_bin[0]] == 900 and rate[zero_bin[0]] == 0.0


def test_calibration_bins_rejects_unknown_strategy():
    with pytest.raises(ValueError, match="strategy must be"):
        plots.calibration_bins(np.ones(3), np.ones(3), strategy="equal")


def test_save_panel_is_zoomed_to_its_data(curves):
    fig = plots.calibration_figure(curves)
    click, save = fig.axes
    for ax in (click, save):
        x, y = ax.lines[1].get_data()  # [0] is the diagonal, [1] the bins' points
        (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
        assert x_lo <= x.min() and x.max() <= x_hi
        assert y_lo <= y.min() and y.max() <= y_hi
        diagonal_x, diagonal_y = ax.lines[0].get_data()
        np.testing.assert_allclose(diagonal_x, [x_lo, x_hi])
        np.testing.assert_allclose(diagonal_y, [y_lo, y_hi])
    assert save.get_xlim()[1] < 0.06 and save.get_ylim()[1] < 0.06
    assert click.get_xlim()[1] > 0.5
    # The data fill most of the save panel rather than a corner of it.
    x, _ = save.lines[1].get_data()
    assert x.max() - x.min() > 0.5 * (save.get_xlim()[1] - save.get_xlim()[0])


def test_calibration_titles_give_rows_and_positives(curves):
    fig = plots.calibration_figure(curves)
    for ax, (head, (_, labels)) in zip(fig.axes, curves.items()):
        title = ax.get_title()
        assert title.startswith(f"{head}: n=20,000, positives={int(labels.sum()):,}")
        assert "ECE=" in title
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert any(t.startswith("zoomed") for t in texts)
    assert not fig.axes[0].texts  # click spans most of [0, 1]: no zoom note


def test_calibration_title_ece_is_the_metrics_ece(curves):
    predicted, labels = curves["save"]
    mean_pred, rate, counts = plots.calibration_bins(predicted, labels)  # equal-width, as the metric
    filled = counts > 0
    ece = np.sum(counts[filled] * np.abs(mean_pred[filled] - rate[filled])) / counts.sum()
    assert f"ECE={ece:.4f}" in plots.calibration_figure(curves).axes[1].get_title()


def test_calibration_with_an_empty_head_draws_the_others(curves):
    fig = plots.calibration_figure({**curves, "purchase": (np.zeros(0), np.zeros(0))})
    assert fig.axes[2].get_title() == "purchase: no rows"
    assert len(fig.axes[1].lines) >= 2


def _recall_metrics(values: dict[str, list[float]], ks) -> dict[str, float]:
    return {f"{name}/recall@{k}": v for name, vs in values.items() for k, v in zip(ks, vs)}


def test_coinciding_lists_are_named_in_the_legend_and_drawn_distinctly():
    ks = (10, 50, 100)
    metrics = _recall_metrics({"pipeline": [0.3, 0.5, 0.6], "retrieval_order": [0.2, 0.4, 0.5],
                               "retrieval": [0.2, 0.4, 0.5 + 1e-9],
                               "baseline/popularity": [0.2, 0.4, 0.51]}, ks)
    fig = plots.recall_figure(metrics, ["pipeline", "retrieval_order", "retrieval",
                                        "baseline/popularity", "absent"], ks)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[2].startswith("retrieval (= retrieval_order)")
    # Close is not equal: 0.01 apart is a different curve, and says so by not being labelled.
    assert labels[0].startswith("pipeline:") and labels[1].startswith("retrieval_order:")
    assert labels[3].startswith("baseline/popularity:")
    assert len(labels) == 4  # "absent" has no figures
    lines = ax.get_lines()
    styles = {(line.get_marker(), line.get_linestyle()) for line in lines}
    assert len(styles) == len(lines)
    order, retrieval = lines[1], lines[2]
    # The later, coinciding line sits on top and is smaller, so the one under it still shows.
    assert retrieval.get_zorder() > order.get_zorder()
    assert retrieval.get_markersize() < order.get_markersize()


def test_coinciding_lists_needs_the_same_ks():
    series = {"a": ([10, 50], [0.1, 0.2]), "b": ([10], [0.1]), "c": ([10, 50], [0.1, 0.2]),
              "d": ([10, 50], [0.1, 0.2])}
    assert plots.coinciding_lists(series) == {"c": "a", "d": "a"}


def test_recall_k_axis_is_log_only_when_ks_span_a_decade():
    metrics = _recall_metrics({"pipeline": [0.1, 0.3, 0.5]}, (10, 100, 1000))
    wide = plots.recall_figure(metrics, ["pipeline"], (10, 100, 1000)).axes[0]
    assert wide.get_xscale() == "log"
    assert [t.get_text() for t in wide.get_xticklabels()] == ["10", "100", "1000"]
    narrow = plots.recall_figure(_recall_metrics({"pipeline": [0.1, 0.3]}, (10, 20)),
                                 ["pipeline"], (10, 20)).axes[0]
    assert narrow.get_xscale() == "linear"


def test_plots_write_png_files(tmp_path, curves):
    calibration = plots.plot_calibration(curves, tmp_path / "a" / "calibration.png")
    recall = plots.plot_recall_curves(_recall_metrics({"pipeline": [0.1, 0.3]}, (10, 100)),
                                      ["pipeline"], (10, 100), tmp_path / "b" / "recall.png")
    for path in (calibration, recall):
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 10_000


def test_bins_of_only_positives_draw_without_negative_error_bars(tmp_path):
    """Bins whose rows are all positive (a rate of exactly 1): the Wilson upper bound falls short
    of 1 by a rounding error at 100 rows, which matplotlib refused as a negative error bar."""
    predicted = np.linspace(0.01, 0.99, 1000)
    labels = (predicted > 0.69).astype(float)  # the top three bins of 100 rows: all positive
    path = plots.plot_calibration({"click": (predicted, labels)}, tmp_path / "calibration.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
