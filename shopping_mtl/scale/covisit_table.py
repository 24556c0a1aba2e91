"""Co-visitation on integer codes: the table of item pairs that share a session, and each
user's best co-visited items, a range of item codes at a time.

The meaning, in plain pandas, is the reference of `tests/test_covisit_codes.py`: pairs of
distinct items in the same session, counted once per session; a session is a user's events of
one `session_id` when the events carry that column (the spec's session role), else of one
calendar day (UTC; `session_keys`); a user's
score for an item is the sum over their recent distinct items n (most recent first) of
decay**n * count(item_n, item). Integer codes and ranges of codes keep the memory flat at 10^7
events, where the pairs of one pass over the log would take ~7 GB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from shopping_mtl.data.spec import SESSION_ID
from shopping_mtl.scale.groups import positions_in_runs


def session_keys(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each event's session within its user, as (codes (n_events,), sorted distinct keys): its
    `session_id` where the events carry one, else its calendar day (the timestamp floored to the
    day, as an instant), which on a log of a few hours is the user's whole log."""
    if SESSION_ID in events.columns:
        return _factorize(events[SESSION_ID], object)
    return _factorize(events["timestamp"].dt.floor("D").to_numpy(dtype="datetime64[ns]"), "datetime64[ns]")


@dataclass(frozen=True)
class CovisitTable:
    """The co-visitation counts of one events frame on integer codes, with the codes of its events.

    Codes come from sorted ids, so comparing codes orders like comparing the ids. The pairs are
    held by source (rows `indptr[s]:indptr[s + 1]` are item `s`'s, by target); `first` numbers
    each pair's first co-occurrence in the log (of `n_numbers`), which orders
    `pair_counts`'s rows (`appearance`). Only that frame needs the order: a table built
    for the candidate sources has `first` None (~0.5 GB less at 10^7 events).
    """

    max_session_items: int
    users: np.ndarray  # (n_users,) user ids, sorted
    items: np.ndarray  # (n_items,) item ids, sorted
    sessions: np.ndarray  # (n_sessions,) session keys (ids, or days as datetime64[ns]), sorted
    user_codes: np.ndarray  # (n_events,) int32
    item_codes: np.ndarray  # (n_events,) int32
    session_codes: np.ndarray  # (n_events,) int32, of `sessions`
    indptr: np.ndarray  # (n_items + 1,) int64
    target: np.ndarray  # (n_pairs,) int32
    count: np.ndarray  # (n_pairs,) int32
    first: np.ndarray | None  # (n_pairs,) the number of the pair's first co-occurrence, of n_numbers
    n_numbers: int

    @property
    def ordered(self) -> bool:
        return self.first is not None

    def appearance(self) -> np.ndarray:
        """(n_pairs,) each pair's row in `pair_counts` (first co-occurrence order): the
        rank of its first number, counted over the numbers, not sorted (117M pairs at 10^7
        events). Only the serving snapshot asks, so the sources never hold its ~0.6 GB."""
        if self.first is None:
            raise ValueError("this co-visitation table was built without its pairs' order (ordered=False)")
        marked = np.zeros(self.n_numbers, bool)
        marked[self.first] = True
        rank = np.cumsum(marked, dtype=self.first.dtype)
        del marked
        return rank[self.first] - 1


