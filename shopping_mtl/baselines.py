"""Null models every run scores beside its models (EVALUATION.md): a figure is read next to them.

- `popularity`: the same list for everyone, items ranked by engagement weighted click 1, save 2,
  purchase 4.
- `user_history`: the user's own items by recency-weighted engagement. Repeat engagement
  dominates shopping logs, so this is a strong baseline.
- `covisit`: items that co-occur with the user's recent items in other users' sessions
  (same user, same calendar day), weighted towards the most recent items.

Each takes only the events it is given (train + validation when scoring test users), so nothing
computed for a test user sees the test period. Each writes a list exactly like a model does:
`user_id, rank, item_id, score`, `k` rows per user: `user_history` and `covisit` are filled up
with popular items when the user's own source runs short (configurable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from shopping_mtl.groups import positions_in_runs

BASELINES = ("popularity", "user_history", "covisit")
DEFAULT_EVENT_WEIGHTS = {"click": 1.0, "save": 2.0, "purchase": 4.0}


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the baselines.

    Args:
        names: which baselines to score.
        event_weights: engagement weight per event type (popularity, history tie-breaks).
        covisit_recent_items: how many of the user's most recent distinct items seed co-visitation.
        covisit_decay: weight of the n-th most recent seed item is decay**n.
        covisit_max_session_items: per (user, day) session, only its last N distinct items pair up,
            which bounds the quadratic pair count on very active users.
        history_half_life_days: how fast the weight of a user's past engagement halves.
        fill_with_popularity: extend user_history and covisit lists with popular items to the
            full list size, as a deployed list would be (their own items come first).
    """

    names: tuple[str, ...] = BASELINES
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    covisit_recent_items: int = 20
    covisit_decay: float = 0.9
    covisit_max_session_items: int = 50
    history_half_life_days: float = 1.0
    fill_with_popularity: bool = True


def _weights(events: pd.DataFrame, event_weights: Mapping[str, float]) -> np.ndarray:
    return events["event"].map(dict(event_weights)).fillna(0.0).to_numpy(dtype=float)


def _top_k(scored: pd.DataFrame, k: int) -> pd.DataFrame:
    """(user_id, item_id, score) -> best k per user; ties by item id so runs are reproducible."""
    ordered = scored.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True],
                                 kind="stable")
    ordered = ordered.groupby("user_id", sort=False).head(k)
    ordered = ordered.assign(rank=ordered.groupby("user_id", sort=False).cumcount() + 1)
    return ordered[["user_id", "rank", "item_id", "score"]].reset_index(drop=True)


def popularity(events: pd.DataFrame, users: Sequence[str], k: int,
               event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS) -> pd.DataFrame:
    """The k most engaged items overall, the same list for every user."""
    counts = (
        pd.DataFrame({"item_id": events["item_id"], "score": _weights(events, event_weights)})
        .groupby("item_id", sort=False)["score"].sum().reset_index()
        .sort_values(["score", "item_id"], ascending=[False, True], kind="stable")
        .head(k)
    )
    n = len(counts)
    users = np.asarray(sorted(users), dtype=object)
    return pd.DataFrame({
        "user_id": np.repeat(users, n),
        "rank": np.tile(np.arange(1, n + 1), len(users)),
        "item_id": np.tile(counts["item_id"].to_numpy(dtype=object), len(users)),
        "score": np.tile(counts["score"].to_numpy(dtype=float), len(users)),
    })


