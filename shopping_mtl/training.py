"""What a Keras fit needs to be resumable and reproducible, shared by retrieval and ranking.

A run killed mid-training and started again with the same run folder continues from the last
finished epoch (Keras `BackupAndRestore`) and ends with the figures the uninterrupted run would
have had. Keras's backup keeps the weights, the optimiser and the epoch counter; the rest of
what decides the outcome is kept here:
- the data order: batches are drawn in an order keyed by (seed, epoch) (`EpochClock`), not by
  how many times this process has iterated the dataset;
- dropout masks: keyed by (seed, step) with the step a layer weight (`StatelessDropout`);
- early stopping's best value, patience and best weights, and the per-epoch history
  (`TrainingState`, written beside the backup at every epoch's end).

A fit whose loss diverges stops with `TrainingDiverged`, naming the settings to look at
(`DivergenceCheck`), so no diverged model reaches the stages after it or an export.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from shopping_mtl import distribute
from shopping_mtl.errors import TrainingDiverged

log = logging.getLogger(__name__)

# A loss this many times its first epoch's is a fit running away, not noise: the epoch means
# of a sound fit fall from the first epoch on (the first holds the untrained steps).
DIVERGENCE_FACTOR = 100.0


def enable_determinism(seed: int) -> None:
    """Same seed, same figures: seeded Python/numpy/TF generators and deterministic TF ops."""
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _outside_strategy(function, *args):
    """`function(*args)` where no distribution strategy is in scope. A callback of `fit` runs in
    the model's strategy scope, where new variables (a retrieval index) would become mirrored
    ones the workers must create together; the scope belongs to a thread, so a thread of its own
    is outside it."""
    if not tf.distribute.has_strategy():
        return function(*args)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


class EpochClock(tf.keras.callbacks.Callback):
    """The epoch `fit` is in, as a variable the input pipeline reads when an epoch's first batch
    is drawn, so the order of epoch k is the same whether or not the run was resumed at k."""

    def __init__(self):
        super().__init__()
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_clock")
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.variable.assign(epoch)


class StatelessDropout(tf.keras.layers.Layer):
    """Dropout whose masks depend on (seed, training step) only; the step counter is a layer
    weight, so a model restored from a checkpoint draws the masks the uninterrupted one drew."""

    def __init__(self, rate: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.seed = float(rate), int(seed)

    def build(self, input_shape):
        self.step = self.add_weight(name="step", shape=(), dtype=tf.int64, initializer="zeros",
                                    trainable=False,
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        super().build(input_shape)

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.step.read_value()])
        self.step.assign_add(1)
        keep = tf.random.stateless_uniform(tf.shape(inputs), seed) >= self.rate
        return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class EarlyStopping(tf.keras.callbacks.Callback):
    """Stop when the watched value stops improving and restore the best epoch's weights.

    The value is a logged metric (`monitor`) or `objective(model)` computed after each epoch
    (e.g. validation recall, which Keras does not log); higher is better unless `mode="min"`.
    Its state (`state()` / `load_state()`) survives a resume through `TrainingState`.
    """

    def __init__(self, patience: int, monitor: str, mode: str = "max",
                 objective: Callable[[tf.keras.Model], float] | None = None):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience, self.monitor, self.mode, self.objective = patience, monitor, mode, objective
        self.best, self.best_epoch, self.wait, self.best_weights = None, None, 0, None

    def _better(self, value: float) -> bool:
        if self.best is None:
            return not np.isnan(value)
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.objective is not None:
            logs[self.monitor] = float(_outside_strategy(self.objective, self.model))
        value = float(logs.get(self.monitor, np.nan))
        if self._better(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state(self, state: dict, best_weights: list[np.ndarray] | None) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = best_weights


class EpochLog(tf.keras.callbacks.Callback):
    """One log line per epoch: the fit's label, "epoch N of M", the figures `shown` names (logs
    key -> words) and, with a stopper, whether the epoch is the best so far. It runs after the
    stopper, so an objective the stopper computes is in the logs."""

    def __init__(self, label: str, epochs: int, shown: Mapping[str, str],
                 stopper: "EarlyStopping | None" = None):
        super().__init__()
        self.label, self.epochs, self.shown, self.stopper = label, epochs, dict(shown), stopper

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        figures = ", ".join(f"{words} {logs[key]:.4f}" for key, words in self.shown.items() if key in logs)
        best = self.stopper is not None and self.stopper.best_epoch == epoch
        log.info("%s epoch %d of %d: %s%s", self.label, epoch + 1, self.epochs, figures,
                 " (best so far)" if best else "")


class TrainingState(tf.keras.callbacks.Callback):
    """Writes, at every epoch's end, the history so far and the early-stopping state (with the
    best weights when they change) to `folder`; on resume, the first epoch's begin reads the
    state of the epoch before it. Files are keyed by epoch and written before Keras's backup of
    the same epoch, so a kill between the two leaves the state the backup needs."""

    def __init__(self, folder: Path, stopper: EarlyStopping | None):
        super().__init__()
        self.folder, self.stopper = Path(folder), stopper
        self.history: dict[str, list[float]] = {}
        self.resumed_at: int | None = None
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            return
        self._started = True
        if epoch == 0:
            return
        state_file = self.folder / f"state-{epoch - 1}.json"
        if not state_file.is_file():
            raise RuntimeError(f"resuming at epoch {epoch + 1} but {state_file} is missing; delete "
                               f"{self.folder.parent} to train from the start")
        state = json.loads(state_file.read_text())
        self.history = state["history"]
        if self.stopper is not None:
            weights = None
            if state["stopper"]["best_epoch"] is not None:
                with np.load(self.folder / f"best-{state['stopper']['best_epoch']}.npz") as saved:
                    weights = [saved[f"w{i}"] for i in range(len(saved.files))]
            self.stopper.load_state(state["stopper"], weights)
        self.resumed_at = epoch
        log.warning("resumed from the backup in %s at epoch %d", self.folder.parent, epoch + 1)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.folder.mkdir(parents=True, exist_ok=True)
        stopper_state = None
        if self.stopper is not None:
            stopper_state = self.stopper.state()
            best = self.folder / f"best-{stopper_state['best_epoch']}.npz"
            if stopper_state["best_epoch"] == epoch:
                tmp = best.with_name(f".{best.name}.tmp.npz")
                np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.stopper.best_weights)})
                tmp.replace(best)
        tmp = self.folder / f".state-{epoch}.json.tmp"
        tmp.write_text(json.dumps({"epoch": epoch, "history": self.history, "stopper": stopper_state}))
        tmp.replace(self.folder / f"state-{epoch}.json")
        self._prune(epoch)

    def _prune(self, epoch: int) -> None:
        """Keep the states of this epoch and the one before (a resume reads one of them) and
        the best weights they name."""
        keep_states = {f"state-{e}.json" for e in (epoch, epoch - 1)}
        keep_best = set()
        for name in keep_states:
            path = self.folder / name
            if path.is_file():
                stopper = json.loads(path.read_text())["stopper"]
                if stopper and stopper["best_epoch"] is not None:
                    keep_best.add(f"best-{stopper['best_epoch']}.npz")
        for path in self.folder.glob("state-*.json"):
            if path.name not in keep_states:
                path.unlink()
        for path in self.folder.glob("best-*.npz"):
            if path.name not in keep_best:
                path.unlink()


def check_divergence(losses: Sequence[float], settings_hint: str = "", first_epoch: int = 1,
                     epoch: int | None = None) -> None:
    """Raise `TrainingDiverged` when the last of `losses` (per epoch, in order) is not finite, or
    is over `DIVERGENCE_FACTOR` times the first's. The growth test needs a positive first loss: a
    loss that may go below zero (learned uncertainty weights) has no scale to compare with.

    Args:
        settings_hint: the settings the message tells the user to look at (e.g.
            "ranking.learning_rate, ranking.batch_size").
        first_epoch, epoch: the 1-based epochs of the first and the last loss, for the message
            (`epoch` default: one loss per epoch from `first_epoch` on).
    """
    if not losses:
        return
    first, last = float(losses[0]), float(losses[-1])
    epoch = first_epoch + len(losses) - 1 if epoch is None else epoch
    hint = settings_hint or "the learning rate"
    if not math.isfinite(last):
        raise TrainingDiverged(f"training diverged: epoch {epoch}'s loss is {last}; the run stops before "
                               f"anything is exported. Look at {hint} (a smaller learning rate usually helps)")
    if first > 0 and last > DIVERGENCE_FACTOR * first:
        raise TrainingDiverged(f"training diverged: epoch {epoch}'s loss {last:.4g} is over "
                               f"{DIVERGENCE_FACTOR:g} times epoch {first_epoch}'s ({first:.4g}); the run stops "
                               f"before anything is exported. Look at {hint} (a smaller learning rate "
                               "usually helps)")


class DivergenceCheck(tf.keras.callbacks.Callback):
    """Stops a fit with `TrainingDiverged` at the end of the first epoch whose loss diverges
    (`check_divergence`). Reads `logs["loss"]` as the callbacks before it leave it (the ranker's
    replaces Keras's last-batch loss with the epoch's mean); a fit resumed from a backup
    compares with the first epoch of its `state`'s history."""

    def __init__(self, settings_hint: str = "", state: TrainingState | None = None):
        super().__init__()
        self.settings_hint, self.state = settings_hint, state
        self.losses: list[float] = []
        self.first_epoch = 1  # 1-based, of `losses[0]`

    def on_epoch_end(self, epoch, logs=None):
        if not logs or "loss" not in logs:
            return
        if self.state is not None:
            # Its history holds every epoch before this one, resumed ones included (it records
            # this epoch after this callback has passed it).
            earlier = list(self.state.history.get("loss", []))
            first_epoch = epoch + 1 - len(earlier)
        else:
            earlier = self.losses
            first_epoch = self.first_epoch if earlier else epoch + 1
        losses = [*earlier, float(logs["loss"])]
        check_divergence(losses, self.settings_hint, first_epoch=first_epoch, epoch=epoch + 1)
        if self.state is None:
            self.losses, self.first_epoch = losses, first_epoch


