"""Arrays of raw model inputs -> tensors and tf.data batches, shared by retrieval and ranking."""

from __future__ import annotations

import weakref
from typing import Mapping

import numpy as np
import tensorflow as tf

from shopping_mtl.scale.shards import ExampleShards, arrow_columns
from shopping_mtl.training import EpochClock

_DTYPES = {"string": tf.string, "float32": tf.float32, "float64": tf.float64, "int64": tf.int64,
           "int32": tf.int32, "bool": tf.bool}


def compiled(call):
    """`call` (a model or layer and its arguments, as a function of one input dict) traced once
    into a graph, for inference over many batches.

    Called eagerly, a Keras model with a large id vocabulary costs about a second per batch
    whatever the batch size (1.86M item ids: 1.0 s eager against 4 ms traced for 8,192 items),
    which made embedding a 2.5M-item catalogue take six minutes. `reduce_retracing` lets the
    last, shorter batch reuse the trace."""
    return tf.function(call, reduce_retracing=True)


_TRACED: "weakref.WeakKeyDictionary[tf.keras.Model, object]" = weakref.WeakKeyDictionary()


def inference(model: tf.keras.Model):
    """`model(batch, training=False)` traced once per model (`compiled`) and the trace kept
    for the model's later calls: callers that score a chunk at a time (test candidates, the
    catalogue a slice at a time, the holdout every epoch) would otherwise trace it again each
    time, seconds and a kept graph each. The trace holds the model by a weak reference."""
    call = _TRACED.get(model)
    if call is None:
        ref = weakref.ref(model)
        call = _TRACED[model] = compiled(lambda batch: ref()(batch, training=False))
    return call


def as_tensor(values: np.ndarray) -> tf.Tensor:
    """A numpy column as a tensor; object arrays of Python strings become tf.string."""
    return tf.constant(values.astype(str) if values.dtype == object else values)


def infer(model: tf.keras.Model, arrays: Mapping[str, np.ndarray], batch_size: int = 8192):
    """`model(batch, training=False)` (`inference`) over the rows of `arrays` (the model's
    inputs taken, others ignored), in order, `batch_size` rows at a time: yields each batch's
    outputs.

    Each batch becomes tensors from its own numpy slices, so no tensor ever holds all the rows:
    TensorFlow's CPU allocator keeps the largest amount it ever held, and whole inputs as
    tensors (test candidates at 10^7 events: ~0.4 GB per chunk) left ~2.7 GB resident."""
    call = inference(model)
    names = [k for k in arrays if k in model.input_names]
    n = len(next(iter(arrays.values()))) if arrays else 0
    for start in range(0, n, batch_size):
        yield call({k: as_tensor(arrays[k][start:start + batch_size]) for k in names})


def _over_epochs(one_epoch, steps: int, clock: EpochClock | None, epochs: int | None) -> tf.data.Dataset:
    """`one_epoch(epoch number) -> dataset` made into the input `fit` reads:
    - `epochs`: all epochs in a row, for an iterator that lives across epochs (a distributed
      input's does);
    - `clock`: one epoch, built when its first batch is drawn, for the epoch the clock shows, so
      a resumed run's epoch k sees the batches of the uninterrupted run's epoch k;
    - neither: epoch 0's order."""
    # A known length: Keras then knows an epoch's steps instead of finding them by running out.
    if epochs is not None:
        return tf.data.Dataset.range(epochs).flat_map(one_epoch).apply(
            tf.data.experimental.assert_cardinality(steps * epochs))
    if clock is None:
        return one_epoch(tf.constant(0, tf.int64)).apply(tf.data.experimental.assert_cardinality(steps))
    return tf.data.Dataset.from_tensors(0).flat_map(lambda _: one_epoch(clock.variable.read_value())).apply(
        tf.data.experimental.assert_cardinality(steps))


def make_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, shuffle: bool, seed: int,
                 drop_remainder: bool = False, id_dropout: float = 0.0, clock: EpochClock | None = None,
                 shard: tuple[int, int] | None = None, epochs: int | None = None) -> tf.data.Dataset:
    """Batches of raw inputs; with `id_dropout`, a random share of `item_id`s is hidden ("").

    Shuffling permutes row indices by (seed, epoch number) and gathers whole batches, which is
    far cheaper than shuffling dicts of string tensors element by element; `clock` and `epochs`
    say where the epoch number comes from (`_over_epochs`). `shard=(index, count)`: one
    worker's share of each epoch's rows (`distribute.dataset`); every worker gets the same
    number of batches (a worker's extra row, if any, waits for another epoch's order).
    """
    if isinstance(arrays, ExampleShards):
        return _stream(arrays, batch_size, seed, clock, shard, epochs, shuffle=shuffle,
                       drop_remainder=drop_remainder, id_dropout=id_dropout)
    tensors = {k: as_tensor(v) for k, v in arrays.items()}
    n = len(next(iter(arrays.values())))
    index, count = shard if shard is not None else (0, 1)
    per_worker = n // count
    steps = per_worker // batch_size if drop_remainder else -(-per_worker // batch_size)

    def one_epoch(epoch):
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
            order = tf.random.experimental.stateless_shuffle(order, seed=key)
        order = order[index::count][:per_worker]
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)

    rows = _over_epochs(one_epoch, steps, clock, epochs if shuffle else None).enumerate()

    def gather(number, index):
        return _hide_ids({k: tf.gather(t, index) for k, t in tensors.items()}, number, seed, id_dropout)

    return rows.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE)


