"""The two-tower retrieval model (TensorFlow Recommenders) and its training.

Query tower: user features, context (hour, weekday) and the pooled history of the user's last
items (sharing the item tower's id and category embeddings) -> MLP -> unit vector. Candidate
tower: item id, category, brand, price bucket -> MLP -> unit vector, so an item never seen in
training still gets an embedding from its content (id dropout teaches the tower to do that).
The TFRS `Retrieval` task owns the loss: in-batch softmax with a temperature, logQ correction
of the sampling bias, removal of accidental hits and optional hard negatives, with the event
type as sample weight.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shopping_mtl import distribute, training
from shopping_mtl.scale.batches import make_dataset
from shopping_mtl.features import FeatureSet
from shopping_mtl.optimizers import LazyAdam
from shopping_mtl.retrieval.config import RetrievalConfig

log = logging.getLogger(__name__)


def _mlp(widths, out_dim: int, name: str) -> tf.keras.Sequential:
    layers = [tf.keras.layers.Dense(w, activation="relu") for w in widths]
    layers.append(tf.keras.layers.Dense(out_dim))
    layers.append(tf.keras.layers.UnitNormalization(axis=-1))
    return tf.keras.Sequential(layers, name=name)


def build_towers(features: FeatureSet, config: RetrievalConfig) -> tuple[tf.keras.Model, tf.keras.Model]:
    """Functional query and candidate models that take raw named inputs."""
    spec = features.spec
    item_encoder = features.encoder("item", name="item_features")
    item_inputs = features.inputs("item")
    candidate_vector = _mlp(config.tower_layers, config.embedding_dim, "candidate_mlp")(
        item_encoder(item_inputs))
    candidate_model = tf.keras.Model(item_inputs, candidate_vector, name="candidate_tower")

    query_groups = [g for g, present in (("user", spec.user), ("history", spec.history_length),
                                          ("context", spec.context)) if present]
    query_inputs = features.inputs(*query_groups)
    parts = []
    for group in query_groups:
        share = item_encoder if group == "history" else None
        parts.append(features.encoder(group, share_with=share, name=f"{group}_features")(query_inputs))
    joined = tf.keras.layers.Concatenate(name="query_features")(parts) if len(parts) > 1 else parts[0]
    query_vector = _mlp(config.tower_layers, config.embedding_dim, "query_mlp")(joined)
    query_model = tf.keras.Model(query_inputs, query_vector, name="query_tower")
    return query_model, candidate_model


def make_task(config: RetrievalConfig) -> tfrs.tasks.Retrieval:
    """The TFRS task that owns the retrieval loss: in-batch softmax, summed over the batch."""
    return tfrs.tasks.Retrieval(
        temperature=config.temperature,
        num_hard_negatives=config.hard_negatives,
        remove_accidental_hits=config.remove_accidental_hits,
    )


class TwoTowerModel(tfrs.Model):
    """Query and candidate towers trained with TFRS's in-batch softmax `Retrieval` task."""

    def __init__(self, query_model: tf.keras.Model, candidate_model: tf.keras.Model,
                 config: RetrievalConfig):
        super().__init__()
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.config = config
        self.task = make_task(config)

    def compute_loss(self, features, training=False):
        query = self.query_model({k: features[k] for k in self.query_model.input_names})
        candidate = self.candidate_model({k: features[k] for k in self.candidate_model.input_names})
        return self.task(
            query, candidate,  # (batch, dim) each; logits = query @ candidate.T / temperature
            sample_weight=features["sample_weight"],
            candidate_sampling_probability=(
                features["sampling_probability"] if self.config.logq_correction else None),
            candidate_ids=features["item_key"] if self.config.remove_accidental_hits else None,
            compute_metrics=False,
        )


