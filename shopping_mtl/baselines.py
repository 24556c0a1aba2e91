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


def covisitation_counts(events: pd.DataFrame, max_session_items: int = 50) -> pd.DataFrame:
    """Item-to-item co-visitation: in how many (user, day) sessions two distinct items co-occur.

    Returns:
        frame `source, target, count` (both directions, source != target).
    """
    sessions = pd.DataFrame({
        "user_id": events["user_id"].to_numpy(dtype=object),
        "day": events["timestamp"].dt.floor("D").to_numpy(),
        "item_id": events["item_id"].to_numpy(dtype=object),
    })
    # The last N distinct items of each session (events arrive in time order).
    sessions = sessions.drop_duplicates(["user_id", "day", "item_id"], keep="last")
    sessions = sessions.groupby(["user_id", "day"], sort=False).tail(max_session_items)
    sessions["session"] = sessions.groupby(["user_id", "day"], sort=False).ngroup()
    pairs = sessions[["session", "item_id"]].merge(
        sessions[["session", "item_id"]], on="session", suffixes=("_source", "_target"))
    pairs = pairs[pairs["item_id_source"] != pairs["item_id_target"]]
    counts = pairs.groupby(["item_id_source", "item_id_target"], sort=False).size()
    counts = counts.rename("count").reset_index()
    return counts.rename(columns={"item_id_source": "source", "item_id_target": "target"})


def covisit(events: pd.DataFrame, users: Sequence[str], k: int, recent_items: int = 20,
            decay: float = 0.9, max_session_items: int = 50) -> pd.DataFrame:
    """Items co-visited with the user's recent items: score = sum_n decay**n * count(seed_n, item)."""
    counts = covisitation_counts(events, max_session_items)
    mine = events[events["user_id"].isin(set(users))]
    # Most recent distinct items first; events are in time order, so the last occurrence wins.
    seeds = (
        mine[["user_id", "item_id"]].iloc[::-1]
        .drop_duplicates(["user_id", "item_id"], keep="first")
    )
    seeds = seeds.groupby("user_id", sort=False).head(recent_items)
    seeds = seeds.assign(weight=decay ** seeds.groupby("user_id", sort=False).cumcount().to_numpy())
    joined = seeds.merge(counts, left_on="item_id", right_on="source")
    if joined.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             [("user_id", object), ("rank", "int64"), ("item_id", object), ("score", float)]})
    joined["score"] = joined["weight"] * joined["count"]
    scored = joined.groupby(["user_id", "target"], sort=False)["score"].sum().reset_index()
    return _top_k(scored.rename(columns={"target": "item_id"}), k)


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
