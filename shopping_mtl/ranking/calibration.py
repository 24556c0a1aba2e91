"""Platt scaling per head, and the head metrics of docs/EVALUATION.md (AUC, log loss, GAUC, ECE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Platt:
    """p -> sigmoid(a * logit(p) + b), fitted on held-out rows."""

    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, p: np.ndarray, labels: np.ndarray) -> "Platt":
        if len(np.unique(labels)) < 2:
            return cls()
        model = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], labels)
        return cls(float(model.coef_[0, 0]), float(model.intercept_[0]))

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * _logit(p) + self.b)))


def calibrate(raw: dict, platt: dict, ordered: bool) -> dict:
    """Each head through its Platt map; with `ordered` (ESMM), save and purchase are capped at
    click afterwards, so the calibrated probabilities keep the chain's order on every row."""
    out = {task: platt[task](p) for task, p in raw.items()}
    if ordered and "click" in out:
        for task in ("save", "purchase"):
            if task in out:
                out[task] = np.minimum(out[task], out["click"])
    return out


def expected_calibration_error(p: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Sum over 10 equal-width probability bins of (bin share) * |mean label - mean p|."""
    if len(p) == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int16), bins - 1)  # p in [0, 1]
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(labels[mask].mean() - p[mask].mean())
    return float(total)


def auc(p: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (tied scores count half): `roc_auc_score`'s area,
    from one sorted copy of the scores and each positive's place among them, where sklearn's
    curve holds ~50 bytes a row (~20M test candidates at 10^7 events). nan with one class."""
    p = np.asarray(p)
    positive = np.asarray(labels) == 1
    n_pos = int(positive.sum())
    n_neg = len(p) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ordered = np.sort(p)
    scores = p[positive]
    # Each positive's average 1-based rank among all rows is (below + up_to + 1) / 2.
    twice_rank_sum = int((np.searchsorted(ordered, scores, "left") + np.searchsorted(ordered, scores, "right")).sum())
    return float((0.5 * (twice_rank_sum + n_pos) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_log_loss(p: np.ndarray, labels: np.ndarray, rows: int = 1 << 20) -> float:
    """Mean binary cross-entropy of 0/1 `labels` under `p` clipped to [EPS, 1 - EPS] (sklearn's
    `log_loss` with labels [0, 1], summed in float64 whatever p's dtype), `rows` at a time:
    sklearn builds (rows, 2) copies, ~1.3 GB at 20M rows."""
    if len(p) == 0:
        return float("nan")
    p = np.asarray(p)
    total = 0.0
    for start in range(0, len(p), rows):
        q = np.clip(p[start:start + rows], EPS, 1 - EPS).astype(np.float64)  # clipped in p's dtype
        positive = np.asarray(labels[start:start + rows]) == 1
        total -= float(np.log(q[positive]).sum()) + float(np.log(1 - q[~positive]).sum())
    return total / len(p)


def grouped_auc(p: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """Per-user AUC averaged over the users with both classes (GAUC); nan when there are none.

    Each user's AUC is the Mann-Whitney statistic, (R_pos - n_pos (n_pos + 1) / 2) /
    (n_pos n_neg) with R_pos the sum of the positives' ranks among the user's rows, tied scores
    sharing their average rank: the area `roc_auc_score` gives, for all users in a few sorts
    instead of a Python loop over them. Rows whose user is missing are left out. `users` may be
    ids or integer codes (-1: missing); ranks are found for the positive rows only, so the
    temporaries are a few bytes a row (~20M test candidates at 10^7 events).
    """
    users = np.asarray(users)
    user = users if users.dtype.kind == "i" else pd.factorize(users)[0]
    p, positive = np.asarray(p), np.asarray(labels) == 1
    if (user < 0).any():
        rows = user >= 0
        user, p, positive = user[rows], p[rows], positive[rows]
    if len(user) == 0:
        return float("nan")
    order = np.lexsort((p, user))  # by user, then score
    user = user[order].astype(np.int32) if user.max() < 2**31 else user[order]
    p, positive = p[order], positive[order]
    del order
    n_users = int(user[-1]) + 1
    size = np.bincount(user, minlength=n_users)  # (n_users,)
    first_of_user = np.cumsum(size) - size
    # Runs of equal (user, score) share the average of their 1-based ranks within the user.
    change = np.empty(len(user), bool)
    change[0] = True
    np.not_equal(user[1:], user[:-1], out=change[1:])
    change[1:] |= p[1:] != p[:-1]
    run = np.cumsum(change, dtype=np.int64 if len(user) >= 2**31 else np.int32) - 1  # (n_rows,)
    bounds = np.append(np.flatnonzero(change), len(user))  # (n_runs + 1,) each run's first row
    del change, p
    rows = np.flatnonzero(positive)
    at, owner = run[rows], user[rows]
    del run
    rank = (bounds[at] + bounds[at + 1] + 1) / 2.0 - first_of_user[owner]  # mean of start+1 .. end
    n_pos = np.bincount(owner, minlength=n_users).astype(float)
    n_neg = size - n_pos
    rank_sum = np.bincount(owner, weights=rank, minlength=n_users)
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return float("nan")
    auc = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    return float(auc.mean())


def head_metrics(p: np.ndarray, labels: np.ndarray, users: np.ndarray, prefix: str) -> dict[str, float]:
    """AUC, log loss, per-user AUC averaged over users with both classes (GAUC), ECE."""
    out = {f"{prefix}/positive_rate": float(labels.mean()) if len(labels) else float("nan")}
    if 0 < np.count_nonzero(labels == 1) < len(labels):  # both classes (labels are 0/1)
        out[f"{prefix}/auc"] = auc(p, labels)
        out[f"{prefix}/logloss"] = mean_log_loss(p, labels)
    gauc = grouped_auc(p, labels, users)
    if not np.isnan(gauc):
        out[f"{prefix}/gauc"] = gauc
    out[f"{prefix}/ece"] = expected_calibration_error(p, labels)
    return out
