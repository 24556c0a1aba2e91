"""The retrieval stage of a run: prepare pairs, train the two-tower model, list for the
validation and the test users.

Split into steps so that tuning trials and benchmarks reuse the same preparation and scoring.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopping_mtl.data.split import GroundTruth, Split, validation_truth
from shopping_mtl.errors import ConfigError
from shopping_mtl.evaluation import score_lists
from shopping_mtl.features import FeatureSet, FeatureSpec
from shopping_mtl.scale.groups import codes_in, in_sorted
from shopping_mtl.retrieval import examples, index as index_lib, model as model_lib
from shopping_mtl.retrieval.config import RetrievalConfig
from shopping_mtl.run_state import RunState
from shopping_mtl.scale import shards

log = logging.getLogger(__name__)


def feature_set(dataset, split: Split) -> FeatureSet:
    """The spec's features adapted to the train split (vocabularies and statistics: train only);
    `history_sessions` where the dataset spec names a session column."""
    try:
        spec = FeatureSpec.from_dict(dataset.spec.feature_section)
    except ValueError as err:
        raise ConfigError(f"{dataset.spec.path}: {err}") from None
    spec = dataclasses.replace(spec, history_sessions=dataset.spec.events.session is not None)
    return FeatureSet.adapt(spec, split.train, items=dataset.items, users=dataset.users)


@dataclass
class RetrievalData:
    """Everything a two-tower fit and its evaluation need, prepared once."""

    features: FeatureSet
    split: Split
    users: pd.DataFrame | None
    items: pd.DataFrame | None
    catalogue: pd.DataFrame  # known before the test period (train + validation + item table)
    train: dict
    validation: dict
    config: RetrievalConfig
    # Recall of the exact top k by the approximate index, per list set ("validation", "test"),
    # where the offline lists came from one (`RetrievalConfig.uses_ivf`).
    index_recall: dict = dataclasses.field(default_factory=dict)
    _train_catalogue: pd.DataFrame | None = dataclasses.field(default=None, repr=False)

    def train_catalogue(self) -> pd.DataFrame:
        """The items known before the validation day (train events + item table), built once:
        the validation lists and the ranker's validation day both list from it."""
        if self._train_catalogue is None:
            self._train_catalogue = examples.item_catalogue(self.split.train, self.items, self.features)
        return self._train_catalogue

    def forget_train_catalogue(self) -> None:
        """Free it once both have listed (built again if asked)."""
        self._train_catalogue = None

    @property
    def known_ids(self) -> set | None:
        item_id = self.features.adapted.get("item_id")
        return set(item_id.vocabulary) if item_id is not None else None


def prepare(dataset, split: Split, config: RetrievalConfig, examples_dir=None,
            shard_rows: int = 200_000) -> RetrievalData:
    """Training pairs from train events (history: train only); validation pairs from validation
    events (history: train + validation before each event), for early stopping.

    `examples_dir`: write the training pairs there as Parquet shards of about `shard_rows`
    pairs, one user chunk at a time, and stream them (`shards.ExampleShards`) instead of
    holding them in memory."""
    features = feature_set(dataset, split)
    catalogue = examples.item_catalogue(split.history, dataset.items, features)
    train_events, validation_events = split.train, split.validation
    if config.first_touch_only:
        first = ~split.history.duplicated(["user_id", "item_id"], keep="first").to_numpy()
        train_events = split.train[first[: len(split.train)]]
        validation_events = split.validation[first[len(split.train):]]
    if examples_dir is None:
        train = examples.training_pairs(train_events, split.train, dataset.users, catalogue, features,
                                        config.event_weights)
        train["sampling_probability"] = examples.sampling_probability(
            train_events["item_id"], train_events["item_id"])
    else:
        writer = shards.ShardWriter(examples_dir, shard_rows)
        examples.write_training_pairs(
            writer, train_events, split.train, train_events, dataset.users, catalogue, features,
            config.event_weights, shard_rows,
            progress=lambda done, total: log.info("retrieval: training pairs, chunk %d of %d written to %s",
                                                  done, total, examples_dir))
        train = writer.close()
    if examples_dir is None:
        validation = examples.training_pairs(validation_events, split.history, dataset.users, catalogue,
                                             features, config.event_weights)
        validation["sampling_probability"] = examples.sampling_probability(
            train_events["item_id"], validation_events["item_id"])
    else:
        # On disk too, in the events' order: at 10^7 events the validation pairs' history
        # columns alone were 3.6 GB as tensors.
        writer = shards.ShardWriter(Path(f"{examples_dir}-validation"), shard_rows)
        examples.write_training_pairs(
            writer, validation_events, split.history, train_events, dataset.users, catalogue, features,
            config.event_weights, shard_rows, keep_order=True)
        validation = writer.close()
    log.info("retrieval: %d training pairs%s, %d validation pairs, catalogue of %d items",
             n_examples(train), f" in {examples_dir}" if examples_dir is not None else "",
             n_examples(validation), len(catalogue))
    return RetrievalData(features, split, dataset.users, dataset.items, catalogue, train, validation, config)


