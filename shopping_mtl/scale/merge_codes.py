"""The candidate merge's machinery on integer codes: the rows' priority order by one in-place
sorted key, and the first row of each (user, item) pair found a slice of users at a time. At
10^7 events the sources are ~45M rows; an argsort's index and merge buffer would cost ~0.5 GB
more."""

from __future__ import annotations

import numpy as np

from shopping_mtl.scale.groups import run_bounds

MAX_KEY = 2**63  # the sort key's limit (a test lowers it to take the argsort path)


def priority_order(users: np.ndarray, source_rank: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Rows by (user, source priority, source rank), ties in row order. One int64 key per row
    holds all four (the row last), sorted in place and turned into the rows in place: no
    argsort's index array and merge buffer besides the key (~0.5 GB at 45M rows). Keys that
    would not fit in 63 bits take a stable argsort instead."""
    n_rows, n_sources = len(users), len(offsets) - 1
    low = int(source_rank.min())
    ranks = int(source_rank.max()) - low + 1
    source = np.repeat(np.arange(n_sources, dtype=np.int8), np.diff(offsets))
    key = users.astype(np.int64)  # built in place: each temporary is ~360 MB at 45M rows
    key *= n_sources
    key += source
    del source
    key *= ranks
    key += source_rank
    key -= low
    if (int(users.max()) + 1) * n_sources * ranks * max(n_rows, 1) >= MAX_KEY:
        return np.argsort(key, kind="stable")
    key *= n_rows
    for start in range(0, n_rows, 1 << 22):
        key[start:start + (1 << 22)] += np.arange(start, min(start + (1 << 22), n_rows), dtype=np.int64)
    key.sort()  # keys are distinct (the row is in each): any sort gives the stable order
    key %= n_rows
    return key


def first_of_each_pair(order: np.ndarray, users: np.ndarray, items: np.ndarray, rows: int = 4_000_000) -> np.ndarray:
    """The rows of `order` (sorted by user first) whose (user, item) pair has not come earlier,
    in `order`'s order; found in slices of about `rows` rows cut at user boundaries, so the
    pair keys of all ~45M rows are never sorted at once."""
    sorted_users = users[order]
    bounds = run_bounds(sorted_users, rows)
    width = np.int64(int(items.max()) + 1)
    kept = []
    for begin, end in zip(bounds[:-1], bounds[1:]):
        here = order[begin:end]
        _, first = np.unique(sorted_users[begin:end].astype(np.int64) * width + items[here], return_index=True)
        kept.append(here[np.sort(first)])  # np.unique's index is each pair's first position
    return np.concatenate(kept)