def _hide_ids(batch: dict, number, seed: int, id_dropout: float) -> dict:
    """`item_id` hidden ("") in a random `id_dropout` share of the batch's rows. Stateless: the
    mask depends on (seed, batch number) only, so batches can be prepared in parallel and a
    rerun hides the same ids."""
    if id_dropout > 0:
        draw = tf.random.stateless_uniform(tf.shape(batch["item_id"]), seed=[seed, number])
        batch["item_id"] = tf.where(draw < id_dropout, tf.constant(""), batch["item_id"])
    return batch


def _stream(shards: ExampleShards, batch_size: int, seed: int, clock: EpochClock | None,
            shard: tuple[int, int] | None, epochs: int | None, shuffle: bool = True,
            drop_remainder: bool = False, id_dropout: float = 0.0, whole_lists: bool = False) -> tf.data.Dataset:
    """`make_dataset` / `make_list_dataset` over examples on disk: each epoch's batches come from
    `ExampleShards.epoch_batches` (a few files in memory at a time, order fixed by (seed,
    epoch)) through a generator; with `shard=(index, count)` a worker takes every count-th
    batch from the index-th, all workers the same number. `batch_size` counts lists when
    `whole_lists`."""
    index, count = shard if shard is not None else (0, 1)
    units = shards.lists if whole_lists else shards.rows
    steps = (units // batch_size if drop_remainder else -(-units // batch_size)) // count
    signature = {}
    for name, info in shards.columns.items():
        if info["dtype"] == "string":  # bytes run together and offsets (`shards.arrow_columns`)
            signature[name] = tf.TensorSpec([], tf.string)
            signature[f"{name}#offsets"] = tf.TensorSpec([None], tf.int64)
        else:
            signature[name] = tf.TensorSpec([None] if info["width"] is None else [None, info["width"]],
                                            _DTYPES[info["dtype"]])

    def batches(epoch):
        for number, batch in enumerate(shards.epoch_batches(int(epoch), seed, batch_size, shuffle, drop_remainder,
                                                            whole_lists=whole_lists, arrow=True)):
            if number >= steps * count:
                return
            if number % count == index:
                yield arrow_columns(batch, shards.columns)

    def one_epoch(epoch):
        return tf.data.Dataset.from_generator(batches, args=(epoch,), output_signature=signature)

    def decode(number, batch):
        out = {}
        for name, info in shards.columns.items():
            out[name] = batch[name] if info["dtype"] != "string" else \
                strings_from_arrow(batch[name], batch[f"{name}#offsets"], info["width"])
        return _hide_ids(out, number, seed, id_dropout)

    rows = _over_epochs(one_epoch, steps, clock, epochs if shuffle else None).enumerate()
    return rows.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def strings_from_arrow(data: tf.Tensor, offsets: tf.Tensor, width: int | None) -> tf.Tensor:
    """The tf.string column of `shards.arrow_columns`'s (bytes, offsets): value i is
    data[offsets[i]:offsets[i + 1]]; with `width`, shaped (rows, width)."""
    values = tf.strings.substr(data, offsets[:-1], offsets[1:] - offsets[:-1])
    return values if width is None else tf.reshape(values, [-1, width])


def make_list_dataset(arrays: Mapping[str, np.ndarray], list_ids: np.ndarray | None, batch_size: int,
                      seed: int, clock: EpochClock | None = None, shard: tuple[int, int] | None = None,
                      epochs: int | None = None) -> tf.data.Dataset:
    """Batches made of whole lists (a user's candidates on one day), lists reshuffled each epoch
    by (seed, epoch number), the number coming from `clock` or `epochs` as in `make_dataset`.

    A batch holds a fixed number of whole lists, as many as make `batch_size` rows on average,
    so a within-list loss always sees every candidate of a list and every epoch has the same
    number of batches (Keras fixes an epoch's steps from the first epoch of an input of unknown
    length: a later epoch with fewer batches would end training, one with more would be cut).
    `shard=(index, count)`: one worker's share of each epoch's batches, the same number each.
    """
    if isinstance(arrays, ExampleShards):  # the lists: the shards' own list column
        per_batch = max(1, int(round(batch_size * arrays.lists / max(arrays.rows, 1))))
        return _stream(arrays, per_batch, seed, clock, shard, epochs, whole_lists=True)
    list_ids = arrays["list_id"] if list_ids is None else list_ids
    tensors = {k: as_tensor(v) for k, v in arrays.items()}
    order = np.argsort(list_ids, kind="stable")
    _, starts, sizes = np.unique(list_ids[order], return_index=True, return_counts=True)
    per_batch = max(1, int(round(batch_size / max(float(np.mean(sizes)), 1.0)))) if len(sizes) else 1
    index, count = shard if shard is not None else (0, 1)
    steps = -(-len(starts) // per_batch) // count

    def batches(epoch):
        lists = np.random.default_rng([seed, int(epoch)]).permutation(len(starts))
        for number in range(index, steps * count, count):
            chosen = lists[number * per_batch:(number + 1) * per_batch]
            yield np.concatenate([order[starts[i]:starts[i] + sizes[i]] for i in chosen])

    def one_epoch(epoch):
        return tf.data.Dataset.from_generator(batches, args=(epoch,),
                                              output_signature=tf.TensorSpec([None], tf.int64))

    rows = _over_epochs(one_epoch, steps, clock, epochs)
    return rows.map(lambda rows: {k: tf.gather(t, rows) for k, t in tensors.items()},
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
