"""The vectorised GAUC equals the per-user loop of roc_auc_score it replaced; the AUC and log
loss computed without sklearn's per-row copies equal sklearn's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from shopping_mtl.ranking.calibration import EPS, auc, grouped_auc, head_metrics, mean_log_loss


def loop_gauc(p, labels, users) -> float:
    """The per-user Python loop `head_metrics` used before."""
    frame = pd.DataFrame({"u": users, "p": p, "y": labels})
    aucs = [roc_auc_score(g["y"], g["p"]) for _, g in frame.groupby("u") if g["y"].nunique() == 2]
    return float(np.mean(aucs)) if aucs else float("nan")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("score_dtype", [np.float64, np.float32])
def test_grouped_auc_equals_per_user_roc_auc(seed, score_dtype):
    rng = np.random.default_rng(seed)
    n = 6_000
    users = np.array([f"u{i}" for i in rng.integers(0, 200, n)], dtype=object)
    p = (rng.integers(0, 25, n) / 25).astype(score_dtype)  # few distinct scores: many ties
    labels = (rng.random(n) < 0.15 + 0.5 * p).astype(np.int64)
    # Users with one class only: all negative, all positive, a single row.
    users[:40], labels[:40] = "only-neg", 0
    users[40:80], labels[40:80] = "only-pos", 1
    users[80] = "single"
    expected = loop_gauc(p, labels, users)
    assert grouped_auc(p, labels, users) == pytest.approx(expected, abs=1e-9)
    metrics = head_metrics(p, labels, users, "click")
    assert metrics["click/gauc"] == pytest.approx(expected, abs=1e-9)


def test_grouped_auc_by_hand():
    # u1: scores 0.1 (neg), 0.5 (pos), 0.5 (neg), 0.9 (pos) -> ranks 1, 2.5, 2.5, 4;
    # R_pos = 6.5, n_pos = n_neg = 2: (6.5 - 3) / 4 = 0.875. u2 has positives only: left out.
    p = np.array([0.1, 0.5, 0.5, 0.9, 0.3, 0.4])
    labels = np.array([0, 1, 0, 1, 1, 1])
    users = np.array(["u1", "u1", "u1", "u1", "u2", "u2"], dtype=object)
    assert grouped_auc(p, labels, users) == 0.875


def test_no_user_with_both_classes_leaves_gauc_out():
    p, labels = np.array([0.2, 0.7]), np.array([0, 1])
    users = np.array(["a", "b"], dtype=object)
    assert np.isnan(grouped_auc(p, labels, users))
    assert np.isnan(grouped_auc(p[:0], labels[:0], users[:0]))
    assert set(head_metrics(p, labels, users, "click")) == {
        "click/positive_rate", "click/auc", "click/logloss", "click/ece"}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("score_dtype", [np.float64, np.float32])
def test_auc_and_log_loss_equal_sklearns(seed, score_dtype):
    rng = np.random.default_rng(seed)
    n = 20_000
    p = (rng.integers(0, 40, n) / 39).astype(score_dtype)  # ties, and 0 and 1 exactly (clipped)
    labels = (rng.random(n) < 0.1 + 0.6 * p).astype(np.float32)
    assert auc(p, labels) == pytest.approx(roc_auc_score(labels, p), abs=1e-12)
    expected = log_loss(labels, np.clip(p, EPS, 1 - EPS).astype(np.float64), labels=[0, 1])
    for rows in (1, 7, 1 << 20):  # slices of any size
        assert mean_log_loss(p, labels, rows=rows) == pytest.approx(expected, rel=1e-12)
    # Users given as integer codes, -1 for a missing user, as the ranking stage passes them.
    codes = rng.integers(-1, 300, n)
    kept = codes >= 0
    assert grouped_auc(p, labels, codes) == pytest.approx(
        loop_gauc(p[kept], labels[kept], codes[kept]), abs=1e-9)
    metrics = head_metrics(p, labels, codes, "save")
    assert metrics["save/auc"] == auc(p, labels) and metrics["save/logloss"] == mean_log_loss(p, labels)


def test_auc_with_one_class_is_nan():
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([0, 0])))
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
