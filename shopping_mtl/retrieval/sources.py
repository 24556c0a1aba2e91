"""The candidate set the ranker scores: several sources merged with per-source quotas.

Two-tower retrieval finds new items through content and history; the user's own items keep the
repeats that dominate shopping logs; co-visitation adds items bought together; popularity fills
in for users with little history. Each source gives up to its quota of items not already taken
by an earlier source, so the set has a few hundred distinct items per user, each tagged with the
source that brought it and that source's rank and score.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from shopping_mtl.groups import codes_in, positions_in_runs, run_bounds, strings_at


def merge_sources(sources: Mapping[str, pd.DataFrame], quotas: Mapping[str, int]) -> pd.DataFrame:
    """Merge ranked lists into one candidate set per user.

    Args:
        sources: source name -> list frame (`user_id, rank, item_id, score`), in priority order.
        quotas: source name -> the most items that source contributes per user.

    Returns:
        `user_id, rank, item_id, score, source, source_rank`: `rank` runs over the merged set
        (sources in priority order, each in its own order); `score` is the source's score.
    """
    columns = ["user_id", "rank", "item_id", "score", "source", "source_rank"]
    names, frames, taken = [], [], []
    for name, frame in sources.items():
        quota = int(quotas.get(name, 0))
        rows = np.flatnonzero(frame["rank"].to_numpy() <= quota) if quota > 0 and not frame.empty else []
        if len(rows):
            names.append(name)
            frames.append(frame)
            taken.append(rows)
    if not frames:
        return pd.DataFrame(columns=columns)
    # On integer codes, one source at a time, and never a copy of a source's rows: at 10^7
    # events the sources are ~45M rows. Users are coded in sorted order, so the set comes out
    # ordered as a string sort orders it.
    def ids_of(column):
        return pd.Index(pd.unique(np.concatenate([np.asarray(pd.unique(f[column]), dtype=object) for f in frames])),
                        dtype=object)
    user_ids, item_ids = ids_of("user_id").sort_values(), ids_of("item_id")
    offsets = np.cumsum([0] + [len(t) for t in taken])
    # Each source's codes written into int32 columns in place: one source's int64 codes exist
    # at a time, never all of them before a concatenation (~0.9 GB each column at 45M rows).
    users, items, source_rank = (np.empty(offsets[-1], np.int32) for _ in range(3))
    for frame, rows, start, end in zip(frames, taken, offsets[:-1], offsets[1:]):
        users[start:end] = codes_in(user_ids, frame["user_id"])[rows]
        items[start:end] = codes_in(item_ids, frame["item_id"])[rows]
        source_rank[start:end] = frame["rank"].to_numpy()[rows]
    order = _priority_order(users, source_rank, offsets)
    keep = _first_of_each_pair(order, users, items)
    del order
    # The kept rows' codes, and every row's freed before the id columns are gathered.
    kept_users, kept_items, kept_rank = users[keep], items[keep], source_rank[keep].astype(np.int64)
    del users, items, source_rank
    part = np.searchsorted(offsets, keep, side="right") - 1  # the source of each kept row
    score = np.empty(len(keep), np.concatenate([f["score"].to_numpy()[:0] for f in frames]).dtype)
    for number, frame in enumerate(frames):
        here = part == number
        score[here] = frame["score"].to_numpy()[taken[number][keep[here] - offsets[number]]]
    del keep
    return pd.DataFrame({
        "user_id": strings_at(user_ids, kept_users), "rank": positions_in_runs(kept_users) + 1,
        "item_id": strings_at(item_ids, kept_items), "score": score,
        "source": strings_at(names, part), "source_rank": kept_rank})


MAX_KEY = 2**63  # the sort key's limit (a test lowers it to take the argsort path)


def _priority_order(users: np.ndarray, source_rank: np.ndarray, offsets: np.ndarray) -> np.ndarray:
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


def _first_of_each_pair(order: np.ndarray, users: np.ndarray, items: np.ndarray, rows: int = 4_000_000) -> np.ndarray:
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
