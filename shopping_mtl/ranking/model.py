"""The multi-task ranker: embedded raw features -> shared layers -> a tower and head per task.

Architectures (the config's `ranking.architecture`):
- `shared_bottom`: one MLP shared by all tasks, then a tower per task.
- `mmoe`: several expert MLPs; each task mixes them with its own softmax gate.
- `ple`: customized gate control (one PLE level): shared experts plus one expert per task; each
  task's gate mixes the shared experts and its own.
- `esmm`: a shared bottom whose save and purchase heads predict the conditional probability
  given a click; p_save = p_click * p(save | click), p_purchase = p_click * p(purchase | click),
  so p_save <= p_click and p_purchase <= p_click on every row.
Where the spec names a session, the candidate against the user's latest session is one more input.
With `ranking.target_attention`, a DIN-style attention pools the user's last events, weighted by
how each relates to the candidate, into the features every architecture starts from.
A TFRS `Ranking` task per head owns its loss (binary cross-entropy) and AUC metric; the model's
loss is their weighted sum, with fixed or learned (uncertainty) weights.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shopping_mtl import distribute, training
from shopping_mtl.scale.batches import infer, make_dataset, make_list_dataset
from shopping_mtl.features import FeatureSet
from shopping_mtl.optimizers import LazyAdam
from shopping_mtl.ranking.config import TASKS, RankingConfig
from shopping_mtl.ranking.cross import (ACTIVITY_FEATURES, ATTENTION_LENGTH, CROSS_FEATURES, ENGAGEMENT_FEATURES,
                                        LIST_FEATURES, PROVENANCE_FEATURES, SEQUENCE_FEATURES, SESSION_FEATURES)
from shopping_mtl.ranking.examples import (ACTIVITY_INPUT, ATTENTION_INPUT, ENGAGEMENT_INPUT, PROVENANCE_COLUMNS,
                                          PROVENANCE_INPUT, RECENT_POPULARITY_INPUT, SESSION_INPUT, SOURCE_INPUT,
                                          reads_sessions, source_vocabulary)

log = logging.getLogger(__name__)
CLICK_LOGIT = "logit_click"


def _mlp(widths, dropout: float, name: str) -> tf.keras.Sequential:
    layers = []
    for i, width in enumerate(widths):
        layers.append(tf.keras.layers.Dense(width, activation="relu"))
        if dropout:
            # Masks keyed by (layer, step): a resumed fit draws what the uninterrupted one drew.
            seed = zlib.crc32(f"{name}/{i}".encode())
            layers.append(training.StatelessDropout(dropout, seed, name=f"dropout_{i}"))
    return tf.keras.Sequential(layers, name=name)


class TargetAttention(tf.keras.layers.Layer):
    """DIN's activation unit over the user's last events (Zhou et al., 2018).

    Each event comes described against the candidate (`cross.sequence_features`, whose last
    column marks a real event); a small MLP turns each description into a weight, and the
    output is the weighted sum of the descriptions plus the sum of the weights. As in DIN the
    weights are not normalised over the history, so how much of it relates to the candidate
    shows in the output, not only how it relates.
    """

    def __init__(self, units: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = tf.keras.layers.Dense(units, activation="relu")
        self.weight_of = tf.keras.layers.Dense(1)

    def call(self, events):  # (batch, length, features)
        present = events[..., -1]
        weights = self.weight_of(self.hidden(events))[..., 0] * present  # padding weighs 0
        pooled = tf.einsum("bl,blf->bf", weights, events)
        return tf.concat([pooled, tf.reduce_sum(weights, axis=-1, keepdims=True)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _ranker_inputs(features: FeatureSet, config: RankingConfig) -> tuple[dict, tf.Tensor]:
    """The scorer's named inputs (those its config and spec turn on) and their features, embedded
    and concatenated (through the DCN cross layer when `config.cross_layer`)."""
    if config.exclude_features:
        kept = dataclasses.replace(
            features.spec,
            user=tuple(f for f in features.spec.user if f.name not in config.exclude_features),
            item=tuple(f for f in features.spec.item if f.name not in config.exclude_features),
            history_features=())
        features = FeatureSet(kept, features.adapted)
    spec = features.spec
    # No context: every ranking row of a day shares one prediction time, so the hour and weekday
    # are constant in training, and a test day's weekday would reach an untrained embedding.
    groups = [g for g, present in (("user", spec.user), ("item", spec.item)) if present]
    inputs = features.inputs(*groups)
    inputs["cross"] = tf.keras.Input(shape=(len(CROSS_FEATURES),), dtype=tf.float32, name="cross")
    inputs["item_popularity"] = tf.keras.Input(shape=(), dtype=tf.float32, name="item_popularity")
    inputs["two_tower_score"] = tf.keras.Input(shape=(), dtype=tf.float32, name="two_tower_score")
    parts = [features.encoder(g, name=f"{g}_features")(inputs) for g in groups]
    parts.append(inputs["cross"])
    if config.list_features:
        inputs["list"] = tf.keras.Input(shape=(len(LIST_FEATURES),), dtype=tf.float32, name="list")
        parts.append(inputs["list"])
    if config.engagement_features:
        inputs[ENGAGEMENT_INPUT] = tf.keras.Input(shape=(len(ENGAGEMENT_FEATURES),), dtype=tf.float32,
                                                  name=ENGAGEMENT_INPUT)
        parts.append(inputs[ENGAGEMENT_INPUT])
    if reads_sessions(features):
        inputs[SESSION_INPUT] = tf.keras.Input(shape=(len(SESSION_FEATURES),), dtype=tf.float32, name=SESSION_INPUT)
        parts.append(inputs[SESSION_INPUT])
    if config.activity_features:
        inputs[ACTIVITY_INPUT] = tf.keras.Input(shape=(len(ACTIVITY_FEATURES),), dtype=tf.float32, name=ACTIVITY_INPUT)
        inputs[RECENT_POPULARITY_INPUT] = tf.keras.Input(shape=(), dtype=tf.float32, name=RECENT_POPULARITY_INPUT)
        parts.append(inputs[ACTIVITY_INPUT])
        parts.append(tf.keras.layers.Reshape((1,))(inputs[RECENT_POPULARITY_INPUT]))
    if config.source_features:
        # The source as a one-hot over `source_vocabulary()` plus "none" (index 0).
        inputs[SOURCE_INPUT] = tf.keras.Input(shape=(), dtype=tf.int32, name=SOURCE_INPUT)
        inputs[PROVENANCE_INPUT] = tf.keras.Input(shape=(len(PROVENANCE_FEATURES),), dtype=tf.float32,
                                                  name=PROVENANCE_INPUT)
        parts.append(tf.keras.layers.CategoryEncoding(len(source_vocabulary()) + 1, output_mode="one_hot",
                                                      name="source_one_hot")(inputs[SOURCE_INPUT]))
        parts.append(inputs[PROVENANCE_INPUT])
    if config.target_attention:
        inputs[ATTENTION_INPUT] = tf.keras.Input(shape=(ATTENTION_LENGTH, len(SEQUENCE_FEATURES)), dtype=tf.float32,
                                                 name=ATTENTION_INPUT)
        parts.append(TargetAttention(name="target_attention")(inputs[ATTENTION_INPUT]))
    parts.append(tf.keras.layers.Reshape((1,))(inputs["item_popularity"]))
    parts.append(tf.keras.layers.Reshape((1,))(inputs["two_tower_score"]))
    x = tf.keras.layers.Concatenate(name="ranker_features")(parts)
    if config.cross_layer:
        x = tfrs.layers.dcn.Cross(name="cross_layer")(x)
    return inputs, x


def build_scorer(features: FeatureSet, config: RankingConfig) -> tf.keras.Model:
    """A functional model: raw named inputs -> {"click", "save", "purchase"} probabilities."""
    inputs, x = _ranker_inputs(features, config)
    towers = {task: _mlp(config.tower_layers, config.dropout, f"{task}_tower") for task in TASKS}
    heads = {task: tf.keras.layers.Dense(1, name=f"{task}_logit") for task in TASKS}
    if config.architecture in ("shared_bottom", "esmm"):
        shared = _mlp(config.bottom_layers, config.dropout, "shared_bottom")(x)
        task_inputs = {task: shared for task in TASKS}
    else:
        n_shared = config.experts
        experts = [_mlp(config.expert_layers, config.dropout, f"expert_{i}")(x) for i in range(n_shared)]
        own = {}
        if config.architecture == "ple":
            own = {task: _mlp(config.expert_layers, config.dropout, f"{task}_expert")(x) for task in TASKS}
        task_inputs = {}
        for task in TASKS:
            pool = experts + ([own[task]] if task in own else [])
            stacked = tf.keras.layers.Lambda(lambda t: tf.stack(t, axis=1), name=f"{task}_experts")(pool)
            gate = tf.keras.layers.Dense(len(pool), activation="softmax", name=f"{task}_gate")(x)
            # (batch, experts, width) weighted by (batch, experts) -> (batch, width)
            task_inputs[task] = tf.keras.layers.Dot(axes=(1, 1), name=f"{task}_mixture")([gate, stacked])
    logits = {task: tf.keras.layers.Reshape((), name=f"{task}_flat")(heads[task](towers[task](task_inputs[task])))
              for task in TASKS}
    if config.architecture == "esmm":
        p_click = tf.keras.layers.Activation("sigmoid", name="click")(logits["click"])
        outputs = {"click": p_click}
        for task in ("save", "purchase"):
            given_click = tf.keras.layers.Activation("sigmoid")(logits[task])
            outputs[task] = tf.keras.layers.Multiply(name=task)([p_click, given_click])
    else:
        outputs = {task: tf.keras.layers.Activation("sigmoid", name=task)(logits[task]) for task in TASKS}
    # The click logit itself, for the within-list softmax (a logit recovered from a saturated
    # probability has no gradient).
    outputs[CLICK_LOGIT] = tf.keras.layers.Activation("linear", name=CLICK_LOGIT)(logits["click"])
    return tf.keras.Model(inputs, outputs, name=f"ranker_{config.architecture}")


class MultiTaskRanker(tfrs.models.Model):
    """The scorer plus a TFRS Ranking task per head; loss = weighted sum of the task losses."""

    def __init__(self, scorer: tf.keras.Model, config: RankingConfig, tasks=TASKS):
        super().__init__()
        self.scorer = scorer
        self.config = config
        self.task_names = tuple(tasks)
        self.tasks = {
            task: tfrs.tasks.Ranking(
                # Summed here, averaged in compute_loss: tf.distribute refuses Keras's averaging
                # reductions outside compile().
                loss=tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.SUM),
                metrics=[tf.keras.metrics.AUC(name=f"{task}_auc")],
            )
            for task in self.task_names
        }
        # The epoch's mean training loss (a TFRS train_step reports the batch's): kept in the
        # graph, so several steps run per call and no step waits for Python to read its loss.
        self.epoch_loss = tf.keras.metrics.Mean(name="epoch_loss")
        # Uncertainty weighting learns log-variances s_t: loss = sum exp(-s_t) * L_t + s_t.
        self.log_variances = self.add_weight(
            name="log_variances", shape=(len(self.task_names),), initializer="zeros",
            trainable=config.loss_weighting == "uncertainty")

    def call(self, features, training=False):
        return self.scorer({k: features[k] for k in self.scorer.input_names}, training=training)

    def train_step(self, inputs):
        logs = super().train_step(inputs)
        self.epoch_loss.update_state(logs["loss"])
        logs["epoch_loss"] = self.epoch_loss.result()
        return logs

    def compute_loss(self, features, training=False):
        predictions = self(features, training=training)
        rows = tf.maximum(tf.cast(tf.shape(predictions["click"])[0], tf.float32), 1.0)
        total = 0.0
        for i, task in enumerate(self.task_names):
            # (rows, 1): Keras averages a loss over the last axis first, so (rows,) would make
            # the summed cross-entropy the batch's mean already, and this division a second one.
            loss = self.tasks[task](labels=features[f"label_{task}"][:, None],
                                    predictions=predictions[task][:, None]) / rows
            if self.config.loss_weighting == "uncertainty":
                total += tf.exp(-self.log_variances[i]) * loss + self.log_variances[i]
            else:
                total += self.config.loss_weights.get(task, 1.0) * loss
        if self.config.listwise_weight and "list_id" in features and "click" in self.task_names:
            if self.config.order_loss == "lambda":
                relevance = sum(features[f"label_{task}"] for task in TASKS)
                order = lambda_loss(predictions[CLICK_LOGIT], relevance, features["list_id"])
            else:
                order = listwise_loss(predictions[CLICK_LOGIT], features["label_click"], features["list_id"])
            total += self.config.listwise_weight * order
        # Each replica's gradients are summed across replicas: a mean over one replica's rows
        # counts 1 / replicas of the step (1 on one machine).
        return total / tf.distribute.get_strategy().num_replicas_in_sync


def listwise_loss(logits, labels, list_ids) -> tf.Tensor:
    """Softmax cross-entropy within each list: -mean over positives of log softmax_list(logit).

    The pointwise heads learn calibrated probabilities; this term asks the click logit to order
    each user's candidates, which is what the final list needs.
    """
    _, segment = tf.unique(list_ids)
    n = tf.reduce_max(segment) + 1
    top = tf.stop_gradient(tf.math.unsorted_segment_max(logits, segment, n))
    log_norm = tf.math.log(tf.math.unsorted_segment_sum(tf.exp(logits - tf.gather(top, segment)), segment, n)) + top
    positive = tf.cast(labels > 0, logits.dtype)
    return -tf.reduce_sum(positive * (logits - tf.gather(log_norm, segment))) / tf.maximum(tf.reduce_sum(positive), 1.0)


def lambda_loss(logits, relevance, list_ids) -> tf.Tensor:
    """LambdaRank's loss within each list, averaged over the lists with a relevant row.

    For each pair (i, j) of one list with relevance_i > relevance_j: softplus(logit_j - logit_i)
    (the pairwise logistic loss), weighted by |delta NDCG|, the change in the list's NDCG if
    the two swapped places in the order the current logits give (ranks not differentiated),
    with gains 2^relevance - 1 and discounts 1 / log2(1 + rank). Pairs are formed within the
    batch (`make_list_dataset` keeps lists whole), so a batch of B rows costs B x B.
    """
    relevance = tf.cast(relevance, logits.dtype)
    same = tf.equal(list_ids[:, None], list_ids[None, :])
    scores = tf.stop_gradient(logits)
    n = tf.shape(logits)[0]
    earlier = tf.range(n)[:, None] > tf.range(n)[None, :]  # j before i: breaks ties

    def ranks(values):  # 1-based rank of each row within its list, highest value first
        ahead = (values[None, :] > values[:, None]) | ((values[None, :] == values[:, None]) & earlier)
        return 1.0 + tf.reduce_sum(tf.cast(same & ahead, logits.dtype), axis=1)

    gain = tf.pow(2.0, relevance) - 1.0
    discount = 1.0 / (tf.math.log(1.0 + ranks(scores)) / tf.math.log(2.0))
    ideal = gain / (tf.math.log(1.0 + ranks(relevance)) / tf.math.log(2.0))
    ideal_dcg = tf.reduce_sum(tf.where(same, ideal[None, :], 0.0), axis=1)  # per row: its list's
    better = same & (relevance[:, None] > relevance[None, :])
    delta = tf.abs((gain[:, None] - gain[None, :]) * (discount[:, None] - discount[None, :]))
    delta = delta / tf.maximum(ideal_dcg[:, None], 1e-9)
    pairs = tf.where(better, delta * tf.nn.softplus(logits[None, :] - logits[:, None]), 0.0)
    _, segment = tf.unique(list_ids)
    n_lists = tf.reduce_max(segment) + 1
    relevant = tf.math.unsorted_segment_max(tf.cast(relevance > 0, logits.dtype), segment, n_lists)
    return tf.reduce_sum(pairs) / tf.maximum(tf.reduce_sum(relevant), 1.0)


def predict(scorer: tf.keras.Model, arrays: Mapping[str, np.ndarray], batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Probabilities per task for every row of `arrays`, a batch at a time (`infer`)."""
    missing = [name for name in scorer.input_names if name not in arrays]
    if missing:
        hint = (" (`ranking.source_features`: the rows need the candidate set's columns "
                f"{', '.join(PROVENANCE_COLUMNS[:-1])} and score)" if SOURCE_INPUT in missing else "")
        raise ValueError(f"the ranker's inputs {missing} are not among the rows' inputs{hint}")
    out = {task: [] for task in TASKS}
    for predictions in infer(scorer, arrays, batch_size):
        for task in TASKS:
            out[task].append(predictions[task].numpy())
    return {task: np.concatenate(values) if values else np.zeros(0) for task, values in out.items()}