def n_examples(arrays) -> int:
    """Rows of an example table, in memory (dict of arrays) or on disk (`ExampleShards`)."""
    return arrays.rows if isinstance(arrays, shards.ExampleShards) else len(next(iter(arrays.values())))


def top_k(model, data: RetrievalData, catalogue: pd.DataFrame, queries: pd.DataFrame,
          history_events: pd.DataFrame, k: int, exclude_seen: bool = False, extra: int = 200,
          label: str = "lists", build_index: bool = True):
    """Index `catalogue` and retrieve the top k for each query; returns (index parts, lists).

    With `exclude_seen`, items the user engaged with in `history_events` are dropped: the
    top k + `extra` are retrieved and the first k unseen kept (repeats are the user-history
    source's job; retrieval is for discovery). The parts returned (None unless `build_index`)
    build the brute-force `BruteForce` layer that is exported (`IndexParts.build`); the lists
    are its lists (the same matmul and top_k), or an approximate index's where
    `data.config.uses_ivf` says so, whose recall of the exact lists is kept in
    `data.index_recall[label]`.
    """
    vectors = catalogue_vectors(model, data, catalogue)
    query_model = model.query_model
    if data.config.popularity_prior:
        counts = history_events["item_id"].value_counts().reindex(catalogue["item_id"]).fillna(0).to_numpy()
        query_model, vectors = index_lib.with_popularity_prior(
            query_model, vectors, counts, data.config.popularity_prior, data.config.temperature)
    depth = min(k + (extra if exclude_seen else 0), len(catalogue))
    index = index_lib.IndexParts(query_model, catalogue["item_id"], vectors, depth) if build_index else None
    arrays = examples.query_arrays(queries, history_events, data.users, catalogue, data.features)
    users = queries["user_id"].to_numpy(dtype=object)
    query_vectors = index_lib.embed_queries(query_model, arrays)
    del arrays
    if data.config.uses_ivf(len(catalogue)):
        scores, positions = _ivf_top_k(data, query_vectors, vectors, depth, label)
    else:
        scores, positions = index_lib.exact_top_k(query_vectors, vectors, depth)
    item_index = pd.Index(catalogue["item_id"].to_numpy(dtype=object))
    if exclude_seen:
        positions = np.where(_seen(users, positions, history_events, item_index), -1, positions)
    # The first k found (and unseen) of each row, in score order.
    order = np.argsort(positions < 0, axis=1, kind="stable")[:, :k]
    positions = np.take_along_axis(positions, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    ids = item_index.to_numpy()
    item_ids = np.where(positions >= 0, ids[np.maximum(positions, 0)], "")
    lists = index_lib.lists_frame(users, item_ids, scores)
    gc.collect()  # the traced scoring functions' cycles hold the catalogue's vectors
    return index, lists


def catalogue_vectors(model, data: RetrievalData, catalogue: pd.DataFrame, rows: int = 32 * 8192) -> np.ndarray:
    """The candidate tower's vector of every catalogue item, in catalogue order, `rows` items'
    inputs built at a time (a multiple of the embedding batch, so the batches, and the vectors,
    are those of one pass over the whole catalogue; its inputs at once were ~1 GB at 10^7)."""
    lookup = examples.ItemLookup.of(catalogue, data.known_ids)
    ids = catalogue["item_id"].to_numpy()
    return np.concatenate([  # an empty catalogue: one empty slice, (0, dim) vectors
        index_lib.embed_items(model.candidate_model,
                              examples.item_arrays(catalogue, data.features, ids[start:start + rows], lookup=lookup))
        for start in range(0, max(len(ids), 1), rows)])


def _seen(users: np.ndarray, positions: np.ndarray, history_events: pd.DataFrame, item_index: pd.Index) -> np.ndarray:
    """(queries, depth) bool: the item at each position is one the row's user engaged with in
    `history_events`; compared as integer (user, item) keys, not as string pairs."""
    codes, owners = pd.factorize(users)
    owner = codes_in(pd.Index(owners), history_events["user_id"])
    mine = owner >= 0
    item = codes_in(item_index, history_events["item_id"][mine])
    n_items = np.int64(len(item_index) + 1)
    seen_keys = np.unique(owner[mine].astype(np.int64) * n_items + item)  # item -1 (not indexed): never matches
    keys = codes.astype(np.int64)[:, None] * n_items + positions
    return in_sorted(keys, seen_keys) & (positions >= 0)


def _ivf_top_k(data: RetrievalData, query_vectors, vectors, depth: int, label: str):
    """The top `depth` per query from a faiss inverted file, and its recall of the exact top
    `depth` on the first `ivf_check_queries` queries (the users' order is fixed, so the check
    is too)."""
    config = data.config
    started = time.perf_counter()
    settings = index_lib.IvfSettings(lists=config.ivf_lists, probe=config.ivf_probe, fp16=config.ivf_fp16)
    scores, positions = index_lib.ivf_top_k(query_vectors, vectors, depth, settings)
    checked = min(config.ivf_check_queries, len(query_vectors))
    if checked:
        data.index_recall[label] = index_lib.recall_of_exact(query_vectors[:checked], vectors, positions[:checked])
    log.info("retrieval: %s lists of %d users from an inverted file over %d items in %.1fs%s",
             label, len(query_vectors), len(vectors), time.perf_counter() - started,
             f"; recall of the exact top {depth} on {checked} users: {data.index_recall[label]:.3f}"
             if checked else "")
    return scores, positions


def validation_lists(model, data: RetrievalData, k: int) -> tuple[pd.DataFrame, GroundTruth]:
    """Lists for validation users at the start of the validation day, from train only."""
    split = data.split
    truth = validation_truth(split)
    catalogue = data.train_catalogue()
    queries = pd.DataFrame({"user_id": list(truth.users), "timestamp": split.validation_start})
    _, lists = top_k(model, data, catalogue, queries, split.train, k, data.config.exclude_seen,
                     label="validation", build_index=False)
    return lists, truth


def test_lists(model, data: RetrievalData, users, k: int):
    """Lists for test users at the start of the test period, from train + validation."""
    queries = pd.DataFrame({"user_id": list(users), "timestamp": data.split.test_start})
    return top_k(model, data, data.catalogue, queries, data.split.history, k, data.config.exclude_seen,
                 label="test")


def validation_objective(data: RetrievalData, metric: str, k: int):
    """`model -> float`: a validation list metric (e.g. `new_gt/recall@100`), for early stopping
    and tuning. Only train and validation events are read."""
    def objective(model) -> float:
        lists, truth = validation_lists(model, data, k)
        return score_lists(lists, truth, "v", n_resamples=0).get(f"v/{metric}", 0.0)
    return objective


def fit(data: RetrievalData, config: RetrievalConfig, seed: int, backup_dir=None, label: str = "two-tower"):
    """Train on `data`, early-stopping on the configured validation objective; `label` names the
    fit in its epoch log lines."""
    objective = None
    if config.early_stopping != "val_loss":
        objective = validation_objective(data, config.early_stopping, config.top_k)
    return model_lib.train_two_tower(data.features, data.train, data.validation, config, seed, objective,
                                     backup_dir=backup_dir, label=label)


@dataclass
class RetrievalOutput:
    """The retrieval stage's hand-off.

    Args:
        model: the fitted two-tower model (`query_model`, `candidate_model`).
        data: its features, catalogue and example tables.
        validation_lists: each validation-day user's lists from train events (the validation
            day's two-tower source), as deep as its quota; a `FrameOnDisk` when streaming.
        test_lists: each test user's lists from train + validation events, as deep; the
            candidates stage takes them (and sets this to None).
        index: the parts the exported brute-force index is built from.
    """

    model: object
    data: RetrievalData
    validation_lists: object
    test_lists: pd.DataFrame | None
    index: index_lib.IndexParts


def run_retrieval_stage(state: RunState) -> RetrievalOutput:
    """Fit the two-tower model, list for the validation and the test users, write
    candidates.parquet (its top k per test user) and score it."""
    config, split = state.config, state.split
    rconfig, ev = config.retrieval, config.evaluation
    data = prepare(state.dataset, split, rconfig, state.examples_dir("retrieval"), config.data.shard_rows)
    started = time.perf_counter()
    model, fitted = fit(data, rconfig, config.seed, backup_dir=state.backup_dir("retrieval"),
                        label=state.fit_label("two-tower"))
    state.timings["retrieval_fit"] = time.perf_counter() - started
    gc.collect()  # the fit's datasets and traces, in reference cycles
    # A speed, not a figure of the model: beside the timings, so metrics.json is reproducible.
    state.info["retrieval_pairs_per_s"] = float(np.median(fitted["pairs_per_s"]))
    history = fitted["history"]
    state.histories["retrieval"] = history
    state.metrics.update({
        "retrieval/epochs": float(len(history["loss"])),
        "retrieval/train_pairs": float(n_examples(data.train)),
    })
    if "val_loss" in history:
        state.metrics["retrieval/best_val_loss"] = float(min(history["val_loss"]))

    k = rconfig.top_k
    # The candidate set may take more two-tower items than the top k that candidates.parquet holds.
    depth = max(k, config.candidates.quotas.get("two_tower", 0))
    vlists, vtruth = validation_lists(model, data, depth)
    if vtruth.users:
        state.metrics.update(score_lists(vlists[vlists["rank"] <= k], vtruth, "retrieval/validation",
                                         ev.ks, n_resamples=0))
    spill = state.examples_dir("retrieval") is not None
    if spill:  # read back by the ranking stage, its validation day's users only
        vlists = shards.FrameOnDisk(state.write_list(vlists, ".examples/validation_lists.parquet"))

    index, deep = test_lists(model, data, state.truth.users, depth)
    if spill:  # built again only by the exports
        index.spill(state.examples_dir("retrieval") / "catalogue_vectors.npy")
    candidates = deep[deep["rank"] <= k].reset_index(drop=True)
    state.write_list(candidates, "candidates.parquet")
    state.metrics.update(score_lists(candidates, state.truth, "retrieval", ev.ks,
                                     ev.bootstrap_resamples, ev.bootstrap_seed))
    del candidates  # on disk; the deep lists are the two-tower source of the set
    for label, recall in data.index_recall.items():
        state.metrics[f"retrieval/index_recall_of_exact/{label}"] = recall
    return RetrievalOutput(model, data, vlists, deep, index)