def fit(model: tf.keras.Model, train_data: tf.data.Dataset, *, epochs: int,
        validation_data: tf.data.Dataset | None = None, callbacks: list | None = None,
        stopper: EarlyStopping | None = None, clock: EpochClock | None = None,
        backup_dir: Path | None = None, initial_epoch: int = 0,
        steps_per_epoch: int | None = None, settings_hint: str = "", label: str = "fit",
        shown: Mapping[str, str] | None = None) -> dict[str, list[float]]:
    """`model.fit` made resumable when `backup_dir` is given; returns the whole run's per-epoch
    history (the epochs before a resume included). The backup is removed once fit ends.

    Each epoch logs one line (`EpochLog`): `label` (which model, fold or trial), "epoch N of
    M" and the figures `shown` names (logs key -> words; by default the loss).

    A loss that turns non-finite or grows past `DIVERGENCE_FACTOR` times the first epoch's
    raises `TrainingDiverged` naming `settings_hint` (the settings to look at, e.g.
    "ranking.learning_rate, ranking.batch_size"), after the epoch's `callbacks` and before
    early stopping keeps its weights; the backup is then removed, so a rerun with other
    settings starts afresh instead of resuming a fit that ran away.
    """
    state = None
    if backup_dir is not None:
        state = TrainingState(Path(backup_dir) / "state", stopper)
    callbacks = [*([clock] if clock is not None else []), *(callbacks or []),
                 DivergenceCheck(settings_hint, state), *([stopper] if stopper is not None else []),
                 EpochLog(label, epochs, shown or {"loss": "loss"}, stopper)]
    if state is not None:
        # Last: Keras's backup of an epoch is saved after the state of the same epoch is on disk
        # (callbacks run in list order), and restores on train begin, before any epoch begins.
        callbacks += [state, tf.keras.callbacks.BackupAndRestore(str(Path(backup_dir) / "keras"))]
    if distribute.cluster().multi_worker:
        # Keras sums the replicas' logged values by default; each replica's metrics here cover
        # the whole validation set (`distribute.evaluation`), so any one of them is the figure.
        model.distribute_reduction_method = "first"
        validation_data = distribute.evaluation(validation_data)
    try:
        fitted = model.fit(train_data, validation_data=validation_data, epochs=epochs,
                           initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                           callbacks=callbacks, verbose=0)
    except TrainingDiverged:
        if backup_dir is not None:
            shutil.rmtree(backup_dir, ignore_errors=True)
        raise
    if state is None:
        return {k: [float(v) for v in values] for k, values in fitted.history.items()}
    history = state.history
    shutil.rmtree(backup_dir, ignore_errors=True)
    return history
