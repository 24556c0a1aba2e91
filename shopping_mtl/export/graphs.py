"""Serving graphs for TF Serving: the `ranker` and the `recommend` model.

Both take a user's raw features and raw event history (item ids, event types and unix-second
timestamps, most recent first, "" padding) and compute everything else inside the graph with
stock TensorFlow ops: history categories and item popularity from lookup tables frozen at
export time, the user-item features of `cross.py` (the very function training used), the
ranker's probabilities, Platt calibration per head, and the value score.

- `ranker`: scores candidates the caller brings: per request row, (C,) candidates with their raw
  item features and two-tower score -> `click`, `save`, `purchase`, `score`, each (batch, C).
  With a ranker that reads where candidates came from (`ranking.source_features`), each
  candidate's `source` (name, "" = none), `source_rank` (its rank in that source, 0 = none) and
  `source_score` (that source's score) are inputs too, and the candidates come in the merged
  order: a candidate's position among the row's candidates is its merged `rank`.
- `recommend`: retrieval and ranking in one graph. Candidates come from each registered source's
  serving part (`shopping_mtl.candidates`: the two-tower index's top items the user has not
  seen, the user's own history items, items co-visited with the user's recent items, the most
  popular items), merged with the training quotas in the same priority order as the offline
  merge, restricted to the catalogue known at export time; they are ranked by the value score
  and the top N returned as `item_ids`, `scores`, `click`, `save`, `purchase`, each (batch, N).
  Each candidate's source, rank in its source's part, position in the merged set and source
  score come from the merge itself, as the offline candidate set's columns do.

Differences from the offline candidate set, by design of a request that carries only the user's
recent events: the user's own items, their scores and the co-visitation seeds come from the
request's history (offline: the whole log), the two-tower part leaves out the request's items
(offline: all the user's), and co-visitation keeps each seed's top 50 neighbours. Where the
request holds the user's whole history and no seed's neighbours are cut, the sets, orders and
scores are the offline ones (ties by item id, as offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates import builtin, registry  # noqa: F401  (builtin: registers the built-in sources)
from shopping_mtl.candidates.registry import UNKNOWN_ITEM_ORDER, ServingContext, item_order_table
from shopping_mtl.candidates.user_history import HISTORY_EVENTS, HISTORY_TIMESTAMPS
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.data.spec import SESSION_ID
from shopping_mtl.export.publishing import save_atomic
from shopping_mtl.features import TIMESTAMP, FeatureSet
from shopping_mtl.history import HISTORY_ITEM_IDS, last_items_before, to_unix_seconds
from shopping_mtl.ranking.calibration import EPS, Platt
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.ranking.cross import (ATTENTION_LENGTH, CROSS_FEATURES, ENGAGEMENT_HALF_LIVES, SEQUENCE_FEATURES,
                                        cross_features, list_features, list_values, provenance_features,
                                        sequence_features, session_features, user_item_activity)
from shopping_mtl.ranking.examples import (ACTIVITY_INPUT, ATTENTION_INPUT, ENGAGEMENT_INPUT, PROVENANCE_INPUT,
                                          RECENT_POPULARITY_INPUT, SESSION_INPUT, SOURCE_INPUT, reads_sessions,
                                          recent_item_counts, source_vocabulary)
from shopping_mtl.retrieval.examples import user_frame
from shopping_mtl.serving_ops import first_occurrence, float_table, pad_columns, string_table, top

TWO_TOWER_SCORE = "two_tower_score"
SOURCE, SOURCE_RANK, SOURCE_SCORE = "source", "source_rank", "source_score"  # the ranker export's inputs
# Each history event's session, in the requests of a spec with a session role ("" = unknown).
HISTORY_SESSIONS = "history_sessions"


@dataclass(frozen=True)
class CatalogueSnapshot:
    """What the ranker graph looks up, frozen at export time from the events before the
    prediction time: every catalogue item's raw features, its event count (popularity) and its
    events in the day before that time (`item_recent_popularity`)."""

    catalogue: pd.DataFrame  # item_id + the item features' columns (retrieval.examples.item_catalogue)
    event_counts: pd.Series  # item_id -> events before the prediction time
    recent_counts: pd.Series  # item_id -> events in the day before it

    @classmethod
    def from_events(cls, catalogue: pd.DataFrame, events: pd.DataFrame, at: pd.Timestamp) -> "CatalogueSnapshot":
        """The snapshot at prediction time `at` (`events`: those before it)."""
        return cls(catalogue, events["item_id"].value_counts(), recent_item_counts(events, at))


class RankerGraph(tf.Module):
    """The ranker with its feature computation and calibration, as functions of raw tensors."""

    def __init__(self, scorer: tf.keras.Model, features: FeatureSet, snapshot: CatalogueSnapshot,
                 platt: Mapping[str, Platt], value_weights: Mapping[str, float], history_length: int,
                 use_list_features: bool, ordered: bool = False):
        super().__init__()
        self.scorer = scorer
        self.features = features
        self.history_length = int(history_length)
        self.use_list_features = bool(use_list_features)
        self.ordered = bool(ordered)  # ESMM: calibrated save and purchase capped at click
        self.platt = {t: (float(platt[t].a), float(platt[t].b)) for t in TASKS}
        self.value_weights = {t: float(value_weights.get(t, 0.0)) for t in TASKS}
        catalogue = snapshot.catalogue
        ids = catalogue["item_id"].to_numpy(dtype=object)
        category = catalogue["category"] if "category" in catalogue else pd.Series("", index=catalogue.index)
        self.category_table = string_table(ids, category.to_numpy(dtype=object))
        counts = snapshot.event_counts
        self.popularity_table = float_table(counts.index.to_numpy(dtype=object),
                                             np.log1p(counts.to_numpy(dtype=float)), 0.0)
        self.user_names = [f.name for f in features.spec.user]
        self.item_names = [f.name for f in features.spec.item]
        # What the scorer reads besides the raw features (its config's switches).
        self.use_engagement = ENGAGEMENT_INPUT in scorer.input_names
        self.use_source = SOURCE_INPUT in scorer.input_names
        self.use_attention = ATTENTION_INPUT in scorer.input_names
        self.use_sessions = SESSION_INPUT in scorer.input_names
        self.use_activity = ACTIVITY_INPUT in scorer.input_names
        if self.use_activity:
            recent = snapshot.recent_counts
            self.recent_table = float_table(recent.index.to_numpy(dtype=object), np.log1p(recent.to_numpy(dtype=float)),
                                            0.0)
        self.source_names = source_vocabulary()  # the offline rows' codes (`examples.source_codes`)
        if self.use_source:  # the ranker export's `source` names -> codes
            self.source_table = float_table(np.array(self.source_names, dtype=object),
                                            np.arange(1, len(self.source_names) + 1, dtype=np.float32), 0.0)

    def source_code(self, name: str) -> int:
        """A source's index in the `source` input (0: not a known source)."""
        return self.source_names.index(name) + 1 if name in self.source_names else 0

    def source_codes(self, names: tf.Tensor) -> tf.Tensor:
        """(batch, C) source names -> their int32 indices in the `source` input (0: none)."""
        return tf.cast(self.source_table.lookup(names), tf.int32)

    def history(self, request: Mapping[str, tf.Tensor]):
        """The request's last `history_length` events: items, categories, events, ages in days."""
        items = pad_columns(request[HISTORY_ITEM_IDS], self.history_length, "")
        events = pad_columns(request[HISTORY_EVENTS], self.history_length, "")
        stamps = pad_columns(request[HISTORY_TIMESTAMPS], self.history_length, tf.constant(0, tf.int64))
        ages = tf.cast(request[TIMESTAMP][:, None] - stamps, tf.float32) / 86400.0
        ages = tf.where(tf.not_equal(items, ""), ages, 0.0)
        return items, self.category_table.lookup(items), events, ages

    def score(self, request: Mapping[str, tf.Tensor], candidates: Mapping[str, tf.Tensor],
              two_tower_score: tf.Tensor, valid: tf.Tensor,
              provenance: Mapping[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
        """Calibrated probabilities and value score of (batch, C) candidates for each request row.

        `candidates` holds the item features, each (batch, C); `valid` (batch, C) marks real
        candidates (others score -inf). `provenance` (needed when the scorer reads the `source`
        input): each (batch, C), `source` (int32 codes, `source_codes`), `source_rank`, `rank`
        and `source_score`, as the offline candidate set's columns."""
        items = candidates["item_id"]
        shape = tf.shape(items)
        categories = candidates["category"] if "category" in candidates else self.category_table.lookup(items)
        h_items, h_categories, h_events, h_ages = self.history(request)
        half_lives = ENGAGEMENT_HALF_LIVES if self.use_engagement else ()
        cross = cross_features(h_items, h_categories, h_events, h_ages, items, categories, half_lives)  # (b, C, F)
        engagement, cross = cross[..., len(CROSS_FEATURES):], cross[..., :len(CROSS_FEATURES)]
        item_popularity = self.popularity_table.lookup(items)
        rows = {}
        for name in self.user_names:
            rows[name] = tf.reshape(tf.repeat(request[name][:, None], shape[1], axis=1), [-1])
        for name in self.item_names:
            rows[name] = tf.reshape(candidates[name], [-1])
        rows["cross"] = tf.reshape(cross, [-1, cross.shape[-1]])
        rows["item_popularity"] = tf.reshape(item_popularity, [-1])
        rows[TWO_TOWER_SCORE] = tf.reshape(tf.cast(two_tower_score, tf.float32), [-1])
        if self.use_engagement:
            rows[ENGAGEMENT_INPUT] = tf.reshape(engagement, [-1, len(ENGAGEMENT_HALF_LIVES)])
        if self.use_sessions:
            # Slot i is the session of history slot i; a slot without one ("") is in no session.
            sessions = pad_columns(request[HISTORY_SESSIONS], self.history_length, "")
            in_session = session_features(h_items, h_categories, sessions, items, categories)
            rows[SESSION_INPUT] = tf.reshape(in_session, [-1, in_session.shape[-1]])
        if self.use_activity:
            activity = user_item_activity(h_items, h_events, h_ages, items)
            rows[ACTIVITY_INPUT] = tf.reshape(activity, [-1, activity.shape[-1]])
            rows[RECENT_POPULARITY_INPUT] = tf.reshape(self.recent_table.lookup(items), [-1])
        if self.use_attention:
            sequence = sequence_features(h_items, h_categories, h_events, h_ages, items, categories, ATTENTION_LENGTH)
            rows[ATTENTION_INPUT] = tf.reshape(sequence, [-1, ATTENTION_LENGTH, len(SEQUENCE_FEATURES)])
        if self.use_source:
            if provenance is None:
                raise ValueError("this ranker reads where candidates came from: pass `provenance`")
            source_rank = tf.where(valid, tf.cast(provenance[SOURCE_RANK], tf.float32), 0.0)
            values = provenance_features(source_rank, provenance["rank"], provenance[SOURCE_SCORE])
            rows[SOURCE_INPUT] = tf.reshape(tf.where(valid, tf.cast(provenance[SOURCE], tf.int32), 0), [-1])
            rows[PROVENANCE_INPUT] = tf.reshape(values, [-1, values.shape[-1]])
        if self.use_list_features:
            relative = list_features(list_values(cross, item_popularity, two_tower_score), valid)
            rows["list"] = tf.reshape(relative, [-1, relative.shape[-1]])
        raw = self.scorer({k: rows[k] for k in self.scorer.input_names}, training=False)
        out = {}
        for task in TASKS:
            p = tf.clip_by_value(tf.reshape(raw[task], shape), EPS, 1 - EPS)
            a, b = self.platt[task]
            calibrated = tf.sigmoid(a * (tf.math.log(p) - tf.math.log1p(-p)) + b)
            if self.ordered and task != "click":
                calibrated = tf.minimum(calibrated, out["click"])
            out[task] = tf.where(valid, calibrated, 0.0)
        value = tf.add_n([self.value_weights[t] * out[t] for t in TASKS])
        out["score"] = tf.where(valid, value, -np.inf)
        return out


def _user_signature(features: FeatureSet) -> dict[str, tf.TensorSpec]:
    return {name: spec for name, spec in features.input_signature("user").items()}


def _request_signature(features: FeatureSet) -> dict[str, tf.TensorSpec]:
    """A user's request: raw user features, the history (plus each event's session where the
    spec names a session column) and the prediction time."""
    signature = {
        **_user_signature(features),
        HISTORY_ITEM_IDS: tf.TensorSpec([None, None], tf.string, HISTORY_ITEM_IDS),
        HISTORY_EVENTS: tf.TensorSpec([None, None], tf.string, HISTORY_EVENTS),
        HISTORY_TIMESTAMPS: tf.TensorSpec([None, None], tf.int64, HISTORY_TIMESTAMPS),
        TIMESTAMP: tf.TensorSpec([None], tf.int64, TIMESTAMP),
    }
    if reads_sessions(features):
        signature[HISTORY_SESSIONS] = tf.TensorSpec([None, None], tf.string, HISTORY_SESSIONS)
    return signature


class RankerServing(tf.Module):
    """`serving_default`: a user's raw features and history plus (batch, C) raw candidate item
    features and two-tower scores -> `click`, `save`, `purchase` (calibrated) and `score`.

    A ranker that reads where candidates came from (`ranking.source_features`) also takes, each
    (batch, C): `source` (the source's name; "" or an unknown name: none), `source_rank` (int64,
    the candidate's rank in that source's list, 1 = best; 0: none) and `source_score` (float32,
    that source's score; 0 for none). The candidates come in the merged order: a candidate's
    merged `rank` is its position among the row's candidates (1 = first)."""

    def __init__(self, graph: RankerGraph):
        super().__init__()
        self.graph = graph
        signature = _request_signature(graph.features)
        for name, spec in graph.features.input_signature("item").items():
            signature[name] = tf.TensorSpec([None, None], spec.dtype, name)
        signature[TWO_TOWER_SCORE] = tf.TensorSpec([None, None], tf.float32, TWO_TOWER_SCORE)
        if graph.use_source:
            signature[SOURCE] = tf.TensorSpec([None, None], tf.string, SOURCE)
            signature[SOURCE_RANK] = tf.TensorSpec([None, None], tf.int64, SOURCE_RANK)
            signature[SOURCE_SCORE] = tf.TensorSpec([None, None], tf.float32, SOURCE_SCORE)
        self.signature = signature
        self.serve = tf.function(self._serve, input_signature=[signature])

    def _serve(self, request):
        candidates = {name: request[name] for name in self.graph.item_names}
        valid = tf.not_equal(request["item_id"], "")
        provenance = None
        if self.graph.use_source:
            provenance = {SOURCE: self.graph.source_codes(request[SOURCE]), SOURCE_RANK: request[SOURCE_RANK],
                          "rank": tf.cumsum(tf.cast(valid, tf.int64), axis=1), SOURCE_SCORE: request[SOURCE_SCORE]}
        out = self.graph.score(request, candidates, request[TWO_TOWER_SCORE], valid, provenance)
        return {name: tf.identity(out[name], name=name) for name in (*TASKS, "score")}


class RecommendServing(tf.Module):
    """`serving_default`: a user's raw features and history -> the top `list_size` items with
    `scores` and the calibrated `click`, `save`, `purchase`, retrieval and ranking in one graph.

    Args:
        graph: the ranker graph that scores the candidates.
        snapshot: the catalogue known at export time (only its items are recommended).
        events: the events before the prediction time, which the sources' parts freeze.
        settings: the sources' settings.
        quotas: source -> quota, in merge priority order (`candidates.quotas`).
        list_size: items returned per request row.
        retrieval: the two-tower index (`candidates.registry.QueryIndex`), or None.
    """

    def __init__(self, graph: RankerGraph, snapshot: CatalogueSnapshot, events: pd.DataFrame,
                 settings: BaselineConfig, quotas: Mapping[str, int], list_size: int, retrieval=None):
        super().__init__()
        self.graph = graph
        self.list_size = int(list_size)
        features = graph.features
        catalogue = snapshot.catalogue
        ids = catalogue["item_id"].to_numpy(dtype=object)
        self.item_tables = {}
        for feature in features.spec.item:
            if feature.name == "item_id":
                continue
            if feature.type == "numeric":
                values = pd.to_numeric(catalogue[feature.name], errors="coerce").to_numpy(np.float32)
                self.item_tables[feature.name] = float_table(ids, values, np.nan)
            else:
                self.item_tables[feature.name] = string_table(ids, catalogue[feature.name].to_numpy(dtype=object))
        # Item id -> its place in id order (ties of the sources' scores fall by id, as offline);
        # unknown ids: not in the catalogue.
        self.item_order = item_order_table(ids)
        context = ServingContext(events, catalogue, settings, graph.history_length, self.item_tables,
                                 graph.category_table, retrieval, self.item_order)
        # In merge priority order; a tf.Module list, so their tables are saved with the graph.
        self.source_names = [name for name, quota in quotas.items() if quota > 0]
        self.sources = [registry.get(name).serving(context, quotas[name]) for name in self.source_names]
        self.signature = _request_signature(features)
        self.serve = tf.function(self._serve, input_signature=[self.signature])

    def candidates(self, request) -> dict[str, tf.Tensor]:
        """The merged candidates of each request row, each (batch, C): `item_id` ("" and
        `valid` False where none), `two_tower_score`, and where each came from, as the offline
        candidate set's columns: `source` (int32 code, `RankerGraph.source_codes`), `source_rank`
        (its column in its source's part + 1), `rank` (its position among the valid merged
        candidates) and `source_score`. Parts are concatenated in priority order and an item
        belongs to its first occurrence, as in `candidates.merge`."""
        parts = [source(request) for source in self.sources]
        items = tf.concat([p.items for p in parts], axis=1)
        two_tower_score = tf.concat([p.two_tower_score if p.two_tower_score is not None
                                     else tf.zeros_like(p.items, tf.float32) for p in parts], axis=1)
        scores = tf.concat([tf.cast(p.scores, tf.float32) if p.scores is not None
                            else tf.zeros_like(p.items, tf.float32) for p in parts], axis=1)
        source = tf.concat([tf.fill(tf.shape(p.items), self.graph.source_code(name))
                            for name, p in zip(self.source_names, parts)], axis=1)
        source_rank = tf.concat([tf.broadcast_to(tf.range(1, tf.shape(p.items)[1] + 1, dtype=tf.int64)[None, :],
                                                 tf.shape(p.items)) for p in parts], axis=1)
        valid = tf.concat([p.valid for p in parts], axis=1)
        # Only catalogue items are recommended: an id the export never saw (say, in a request's
        # history) has no features to rank it by.
        valid &= tf.not_equal(self.item_order.lookup(items), UNKNOWN_ITEM_ORDER)
        items = tf.where(valid, items, "")
        valid = first_occurrence(items)
        return {"item_id": tf.where(valid, items, ""), "valid": valid,
                TWO_TOWER_SCORE: tf.where(valid, two_tower_score, 0.0),
                SOURCE: tf.where(valid, source, 0), SOURCE_RANK: tf.where(valid, source_rank, 0),
                "rank": tf.where(valid, tf.cumsum(tf.cast(valid, tf.int64), axis=1), 0),
                SOURCE_SCORE: tf.where(valid, scores, 0.0)}

    def _serve(self, request):
        merged = self.candidates(request)
        items, valid = merged["item_id"], merged["valid"]
        candidates = {"item_id": items}
        for name, table in self.item_tables.items():
            candidates[name] = table.lookup(items)
        provenance = {k: merged[k] for k in (SOURCE, SOURCE_RANK, "rank", SOURCE_SCORE)}
        out = self.graph.score(request, candidates, merged[TWO_TOWER_SCORE], valid, provenance)
        scores, ids, *probabilities = top(out["score"], self.list_size, items, *(out[t] for t in TASKS))
        found = tf.math.is_finite(scores)
        result = {"item_ids": tf.where(found, ids, ""), "scores": tf.where(found, scores, 0.0)}
        for task, p in zip(TASKS, probabilities):
            result[task] = tf.where(found, p, 0.0)
        return {name: tf.identity(value, name=name) for name, value in result.items()}


def export(module: tf.Module, target: Path) -> Path:
    """Save `module.serve` as `serving_default` atomically at `target` (`<base>/<model>/<version>`)."""
    return save_atomic(module, {"serving_default": module.serve.get_concrete_function()}, target)


def requests_for(user_ids, history_events: pd.DataFrame, at: pd.Timestamp, users: pd.DataFrame | None,
                 features: FeatureSet, length: int) -> dict[str, np.ndarray]:
    """The serving request of each user at time `at`: raw user features and the last `length`
    events before `at` (most recent first, "" / 0 padding), as the `recommend` signature takes;
    where the spec names a session column, also each event's session (`history_sessions`)."""
    frame = user_frame(user_ids, users, features)
    request = features.to_inputs(frame, ["user"]) if features.spec.user else {}
    events = history_events.assign(seconds=to_unix_seconds(history_events["timestamp"]))
    queries = pd.DataFrame({"user_id": frame["user_id"], "timestamp": at})
    sessions = reads_sessions(features)
    found = last_items_before(events, queries, length, ["event", "seconds", *([SESSION_ID] if sessions else [])])
    request[HISTORY_ITEM_IDS] = found[HISTORY_ITEM_IDS].astype(str)
    request[HISTORY_EVENTS] = found["history_event"].astype(str)
    if sessions:
        request[HISTORY_SESSIONS] = found[f"history_{SESSION_ID}"].astype(str)
    seconds = pd.to_numeric(pd.Series(found["history_seconds"].reshape(-1)), errors="coerce")
    request[HISTORY_TIMESTAMPS] = seconds.fillna(0).to_numpy(np.int64).reshape(len(frame), length)
    request[TIMESTAMP] = np.full(len(frame), int(at.timestamp()), np.int64)
    return {k: v.astype(str) if v.dtype == object else v for k, v in request.items()}
