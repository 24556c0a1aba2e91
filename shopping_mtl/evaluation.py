"""Scoring ranked lists by the protocol of docs/EVALUATION.md.

A list is a frame `user_id, rank, item_id, score` (rank 1 = best). It is scored for three
ground-truth types (any engagement, save, purchase) and three variants:

- `all`: the list and the ground truth as they are (repeat engagement counts);
- `excl_seen`: the user's train+validation items removed from the list, order kept;
- `new_gt`: removed from the list and from the ground truth; users left with none drop out.

Metric names say where they come from: `<prefix>[/<variant>][/<type>]/<metric>@<k>`, the variant
omitted for `all` and the type for `any`, e.g. `baseline/covisit/recall@100` or
`retrieval/new_gt/purchase/ndcg@10`. Each figure has a 95% bootstrap interval over users
(`.../ci95_low`, `.../ci95_high`), and `<prefix>[/<variant>][/<type>]/users` says how many users
it averages.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from shopping_mtl.data.split import GT_TYPES, GroundTruth
from shopping_mtl.scale.groups import find_sorted, in_sorted, positions_in_runs, run_bounds, run_starts

VARIANTS = ("all", "excl_seen", "new_gt")
LIST_COLUMNS = ("user_id", "rank", "item_id", "score")
NDCG_K = 10
# 1 / log2(position + 1) for positions 1..1000: the binary-relevance discount.
_DISCOUNT = 1.0 / np.log2(np.arange(2, 1002))
# The ideal DCG@10 of a user with n relevant items (n = 0..10).
_IDEAL_DCG = [float(_DISCOUNT[:n].sum()) for n in range(NDCG_K + 1)]


def metric_prefix(prefix: str, variant: str, gt_type: str) -> str:
    parts = [prefix]
    if variant != "all":
        parts.append(variant)
    if gt_type != "any":
        parts.append(gt_type)
    return "/".join(parts)


def user_metrics(ranked: Mapping[str, list], truth: Mapping[str, frozenset],
                 ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Per-user Recall@K, HitRate@K and NDCG@10 for every user of `truth`.

    Args:
        ranked: user -> items, best first (a user without a list scores zero).
        truth: user -> non-empty set of relevant items.
        ks: cut-offs for recall and hit rate.

    Returns:
        metric name (`recall@10`, ..., `ndcg@10`) -> (n_users,) array in `truth`'s order.
    """
    ks = tuple(ks)
    deepest = max(max(ks), NDCG_K)
    users = list(truth)
    recall = {k: np.zeros(len(users)) for k in ks}
    hit = {k: np.zeros(len(users)) for k in ks}
    ndcg = np.zeros(len(users))
    for row, user in enumerate(users):
        relevant = truth[user]
        # Positions of the hits, in order, in plain Python: most users have none, and a numpy
        # array per user cost more than the metrics (~1M users' lists in a ranking stage).
        found, counted = [], set()
        for position, item in enumerate(ranked.get(user, ())[:deepest]):
            # An item listed twice is a hit once.
            if item in relevant and item not in counted:
                found.append(position)
                counted.add(item)
        for k in ks:
            within = bisect.bisect_left(found, k)
            recall[k][row] = within / len(relevant)
            hit[k][row] = float(within > 0)
        top = bisect.bisect_left(found, NDCG_K)
        dcg = float(_DISCOUNT[found[:top]].sum()) if top else 0.0  # one array summed, as before
        ndcg[row] = dcg / _IDEAL_DCG[min(len(relevant), NDCG_K)]
    out = {f"recall@{k}": recall[k] for k in ks}
    out.update({f"hitrate@{k}": hit[k] for k in ks})
    out[f"ndcg@{NDCG_K}"] = ndcg
    return out


