#!/usr/bin/env python
"""The scale bench's child process: one synthetic log through the configured stages, each run
with `pipeline.run_stage` and metered at its boundaries only.

  python bench/scale_worker.py JOB.json    (written and run by bench/scale_bench.py)

JOB holds the dataset spec, the run folder, the config overrides (`overrides`, then each of
`set` as `train.py --set` reads it), whether to add the export stage, and the paths of the
progress file (one JSON record a line, read by the parent when this process fails or is ended)
and of the result file. Per stage it records:

- wall: `state.timings[stage]`, the pipeline's own clock of the stage;
- peak RSS: the largest of the resident sizes a thread reads from /proc/self/statm every 50 ms
  and of the readings at the stage's start and end (a peak shorter than 50 ms can be missed:
  the process's exact peak is the kernel's, `VmHWM`, also recorded, and `ru_maxrss` in the
  parent);
- TensorFlow's CPU allocator: its peak during the stage (`get_memory_info("CPU:0")`, reset by
  `reset_memory_stats` at every boundary), where TensorFlow reports it.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project imports from here on

import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from shopping_mtl import pipeline, training
from shopping_mtl.config import load_config, merge, parse_override

POLL_S = 0.05
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# metrics.json keys that say how large a run was, reported in the sizes table.
FIGURE_KEYS = ("data/events_used", "data/distinct_users", "data/distinct_items", "split/train_events",
               "split/validation_events", "split/test_events", "eval/test_users", "retrieval/train_pairs",
               "ranker/training_rows")


def rss_kb() -> int:
    """This process's resident set now (kB)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_KB


def vmhwm_kb() -> int:
    """The kernel's high-water mark of this process's resident set (kB): its exact peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The peak RSS between two `take()` calls: a daemon thread reads it every 50 ms."""

    def __init__(self):
        self.lock = threading.Lock()
        self.peak = rss_kb()
        threading.Thread(target=self._sample, daemon=True, name="rss-sampler").start()

    def _sample(self) -> None:
        while True:
            time.sleep(POLL_S)
            value = rss_kb()
            with self.lock:
                self.peak = max(self.peak, value)

    def take(self) -> tuple[int, int]:
        """(the peak since the last take, the RSS now); the next interval starts now."""
        now = rss_kb()
        with self.lock:
            peak, self.peak = max(self.peak, now), now
        return peak, now


def tf_allocator() -> dict | None:
    """TensorFlow's CPU allocator, in use now and at most since the last call (kB), its peak
    then reset; None where this TensorFlow does not report it."""
    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
        tf.config.experimental.reset_memory_stats("CPU:0")
    except (ValueError, RuntimeError, AttributeError):
        return None
    return {"current_kb": info["current"] // 1024, "peak_kb": info["peak"] // 1024}


def bench_config(job: dict):
    """The run's config: the bench's overrides, then each `--set`, then the export stage added
    when asked for (config, not a stub: without it no SavedModel is written)."""
    overrides = merge(job["overrides"], {"run_dir": job["run_dir"], "data": {"dataset": job["spec"]}})
    for text in job["set"]:
        overrides = merge(overrides, parse_override(text))
    config = load_config(overrides=overrides)
    if job["export"] and "export" not in config.stages:
        config = load_config(overrides=merge(overrides, {"stages": [*config.stages, "export"]}))
    return config


def figures_of(state) -> dict:
    """What the run says of its size so far: events, users, items, pairs, catalogue, rows."""
    out = {key.split("/", 1)[1]: state.metrics[key] for key in FIGURE_KEYS if key in state.metrics}
    if state.retrieval is not None:
        out["catalogue"] = float(len(state.retrieval.data.catalogue))
    if state.candidates is not None:
        out["candidate_rows"] = float(len(state.candidates.candidate_set))
    return out


def run_stages(state, sampler: RssSampler, emit) -> dict:
    """Every configured stage through `pipeline.run_stage`, metered at its boundaries."""
    stages = {}
    _, rss = sampler.take()
    tf_allocator()
    for name in pipeline.stages_to_run(state.config):
        emit(event="start", stage=name, rss_kb=rss)
        try:
            pipeline.run_stage(name, state)
        except BaseException as err:
            emit(event="error", stage=name, error=f"{type(err).__name__}: {err}"[:500])
            raise
        peak, end = sampler.take()
        allocator = tf_allocator()
        stages[name] = {"wall_s": state.timings[name], "peak_kb": peak, "rss_start_kb": rss, "rss_end_kb": end,
                        "tf_peak_kb": allocator and allocator["peak_kb"],
                        "tf_end_kb": allocator and allocator["current_kb"]}
        emit(event="end", stage=name, **stages[name])
        emit(event="figures", figures=figures_of(state))
        rss = end
    return stages


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=False)  # the parent asks for stacks
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("tensorflow").addFilter(lambda record: "non-serializable objects" not in record.getMessage())
    progress = open(job["progress"], "a", buffering=1)

    def emit(**record) -> None:
        progress.write(json.dumps({"t": time.time(), **record}) + "\n")

    config = bench_config(job)
    sampler = RssSampler()
    state = pipeline.prepare_state(config)
    if config.deterministic:  # as pipeline.run does before its stages
        training.enable_determinism(config.seed)
    import_s = time.perf_counter() - STARTED
    _, baseline_kb = sampler.take()
    emit(event="ready", import_s=import_s, baseline_kb=baseline_kb, tf=tf.__version__,
         stages=pipeline.stages_to_run(config), tf_allocator=tf_allocator() is not None)
    started = time.perf_counter()
    stages = run_stages(state, sampler, emit)
    run_s = time.perf_counter() - started
    shutil.rmtree(state.run_dir / ".examples", ignore_errors=True)  # as pipeline.run does: disk, not memory
    result = {"import_s": import_s, "run_s": run_s, "baseline_kb": baseline_kb, "stages": stages,
              "figures": figures_of(state), "vmhwm_kb": vmhwm_kb(), "tf": tf.__version__,
              "exports": state.info.get("exports", {}), "config": config.to_dict()}
    Path(job["result"]).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python bench/scale_worker.py JOB.json (written by bench/scale_bench.py)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
