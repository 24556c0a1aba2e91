"""Statistics of an event log that the profile records and that calibration matches.

Everything here is a pure function of integer-coded events (or timestamps): popularity slopes,
repeat and category-affinity shares, catalogue growth, behaviour shares and the hour-of-day curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.synthetic.profile import BehaviorShares


def rank_frequency_exponent(counts: np.ndarray, min_count: int = 2, n_points: int = 40) -> float:
    """Popularity exponent s of a rank-frequency curve, count(rank r) ~ r**-s.

    Least squares on log-log at `n_points` log-spaced ranks, from rank 1 to the last rank with
    at least `min_count` events. Log spacing weighs each decade of ranks alike (otherwise the
    long tail, most of the points, decides alone), and the cut drops the plateau of items seen
    once, a finite-sample artefact (about half the items of a small log) that says nothing
    about the slope.

    Args:
        counts: events per item (or per category); zeros are ignored.
        min_count: smallest count still used in the fit.
        n_points: number of log-spaced ranks fitted.

    Returns:
        The exponent s (positive for a decreasing curve).

    Raises:
        ValueError: fewer than 3 entries have at least `min_count` events.
    """
    values = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    values = values[values > 0]
    last = int(np.sum(values >= min_count))
    if last < 3:
        raise ValueError(
            f"need at least 3 items with >= {min_count} events to fit a popularity exponent, "
            f"got {last}"
        )
    ranks = np.unique(np.geomspace(1, last, n_points).round().astype(np.int64))
    slope = np.polyfit(np.log(ranks), np.log(values[ranks - 1]), 1)[0]
    return float(-slope)


@dataclass(frozen=True)
class _CodeStats:
    """The statistics that calibration matches, measured on integer-coded events."""

    repeat_share: float
    category_repeat_share: float
    item_exponent: float
    category_exponent: float
    items: int


def _code_stats(user: np.ndarray, item: np.ndarray, category: np.ndarray) -> _CodeStats:
    """Order-free statistics of events given as integer codes (one entry per event).

    The number of events on an already-touched (user, item) pair does not depend on the order
    of the events, nor does the number of first touches in a new category (each (user,
    category) pair starts with a first touch), so day-resolution logs with ties need no order.

    Args:
        user, item, category: integer codes (>= 0), one entry per event.

    Returns:
        The repeat and category-repeat shares, popularity slopes and distinct items.
    """
    user = np.asarray(user, dtype=np.int64)
    item = np.asarray(item, dtype=np.int64)
    category = np.asarray(category, dtype=np.int64)
    n = len(user)
    n_users = len(np.unique(user))
    pair = np.unique(user * (int(item.max()) + 1) + item, return_counts=False)
    n_pairs = len(pair)
    n_user_cats = len(np.unique(user * (int(category.max()) + 1) + category))
    first_touches_after_first = n_pairs - n_users
    category_repeat = (
        1.0 - (n_user_cats - n_users) / first_touches_after_first
        if first_touches_after_first > 0
        else 0.0
    )
    return _CodeStats(
        repeat_share=1.0 - n_pairs / n,
        category_repeat_share=float(category_repeat),
        item_exponent=rank_frequency_exponent(np.bincount(item)),
        category_exponent=rank_frequency_exponent(np.bincount(category)),
        items=int(len(np.unique(item))),
    )


def _heaps_exponent(
    users: np.ndarray, keys: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """Growth exponents while users are added in random order.

    Returns (b, g) for distinct items ~ events**b and distinct categories ~ items**g, fitted
    on log-spaced points from 2% of the events to all of them (the first users are noise).

    Args:
        users: user code per event.
        keys: (item code, category code) per event, shape (n, 2).
        rng: random stream of the user order.
    """
    n_users = int(users.max()) + 1
    rank = rng.permutation(n_users)[users]
    order = np.argsort(rank, kind="stable")
    item, cat = keys[order, 0], keys[order, 1]
    new_item = np.zeros(len(item), dtype=bool)
    new_item[np.unique(item, return_index=True)[1]] = True
    new_cat = np.zeros(len(cat), dtype=bool)
    new_cat[np.unique(cat, return_index=True)[1]] = True
    items_seen = np.cumsum(new_item)
    cats_seen = np.cumsum(new_cat)
    at = np.unique(np.geomspace(max(1, 0.02 * len(item)), len(item), 40).astype(np.int64)) - 1
    b = np.polyfit(np.log(at + 1.0), np.log(items_seen[at]), 1)[0]
    g = np.polyfit(np.log(items_seen[at]), np.log(cats_seen[at]), 1)[0]
    return float(np.clip(b, 0.05, 1.0)), float(np.clip(g, 0.0, 1.0))


def _behavior_shares(codes: np.ndarray) -> BehaviorShares:
    """Shares (rounded to 5 digits) of behaviour codes 0 click, 1 save, 2 purchase; uniform
    when `codes` is empty."""
    counts = np.bincount(codes, minlength=3).astype(np.float64)
    if counts.sum() == 0:
        counts = np.ones(3)
    shares = counts / counts.sum()
    return BehaviorShares(*(round(float(s), 5) for s in shares))



def _hour_shares(ts: np.ndarray) -> tuple[float, ...] | None:
    """Share of `ts` (datetime64) in each UTC hour 0..23, rounded to 5 digits; None when every
    timestamp is at midnight (a log with dates only)."""
    seconds_of_day = (ts - ts.astype("datetime64[D]")).astype("timedelta64[s]").astype(np.int64)
    if not seconds_of_day.any():
        return None  # dates only
    counts = np.bincount(seconds_of_day // 3600, minlength=24).astype(np.float64)
    return tuple(round(float(s), 5) for s in counts / counts.sum())
