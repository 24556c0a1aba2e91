"""Retrieval inputs: the item catalogue, query states before each event, and training pairs.

A training example is (the query state just before an event, the engaged item): the user's
features, the event's hour and weekday, and the user's last N items strictly before the event.
Every input is a raw value (string id, float price, int64 unix seconds), exactly what the
exported model takes, so training and serving share one feature path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from shopping_mtl.features import TIMESTAMP, FeatureSet
from shopping_mtl.scale.groups import codes_in
from shopping_mtl.history import as_str, last_items_before

Arrays = dict[str, np.ndarray]


def item_catalogue(known_events: pd.DataFrame, items: pd.DataFrame | None,
                   features: FeatureSet) -> pd.DataFrame:
    """Every item a list may contain: items in `known_events` plus the item table.

    Attributes come from the item table where it has them, else from the latest event that
    carries them (Taobao events carry the category). Returns one row per item with `item_id`
    and the item features' columns (missing: "" or NaN).
    """
    ids = pd.unique(as_str(known_events["item_id"]))
    if items is not None:
        ids = pd.unique(np.concatenate([ids, as_str(items["item_id"])]))
    catalogue = pd.DataFrame({"item_id": ids})
    table = items.drop_duplicates("item_id").set_index("item_id") if items is not None else None
    latest = known_events.drop_duplicates("item_id", keep="last").set_index("item_id")
    for feature in features.spec.item:
        name = feature.name
        if name == "item_id":
            continue
        if table is not None and name in table.columns:
            values = table[name].reindex(ids)
        elif name in latest.columns:
            values = latest[name].reindex(ids)
        else:
            values = pd.Series(np.nan, index=ids)
        if feature.type != "numeric" and table is not None and name in latest.columns:
            values = values.fillna(latest[name].reindex(ids))
        catalogue[name] = values.to_numpy()
    return catalogue


@dataclass(frozen=True)
class ItemLookup:
    """The catalogue indexed by item id, and the known ids as an index: built once by a caller
    that asks `item_arrays` for one chunk of rows after another (each build hashes the whole
    catalogue)."""

    table: pd.DataFrame
    known: pd.Index | None

    @classmethod
    def of(cls, catalogue: pd.DataFrame, known_ids: set | None = None) -> "ItemLookup":
        # Object ids: an Arrow-string index is converted again, and checked for uniqueness again,
        # by every reindex against it.
        table = catalogue.set_index(pd.Index(as_str(catalogue["item_id"]), dtype=object, name="item_id"))
        return cls(table.drop(columns="item_id", errors="ignore"),
                   pd.Index(list(known_ids), dtype=object) if known_ids is not None else None)


def item_arrays(catalogue: pd.DataFrame, features: FeatureSet, item_ids=None,
                known_ids: set | None = None, lookup: ItemLookup | None = None) -> Arrays:
    """Item-tower inputs for `item_ids` (default: the whole catalogue), in that order.

    Ids outside `known_ids` (the train vocabulary) are given as "": the model learned that
    row with id dropout, so an unseen item is embedded from its content alone. `lookup`:
    `ItemLookup.of(catalogue, known_ids)`, made once, in place of both.
    """
    lookup = lookup or ItemLookup.of(catalogue, known_ids)
    table = lookup.table
    ids = table.index.to_numpy(dtype=object) if item_ids is None else as_str(item_ids)
    rows = table.reindex(ids).reset_index().rename(columns={"index": "item_id"})
    arrays = features.to_inputs(rows, ("item",))
    if lookup.known is not None and "item_id" in arrays:
        arrays["item_id"] = np.where(lookup.known.get_indexer(arrays["item_id"]) >= 0, arrays["item_id"], "")
    return arrays


def user_frame(user_ids, users: pd.DataFrame | None, features: FeatureSet) -> pd.DataFrame:
    """`user_id` plus the user features' columns from the user table (missing: NaN), one row
    per id in `user_ids`, in order."""
    frame = pd.DataFrame({"user_id": as_str(user_ids)})
    table = users.drop_duplicates("user_id").set_index("user_id").reindex(frame["user_id"]) if users is not None else None
    for f in features.spec.user:
        if f.name != "user_id":
            frame[f.name] = table[f.name].to_numpy() if table is not None and f.name in table.columns else np.nan
    return frame


def query_arrays(queries: pd.DataFrame, history_events: pd.DataFrame, users: pd.DataFrame | None,
                 catalogue: pd.DataFrame, features: FeatureSet, lookup: ItemLookup | None = None) -> Arrays:
    """Query-tower inputs for each (user_id, timestamp) row of `queries`.

    Args:
        queries: `user_id`, `timestamp`; the query state is taken strictly before the timestamp.
        history_events: the events the queries may see (never the test period for test queries).
        users: the user table, or None.
        catalogue: `item_catalogue(...)`, for the history items' attributes.
        lookup: `ItemLookup.of(catalogue)`, when made once for many calls.
    """
    spec = features.spec
    frame = user_frame(queries["user_id"], users, features)
    # `.array`, not `.to_numpy()`: a tz-aware column's numpy form is one Timestamp object per
    # row (a quarter of the pairs' build time at 10^7 events).
    frame[TIMESTAMP] = queries["timestamp"].array
    groups = [g for g in ("user", "context") if (spec.user if g == "user" else spec.context)]
    arrays = features.to_inputs(frame, groups)
    if spec.history_length:
        attrs = [n for n in spec.history_features if n != "item_id"]
        table = None
        if attrs:  # indexed by item id (unique): looked up as is
            table = lookup.table[attrs] if lookup is not None else catalogue.drop_duplicates("item_id").set_index("item_id")[attrs]
        history = last_items_before(
            history_events, frame.assign(timestamp=queries["timestamp"].array),
            spec.history_length, table)
        for name in features.input_signature("history"):
            arrays[name] = history[name]
    return arrays


def training_pairs(events: pd.DataFrame, history_events: pd.DataFrame, users: pd.DataFrame | None,
                   catalogue: pd.DataFrame, features: FeatureSet,
                   event_weights: Mapping[str, float], weight_mean: float | None = None,
                   lookup: ItemLookup | None = None) -> Arrays:
    """(query state before each event, engaged item) pairs with an event-type sample weight.

    The weights are normalised to mean 1 so the loss scale does not depend on the event mix
    (`weight_mean`: the mean to divide by, when `events` is one chunk of the pairs; `lookup`:
    the catalogue's `ItemLookup` with the train vocabulary, made once for all chunks).
    """
    arrays = query_arrays(events, history_events, users, catalogue, features, lookup)
    # Ids outside the vocabulary (rare ones, with `min_count`) train the content-only row that
    # unseen items get at retrieval time.
    if lookup is None:
        item_id = features.adapted.get("item_id")
        lookup = ItemLookup.of(catalogue, set(item_id.vocabulary) if item_id is not None else None)
    arrays.update(item_arrays(catalogue, features, events["item_id"], lookup=lookup))
    # The true id as an integer (cheap to compare batch x batch), for accidental-hit removal.
    arrays["item_key"] = lookup.table.index.get_indexer(as_str(events["item_id"])).astype(np.int64)
    weights = event_weight(events, event_weights)
    mean = float(weights.mean()) if weight_mean is None else weight_mean
    arrays["sample_weight"] = weights / max(mean, 1e-12)
    return arrays


def event_weight(events: pd.DataFrame, event_weights: Mapping[str, float]) -> np.ndarray:
    return events["event"].map(dict(event_weights)).fillna(1.0).to_numpy(np.float32)


def _user_codes(row_users, history_users) -> tuple[np.ndarray, np.ndarray]:
    """Each row's user as a code, and each history event's user as the same code (-1: a user
    without rows). Columns of Arrow strings are coded by Arrow: `np.asarray` of one made a
    Python str per row (~1.3 GB for the 20M test candidates at 10^7 events)."""
    codes, owners = pd.factorize(row_users if isinstance(row_users, pd.Series) else np.asarray(row_users))
    return codes, codes_in(pd.Index(owners), history_users if isinstance(history_users, pd.Series)
                           else np.asarray(history_users))


def user_chunks(row_users, history_users, n_chunks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The rows split into `n_chunks` by user, each with the positions of its users' history
    events: [(row positions, history positions)], both in their tables' order. History events
    of users without rows belong to no chunk."""
    codes, history_codes = _user_codes(row_users, history_users)

    def split(chunk: np.ndarray) -> list[np.ndarray]:
        # Each chunk's positions, ascending (a scan per chunk: no argsort's index and buffer).
        chunk = chunk.astype(np.int32)
        return [np.flatnonzero(chunk == c) for c in range(n_chunks)]

    # A row without a user (code -1) falls in the last chunk; history events of users without
    # rows in none.
    return list(zip(split(codes % n_chunks), split(np.where(history_codes >= 0, history_codes % n_chunks, -1))))


def ordered_chunks(row_users, history_users, n_chunks: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """As `user_chunks`, but each chunk a run of consecutive rows (the rows keep their order
    across chunks; a user's rows may fall in several), with its users' history rows."""
    codes, history_codes = _user_codes(row_users, history_users)
    bounds = np.linspace(0, len(codes), n_chunks + 1).astype(np.int64)
    chunks = []
    for first, end in zip(bounds[:-1], bounds[1:]):
        present = np.zeros(codes.max(initial=-1) + 2, bool)  # the last slot: history users without rows
        present[codes[first:end]] = True
        chunks.append((np.arange(first, end), np.flatnonzero(present[history_codes])))
    return chunks


def write_training_pairs(writer, events: pd.DataFrame, history_events: pd.DataFrame, sampling_events: pd.DataFrame,
                         users: pd.DataFrame | None, catalogue: pd.DataFrame, features: FeatureSet,
                         event_weights: Mapping[str, float], chunk_size: int, progress=None,
                         keep_order: bool = False) -> None:
    """`training_pairs(...)` plus `sampling_probability` (against `sampling_events`), built one
    chunk of users at a time (a user's history only needs the user's own events) and appended
    to `writer` (a `shards.ShardWriter`): the (pairs, history length) arrays of the whole log
    never exist at once. `keep_order`: chunks of consecutive events, so the pairs are written
    in the events' order (validation pairs: the in-batch loss depends on which pairs share a
    batch)."""
    n_chunks = max(1, -(-len(events) // max(chunk_size, 1)))
    weight_mean = float(event_weight(events, event_weights).mean()) if len(events) else 1.0
    counts = pd.Series(as_str(sampling_events["item_id"])).value_counts()
    item_id = features.adapted.get("item_id")
    lookup = ItemLookup.of(catalogue, set(item_id.vocabulary) if item_id is not None else None)
    chunking = ordered_chunks if keep_order else user_chunks
    for number, (rows, history_rows) in enumerate(chunking(events["user_id"], history_events["user_id"],
                                                            n_chunks)):
        part = events.iloc[rows]
        arrays = training_pairs(part, history_events.iloc[history_rows], users, catalogue, features,
                                event_weights, weight_mean, lookup)
        arrays["sampling_probability"] = _probability(counts, part["item_id"])
        writer.write(arrays)
        if progress is not None:
            progress(number + 1, n_chunks)


def sampling_probability(train_item_ids, item_ids) -> np.ndarray:
    """Each pair's candidate frequency in the training pairs: the logQ correction's q(item)."""
    return _probability(pd.Series(as_str(train_item_ids)).value_counts(), item_ids)


def _probability(counts: pd.Series, item_ids) -> np.ndarray:
    total = float(counts.sum())
    return (counts.reindex(as_str(item_ids)).fillna(1.0).to_numpy() / total).astype(np.float32)
