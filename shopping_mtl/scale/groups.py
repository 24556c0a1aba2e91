"""Ids as integer codes, and runs of equal codes in sorted rows: a user's list is the run of its
user's code once rows are sorted by (user, rank) or (user, score). Ranks and cut-offs within
lists come from here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def codes_in(index: pd.Index, column) -> np.ndarray:
    """Each value's position in `index` (-1: absent or missing). Through the column's own
    factorization, so a column of Arrow strings is never turned into a Python str per row
    (`Index.get_indexer` on it does that: 20M rows of ids at 10^7 events)."""
    codes, uniques = pd.factorize(column)
    return np.r_[index.get_indexer(uniques), -1][codes]


def find_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Each of `keys`' (any shape) position in `sorted_keys` (sorted, unique), -1 where absent,
    by binary search: `np.isin` sorts the keys along with them (~1 GB for 32M keys at 10^7
    events)."""
    keys = np.asarray(keys)
    if not len(sorted_keys):
        return np.full(keys.shape, -1, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, at, -1)


def in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Whether each of `keys` (any shape) is one of `sorted_keys` (sorted, unique)."""
    return find_sorted(keys, sorted_keys) >= 0


def run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """The index of the first row of each run of equal keys (none for no rows)."""
    sorted_keys = np.asarray(sorted_keys)
    if not len(sorted_keys):
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def positions_in_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Each row's position (0-based) within its run of equal keys."""
    starts = run_starts(sorted_keys)
    sizes = np.diff(np.r_[starts, len(sorted_keys)])
    return np.arange(len(sorted_keys)) - np.repeat(starts, sizes)


def run_bounds(sorted_keys: np.ndarray, rows: int) -> list[int]:
    """Slice bounds (0, ..., len) of about `rows` rows each over sorted keys, cut only where a
    run of equal keys begins (a run longer than `rows` is a slice of its own)."""
    cuts = [0]
    while cuts[-1] < len(sorted_keys):
        end = cuts[-1] + rows
        if end >= len(sorted_keys):
            cuts.append(len(sorted_keys))
            break
        end = int(np.searchsorted(sorted_keys, sorted_keys[end], side="left"))  # where its run begins
        if end <= cuts[-1]:
            end = int(np.searchsorted(sorted_keys, sorted_keys[cuts[-1]], side="right"))
        cuts.append(end)
    return cuts


def strings_at(ids, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """`ids[codes]` as a column of pandas' `str` dtype, gathered by Arrow's `take`: an object
    array of 20M ids (the candidate set at 10^7 events) costs a pointer per row on top of the
    strings it is converted to."""
    table = pa.array(np.asarray(ids, dtype=object), type=pa.large_string())
    return pd.array(table.take(pa.array(np.asarray(codes))), dtype="str")
