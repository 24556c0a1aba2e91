"""Each user's top k rows by a score, ordered on integer codes a slice of whole users at a time:
the test candidates are ~20M rows at 10^7 events, so only the kept rows become a frame."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from shopping_mtl.evaluation import LIST_ROWS_PER_PASS
from shopping_mtl.scale.groups import positions_in_runs, run_bounds


def top_lists(users, items, score, probabilities: Mapping[str, np.ndarray], k: int,
              rows_per_pass: int | None = None) -> pd.DataFrame:
    """Each user's top `k` rows by `score` (ties by item id, then row order), users in id order:
    `user_id, rank, item_id, score` and `p_<name>` for each of `probabilities`. In plain pandas:
    a stable sort by (user, -score, item), the first k of each user (the reference of
    `tests/test_ranking.py`). Ordered on integer codes (ids coded in sorted
    order, so the order is the string sort's) and only the kept rows built into a frame: the
    test candidates are ~20M rows at 10^7 events. `users` and `items` may be Series of Arrow
    strings (the candidate frames' columns), coded without a Python str per row."""
    user_codes, user_ids = pd.factorize(users if isinstance(users, pd.Series) else np.asarray(users), sort=True)
    user_codes = user_codes.astype(np.int32)
    item_codes, item_ids = pd.factorize(items if isinstance(items, pd.Series) else np.asarray(items), sort=True)
    item_codes = item_codes.astype(np.int32)
    score = np.asarray(score)
    # Rows already by user (the candidate set is written so) are ordered a slice of whole users
    # at a time (the order is by user first, so it is the same); others all at once.
    by_user = bool((np.diff(user_codes) >= 0).all())
    rows_per_pass = LIST_ROWS_PER_PASS if rows_per_pass is None else rows_per_pass
    bounds = run_bounds(user_codes, rows_per_pass) if by_user else [0, len(user_codes)]
    kept, ranks = [], []
    for start, end in zip(bounds[:-1], bounds[1:]):
        here = slice(start, end)
        order = np.lexsort((item_codes[here], -score[here], user_codes[here]))  # stable: full ties keep row order
        rank = positions_in_runs(user_codes[here][order]) + 1
        kept.append(order[rank <= k] + start)
        ranks.append(rank[rank <= k])
    keep = np.concatenate(kept + [np.zeros(0, np.int64)])
    rank = np.concatenate(ranks + [np.zeros(0, np.int64)])
    return pd.DataFrame({"user_id": _take(user_ids, user_codes[keep]), "rank": rank,
                         "item_id": _take(item_ids, item_codes[keep]), "score": score[keep],
                         **{f"p_{t}": np.asarray(values)[keep] for t, values in probabilities.items()}})


def _take(uniques, codes: np.ndarray):
    """`pd.factorize`'s uniques at `codes`: an array of the uniques' own kind (Arrow strings stay
    Arrow strings)."""
    return uniques.take(codes) if isinstance(uniques, np.ndarray) else uniques.take(codes).array


def _take(uniques, codes: np.ndarray):
    """`pd.factorize`'s uniques at `codes`: an array of the uniques' own kind (Arrow strings stay
    Arrow strings)."""
    return uniques.take(codes) if isinstance(uniques, np.ndarray) else uniques.take(codes).array