def user_history(events: pd.DataFrame, users: Sequence[str], k: int,
                 event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
                 half_life_days: float = 1.0, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """The user's own items by recency-weighted engagement.

    score(item) = sum over the user's events on it of weight(event) * 0.5 ** (age_days /
    half_life_days), with ages measured from `now` (the start of the scored period). Recency
    alone ranks poorly on second-resolution logs, where the last click is often not the item
    the user comes back to; engagement alone ignores that interest fades within days.
    """
    mine = events[events["user_id"].isin(set(users))]
    now = events["timestamp"].max() if now is None else now
    age_days = (now - mine["timestamp"]).dt.total_seconds().to_numpy() / 86400.0
    frame = pd.DataFrame({
        "user_id": mine["user_id"].to_numpy(dtype=object),
        "item_id": mine["item_id"].to_numpy(dtype=object),
        "score": _weights(mine, event_weights) * 0.5 ** (np.maximum(age_days, 0) / half_life_days),
    })
    scored = frame.groupby(["user_id", "item_id"], sort=False)["score"].sum().reset_index()
    return _top_k(scored, k)


def fill_from(lists: pd.DataFrame, fallback: pd.DataFrame, k: int) -> pd.DataFrame:
    """Extend each user's list with `fallback`'s items (not already listed) up to k rows.

    The filled rows keep their fallback score below the list's own, so the list stays ordered
    by rank; a user missing from `lists` gets the fallback list whole.
    """
    merged = pd.concat([lists.assign(_source=0), fallback.assign(_source=1)], ignore_index=True)
    merged = merged.drop_duplicates(["user_id", "item_id"], keep="first")
    merged = merged.sort_values(["user_id", "_source", "rank"], kind="stable")
    merged = merged.groupby("user_id", sort=False).head(k)
    merged["rank"] = merged.groupby("user_id", sort=False).cumcount() + 1
    return merged[["user_id", "rank", "item_id", "score"]].reset_index(drop=True)


def _session_days(events: pd.DataFrame) -> np.ndarray:
    """Each event's calendar day (its timestamp floored to the day, as an instant): (n_events,)."""
    return events["timestamp"].dt.floor("D").to_numpy(dtype="datetime64[ns]")


@dataclass(frozen=True)
class _CovisitTable:
    """`covisitation_counts` of one events frame on integer codes, with the codes of its events.

    Codes come from sorted ids, so comparing codes orders like comparing the ids. The pairs are
    held by source (rows `indptr[s]:indptr[s + 1]` are item `s`'s, by target); `first` numbers
    each pair's first co-occurrence in the log (of `n_numbers`), which orders
    `covisitation_counts`'s rows (`appearance`). Only that frame needs the order: a table built
    for the candidate sources has `first` None (~0.5 GB less at 10^7 events).
    """

    max_session_items: int
    users: np.ndarray  # (n_users,) user ids, sorted
    items: np.ndarray  # (n_items,) item ids, sorted
    days: np.ndarray  # (n_days,) datetime64[ns], sorted
    user_codes: np.ndarray  # (n_events,) int32
    item_codes: np.ndarray  # (n_events,) int32
    day_codes: np.ndarray  # (n_events,) int32
    indptr: np.ndarray  # (n_items + 1,) int64
    target: np.ndarray  # (n_pairs,) int32
    count: np.ndarray  # (n_pairs,) int32
    first: np.ndarray | None  # (n_pairs,) the number of the pair's first co-occurrence, of n_numbers
    n_numbers: int

    @property
    def ordered(self) -> bool:
        return self.first is not None

    def appearance(self) -> np.ndarray:
        """(n_pairs,) each pair's row in `covisitation_counts` (first co-occurrence order): the
        rank of its first number, counted over the numbers, not sorted (117M pairs at 10^7
        events). Only the serving snapshot asks, so the sources never hold its ~0.6 GB."""
        if self.first is None:
            raise ValueError("this co-visitation table was built without its pairs' order (ordered=False)")
        marked = np.zeros(self.n_numbers, bool)
        marked[self.first] = True
        rank = np.cumsum(marked, dtype=self.first.dtype)
        del marked
        return rank[self.first] - 1

    def describes(self, events: pd.DataFrame, max_session_items: int) -> bool:
        """Whether `events` has exactly this table's (user, day, item) sequence (all the counts
        and seeds depend on), so the table is theirs whatever frame object they come in."""
        if self.max_session_items != max_session_items or len(self.user_codes) != len(events):
            return False
        if not np.array_equal(self.days[self.day_codes], _session_days(events)):
            return False
        # A column equals ids[codes] when its sorted distinct values are the ids and its codes
        # the codes (compared so, no Python str is made per event).
        for ids, codes, column in ((self.users, self.user_codes, "user_id"), (self.items, self.item_codes, "item_id")):
            given_codes, given_ids = pd.factorize(events[column], sort=True)
            if not (np.array_equal(np.asarray(given_ids, dtype=object), ids) and np.array_equal(given_codes, codes)):
                return False
        return True


def _factorize(values, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Codes of `values` in sorted order and the sorted distinct values (as `dtype`); a column
    of Arrow strings is coded by Arrow, no Python str per value."""
    codes, uniques = pd.factorize(values, sort=True)
    if len(codes) and codes.min() < 0:
        raise ValueError("co-visitation needs events without missing user_id, item_id or timestamp")
    return codes, np.asarray(uniques, dtype=dtype)


def _build_covisit_table(events: pd.DataFrame, max_session_items: int,
                         max_pairs: int | None = None, ordered: bool = True) -> _CovisitTable:
    user_codes, users = _factorize(events["user_id"], object)
    item_codes, items = _factorize(events["item_id"], object)
    day_codes, days = _factorize(_session_days(events), "datetime64[ns]")
    n_items = max(len(items), 1)
    session = pd.factorize(user_codes * max(len(days), 1) + day_codes)[0]  # (user, day) -> one code
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
    return _CovisitTable(
        max_session_items, users, items, days, user_codes.astype(np.int32), item_codes.astype(np.int32),
        day_codes.astype(np.int32), indptr.astype(np.int64), target[:n_pairs], count[:n_pairs],
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
# copy of split.history (a new frame on every access), so identity cannot tell they are the same.
_LAST_TABLE: list[_CovisitTable] = []


def forget_covisit_table() -> None:
    """Free the kept co-visitation table (~2 GB at 10^7 events) once no caller will ask for the
    same events' table again."""
    _LAST_TABLE.clear()


def _covisit_table(events: pd.DataFrame, max_session_items: int, ordered: bool = False) -> _CovisitTable:
    """The co-visitation table of `events` (with its pairs' order if `ordered`), reused when the
    last one built describes them exactly and has what is asked."""
    if _LAST_TABLE and (_LAST_TABLE[0].ordered or not ordered) and _LAST_TABLE[0].describes(events, max_session_items):
        return _LAST_TABLE[0]
    _LAST_TABLE.clear()  # frees the old table before the new one is built
    table = _build_covisit_table(events, max_session_items, ordered=ordered)
    _LAST_TABLE.append(table)
    return table


def covisitation_counts(events: pd.DataFrame, max_session_items: int = 50) -> pd.DataFrame:
    """Item-to-item co-visitation: in how many (user, day) sessions two distinct items co-occur.

    Computed on integer codes, and reused for a later call with the same events (compared
    exactly, not by object identity, so a changed log is never served a stale table).

    Returns:
        frame `source, target, count` (both directions, source != target), pairs in the order
        they first co-occur in the log.
    """
    table = _covisit_table(events, max_session_items, ordered=True)
    n = len(table.target)
    appearance = table.appearance()
    source = np.empty(n, np.int64)
    source[appearance] = np.repeat(np.arange(len(table.items)), np.diff(table.indptr))
    target = np.empty(n, np.int32)
    target[appearance] = table.target
    count = np.empty(n, np.int64)
    count[appearance] = table.count
    return pd.DataFrame({"source": table.items[source].astype(object),
                         "target": table.items[target].astype(object), "count": count})


def covisit(events: pd.DataFrame, users: Sequence[str], k: int, recent_items: int = 20,
            decay: float = 0.9, max_session_items: int = 50) -> pd.DataFrame:
    """Items co-visited with the user's recent items: score = sum_n decay**n * count(seed_n, item)."""
    table = _covisit_table(events, max_session_items)
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
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             [("user_id", object), ("rank", "int64"), ("item_id", object), ("score", float)]})
    user, item, score, rank = (np.concatenate(column) for column in zip(*parts))
    return pd.DataFrame({
        "user_id": pd.array(table.users[user], dtype=events["user_id"].dtype),
        "rank": rank.astype(np.int64),
        "item_id": table.items[item].astype(object),
        "score": score.astype(float),
    })


def _best_neighbours(table: _CovisitTable, seed_user, seed_item, weight, width, k: int):
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


def run_baseline(name: str, events: pd.DataFrame, users: Sequence[str], k: int,
                 config: BaselineConfig, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """One baseline's list for `users`, computed from `events` only (all before `now`)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline '{name}'; known: {', '.join(BASELINES)}")
    if name == "popularity":
        return popularity(events, users, k, config.event_weights)
    if name == "user_history":
        lists = user_history(events, users, k, config.event_weights, config.history_half_life_days, now)
    else:
        lists = covisit(events, users, k, config.covisit_recent_items, config.covisit_decay,
                        config.covisit_max_session_items)
    if not config.fill_with_popularity:
        return lists
    return fill_from(lists, popularity(events, users, k, config.event_weights), k)