def train_ranker(features: FeatureSet, train: Mapping[str, np.ndarray], holdout: Mapping[str, np.ndarray],
                 config: RankingConfig, seed: int = 42, tasks=TASKS, initial_weights=None,
                 initial_epoch: int = 0, backup_dir: Path | None = None,
                 objective=None, label: str = "ranker") -> tuple[MultiTaskRanker, dict]:
    """Fit with early stopping on the holdout's mean AUC over the trained tasks, or on
    `objective(model) -> float` (higher is better) where given. `label` names the fit in its
    epoch log lines (architecture, fold or trial).

    `initial_weights` (the scorer's `get_weights()`) and `initial_epoch` continue an earlier
    fit, as a Hyperband round does: epochs run from `initial_epoch` to `config.epochs` (the
    optimiser's moments start afresh). `backup_dir`: where the fit keeps what a rerun needs to
    resume it after a kill (see `training.fit`). A loss that runs away raises
    `TrainingDiverged` naming ranking.learning_rate and ranking.batch_size.
    """
    tf.keras.utils.set_random_seed(seed)
    with distribute.strategy().scope():
        model = MultiTaskRanker(build_scorer(features, config), config, tasks)
        if initial_weights is not None:
            model.scorer.set_weights(initial_weights)
        # One step per call under several workers: the ranker's loop of steps failed there
        # (InvalidArgumentError at a CollectiveGatherV2 inside the loop; tests/test_distributed.py).
        steps_per_execution = 1 if distribute.cluster().multi_worker else config.steps_per_execution
        model.compile(optimizer=LazyAdam(config.learning_rate), steps_per_execution=steps_per_execution)
    monitor = [f"val_{task}_auc" for task in tasks]

    class MeanAuc(tf.keras.callbacks.Callback):
        # A TFRS model's train_step returns the batch's loss, so Keras's epoch "loss" is the
        # last batch's; the epoch's mean (`MultiTaskRanker.epoch_loss`) replaces it.
        def on_epoch_end(self, epoch, logs=None):
            logs["val_mean_auc"] = float(np.mean([logs.get(m, 0.0) for m in monitor]))
            logs.pop("val_epoch_loss", None)  # the evaluation's reset copy: no figure
            logs["loss"] = float(logs.pop("epoch_loss", float("nan")))

    clock = training.EpochClock()
    if config.listwise_weight and "list_id" in train:
        def build(**kw):
            return make_list_dataset(train, None, seed=seed, clock=clock, **kw)
    else:
        def build(**kw):
            return make_dataset(train, shuffle=True, seed=seed, clock=clock, **kw)
    train_data, steps = distribute.dataset(build, config.batch_size, config.epochs)
    history = training.fit(model, train_data, epochs=config.epochs, initial_epoch=initial_epoch,
                           validation_data=make_dataset(holdout, config.batch_size, False, seed),
                           callbacks=[MeanAuc()], clock=clock, backup_dir=backup_dir, steps_per_epoch=steps,
                           settings_hint="ranking.learning_rate, ranking.batch_size", label=label,
                           shown={"loss": "mean training loss", "val_mean_auc": "holdout mean AUC",
                                  "val_objective": "holdout NDCG@10"},
                           stopper=(training.EarlyStopping(config.patience, "val_mean_auc", "max") if objective is None
                                    else training.EarlyStopping(config.patience, "val_objective", "max",
                                                                objective=objective)))
    return model, {"history": history}