def resampled_means(columns: list[np.ndarray], n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_resamples, len(columns)) means of equally long per-user arrays over the same bootstrap
    resamples of users (with replacement): paired figures are resampled together.

    The resample indices depend only on (seed, number of users), so every figure over the same
    users shares them, and a rerun gives identical resamples.
    """
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, len(columns)))
    # Chunks keep memory at about 100 x n indices even for very many users.
    chunk = max(1, min(n_resamples, 10_000_000 // max(n, 1)))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        for j, values in enumerate(columns):
            means[start:stop, j] = values[idx].mean(axis=1)
    return means


def bootstrap_interval(values: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users (`resampled_means`'s resamples)."""
    if len(values) == 0:
        return (math.nan, math.nan)
    means = resampled_means([values], n_resamples, seed)[:, 0]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """The ratio of two means over the same users, with its paired percentile bootstrap
    interval (both means taken on each resample of users). NaN where the denominator's mean is
    zero; resamples whose denominator is zero are left out of the interval."""
    if len(numerator) == 0 or denominator.mean() <= 0:
        return (math.nan, math.nan, math.nan)
    ratio = float(numerator.mean() / denominator.mean())
    if not n_resamples:
        return (ratio, math.nan, math.nan)
    means = resampled_means([numerator, denominator], n_resamples, seed)
    kept = means[:, 1] > 0
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means[kept, 0] / means[kept, 1], [tail, 100 - tail])
    return ratio, float(low), float(high)


def rows_that_count(frame: pd.DataFrame, truth: GroundTruth, deepest: int) -> pd.DataFrame:
    """The rows of a list frame that can change a metric cut at `deepest`: the truth users'
    rows among the first `deepest` of their list, or among the first `deepest` of it once their
    seen items are removed (`excl_seen`, `new_gt`); the rows' order kept. Found on integer
    codes: the test candidate set is ~20M rows at 10^7 events, and every row kept becomes
    Python strings in `lists_by_user`."""
    if frame.empty or "user_id" not in frame or "rank" not in frame or "item_id" not in frame:
        return frame
    user_codes, user_ids = pd.factorize(frame["user_id"])
    user_ids = pd.Index(user_ids)
    in_truth = np.r_[user_ids.isin(truth.users), False]  # code -1 (no id) is never a truth user
    sizes = np.bincount(user_codes[user_codes >= 0], minlength=len(user_ids))
    # Only a list longer than `deepest` can lose rows; the seen items are looked up for those.
    long = np.r_[in_truth[:-1] & (sizes > deepest), False]
    if not long.any():
        return frame if in_truth[user_codes].all() else frame[in_truth[user_codes]]
    item_codes, item_ids = pd.factorize(frame["item_id"])
    item_ids = pd.Index(item_ids)
    seen_users, seen_items = [], []
    for code in np.flatnonzero(long):
        items = truth.seen.get(user_ids[code], ())
        seen_users.append(np.full(len(items), code, np.int64))
        seen_items.extend(items)
    width = np.int64(len(item_ids) + 1)
    seen_item_codes = item_ids.get_indexer(pd.Index(seen_items, dtype=object))
    seen_keys = np.unique(np.concatenate(seen_users + [np.zeros(0, np.int64)]) * width + seen_item_codes)
    seen = in_sorted(user_codes.astype(np.int64) * width + item_codes, seen_keys)
    # Each row's position in its user's list (by rank, ties in row order), all rows and unseen ones.
    order = np.lexsort((frame["rank"].to_numpy(), user_codes))
    sorted_users = user_codes[order]
    starts = run_starts(sorted_users)
    position = positions_in_runs(sorted_users)
    unseen = ~seen[order]
    unseen_before = np.cumsum(unseen) - unseen
    unseen_position = unseen_before - np.repeat(unseen_before[starts], np.diff(np.r_[starts, len(order)]))
    counts = in_truth[sorted_users] & ((position < deepest) | (unseen & (unseen_position < deepest)))
    return frame.iloc[np.sort(order[counts])]


