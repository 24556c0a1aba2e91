"""Training on more than one machine: TensorFlow's MultiWorkerMirroredStrategy from `TF_CONFIG`.

Every worker runs the same `train.py` command with its own `TF_CONFIG`, e.g. on two machines
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}'
(index 1 on the second). Each worker reads the data and runs every stage; the model fits are
synchronous data-parallel (each step's gradients are all-reduced, the variables stay identical
on every worker). Worker 0 is the chief: it writes the run folder, tracks the run in MLflow and
publishes the exports; the others write into `<run folder>/workers/<index>/`. Without
`TF_CONFIG`, or with a single worker, training runs in this process as usual.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import tensorflow as tf

from shopping_mtl.errors import ConfigError

_STRATEGY = None


@dataclasses.dataclass(frozen=True)
class Cluster:
    workers: int = 1
    index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1


def cluster() -> Cluster:
    """This process's place in the cluster `TF_CONFIG` describes (one worker without it)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return Cluster()
    try:
        config = json.loads(raw)
        workers = config["cluster"].get("worker", []) + config["cluster"].get("chief", [])
        task = config["task"]
        index = int(task["index"]) + (1 if task["type"] == "worker" and "chief" in config["cluster"] else 0)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"TF_CONFIG is not a cluster description ({err}): {raw!r}; expected "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                          '"index": N}}') from None
    if task["type"] not in ("worker", "chief"):
        raise ConfigError(f"TF_CONFIG task type {task['type']!r}: train.py runs as a worker or chief")
    return Cluster(workers=max(len(workers), 1), index=index)


def strategy():
    """The process's strategy, created once: MultiWorkerMirroredStrategy when `TF_CONFIG` names
    more than one worker (create it before other TensorFlow work, as TensorFlow requires),
    else the default strategy."""
    global _STRATEGY
    if _STRATEGY is None:
        if cluster().multi_worker:
            _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            _STRATEGY = tf.distribute.get_strategy()
    return _STRATEGY


def dataset(build: Callable[..., tf.data.Dataset], batch_size: int, epochs: int):
    """A training input for `fit` and its steps per epoch (None: `fit` counts them).

    One worker: `build(shard=None, batch_size=batch_size, epochs=None)`, one epoch per read.
    Several: each worker's input pipeline builds its shard `(index, count)` of all `epochs`
    epochs with `batch_size / workers` rows per batch (the batch size stays the global one),
    through `distribute_datasets_from_function`; a distributed input is read by one iterator
    across epochs, so `fit` needs the steps.
    """
    if not cluster().multi_worker:
        return build(shard=None, batch_size=batch_size, epochs=None), None
    steps = []

    def per_worker(context):  # a tf.distribute.InputContext
        shard = (context.input_pipeline_id, context.num_input_pipelines)
        data = build(shard=shard, batch_size=max(1, batch_size // context.num_input_pipelines), epochs=epochs)
        steps.append(int(data.cardinality()) // epochs)
        return data

    distributed = strategy().distribute_datasets_from_function(per_worker)
    return distributed, steps[0]


def evaluation(data):
    """A validation input for `fit`: on several workers, every worker evaluates all of it (no
    sharding), so each computes the same metrics over the whole set and the early-stopping
    decisions agree; `fit` then reports the first replica's values (`training.fit`)."""
    if data is None or not cluster().multi_worker:
        return data
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return data.with_options(options)