def _factorize(values, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Codes of `values` in sorted order and the sorted distinct values (as `dtype`); a column
    of Arrow strings is coded by Arrow, no Python str per value."""
    codes, uniques = pd.factorize(values, sort=True)
    if len(codes) and codes.min() < 0:
        raise ValueError("co-visitation needs events without missing user_id, item_id, timestamp or session_id")
    return codes, np.asarray(uniques, dtype=dtype)


def build_table(events: pd.DataFrame, max_session_items: int,
                max_pairs: int | None = None, ordered: bool = False) -> CovisitTable:
    """The co-visitation table of `events` (in time order; no missing ids, times or sessions),
    a session being a user's events of one session key (`session_keys`).

    Args:
        max_session_items: only the last N distinct items of a session pair up.
        max_pairs: pairs built at once (default `COVISIT_PAIRS_PER_PASS`).
        ordered: keep each pair's first co-occurrence (`CovisitTable.appearance`), which only
            `pair_counts` needs (~0.5 GB more at 10^7 events).
    """
    user_codes, users = _factorize(events["user_id"], object)
    item_codes, items = _factorize(events["item_id"], object)
    session_codes, sessions = session_keys(events)
    n_items = max(len(items), 1)
    # (user, session key) -> one code: a session id shared by two users is two sessions.
    session = pd.factorize(user_codes * max(len(sessions), 1) + session_codes)[0]
    # The last N distinct items of each session (events arrive in time order).
    keep = ~pd.Series(session * n_items + item_codes).duplicated(keep="last").to_numpy()
    session, item = session[keep], item_codes[keep]
    from_end = pd.Series(session).groupby(session, sort=False).cumcount(ascending=False).to_numpy()
    session, item = session[from_end < max_session_items], item[from_end < max_session_items]
    max_pairs = COVISIT_PAIRS_PER_PASS if max_pairs is None else max_pairs
    # Every (row, partner in its session) pair, numbered in the order a self-merge on the session
    # gives (each row, then its session's rows); built one range of source items at a time, so
    # that only one range's pairs exist at once (126M pairs at 10^7 events: ~7 GB at once).
    by_session = np.argsort(session, kind="stable")
    sizes = np.bincount(session)  # (n_sessions,)
    width = sizes[session]  # (n_rows,) partners of each row, itself included
    first_pair = np.cumsum(width) - width  # (n_rows,) the number of each row's first pair
    session_start = (np.cumsum(sizes) - sizes)[session]  # (n_rows,) where its session's rows begin
    partner_items = item[by_session]
    n_all = int(first_pair[-1] + width[-1]) if len(width) else 0
    numbers = np.int32 if n_all < 2**31 else np.int64
    # Each range's pairs are written after the last range's into arrays sized for every pair
    # found (n_all, before de-duplication): pages never written are never resident, so the
    # table costs the pairs it holds, without a second copy of them while parts are joined.
    target, count = np.empty(n_all, np.int32), np.empty(n_all, np.int32)
    first = np.empty(n_all, numbers) if ordered else None
    n_pairs = 0
    per_source = np.zeros(len(items), np.int64)
    for rows in _code_ranges(item, width, max_pairs):  # ranges of source items
        w = width[rows]
        offset = np.arange(w.sum()) - np.repeat(np.cumsum(w) - w, w)  # (pairs,) j within the row
        source = np.repeat(item[rows], w)
        partner = partner_items[np.repeat(session_start[rows], w) + offset]
        number = np.repeat(first_pair[rows], w) + offset  # the pair's place in the merge order
        other = source != partner
        keys, found, counted = np.unique(source[other] * n_items + partner[other], return_index=True,
                                         return_counts=True)  # by (source, target)
        per_source += np.bincount(keys // n_items, minlength=len(items))
        here = slice(n_pairs, n_pairs + len(keys))
        target[here], count[here] = keys % n_items, counted
        if ordered:  # first co-occurrence: numbers rise along the array
            first[here] = number[other][found]
        n_pairs += len(keys)
        del offset, source, partner, number, other, keys, found, counted
    # The ranges ascend and each is sorted, so the pairs are by (source, target).
    indptr = np.concatenate([[0], np.cumsum(per_source)])
    return CovisitTable(
        max_session_items, users, items, sessions, user_codes.astype(np.int32), item_codes.astype(np.int32),
        session_codes.astype(np.int32), indptr.astype(np.int64), target[:n_pairs], count[:n_pairs],
        first[:n_pairs] if ordered else None, n_all)


# Pairs built at once when counting co-visitation, or when scoring its lists: ~60 bytes each
# while a range is counted (a range of 2^24 was ~1 GB above the table at 10^7 events; smaller
# ranges cost no time, the sorts being n log n).

COVISIT_PAIRS_PER_PASS = 2**22


def _code_ranges(codes: np.ndarray, load: np.ndarray, max_load: int) -> list[np.ndarray]:
    """Rows (positions, ascending) grouped by ranges of their code, each range's rows adding up
    to at most `max_load` (`load`: each row's) unless a single code has more."""
    if not len(codes):
        return []
    reach = np.cumsum(np.bincount(codes, weights=load).astype(np.int64))  # load of codes <= c
    bounds = [0]
    while bounds[-1] < len(reach):
        start = bounds[-1]
        before = reach[start - 1] if start else 0
        bounds.append(max(start + 1, int(np.searchsorted(reach, before + max_load, side="right"))))
    by_code = np.argsort(codes, kind="stable")
    ends = np.searchsorted(codes[by_code], bounds)
    return [np.sort(by_code[a:b]) for a, b in zip(ends[:-1], ends[1:]) if b > a]


# The last table built (about 12 bytes an event and 12 a pair): the baselines and retrieval
# stages both ask for the events before the test day, one after the other, each through its own


def pair_counts(table: CovisitTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, target, count) item codes of every pair (both directions), in the order the
    pairs first co-occur in the log; `table` must be built `ordered`."""
    n = len(table.target)
    appearance = table.appearance()
    source = np.empty(n, np.int64)
    source[appearance] = np.repeat(np.arange(len(table.items)), np.diff(table.indptr))
    target = np.empty(n, np.int32)
    target[appearance] = table.target
    count = np.empty(n, np.int64)
    count[appearance] = table.count
    return source, target, count


def best_items(table: CovisitTable, users: Sequence[str], k: int, recent_items: int, decay: float):
    """(user, item, score, rank) codes of each of `users`' best k co-visited items, by user code
    then rank: score = sum_n decay**n * count(seed_n, item) over the user's `recent_items` most
    recent distinct items (seed_0 the most recent)."""
    wanted = pd.Index(table.users).isin(set(users))  # (n_users,)
    # Most recent distinct items first; events are in time order, so the last occurrence wins.
    mine = np.flatnonzero(wanted[table.user_codes])[::-1]
    seed_user, seed_item = table.user_codes[mine].astype(np.int64), table.item_codes[mine].astype(np.int64)
    n_items = max(len(table.items), 1)
    first = ~pd.Series(seed_user * n_items + seed_item).duplicated(keep="first").to_numpy()
    seed_user, seed_item = seed_user[first], seed_item[first]
    nth = pd.Series(seed_user).groupby(seed_user, sort=False).cumcount().to_numpy()  # (n_seeds,)
    recent = nth < recent_items
    seed_user, seed_item, nth = seed_user[recent], seed_item[recent], nth[recent]
    weight = decay ** nth
    width = table.indptr[seed_item + 1] - table.indptr[seed_item]  # (n_seeds,) neighbours of each
    # Users a range of codes at a time, at most COVISIT_PAIRS_PER_PASS (seed, neighbour) rows
    # at once (65k users at 10^7 events joined ~10^9 rows); a user's seeds stay together and
    # in order, so the sums and lists are those of one pass.
    parts = [_best_neighbours(table, seed_user[rows], seed_item[rows], weight[rows], width[rows], k)
             for rows in _code_ranges(seed_user, width, COVISIT_PAIRS_PER_PASS)]
    if not parts or not sum(len(p[0]) for p in parts):
        return tuple(np.zeros(0, np.int64) for _ in range(4))
    return tuple(np.concatenate(column) for column in zip(*parts))


def _best_neighbours(table: CovisitTable, seed_user, seed_item, weight, width, k: int):
    """(user, item, score, rank) of each user's best k items by sum of weight x count over the
    seeds' neighbours, by user code then rank."""
    n_items = max(len(table.items), 1)
    # Each seed's neighbours, seeds in order (a merge's order: the sums below add in seed order).
    seed = np.repeat(np.arange(len(seed_item)), width)  # (n_joined,)
    position = np.repeat(table.indptr[seed_item] - (np.cumsum(width) - width), width)  # (n_joined,)
    position += np.arange(len(position))  # the pair's row in the table
    score = weight[seed] * table.count[position]
    key = seed_user[seed] * n_items + table.target[position]
    del seed, position
    # Sums in seed order (pandas' compensated sum, as before); groups come out by (user, item).
    summed = pd.Series(score).groupby(key, sort=True).sum()
    key, score = summed.index.to_numpy(), summed.to_numpy()
    user, item = key // n_items, key % n_items
    # Best k per user; a stable sort by (user, score) leaves ties in item id order (codes order
    # like ids), as the string sort did.
    order = np.lexsort((-score, user))
    user, item, score = user[order], item[order], score[order]
    rank = positions_in_runs(user) + 1
    best = rank <= k
    return user[best], item[best], score[best], rank[best]

