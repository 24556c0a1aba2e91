"""Ranking rows: each user's merged candidates at a prediction time, labelled by what followed.

The candidates act as impressions. A row is labelled click (any engagement), save and purchase
from the user's events in the target period; for training, engaged items that the candidate
sources missed are added, so every positive is learned. Features: the user's and the item's raw
features, the prediction time, the user-item features of `cross.py` from the user's last events
before the prediction time (also `ui_engagement` at `cross.ENGAGEMENT_HALF_LIVES`), the item's
popularity before it, the two-tower score, where the candidate came from (its source, the
rank in that source's list, its position in the merged set, the source's score:
`cross.provenance_features`), and the user's last events described against the candidate
(`cross.sequence_features`, for target attention), where the spec names a session, the
candidate against the user's latest session (`cross.session_features`), and optionally the
user's recent activity and the item's last day (`cross.user_item_activity`, `recent_item_counts`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates import builtin, registry  # noqa: F401  (builtin: registers the built-in sources)
from shopping_mtl.data.spec import SESSION_ID
from shopping_mtl.features import FeatureSet
from shopping_mtl.history import as_str, last_items_before, to_unix_seconds
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.ranking.cross import (ATTENTION_LENGTH, CROSS_FEATURES, ENGAGEMENT_HALF_LIVES, cross_features,
                                        list_features, list_values, provenance_features, sequence_features,
                                        session_features, user_item_activity)
from shopping_mtl.retrieval.examples import ItemLookup, item_arrays, user_frame

# The candidate set's columns that say where a row came from (`label_rows` keeps them; the
# set's `score` becomes `source_score`), and the model inputs made of them.
PROVENANCE_COLUMNS = ("source", "source_rank", "rank", "source_score")
SOURCE_INPUT, PROVENANCE_INPUT, ENGAGEMENT_INPUT = "source", "provenance", "engagement"
ATTENTION_INPUT = "history_sequence"
SESSION_INPUT = "session"
ACTIVITY_INPUT, RECENT_POPULARITY_INPUT = "activity", "item_recent_popularity"
RECENT_DAYS = 1.0  # the window of `item_recent_popularity`


def recent_item_counts(events: pd.DataFrame, at: pd.Timestamp, days: float = RECENT_DAYS) -> pd.Series:
    """Each item's events in the `days` before `at` (item_id -> count), the window of
    `item_recent_popularity`: with `item_popularity` (all events before `at`) the model can tell
    an item rising today from one popular long ago."""
    stamps = events["timestamp"]
    return events.loc[((stamps < at) & (stamps >= at - pd.Timedelta(days=days))).to_numpy(), "item_id"].value_counts()


def reads_sessions(features: FeatureSet) -> bool:
    """Whether the ranker reads the `session` input: only where the dataset spec names a session
    column (its `session` role: `FeatureSpec.history_sessions`), so a log without one keeps its
    inputs and figures."""
    return features.spec.history_sessions


def source_vocabulary() -> tuple[str, ...]:
    """The sources the `source` input tells apart, index i + 1 for the i-th (0: no source, or
    one not registered): every registered source, by name. A fixed order, whatever the
    quotas' order or the import order; a source with no quota simply never occurs."""
    return tuple(sorted(registry.names()))


def source_codes(names) -> np.ndarray:
    """(n,) source names ("" or missing: no source) -> (n,) int32 indices into
    `source_vocabulary()` plus one (0: none)."""
    vocabulary = pd.Index(source_vocabulary())
    return (vocabulary.get_indexer(pd.Series(names, dtype=object).fillna("").to_numpy(dtype=object))
            + 1).astype(np.int32)


