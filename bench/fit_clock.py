#!/usr/bin/env python
"""Times every Keras `fit` of a process, epoch by epoch, without touching the project's code.

The project records the two-tower model's throughput (`run_info.json`,
`retrieval_pairs_per_s`) but not the ranker's: `timings_s.ranking_fit` spans the whole ranking
stage (building the rows of every day, the fit, scoring the test rows and the single-task
fits). This module wraps `tf.keras.Model.fit` (the tf-keras class every model of the
project derives from) so that each fit gets one more callback, a clock: per epoch the seconds
from the epoch's start to the start of its validation pass (training only, as the project's own
retrieval figure is measured), the whole epoch's seconds and the number of training steps. A
callback that only reads the clock changes no figure of the run.

Usage, as the quality benchmark runs `train.py`:

  python bench/fit_clock.py --out RUN/fit_clock.json -- train.py --dataset ecomm --run-dir RUN

writes after every fit a JSON list with one record per fit: `model` (class name), `tasks` (the
ranker's heads, when the model has them), `epochs`: [{`epoch`, `train_s`, `epoch_s`, `steps`}].
`bench/ranker_bench.py` uses `install()` in-process.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project imports from here on

import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf


def install(out: str | Path | None = None) -> list[dict]:
    """Wrap `tf.keras.Model.fit`; return the list the records go to (also written to `out`
    after every fit when given)."""
    records: list[dict] = []
    model_class = tf.keras.Model
    original = model_class.fit
    if getattr(original, "_fit_clock", False):
        raise RuntimeError("fit_clock is already installed in this process")

    class Clock(tf.keras.callbacks.Callback):
        def __init__(self, record: dict):
            super().__init__()
            self.record = record
            self.started = None
            self.train_s = None
            self.steps = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            self.train_s = None
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_test_begin(self, logs=None):
            # Keras's validation pass of the epoch (evaluate() inside fit) starts here.
            if self.started is not None and self.train_s is None:
                self.train_s = time.perf_counter() - self.started

        def on_epoch_end(self, epoch, logs=None):
            epoch_s = time.perf_counter() - self.started
            self.record["epochs"].append({
                "epoch": int(epoch) + 1, "train_s": self.train_s if self.train_s is not None else epoch_s,
                "epoch_s": epoch_s, "steps": self.steps})

    def write() -> None:
        if out is None:
            return
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        os.replace(tmp, path)

    def fit(self, *args, **kwargs):
        tasks = getattr(self, "task_names", None)
        record = {"model": type(self).__name__, "epochs": [],
                  "tasks": list(tasks) if isinstance(tasks, (list, tuple)) else None,
                  "started": time.time()}
        callbacks = kwargs.get("callbacks")
        kwargs["callbacks"] = [Clock(record), *(callbacks or [])]
        try:
            return original(self, *args, **kwargs)
        finally:
            record["wall_s"] = time.time() - record["started"]
            records.append(record)
            write()

    fit._fit_clock = True
    model_class.fit = fit
    return records


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or argv.index("--") != 2 or argv[0] != "--out":
        print("usage: python bench/fit_clock.py --out FILE.json -- SCRIPT.py [ARGS...]", file=sys.stderr)
        return 2
    out, script, script_args = argv[1], argv[3], argv[4:]
    install(out)
    sys.argv = [script, *script_args]
    sys.path[0] = str(Path(script).resolve().parent)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
