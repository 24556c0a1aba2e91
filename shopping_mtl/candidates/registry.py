"""The registry of candidate sources: a source is one module that registers itself here.

A source lists, for each user of a day, up to k items from the events before that day
(`lists`), and builds its TensorFlow counterpart for the `recommend` serving graph
(`serving`), which does the same from a request's raw history and tables frozen at export.
The merged candidate set, the baselines, the per-source metrics and the `recommend` export all
read the sources from here, in the order `candidates.quotas` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.errors import ConfigError


@dataclass(frozen=True)
class SourceDay:
    """What every source lists from.

    Args:
        events: every event before `now`, in time order; nothing at or after `now`.
        users: the users to list for.
        now: the start of the day being predicted.
        settings: the sources' settings.
        two_tower: the two-tower model's lists for `users` (a frame or `scale.shards.FrameOnDisk`)
            when a model fitted on events before `now` exists; None on earlier days.
    """

    events: pd.DataFrame
    users: Sequence[str]
    now: pd.Timestamp
    settings: BaselineConfig
    two_tower: Any = None


class ServingCandidates(NamedTuple):
    """A source's candidates in the serving graph: each (batch, n), in the source's order (the
    candidate in column j has the source's rank j + 1, as `source_rank` offline)."""

    items: tf.Tensor  # string item ids, "" where there is none
    valid: tf.Tensor  # bool
    two_tower_score: tf.Tensor | None = None  # float32; None: 0 for every candidate
    scores: tf.Tensor | None = None  # the source's own score (the list's `score`); None: 0


@dataclass(frozen=True)
class QueryIndex:
    """The exported two-tower index and how to query it.

    Args:
        index: the TFRS `BruteForce` layer: `index(query_inputs, k) -> (scores, item ids)`.
        input_names: the query tower's input names.
        history_length: how many recent items the query tower reads.
    """

    index: Any
    input_names: Sequence[str]
    history_length: int


@dataclass(frozen=True)
class ServingContext:
    """What a source's serving part is built from at export time.

    Args:
        events: the events before the prediction time (train + validation).
        catalogue: `item_id` and the item feature columns of every item known then.
        settings: the sources' settings.
        history_length: how many of the request's most recent events the ranker reads.
        item_tables: item feature name -> `StaticHashTable` from item id (id itself excluded).
        category_table: item id -> category ("" when the spec has none).
        retrieval: the two-tower index, or None when there is none.
        item_order: item id -> its position (int64) among the catalogue's ids sorted as
            strings (unknown ids: after all of them), for ties broken by item id as the
            offline lists break them (`item_order_table`); None: ties by position.
    """

    events: pd.DataFrame
    catalogue: pd.DataFrame
    settings: BaselineConfig
    history_length: int
    item_tables: Mapping[str, Any]
    category_table: Any
    retrieval: QueryIndex | None = None
    item_order: Any = None


UNKNOWN_ITEM_ORDER = 2**62


def item_order_table(ids) -> tf.lookup.StaticHashTable:
    """Item id -> its position among `ids` sorted as Python sorts strings (the order of the
    offline lists' ties), `UNKNOWN_ITEM_ORDER` for an id not among them."""
    ordered = sorted({str(i) for i in ids})
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ordered, tf.string),
                                            tf.range(len(ordered), dtype=tf.int64)),
        default_value=UNKNOWN_ITEM_ORDER)


def best_first(scores: tf.Tensor, k: int, items: tf.Tensor, item_order, *values: tf.Tensor):
    """The top min(k, n) entries per row by `scores` (descending), ties by item id as the
    offline lists break them (`item_order`: `item_order_table`; None: by column), with the same
    entries of `items` and `values`."""
    if item_order is not None:
        by_id = tf.argsort(item_order.lookup(items), axis=1, stable=True)
        scores, items = tf.gather(scores, by_id, batch_dims=1), tf.gather(items, by_id, batch_dims=1)
        values = [tf.gather(v, by_id, batch_dims=1) for v in values]
    k = tf.minimum(k, tf.shape(scores)[1])
    best, position = tf.math.top_k(scores, k=k)  # equal scores: the lower column first
    return (best, tf.gather(items, position, batch_dims=1), *[tf.gather(v, position, batch_dims=1) for v in values])


@dataclass(frozen=True)
class Source:
    """A candidate source.

    Args:
        name: the key of `candidates.quotas`, of the `source` column and of the metrics.
        lists: `(day, k) -> frame | None`: `user_id, rank, item_id, score`, at most k rows per
            user of `day.users`, users in id order and each list by rank; None where the source
            has nothing to list from on that day (the two-tower model before it was fitted).
        serving: `(context, quota) -> callable`: a `tf.Module` taking the `recommend` request
            (raw history, newest first) and returning `ServingCandidates`.
        baseline: whether its list can be scored as a baseline (listable from events alone).
    """

    name: str
    lists: Callable[[SourceDay, int], pd.DataFrame | None]
    serving: Callable[[ServingContext, int], Callable]
    baseline: bool = True


_SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Add `source` to the registry (a name registered twice is an error)."""
    if source.name in _SOURCES:
        raise ValueError(f"candidate source '{source.name}' is registered twice")
    _SOURCES[source.name] = source
    return source


def unregister(name: str) -> None:
    """Remove a source (tests that register a toy source take it out again)."""
    _SOURCES.pop(name, None)


def get(name: str) -> Source:
    if name not in _SOURCES:
        raise ConfigError(f"unknown candidate source '{name}'; known: {', '.join(_SOURCES)}")
    return _SOURCES[name]


def names() -> tuple[str, ...]:
    return tuple(_SOURCES)


def check_names(quotas: Mapping[str, int], baselines: Sequence[str]) -> None:
    """Fail, naming the key, when a quota or a baseline names no registered source."""
    for name in quotas:
        if name not in _SOURCES:
            raise ConfigError(f"candidates.quotas has unknown key '{name}'; known: {', '.join(_SOURCES)}")
    listable = [n for n, s in _SOURCES.items() if s.baseline]
    for name in baselines:
        if name not in listable:
            raise ConfigError(f"baselines.names has unknown baseline '{name}'; known: {', '.join(listable)}")