def label_rows(candidates: pd.DataFrame, target: pd.DataFrame | None, add_missed: bool,
               provenance: bool = False) -> pd.DataFrame:
    """`user_id, item_id, two_tower_score` plus labels `click, save, purchase` (0/1); with
    `provenance` (for `ranking.source_features`), also the candidate set's `source, source_rank,
    rank` and its `score` as `source_score` (a missed positive: source "", ranks 0, score 0).

    Click is any engagement (a save or purchase implies the user engaged), so save and purchase
    rows are a subset of click rows, as the ESMM chain assumes.
    """
    rows = candidates[["user_id", "item_id"]]  # copy-on-write: the id columns are shared, not copied
    is_tower = candidates["source"].eq("two_tower") if "source" in candidates else False
    rows["two_tower_score"] = np.where(is_tower, candidates["score"], 0.0).astype(np.float32)
    # Where each candidate came from (`PROVENANCE_COLUMNS`); only when asked, as at 10^7 events
    # the rows are ~20M and these four columns ~0.5 GB.
    if provenance:
        for column in ("source", "source_rank", "rank"):
            rows[column] = candidates[column]
        rows["source_score"] = candidates["score"].to_numpy(np.float64)
    if target is None:
        for task in TASKS:
            rows[task] = 0.0
        return rows.reset_index(drop=True)
    engaged = target[target["user_id"].isin(set(rows["user_id"]))]
    labels = pd.DataFrame({"user_id": engaged["user_id"], "item_id": engaged["item_id"],
                           "click": 1.0, "save": (engaged["event"] == "save").astype(float),
                           "purchase": (engaged["event"] == "purchase").astype(float)})
    if not add_missed:  # each row's labels looked up by integer (user, item) keys, rows kept in order
        users, user_ids = pd.factorize(rows["user_id"])
        items, item_ids = pd.factorize(rows["item_id"])
        user_of = pd.Index(user_ids).get_indexer(labels["user_id"])
        item_of = pd.Index(item_ids).get_indexer(labels["item_id"])
        found = (user_of >= 0) & (item_of >= 0)
        width = max(len(item_ids), 1)
        per_key = labels[found].drop(columns=["user_id", "item_id"]).groupby(
            user_of[found].astype(np.int64) * width + item_of[found]).max()
        at = per_key.index.get_indexer(users.astype(np.int64) * width + items)
        for task in TASKS:  # a row without labels (at == -1) takes the 0 appended last
            rows[task] = np.r_[per_key[task].to_numpy(dtype=np.float64), 0.0][at].astype(np.float32)
        return rows.reset_index(drop=True)
    labels = labels.groupby(["user_id", "item_id"], sort=False).max().reset_index()
    rows = rows.merge(labels, on=["user_id", "item_id"], how="outer")
    rows["two_tower_score"] = rows["two_tower_score"].fillna(0.0).astype(np.float32)
    # A missed positive has no source: "" and rank 0 (`cross.provenance_features` gives 0s).
    if "source" in rows:
        rows["source"] = rows["source"].astype(object).fillna("")
    for column in ("source_rank", "rank"):
        if column in rows:
            rows[column] = rows[column].fillna(0).astype(np.int64)
    if "source_score" in rows:
        rows["source_score"] = rows["source_score"].fillna(0.0)
    for task in TASKS:
        rows[task] = rows[task].fillna(0.0).astype(np.float32)
    return rows.reset_index(drop=True)


