"""The value model: one score per candidate from the calibrated heads, and the choice of its
weights on the held-out users (never the test day)."""

from __future__ import annotations

import itertools

import numpy as np

from shopping_mtl.data.split import GroundTruth
from shopping_mtl.evaluation import score_lists
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.scale.top_lists import top_lists

VALUE_GRID = {"click": (1.0,), "save": (0.0, 0.5, 1.0, 2.0), "purchase": (0.0, 1.0, 2.0, 4.0)}


def value_score(probabilities: dict, weights) -> np.ndarray:
    """sum over heads of weight x calibrated probability (a head without a weight counts 0)."""
    return sum(weights.get(t, 0.0) * probabilities[t] for t in TASKS)


def choose_value_weights(users, items, probabilities, truth: GroundTruth, k: int) -> tuple[dict, float]:
    """The grid's weights with the best NDCG@10 (any engagement) on the holdout users."""
    best, best_ndcg = None, -1.0
    for values in itertools.product(*(VALUE_GRID[t] for t in TASKS)):
        weights = dict(zip(TASKS, values))
        lists = top_lists(users, items, value_score(probabilities, weights), probabilities, k)
        ndcg = score_lists(lists, truth, "h", (10,), n_resamples=0).get("h/ndcg@10", 0.0)
        if ndcg > best_ndcg:
            best, best_ndcg = weights, ndcg
    return best, best_ndcg