class _ProgressLog(tf.keras.callbacks.Callback):
    """Measures training throughput: pairs over the time from the epoch's start to its
    validation pass (which is evaluation, not training)."""

    def __init__(self, n_pairs: int):
        super().__init__()
        self.n_pairs = n_pairs
        self.throughput: list[float] = []
        self.train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.train_seconds = None

    def on_test_begin(self, logs=None):
        if self.train_seconds is None:
            self.train_seconds = time.perf_counter() - self.started

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        train_seconds = self.train_seconds if self.train_seconds is not None else seconds
        self.throughput.append(self.n_pairs / train_seconds)


def train_two_tower(features: FeatureSet, train: Mapping[str, np.ndarray],
                    validation: Mapping[str, np.ndarray] | None, config: RetrievalConfig,
                    seed: int = 42, objective=None, backup_dir: Path | None = None,
                    label: str = "two-tower") -> tuple[TwoTowerModel, dict]:
    """Build and fit the two-tower model.

    Args:
        label: names the fit in its epoch log lines (fold or trial).
        objective: optional `model -> float` (higher is better), evaluated after each epoch for
            early stopping; without it, early stopping watches the validation loss.
        backup_dir: where the fit keeps what a rerun needs to resume it (see `training.fit`).

    Returns:
        the fitted towers (best weights restored) in a model never compiled, and a dict of
        per-epoch history and throughput.
    """
    tf.keras.utils.set_random_seed(seed)
    with distribute.strategy().scope():
        query_model, candidate_model = build_towers(features, config)
        model = TwoTowerModel(query_model, candidate_model, config)
        model.compile(optimizer=LazyAdam(config.learning_rate), steps_per_execution=config.steps_per_execution)
    n_pairs = len(train["sample_weight"])
    batch_size = min(config.batch_size, n_pairs)
    clock = training.EpochClock()
    # Whole batches only: every in-batch softmax sees batch_size negatives (batch_size / workers
    # on each of several workers).
    train_data, steps = distribute.dataset(
        lambda **kw: make_dataset(train, shuffle=True, seed=seed, drop_remainder=True,
                                  id_dropout=config.id_dropout, clock=clock, **kw),
        batch_size, config.epochs)
    progress = _ProgressLog(n_pairs)
    val_data = None
    if validation is not None and len(validation["sample_weight"]) >= 2:  # (a small column: cheap from shards)
        val_data = make_dataset(validation, batch_size, shuffle=False, seed=seed)
    stopper = None
    if objective is not None:
        stopper = training.EarlyStopping(config.patience, "val_objective", "max", objective)
    elif val_data is not None:
        stopper = training.EarlyStopping(config.patience, "val_loss", "min")
    history = training.fit(model, train_data, epochs=config.epochs, validation_data=val_data,
                           callbacks=[progress], stopper=stopper, clock=clock, backup_dir=backup_dir,
                           steps_per_epoch=steps, label=label,
                           settings_hint="retrieval.learning_rate, retrieval.temperature, retrieval.batch_size",
                           # A TFRS model's train_step returns the batch's loss: Keras logs the last batch's.
                           shown={"loss": "last-batch loss", "val_loss": "val_loss",
                                  "val_objective": f"validation {config.early_stopping}"})
    throughput = progress.throughput
    # What retrieves, indexes and exports needs the towers alone. The fitted model holds its
    # optimizer's two moments per weight (~1 GB for 1.9M item ids at 10^7 events) through
    # Keras's tracking and its traced training step, so dropping the optimizer alone keeps
    # them. The towers go on in a wrapper never compiled; the fitted one is dropped whole
    # (every reference: the callbacks hold it too), and its memory goes back to TensorFlow's
    # CPU pool, which keeps what it ever held but gives it to what comes next (the index, the
    # ranker) instead of growing.
    del model, progress, stopper, train_data, val_data, objective
    gc.collect()  # Keras models sit in reference cycles
    return TwoTowerModel(query_model, candidate_model, config), {"history": history, "pairs_per_s": throughput}