def user_histories(users: np.ndarray, history_events: pd.DataFrame, at: pd.Timestamp, length: int,
                   catalogue: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each user's last `length` events before `at`: items, categories, event types, ages (days),
    and where the events carry a `session_id` column, sessions ("" = padding).
    `catalogue`: `item_id` and `category` columns, or indexed by `item_id` (`ItemLookup.table`)."""
    by_item = catalogue if catalogue.index.name == "item_id" else catalogue.set_index("item_id")
    category = by_item["category"] if "category" in by_item else None
    events = pd.DataFrame({
        "user_id": history_events["user_id"].to_numpy(),
        "item_id": history_events["item_id"].to_numpy(),
        "timestamp": history_events["timestamp"].array,  # not one Timestamp object per row
        "category": (category.reindex(history_events["item_id"]).to_numpy() if category is not None
                     else np.full(len(history_events), "", dtype=object)),
        "event": history_events["event"].to_numpy(),
        "seconds": to_unix_seconds(history_events["timestamp"]),
    })
    carried = ["category", "event", "seconds"]
    if SESSION_ID in history_events:
        events[SESSION_ID] = history_events[SESSION_ID].to_numpy()
        carried.append(SESSION_ID)
    queries = pd.DataFrame({"user_id": users, "timestamp": at})
    found = last_items_before(events, queries, length, carried)
    seconds = pd.to_numeric(pd.Series(found["history_seconds"].reshape(-1)), errors="coerce")
    ages = (at.timestamp() - seconds.to_numpy(dtype=float).reshape(len(users), length)) / 86400.0
    history = {"items": found["history_item_ids"], "categories": found["history_category"],
               "events": found["history_event"], "ages": np.nan_to_num(ages, nan=0.0).astype(np.float32)}
    if SESSION_ID in history_events:
        history["sessions"] = found[f"history_{SESSION_ID}"]
    return history


def ranking_inputs(rows: pd.DataFrame, history_events: pd.DataFrame, at: pd.Timestamp,
                   users: pd.DataFrame | None, catalogue: pd.DataFrame, features: FeatureSet,
                   history_length: int, list_features: bool = False, engagement_features: bool = False,
                   target_attention: bool = False, activity_features: bool = True, batch_rows: int = 50_000,
                   item_counts: pd.Series | None = None, recent_counts: pd.Series | None = None,
                   lookup: ItemLookup | None = None) -> dict[str, np.ndarray]:
    """Model inputs for every row of `rows` at prediction time `at`, from the events of
    `history_events` before `at` only (later ones are ignored, whatever is passed).

    `item_counts` and `recent_counts`: every item's events before `at` (for `item_popularity`)
    and in the day before it (`recent_item_counts`, for `item_recent_popularity`), when
    `history_events` holds only the rows' users' events (one chunk of users); `lookup`:
    `ItemLookup.of(catalogue)`, made once for all the chunks.

    Inputs: `cross`, `item_popularity`, `two_tower_score`; with `list_features` also `list`;
    with `engagement_features` also `engagement` (`ui_engagement` at
    `cross.ENGAGEMENT_HALF_LIVES`); where `rows` carries the candidate set's
    `PROVENANCE_COLUMNS` (`label_rows(..., provenance=True)`), `source` and `provenance`
    (`provenance_inputs`); with `target_attention` also `history_sequence` ((n,
    `cross.ATTENTION_LENGTH`, len(`cross.SEQUENCE_FEATURES`)), `cross.sequence_features`; the
    last `ATTENTION_LENGTH` of the `history_length` events); where the spec names a session
    (`reads_sessions`), also `session` (`cross.session_features`; `history_events` must then
    carry `session_id`); with `activity_features` also `activity` (`cross.user_item_activity`)
    and `item_recent_popularity` (log1p of the item's events in the day before `at`)."""
    before = (history_events["timestamp"] < at).to_numpy()
    spec = features.spec
    frame = user_frame(rows["user_id"], users, features)
    frame["item_id"] = as_str(rows["item_id"])
    arrays = features.to_inputs(frame, ["user"] if spec.user else [])
    if spec.item:
        arrays.update(item_arrays(catalogue, features, frame["item_id"], lookup=lookup))

    by_item = lookup.table if lookup is not None else catalogue.drop_duplicates("item_id").set_index("item_id")
    unique_users, user_pos = np.unique(frame["user_id"].to_numpy(dtype=str), return_inverse=True)
    # The rows' users' events only: the held-out users' rows are given every train event (8M
    # at 10^7 events), and their histories would turn each into Python strings.
    theirs = before & history_events["user_id"].isin(unique_users).to_numpy()
    history = user_histories(unique_users.astype(object), history_events[theirs], at, history_length, by_item)
    categories = (as_str(by_item["category"].reindex(frame["item_id"])) if "category" in by_item
                  else np.full(len(frame), "", dtype=object))
    half_lives = ENGAGEMENT_HALF_LIVES if engagement_features else ()
    sessions = reads_sessions(features)
    if sessions and "sessions" not in history:
        raise ValueError(f"the spec names a session column but the events lack {SESSION_ID!r}")
    parts = {"cross": lambda h, items, categories: cross_features(
        h["items"], h["categories"], h["events"], h["ages"], items, categories, half_lives)}
    if target_attention:
        parts[ATTENTION_INPUT] = lambda h, items, categories: sequence_features(
            h["items"], h["categories"], h["events"], h["ages"], items, categories, ATTENTION_LENGTH)
    if sessions:
        parts[SESSION_INPUT] = lambda h, items, categories: session_features(
            h["items"], h["categories"], h["sessions"], items, categories)
    if activity_features:
        parts[ACTIVITY_INPUT] = lambda h, items, categories: user_item_activity(
            h["items"], h["events"], h["ages"], items)
    computed = _history_features_by_user(history, user_pos, frame["item_id"].to_numpy(dtype=str),
                                         categories.astype(str), batch_rows, parts)
    cross = computed.pop("cross").reshape(len(frame), len(CROSS_FEATURES) + len(half_lives))
    arrays["cross"] = cross[:, :len(CROSS_FEATURES)]
    if engagement_features:
        arrays[ENGAGEMENT_INPUT] = cross[:, len(CROSS_FEATURES):]
    for name, values in computed.items():
        arrays[name] = values
    counts = history_events.loc[before, "item_id"].value_counts() if item_counts is None else item_counts
    arrays["item_popularity"] = np.log1p(counts.reindex(frame["item_id"]).fillna(0).to_numpy()).astype(np.float32)
    if activity_features:
        recent = recent_item_counts(history_events, at) if recent_counts is None else recent_counts
        arrays[RECENT_POPULARITY_INPUT] = np.log1p(
            recent.reindex(frame["item_id"]).fillna(0).to_numpy()).astype(np.float32)
    arrays["two_tower_score"] = rows["two_tower_score"].to_numpy(np.float32)
    if all(column in rows for column in PROVENANCE_COLUMNS):
        arrays.update(provenance_inputs(rows["source"], rows["source_rank"], rows["rank"], rows["source_score"]))
    if list_features:  # only when the model reads them (`ranking.list_features`)
        arrays["list"] = relative_to_list(arrays, user_pos)
    for task in TASKS:
        if task in rows:
            arrays[f"label_{task}"] = rows[task].to_numpy(np.float32)
    return arrays


def provenance_inputs(source, source_rank, rank, score) -> dict[str, np.ndarray]:
    """The `source` input ((n,) int32, `source_codes`) and the `provenance` input ((n, 4)
    float32, `cross.provenance_features` of the ranks and the score as float32, as the serving
    graphs compute them) of rows with these candidate-set columns."""
    values = provenance_features(
        tf.constant(np.asarray(source_rank, np.float32)), tf.constant(np.asarray(rank, np.float32)),
        tf.constant(np.asarray(score, np.float32))).numpy()
    return {SOURCE_INPUT: source_codes(source), PROVENANCE_INPUT: values}


def _history_features_by_user(history: dict, user_pos: np.ndarray, items: np.ndarray, categories: np.ndarray,
                              batch_rows: int, parts: dict) -> dict[str, np.ndarray]:
    """History features of every row, computed for a group of users at a time: each user's
    history once against all of the user's rows as candidates (padded to the group's longest),
    the (users, candidates) shape the serving graphs use, not one copy of the history per row.

    Args:
        history: `user_histories` of the users `user_pos` indexes.
        parts: input name -> a function of the history dict (each (users, L) tensors: `items`,
            `categories`, `events`, `ages`, and `sessions` where present) and the candidates'
            (users, C) items and categories, returning (users, C, ...) features.

    Returns:
        input name -> (rows, ...) float32 array, in the rows' order.
    """
    n = len(user_pos)
    out: dict[str, np.ndarray] = {}
    text = {k: history[k].astype(str) for k in ("items", "categories", "events", "sessions") if k in history}

    def compute(who, rows, valid):  # (users,) history rows; (users, c) row numbers and mask
        theirs = {k: tf.constant(v[who]) for k, v in text.items()}
        theirs["ages"] = tf.constant(history["ages"][who])
        candidate_items = tf.constant(np.where(valid, items[rows], ""))
        candidate_categories = tf.constant(np.where(valid, categories[rows], ""))
        for name, part in parts.items():
            values = part(theirs, candidate_items, candidate_categories).numpy()[valid]
            if name not in out:  # each part's width, also from no rows at all
                out[name] = np.zeros((n, *values.shape[1:]), np.float32)
            out[name][rows[valid]] = values

    if n == 0:
        compute(np.zeros(0, int), np.zeros((0, 0), int), np.zeros((0, 0), bool))
        return out
    order = np.argsort(user_pos, kind="stable")
    users, starts, sizes = np.unique(user_pos[order], return_index=True, return_counts=True)
    first = 0
    while first < len(users):
        # As many users as fit about `batch_rows` padded candidate slots (at least one).
        width = np.maximum.accumulate(sizes[first:])
        count = max(1, int(np.searchsorted(width * np.arange(1, len(width) + 1), batch_rows, side="right")))
        group = slice(first, first + count)
        slot = np.arange(int(sizes[group].max()))
        valid = slot[None, :] < sizes[group, None]
        compute(users[group], order[np.where(valid, starts[group, None] + slot[None, :], 0)], valid)
        first += count
    return out


def relative_to_list(arrays: dict, list_pos: np.ndarray) -> np.ndarray:
    """`cross.list_features` of every row against the other rows of its list (`list_pos`: the
    list each row belongs to), through the same TensorFlow function the `recommend` export uses."""
    values = list_values(arrays["cross"], arrays["item_popularity"], arrays["two_tower_score"]).numpy()
    n_rows, width = values.shape
    if n_rows == 0:
        return np.zeros((0, 2 * width), np.float32)
    order = np.argsort(list_pos, kind="stable")
    _, starts, sizes = np.unique(list_pos[order], return_index=True, return_counts=True)
    slot = np.arange(n_rows) - np.repeat(starts, sizes)  # position within the list, in `order`
    which = np.repeat(np.arange(len(starts)), sizes)
    padded = np.zeros((len(starts), sizes.max(), width), np.float32)
    mask = np.zeros((len(starts), sizes.max()), bool)
    padded[which, slot] = values[order]
    mask[which, slot] = True
    relative = list_features(tf.constant(padded), tf.constant(mask)).numpy()
    out = np.empty((n_rows, 2 * width), np.float32)
    out[order] = relative[which, slot]
    return out


def split_users(users, share: float, seed: int, max_users: int | None = None) -> np.ndarray:
    """A fixed pseudo-random `share` of users (by hash) -> True: held out; at most `max_users`
    of them, those with the smallest hashes."""
    hashed = pd.util.hash_array(np.asarray(users, dtype=object), hash_key=f"{seed:016d}"[:16])
    held = (hashed % 10_000) < share * 10_000
    if max_users is not None and held.sum() > max_users:
        chosen = np.flatnonzero(held)
        held[:] = False
        held[chosen[np.argsort(hashed[chosen], kind="stable")[:max_users]]] = True
    return held


