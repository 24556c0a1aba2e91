"""Platt scaling per head, and the head metrics of EVALUATION.md (AUC, log loss, GAUC, ECE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

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
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(labels[mask].mean() - p[mask].mean())
    return float(total)


def grouped_auc(p: np.ndarray, labels: np.ndarray, users: np.ndarray) -> float:
    """Per-user AUC averaged over the users with both classes (GAUC); nan when there are none.

    Each user's AUC is the Mann-Whitney statistic, (R_pos - n_pos (n_pos + 1) / 2) /
    (n_pos n_neg) with R_pos the sum of the positives' ranks among the user's rows, tied scores
    sharing their average rank: the area `roc_auc_score` gives, for all users in a few sorts
    instead of a Python loop over them. Rows whose user is missing are left out.
    """
    user = pd.factorize(np.asarray(users))[0]
    rows = user >= 0
    user, p, positive = user[rows], np.asarray(p)[rows], (np.asarray(labels)[rows] == 1)
    if len(user) == 0:
        return float("nan")
    order = np.lexsort((p, user))  # by user, then score
    user, p, positive = user[order], p[order], positive[order]
    n_users = int(user.max()) + 1
    size = np.bincount(user, minlength=n_users)  # (n_users,)
    first_of_user = np.cumsum(size) - size
    # Runs of equal (user, score) share the average of their 1-based ranks within the user.
    starts = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (p[1:] != p[:-1])])
    ends = np.r_[starts[1:], len(user)]  # exclusive
    run_rank = (starts + ends + 1) / 2.0 - first_of_user[user[starts]]  # mean of start+1 .. end
    rank = np.repeat(run_rank, ends - starts)  # (n_rows,)
    n_pos = np.bincount(user, weights=positive, minlength=n_users)
    n_neg = size - n_pos
    rank_sum = np.bincount(user, weights=np.where(positive, rank, 0.0), minlength=n_users)
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return float("nan")
    auc = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    return float(auc.mean())


def head_metrics(p: np.ndarray, labels: np.ndarray, users: np.ndarray, prefix: str) -> dict[str, float]:
    """AUC, log loss, per-user AUC averaged over users with both classes (GAUC), ECE."""
    out = {f"{prefix}/positive_rate": float(labels.mean()) if len(labels) else float("nan")}
    if len(np.unique(labels)) == 2:
        out[f"{prefix}/auc"] = float(roc_auc_score(labels, p))
        out[f"{prefix}/logloss"] = float(log_loss(labels, np.clip(p, EPS, 1 - EPS), labels=[0, 1]))
    gauc = grouped_auc(p, labels, users)
    if not np.isnan(gauc):
        out[f"{prefix}/gauc"] = gauc
    out[f"{prefix}/ece"] = expected_calibration_error(p, labels)
    return out