def lists_by_user(frame: pd.DataFrame) -> dict[str, list]:
    """A list frame -> {user: items ordered by rank}."""
    missing = [c for c in LIST_COLUMNS[:3] if c not in frame.columns]
    if missing:
        raise ValueError(f"list frame lacks columns {missing}; a list has {list(LIST_COLUMNS)}")
    # Ordered on integer user codes, and the item ids turned into Python strings once, not per
    # user through pandas' groups (the test candidate set is ~20M rows at 10^7 events).
    codes, user_ids = pd.factorize(frame["user_id"], sort=True)
    order = np.lexsort((frame["rank"].to_numpy(), codes))  # stable: equal ranks keep row order
    order = order[codes[order] >= 0]  # rows without a user id belong to no list
    sorted_codes = codes[order]
    starts = run_starts(sorted_codes)
    ends = np.r_[starts[1:], len(order)]
    items = frame["item_id"].to_numpy(dtype=object)[order].tolist()
    return {user_ids[sorted_codes[start]]: items[start:end] for start, end in zip(starts.tolist(), ends.tolist())}


def score_lists(frame: pd.DataFrame, truth: GroundTruth, prefix: str, ks: Iterable[int] = (10, 50, 100),
                n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every metric of the protocol for one list frame, with bootstrap intervals.

    Args:
        frame: the list (`user_id, rank, item_id, score`), typically 100 rows per test user.
        truth: the split's ground truth.
        prefix: metric namespace, e.g. `baseline/popularity`.
        ks: cut-offs for recall and hit rate.
        n_resamples: bootstrap resamples over users (0 skips the intervals).
        seed: bootstrap seed.
    """
    return summarize(user_values(frame, truth, prefix, ks), n_resamples, seed)


def user_values(frame: pd.DataFrame, truth: GroundTruth, prefix: str,
                ks: Iterable[int] = (10, 50, 100)) -> dict[str, np.ndarray]:
    """Every metric of `score_lists` per user: name -> (users,) array, the users of
    `truth.for_variant(type, variant)` in its order (empty where no user has that truth), so
    two lists scored on one truth pair up user by user."""
    ks = tuple(ks)
    deepest = max(max(ks, default=0), NDCG_K)
    lists = _CodedLists(rows_that_count(frame, truth, deepest), truth)
    names = [f"recall@{k}" for k in ks] + [f"hitrate@{k}" for k in ks] + [f"ndcg@{NDCG_K}"]
    out: dict[str, np.ndarray] = {}
    for variant in VARIANTS:
        for gt_type in GT_TYPES:
            relevant = truth.for_variant(gt_type, variant)
            group = metric_prefix(prefix, variant, gt_type)
            values = (lists.user_metrics(relevant, ks, unseen=variant != "all") if relevant
                      else {name: np.zeros(0) for name in names})
            out.update({f"{group}/{metric}": array for metric, array in values.items()})
    return out


def summarize(values: Mapping[str, np.ndarray], n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Per-user values (`user_values`, or several folds' concatenated) -> each figure's mean
    over its users with a 95% bootstrap interval, and `<group>/users`: how many users it
    averages. A figure without users is left out; its `users` is 0."""
    out: dict[str, float] = {}
    for name, array in values.items():
        out[f"{name.rsplit('/', 1)[0]}/users"] = float(len(array))
        if not len(array):
            continue
        out[name] = float(array.mean())
        if n_resamples:
            out[f"{name}/ci95_low"], out[f"{name}/ci95_high"] = bootstrap_interval(array, n_resamples, seed)
    return out


def pool(folds: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several folds' per-user values -> one array per figure over all their users (a user who
    is scored in two folds counts twice), in fold order."""
    parts: dict[str, list[np.ndarray]] = {}
    for values in folds:
        for name, array in values.items():
            parts.setdefault(name, []).append(array)
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def versus_best(values: Mapping[str, np.ndarray], final: str, others: Iterable[str], n_resamples: int = 1000,
                seed: int = 0) -> tuple[dict[str, float], dict[str, str]]:
    """The final list over the best of the other lists, figure by figure, with a paired 95%
    bootstrap interval over users.

    For each figure of `final` (`<final>/<rest>`), the best other list is the one with the
    highest mean of `<other>/<rest>` (the first of equals): for purchase NDCG@10 that is the
    best list on purchase NDCG@10.

    Returns:
        `vs_best_baseline/<rest>` -> ratio (and `/ci95_low`, `/ci95_high`), and `<rest>` ->
        the best list's name.
    """
    others = list(others)
    figures, best = {}, {}
    for name, array in values.items():
        if not name.startswith(f"{final}/") or not len(array):
            continue
        rest = name[len(final) + 1:]
        means = {other: values[f"{other}/{rest}"].mean() for other in others
                 if len(values.get(f"{other}/{rest}", ()))}
        if not means:
            continue
        best[rest] = max(means, key=lambda other: (means[other], -others.index(other)))
        ratio, low, high = ratio_interval(array, values[f"{best[rest]}/{rest}"], n_resamples, seed)
        figures[f"vs_best_baseline/{rest}"] = ratio
        if n_resamples:
            figures[f"vs_best_baseline/{rest}/ci95_low"] = low
            figures[f"vs_best_baseline/{rest}/ci95_high"] = high
    return figures, best


# Rows of a list frame keyed and de-duplicated at once when it is scored (~50 bytes each).
LIST_ROWS_PER_PASS = 1 << 22


def _in_list_order(user_codes: np.ndarray, rank: np.ndarray) -> bool:
    """Whether rows are by user (every row with one, each user's rows together, users in code
    order: `pd.factorize` numbers users as they first appear) and by rank within a user."""
    if not len(user_codes):
        return True
    if user_codes[0] < 0:
        return False
    step = np.diff(user_codes)
    if ((step != 0) & (step != 1)).any():
        return False
    return bool(((np.diff(rank) >= 0) | (step != 0)).all())


class _CodedLists:
    """A list frame's rows as integer codes in (user, rank) order, scored as `user_metrics`
    scores {user: items}, without a Python list per user or a str per row (the test candidate
    set is ~20M rows at 10^7 events). Each row's position counts repeats; a repeated item is
    a hit at its first position only; `unseen` scores the lists with the user's seen items
    removed (`excl_seen`, `new_gt`)."""

    def __init__(self, frame: pd.DataFrame, truth: GroundTruth):
        missing = [c for c in LIST_COLUMNS[:3] if c not in frame.columns]
        if missing:
            raise ValueError(f"list frame lacks columns {missing}; a list has {list(LIST_COLUMNS)}")
        user_codes, user_ids = pd.factorize(frame["user_id"])
        item_codes, item_ids = pd.factorize(frame["item_id"])
        self.user_ids, self.item_ids = pd.Index(user_ids), pd.Index(item_ids)
        self.width = np.int64(len(item_ids) + 1)  # item code -1 (no id) keys as no truth item can
        rank = frame["rank"].to_numpy()
        # Rows by (user, rank), ties in row order; a frame already so (lists and candidate sets
        # are written so) is not sorted again.
        if not _in_list_order(user_codes, rank):
            order = np.lexsort((rank, user_codes))  # stable: equal ranks keep row order
            order = order[user_codes[order] >= 0]  # rows without a user id belong to no list
            user_codes, item_codes = user_codes[order], item_codes[order]
            del order
        seen_keys = self._keys_of({u: truth.seen.get(u, ()) for u in user_ids})
        # The keys lead with the user, so each slice of whole users gives its part of the sorted
        # distinct keys, in order: the temporaries are a slice's (~20M rows at 10^7 events).
        # A key's rows are all seen or all unseen, so the unseen lists' keys are the distinct
        # keys not seen: kept as a mask over them, not as a second array of keys.
        keys, unseen, positions = [], [], {False: [], True: []}
        bounds = run_bounds(user_codes, LIST_ROWS_PER_PASS)
        for start, end in zip(bounds[:-1], bounds[1:]):
            users = user_codes[start:end]
            slice_keys = users * self.width
            slice_keys += item_codes[start:end]
            not_seen = ~in_sorted(slice_keys, seen_keys)
            distinct, position = self._firsts(users, slice_keys, None)
            keys.append(distinct)
            unseen.append(~in_sorted(distinct, seen_keys))
            positions[False].append(position.astype(np.int32))
            positions[True].append(self._firsts(users, slice_keys, not_seen)[1].astype(np.int32))
        self.keys = np.concatenate(keys + [np.zeros(0, np.int64)])  # (n_keys,) sorted, distinct
        self.unseen = np.concatenate(unseen + [np.zeros(0, bool)])  # (n_keys,) the key is not seen
        # Each key's first position in its user's list, all rows (False) or unseen rows (True,
        # one per unseen key).
        self.positions = {variant: np.concatenate(found + [np.zeros(0, np.int32)])
                          for variant, found in positions.items()}

    def _keys_of(self, sets: Mapping[str, Iterable[str]]) -> np.ndarray:
        """Sorted unique (user, item) keys of {user: items} over this frame's users and items."""
        owners = self.user_ids.get_indexer(pd.Index(list(sets), dtype=object))
        sizes = [len(items) for items in sets.values()]
        items = self.item_ids.get_indexer(pd.Index([i for items in sets.values() for i in items], dtype=object))
        keys = np.repeat(owners.astype(np.int64), sizes) * self.width + items
        return np.unique(keys[(np.repeat(owners, sizes) >= 0) & (items >= 0)])

    @staticmethod
    def _firsts(users: np.ndarray, keys: np.ndarray, kept: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The kept rows' (None: all) distinct (user, item) keys, sorted, and the position of
        each one's first kept row in its user's kept list (the position a hit on it counts at)."""
        if kept is not None:
            users, keys = users[kept], keys[kept]
        position = positions_in_runs(users)
        distinct, first = np.unique(keys, return_index=True)
        return distinct, position[first]

    def user_metrics(self, relevant: Mapping[str, frozenset], ks: tuple[int, ...], unseen: bool) -> dict[str, np.ndarray]:
        """`user_metrics(lists, relevant, ks)` of these lists (`unseen`: seen items removed)."""
        keys, positions = (self.keys[self.unseen] if unseen else self.keys), self.positions[unseen]
        wanted = self._keys_of(relevant)
        at = find_sorted(wanted, keys)
        hit, position = wanted[at >= 0], positions[at[at >= 0]]
        # Each hit's user as its place in `relevant` (the order of the returned arrays), hits
        # by user and then position: each list's order.
        place = np.full(len(self.user_ids), -1, np.int64)
        codes = self.user_ids.get_indexer(pd.Index(list(relevant), dtype=object))
        place[codes[codes >= 0]] = np.flatnonzero(codes >= 0)
        user = place[hit // self.width]
        order = np.lexsort((position, user))
        user, position = user[order], position[order]
        sizes = np.fromiter((len(items) for items in relevant.values()), np.int64, len(relevant))
        within = {k: np.bincount(user[position < k], minlength=len(relevant)) for k in ks}
        out = {f"recall@{k}": within[k] / sizes for k in ks}
        out.update({f"hitrate@{k}": (within[k] > 0).astype(float) for k in ks})
        ndcg = np.zeros(len(relevant))
        top = position < NDCG_K
        user, position = user[top], position[top]
        starts = run_starts(user)
        for start, end in zip(starts.tolist(), np.r_[starts[1:], len(user)].tolist()):
            dcg = float(_DISCOUNT[position[start:end]].sum())  # summed as `user_metrics` sums it
            ndcg[user[start]] = dcg / _IDEAL_DCG[min(int(sizes[user[start]]), NDCG_K)]
        out[f"ndcg@{NDCG_K}"] = ndcg
        return out
