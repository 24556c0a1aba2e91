#!/usr/bin/env python
"""Scale benchmark: SYNTHETIC logs of 10^5, 10^6 and 10^7 events through the data, retrieval
and ranking stages, with the wall time and the peak memory of every stage, the slope of cost
against size, and the issue's target beside each figure.

Target (the issue): 10^7 synthetic events through data, retrieval and ranking (one epoch each)
in at most 30 minutes with a peak memory of at most 8 GB on the 2-core machine, every cost
growing no faster than linearly with the number of events (log-log slope <= 1.0).

What runs, per size:
1. A SYNTHETIC log (`shopping_mtl.data.synthetic.generate(dir, n_events, seed=...)`), written
   once into `--data-dir` and reused by later runs (kept when `--data-dir` is given). Its time
   is reported but is not a pipeline stage.
2. The project's own pipeline (`shopping_mtl.pipeline.run`, as `train.py` runs it) in a fresh
   child process per size (`--worker JOB`), so that memory figures start clean, with these
   config overrides (each said in the report; `--set KEY=VALUE` adds or replaces some):
   `stages=[data, retrieval, ranking]` (the baselines stage only scores the null models; the
   retrieval and ranking stages still compute their baseline candidate sources),
   `retrieval.epochs=1`, `retrieval.early_stopping=val_loss` (a fixed single epoch needs no
   validation-list objective), `ranking.epochs=1`, `ranking.compare_single_task=false` (three
   more rankers), `evaluation.bootstrap_resamples=0` (no confidence intervals; the lists are
   still scored), `tracking.enabled=false`. The SavedModel exports cannot be switched off by
   config: the child replaces `shopping_mtl.export.publish` and
   `shopping_mtl.ranking.stage.export_serving_models` with no-ops unless `--export` is given.
3. Stage boundaries are hooked without editing the project: the child wraps the entries of
   `pipeline.STAGE_FUNCTIONS` (data = read + validate + split + ground truth; retrieval =
   prepare pairs + fit + validation/test lists + candidate sources + merge; ranking = ranking
   rows of every ranking day + fit + calibration + test scoring + final list) and, for the
   "where it goes" table, about forty functions of the stages (module attributes replaced by
   timing wrappers in the child only; a function that does not exist is skipped).
   Evaluation (`score_lists`) runs inside the retrieval and ranking stages; it is shown as
   its own row there.
4. Memory: the kernel's high-water mark of the child's resident set (`VmHWM` in
   /proc/self/status), reset at every stage and function boundary by writing 5 to
   /proc/self/clear_refs, so every figure is the exact peak RSS during that stage or call
   (nested calls fold their peaks into their callers'). Where clear_refs cannot be written a
   thread samples VmRSS every 50 ms instead (the report says which). The whole process's peak
   is the largest of those peaks and of the parent's 50 ms polls of the child's VmRSS
   (`ru_maxrss` cannot serve: the kernel reads it from the same high-water mark that
   clear_refs resets). "Above start" is the peak minus the RSS after the imports, before the
   data stage (Python, TensorFlow, pandas: about 0.7 GB).
5. Limits: the parent polls the child's VmRSS every 50 ms and ends it when it passes
   `--max-memory-gb` (default 16; 0: no cap) or runs longer than `--timeout` minutes (default
   45), first asking it (SIGUSR1, faulthandler) to print its Python stack into its log. Such a
   size is reported as "over limit" with the stage and call it was in, the time and the memory
   it had reached. (RLIMIT_AS is not used: TensorFlow reserves far more address space than it
   touches.) `--dump-every S` also asks for a stack every S seconds: a poor man's profiler.
6. Slopes: least-squares fit of log(cost) against log(events) over the sizes that finished,
   per stage and in total, for wall time, peak RSS and peak RSS above the start; plus the
   slope between consecutive sizes. <= 1.0 is no faster than linear.

Usage:
  python bench/scale_bench.py                                    # 1e5, 1e6, 1e7 (up to ~1.5 h)
  python bench/scale_bench.py --sizes 100000,1000000 --data-dir /tmp/scale-data --out /tmp/scale.md
  python bench/scale_bench.py --sizes 10000000 --max-memory-gb 12 --timeout 45 --dump-every 60 \\
      --data-dir /tmp/scale-data --work-dir /tmp/scale-work --out /tmp/scale-1e7.md
  python bench/scale_bench.py --sizes 1000000 --set ranking.extra_days=1 --export
  python bench/scale_bench.py --quick --out /tmp/x.md            # smoke run, 2k and 5k events
  TF_ONEDNN_USE_SYSTEM_ALLOCATOR=true python bench/scale_bench.py --sizes 10000000   # TensorFlow's
      # allocator gives memory back (README.md, "Data larger than memory"); the report says so
  python bench/scale_bench.py --from-json /tmp/a.json --from-json /tmp/b.json --out /tmp/all.md

| flag | default | meaning |
|---|---|---|
| `--sizes` | `100000,1000000,10000000` | events per synthetic log |
| `--seed` | 0 | seed of the synthetic logs |
| `--data-dir` | a temp dir | cache of the synthetic logs, `synthetic-<events>-seed<seed>/` |
| `--work-dir` | a temp dir | run folders and the child logs (kept when given) |
| `--timeout` | 45 | minutes per size before the child is ended |
| `--max-memory-gb` | 16 | RSS (GB = 2^30 bytes) at which the child is ended; 0: no cap |
| `--dump-every` | off | seconds between Python stack dumps into the child's log |
| `--set KEY=VALUE` | | more config overrides, as `train.py --set` (repeatable) |
| `--export` | off | run the exports too (timed as their own rows) |
| `--quick` | off | 2,000 and 5,000 events, 5-minute limit: the smoke run of tests/test_bench_smoke.py |
| `--out` / `--json` | none | also write the markdown / the raw figures here |
| `--from-json FILE` | | run nothing: render saved `--json` files, sizes merged (repeatable) |

Only the standard library is imported at the top: the parent never imports TensorFlow or the
project, so its own memory does not move; everything else happens in the children.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from retrieval_bench import git_commit, load_average, machine  # stdlib only: safe in the worker too

ROOT = Path(__file__).resolve().parents[1]
GB = float(1 << 30)
TARGET_EVENTS = 10_000_000
TARGET_WALL_S = 30 * 60.0
TARGET_PEAK_GB = 8.0
TARGET_SLOPE = 1.0
FULL_SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (2_000, 5_000)
STAGES = ("data", "retrieval", "ranking")
BENCH_OVERRIDES = {
    "stages": list(STAGES),
    "tracking": {"enabled": False},
    "evaluation": {"bootstrap_resamples": 0},
    "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
    "ranking": {"epochs": 1, "compare_single_task": False},
}
POLL_S = 0.05

# Functions timed inside the stages: (module, attribute path, label). A label is what the table
# shows; calls nest, so a row's figures include the rows under it. Missing ones are skipped.
PROBES = (
    # data
    ("shopping_mtl.pipeline", "read_dataset", "read_dataset (read + validate)"),
    ("shopping_mtl.data.readers", "read_events", "read_events"),
    ("shopping_mtl.data.readers", "read_side_table", "read_side_table"),
    ("shopping_mtl.data.readers", "read_raw", "read_raw (Parquet -> pandas strings)"),
    ("shopping_mtl.pipeline", "limit_events", "limit_events"),
    ("shopping_mtl.pipeline", "split_events", "split_events"),
    ("shopping_mtl.pipeline", "ground_truth", "ground_truth"),
    ("shopping_mtl.pipeline", "cold_item_shares", "cold_item_shares"),
    ("shopping_mtl.pipeline", "data_fingerprint", "data_fingerprint (sha256 of the files)"),
    # retrieval
    ("shopping_mtl.retrieval.stage", "prepare", "retrieval.prepare"),
    ("shopping_mtl.retrieval.stage", "feature_set", "feature_set (FeatureSet.adapt)"),
    ("shopping_mtl.retrieval.examples", "item_catalogue", "item_catalogue"),
    ("shopping_mtl.retrieval.examples", "training_pairs", "training_pairs"),
    ("shopping_mtl.retrieval.examples", "query_arrays", "query_arrays"),
    ("shopping_mtl.retrieval.examples", "last_items_before", "last_items_before (retrieval)"),
    ("shopping_mtl.retrieval.examples", "item_arrays", "item_arrays"),
    ("shopping_mtl.retrieval.examples", "sampling_probability", "sampling_probability"),
    ("shopping_mtl.retrieval.stage", "fit", "retrieval.fit"),
    ("shopping_mtl.retrieval.model", "make_dataset", "make_dataset (arrays -> tensors)"),
    ("shopping_mtl.retrieval.model", "TwoTowerModel.fit", "keras fit (1 epoch + val_loss)"),
    ("shopping_mtl.retrieval.stage", "validation_lists", "validation_lists"),
    ("shopping_mtl.retrieval.stage", "test_lists", "test_lists"),
    ("shopping_mtl.retrieval.stage", "top_k", "top_k (embed, index, retrieve)"),
    ("shopping_mtl.retrieval.index", "embed_items", "embed_items"),
    ("shopping_mtl.retrieval.index", "build_index", "build_index"),
    ("shopping_mtl.retrieval.index", "embed_queries", "embed_queries"),
    ("shopping_mtl.retrieval.index", "exact_top_k", "exact_top_k (matmul + top_k)"),
    ("shopping_mtl.retrieval.index", "ivf_top_k", "ivf_top_k (faiss)"),
    ("shopping_mtl.retrieval.stage", "_seen", "exclude seen"),
    ("shopping_mtl.retrieval.stage", "run_baseline", "run_baseline (candidate sources)"),
    ("shopping_mtl.retrieval.stage", "merge_sources", "merge_sources"),
    ("shopping_mtl.retrieval.stage", "score_lists", "score_lists (evaluation)"),
    # ranking
    ("shopping_mtl.ranking.stage", "prepare_ranking", "prepare_ranking (rows of every day)"),
    ("shopping_mtl.ranking.stage", "ranking_day", "ranking_day"),
    ("shopping_mtl.ranking.stage", "truth_for", "truth_for"),
    ("shopping_mtl.ranking.stage", "run_baseline", "run_baseline (candidate sources)"),
    ("shopping_mtl.ranking.stage", "merge_sources", "merge_sources"),
    ("shopping_mtl.ranking.examples", "label_rows", "label_rows"),
    ("shopping_mtl.ranking.examples", "ranking_inputs", "ranking_inputs"),
    ("shopping_mtl.ranking.examples", "user_frame", "user_frame"),
    ("shopping_mtl.ranking.examples", "item_arrays", "item_arrays"),
    ("shopping_mtl.ranking.examples", "user_histories", "user_histories (last 150 events)"),
    ("shopping_mtl.ranking.examples", "cross_features", "cross_features (TF, 50k-row batches)"),
    ("shopping_mtl.ranking.examples", "relative_to_list", "relative_to_list"),
    ("shopping_mtl.ranking.stage", "fit_ranker", "fit_ranker"),
    ("shopping_mtl.ranking.model", "train_ranker", "train_ranker"),
    ("shopping_mtl.ranking.model", "make_list_dataset", "make_list_dataset (arrays -> tensors)"),
    ("shopping_mtl.ranking.model", "make_dataset", "make_dataset (arrays -> tensors)"),
    ("shopping_mtl.ranking.model", "MultiTaskRanker.fit", "keras fit (1 epoch + holdout)"),
    ("shopping_mtl.ranking.model", "predict", "predict"),
    ("shopping_mtl.ranking.stage", "choose_value_weights", "choose_value_weights (grid of lists)"),
    ("shopping_mtl.retrieval.examples", "user_chunks", "user_chunks (rows by user)"),
    ("shopping_mtl.ranking.stage", "calibrate", "calibrate (Platt)"),
    ("shopping_mtl.ranking.stage", "head_metrics", "head_metrics (AUC, GAUC, log loss, ECE)"),
    ("shopping_mtl.ranking.stage", "write_reports", "write_reports (plots, summaries)"),
    ("shopping_mtl.ranking.stage", "_lists", "_lists (final list)"),
    ("shopping_mtl.ranking.stage", "score_lists", "score_lists (evaluation)"),
    ("shopping_mtl.ranking.stage", "export_serving_models", "export_serving_models"),
    ("shopping_mtl.export", "publish", "export.publish"),
    ("shopping_mtl.batches", "as_tensor", "as_tensor (np.astype(str) + tf.constant)"),
)
# `Split.history` is a property that concatenates train and validation at every read.
PROPERTY_PROBES = (("shopping_mtl.data.split", "Split.history", "Split.history (pd.concat per read)"),)


# --------------------------------------------------------------------------------------------
# Memory readings (child and parent)


def status_kb(field: str, pid: int | str = "self") -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


class PeakMeter:
    """The peak RSS since the last `reset()`: the kernel's VmHWM reset through clear_refs, or,
    where that cannot be written, a thread sampling VmRSS every 50 ms."""

    def __init__(self):
        self.kernel = self._clear()
        self._peak = status_kb("VmRSS") or 0
        if not self.kernel:
            thread = threading.Thread(target=self._sample, daemon=True)
            thread.start()

    @staticmethod
    def _clear() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            return True
        except OSError:
            return False

    def _sample(self) -> None:
        while True:
            self._peak = max(self._peak, status_kb("VmRSS") or 0)
            time.sleep(POLL_S)

    def peak_kb(self) -> int:
        if self.kernel:
            return status_kb("VmHWM") or 0
        return max(self._peak, status_kb("VmRSS") or 0)

    def reset(self) -> None:
        if self.kernel:
            self._clear()
        else:
            self._peak = status_kb("VmRSS") or 0


# --------------------------------------------------------------------------------------------
# The child: one pipeline run, every stage and probed call timed and metered


class Recorder:
    """Nested timings with exact peaks: at every boundary the peak since the last boundary is
    folded into every open frame, then the high-water mark is reset."""

    def __init__(self, progress_path: Path):
        self.meter = PeakMeter()
        self.stack: list[dict] = []
        self.calls: dict[str, dict] = {}  # "stage/label/label" -> aggregate
        self.order: list[str] = []
        self.progress = open(progress_path, "a", buffering=1)
        self.main = threading.main_thread()
        self.error_path: str | None = None
        self.max_kb = 0  # the process's peak RSS over every boundary so far
        self.tf_kb = 0  # TensorFlow's CPU tensors in use at the last boundary

    def _tf_memory(self) -> tuple[int, int]:
        """TensorFlow's CPU allocator: (in use, peak since the last boundary) in kB; its pool
        keeps the most it ever held, so the run's largest peak is what it costs in RSS."""
        tf = sys.modules.get("tensorflow")
        if tf is None:
            return 0, 0
        try:
            info = tf.config.experimental.get_memory_info("CPU:0")
            tf.config.experimental.reset_memory_stats("CPU:0")
        except (ValueError, RuntimeError, AttributeError):
            return 0, 0
        return info["current"] // 1024, info["peak"] // 1024

    def _fold(self) -> int:
        peak = self.meter.peak_kb()
        self.max_kb = max(self.max_kb, peak)
        self.tf_kb, tf_peak = self._tf_memory()
        for frame in self.stack:
            frame["peak_kb"] = max(frame["peak_kb"], peak)
            frame["tf_peak_kb"] = max(frame["tf_peak_kb"], tf_peak)
        self.meter.reset()
        return status_kb("VmRSS") or 0

    def emit(self, **record) -> None:
        self.progress.write(json.dumps({"t": time.time(), **record}) + "\n")

    def enter(self, label: str) -> None:
        rss = self._fold()
        path = "/".join([f["label"] for f in self.stack] + [label])
        if path not in self.calls:  # rows in the order the calls first began
            self.calls[path] = {"calls": 0, "wall_s": 0.0, "peak_kb": 0, "above_entry_kb": 0,
                                "retained_kb": 0, "depth": len(self.stack)}
            self.order.append(path)
        self.stack.append({"label": label, "path": path, "start": time.perf_counter(),
                           "rss_start_kb": rss, "peak_kb": rss, "tf_peak_kb": self.tf_kb})
        self.emit(event="enter", path=path, rss_kb=rss, tf_kb=self.tf_kb)

    def exit(self) -> dict:
        rss = self._fold()
        frame = self.stack.pop()
        wall = time.perf_counter() - frame["start"]
        agg = self.calls[frame["path"]]
        agg["calls"] += 1
        agg["wall_s"] += wall
        agg["peak_kb"] = max(agg["peak_kb"], frame["peak_kb"])
        agg["above_entry_kb"] = max(agg["above_entry_kb"], frame["peak_kb"] - frame["rss_start_kb"])
        agg["retained_kb"] += rss - frame["rss_start_kb"]
        agg["tf_peak_kb"] = max(agg.get("tf_peak_kb", 0), frame["tf_peak_kb"])
        self.emit(event="exit", path=frame["path"], wall_s=wall, peak_kb=frame["peak_kb"], rss_kb=rss,
                  tf_kb=self.tf_kb, tf_peak_kb=frame["tf_peak_kb"])
        return {"wall_s": wall, "peak_kb": frame["peak_kb"], "rss_start_kb": frame["rss_start_kb"],
                "rss_end_kb": rss}

    def wrap(self, fn, label: str):
        recorder = self

        def probed(*args, **kwargs):
            if threading.current_thread() is not recorder.main or not recorder.stack:
                return fn(*args, **kwargs)  # outside the stages, or a tf.data thread
            recorder.enter(label)
            try:
                return fn(*args, **kwargs)
            except BaseException:
                if recorder.error_path is None:
                    recorder.error_path = recorder.stack[-1]["path"]
                raise
            finally:
                recorder.exit()

        probed.__wrapped__ = fn
        probed.__name__ = getattr(fn, "__name__", label)
        probed.__doc__ = getattr(fn, "__doc__", None)
        return probed


def _resolve(module_name: str, attr_path: str):
    import importlib

    owner = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, name


def install_probes(recorder: Recorder, skip_export: bool) -> list[str]:
    """Replace the probed functions by timing wrappers; returns the ones that were missing."""
    missing = []
    if skip_export:
        import shopping_mtl.export as export_lib
        import shopping_mtl.ranking.stage as ranking_stage

        def publish_skipped(module, base, name, *args, **kwargs):
            return Path(base) / name / "skipped-by-scale-bench"

        export_lib.publish = publish_skipped
        ranking_stage.export_serving_models = lambda *args, **kwargs: None
    for module_name, attr_path, label in PROBES:
        if skip_export and attr_path in ("publish", "export_serving_models"):
            continue
        try:
            owner, name = _resolve(module_name, attr_path)
            fn = getattr(owner, name)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{attr_path}")
            continue
        setattr(owner, name, recorder.wrap(fn, label))
    for module_name, attr_path, label in PROPERTY_PROBES:
        try:
            owner, name = _resolve(module_name, attr_path)
            prop = owner.__dict__[name]
        except (ImportError, AttributeError, KeyError):
            missing.append(f"{module_name}.{attr_path}")
            continue
        setattr(owner, name, property(recorder.wrap(prop.fget, label)))
    return missing


def pipeline_worker(job_path: str) -> int:
    """Run the pipeline on one synthetic log; write the figures as JSON."""
    started = time.perf_counter()
    job = json.loads(Path(job_path).read_text())
    import faulthandler
    import logging

    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=False)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    recorder = Recorder(Path(job["progress"]))
    sys.path.insert(0, str(ROOT))
    import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
    import tensorflow as tf

    from shopping_mtl import pipeline
    from shopping_mtl.config import load_config, merge, parse_override
    # Every module the stages import lazily, now: the probes need them, and files edited while
    # the run goes on cannot change what it runs.
    import shopping_mtl.ranking.stage  # noqa: F401
    import shopping_mtl.retrieval.stage  # noqa: F401

    logging.getLogger("tensorflow").addFilter(
        lambda record: "non-serializable objects" not in record.getMessage())
    missing = install_probes(recorder, skip_export=not job["export"])
    overrides = merge(BENCH_OVERRIDES, {"run_dir": job["run_dir"], "data": {"dataset": job["spec"]}})
    for text in job["set"]:
        overrides = merge(overrides, parse_override(text))
    config = load_config(overrides=overrides)
    import_s = time.perf_counter() - started
    recorder.meter.reset()
    baseline_kb = status_kb("VmRSS") or 0
    recorder.emit(event="ready", import_s=import_s, baseline_kb=baseline_kb, tf=tf.__version__,
                  kernel_peaks=recorder.meter.kernel, missing=missing,
                  project=str(Path(shopping_mtl.__file__).parent))

    stages = {}

    def staged(name, fn):
        def run_stage(state):
            recorder.enter(name)
            try:
                fn(state)
            finally:
                stages[name] = recorder.exit()
                recorder.emit(event="metrics", metrics=figures_of(state))
        return run_stage

    for name in list(pipeline.STAGE_FUNCTIONS):
        pipeline.STAGE_FUNCTIONS[name] = staged(name, pipeline.STAGE_FUNCTIONS[name])
    run_started = time.perf_counter()
    try:
        state = pipeline.run(config)
    except BaseException as err:
        recorder.emit(event="error", path=recorder.error_path, error=f"{type(err).__name__}: {err}"[:500])
        raise
    run_s = time.perf_counter() - run_started
    import resource

    result = {
        "import_s": import_s, "run_s": run_s, "baseline_kb": baseline_kb, "stages": stages,
        "calls": {path: recorder.calls[path] for path in recorder.order},
        "figures": figures_of(state), "kernel_peaks": recorder.meter.kernel, "missing": missing,
        "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "process_peak_kb": max(recorder.max_kb, recorder.meter.peak_kb()),
        "tf": tf.__version__, "config": config.to_dict(),
    }
    Path(job["result"]).write_text(json.dumps(result, default=str))
    return 0


def figures_of(state) -> dict:
    """What the run says of its size: events, users, items, pairs, rows."""
    m = state.metrics
    out = {key.split("/", 1)[1]: m[key] for key in (
        "data/events_used", "data/distinct_users", "data/distinct_items", "split/train_events",
        "split/validation_events", "split/test_events", "eval/test_users", "retrieval/train_pairs",
        "ranker/training_rows") if key in m}
    retrieval = state.retrieval or {}
    if retrieval.get("data") is not None:
        out["catalogue"] = float(len(retrieval["data"].catalogue))
    if state.candidate_set is not None:
        out["candidate_rows"] = float(len(state.candidate_set))
    return out


def generate_worker(n_events: int, seed: int, out: str) -> int:
    sys.path.insert(0, str(ROOT))
    from tools.synthetic import generate

    tmp = Path(out).with_name(Path(out).name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    generate(tmp, n_events, seed=seed)
    os.replace(tmp, out)
    return 0


# --------------------------------------------------------------------------------------------
# The parent: children, limits, figures


# Environment variables that choose TensorFlow's CPU allocator: the children inherit them, and
# the report says which were set (the system allocator gives memory back; see README.md).
ALLOCATOR_VARIABLES = ("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "TF_ENABLE_ONEDNN_OPTS")


def allocator_environment() -> str:
    return ", ".join(f"{name}={os.environ[name]}" for name in ALLOCATOR_VARIABLES if name in os.environ)


def run_child(argv: list[str], log_path: Path, timeout_s: float, cap_kb: int | None,
              dump_every: float | None, say) -> dict:
    """Run `python this_file ARGV` with its output in `log_path`, polling its RSS; end it at the
    time or memory limit (stack dump first). Returns wall, peaks and how it ended."""
    env = {k: v for k, v in os.environ.items()}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    started = time.monotonic()
    max_rss_kb, ended, reached = 0, None, {}
    next_dump = started + dump_every if dump_every else None
    next_note = started + 60
    status, rusage = None, None
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = status_kb("VmRSS", proc.pid) or 0
            max_rss_kb = max(max_rss_kb, rss)
            now = time.monotonic()
            over = None
            if cap_kb and rss > cap_kb:
                over = "memory"
            elif now - started > timeout_s:
                over = "time"
            if over:
                ended = over
                reached = {"elapsed_s": now - started, "rss_kb": rss}
                say(f"over limit ({over}): {rss / GB * 1024:.2f} GB after {now - started:.0f}s; "
                    "dumping the stack and ending the child")
                try:
                    proc.send_signal(signal.SIGUSR1)
                    time.sleep(1.5)
                    proc.kill()
                except ProcessLookupError:
                    pass
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            if next_dump and now >= next_dump:
                proc.send_signal(signal.SIGUSR1)
                next_dump = now + dump_every
            if now >= next_note:
                say(f"  ... {now - started:.0f}s, RSS {rss / GB * 1024:.2f} GB")
                next_note = now + 60
            time.sleep(POLL_S)
    except BaseException:
        proc.kill()
        os.wait4(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": time.monotonic() - started, "returncode": proc.returncode,
            "ru_maxrss_kb": rusage.ru_maxrss if rusage else 0, "polled_max_rss_kb": max_rss_kb,
            "over_limit": ended, "reached": reached}


def read_progress(path: Path) -> dict:
    """From a child's progress lines (what is left of a child that failed or was ended): the
    ready record, the last metrics, the finished stages, the calls aggregated as the child
    does, the calls still open and the error."""
    out = {"ready": None, "metrics": {}, "open": [], "stages": {}, "calls": {}, "error": None}
    if not path.is_file():
        return out
    stack, calls = [], out["calls"]
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        event = record.get("event")
        if event == "ready":
            out["ready"] = record
        elif event == "metrics":
            out["metrics"] = record["metrics"]
        elif event == "error":
            out["error"] = record
        elif event == "enter":
            stack.append(record)
            calls.setdefault(record["path"], {"calls": 0, "wall_s": 0.0, "peak_kb": 0, "above_entry_kb": 0,
                                              "retained_kb": 0, "depth": record["path"].count("/")})
        elif event == "exit" and stack:
            entered = stack.pop()
            agg = calls[record["path"]]
            agg["calls"] += 1
            agg["wall_s"] += record["wall_s"]
            agg["peak_kb"] = max(agg["peak_kb"], record["peak_kb"])
            agg["above_entry_kb"] = max(agg["above_entry_kb"], record["peak_kb"] - entered["rss_kb"])
            agg["retained_kb"] += record["rss_kb"] - entered["rss_kb"]
            if "/" not in record["path"]:
                out["stages"][record["path"]] = {"wall_s": record["wall_s"], "peak_kb": record["peak_kb"],
                                                 "rss_start_kb": entered["rss_kb"], "rss_end_kb": record["rss_kb"]}
    out["open"] = stack
    failed = ((out["error"] or {}).get("path") or "").split("/", 1)[0]
    if failed in out["stages"]:
        out["stages"][failed]["failed"] = True
    for record in stack:  # still running when the child ended: time so far, no peak known
        calls[record["path"]]["open_s"] = time.time() - record["t"]
    return out


def last_stack(log_path: Path, frames: int = 14) -> list[str]:
    """The Python frames of the last faulthandler dump in a child's log, innermost first."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    at = text.rfind("most recent call first")
    if at < 0:
        return []
    lines = []
    for line in text[at:].splitlines()[1:]:
        match = re.match(r'\s+File "(.+)", line (\d+) in (\S+)', line)
        if not match:
            break
        file = match.group(1)
        short = file.split("/site-packages/")[-1] if "/site-packages/" in file else os.path.relpath(file, ROOT)
        lines.append(f"{match.group(3)} ({short}:{match.group(2)})")
    return lines[:frames]


def bench_size(n_events: int, args, data_dir: Path, work_dir: Path, say) -> dict:
    """Generate (or reuse) the log, run the pipeline child, return everything measured."""
    row = {"events": n_events, "load_start": os.getloadavg()}
    folder = data_dir / f"synthetic-{n_events}-seed{args.seed}"
    spec = folder / "spec.yaml"
    log_path = work_dir / f"{n_events}.log"
    if spec.is_file():
        row["generation"] = {"cached": True}
        say(f"{n_events:,} events: reusing {folder}")
    else:
        say(f"{n_events:,} events: generating {folder}")
        gen = run_child(["--generate", str(n_events), str(args.seed), str(folder)],
                        work_dir / f"{n_events}.generate.log", 3600, None, None, say)
        if gen["returncode"] != 0 or not spec.is_file():
            raise RuntimeError(f"generating {n_events} events failed; see {work_dir}/{n_events}.generate.log")
        row["generation"] = {"cached": False, "wall_s": gen["wall_s"], "peak_kb": gen["ru_maxrss_kb"]}
    run_dir = work_dir / f"run-{n_events}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    job = {"spec": str(spec), "run_dir": str(run_dir), "set": args.set, "export": args.export,
           "progress": str(work_dir / f"{n_events}.progress.jsonl"),
           "result": str(work_dir / f"{n_events}.result.json")}
    for path in (job["progress"], job["result"]):
        Path(path).unlink(missing_ok=True)
    job_path = work_dir / f"{n_events}.job.json"
    job_path.write_text(json.dumps(job))
    say(f"{n_events:,} events: pipeline in a fresh process (log {log_path})")
    child = run_child(["--worker", str(job_path)], log_path, args.timeout * 60,
                      int(args.max_memory_gb * GB / 1024) if args.max_memory_gb else None,
                      args.dump_every, say)
    row["child"] = child
    row["load_end"] = os.getloadavg()
    row["log"] = str(log_path)
    progress = read_progress(Path(job["progress"]))
    row["ready"] = progress["ready"]
    result_path = Path(job["result"])
    if child["returncode"] == 0 and result_path.is_file():
        row["result"] = json.loads(result_path.read_text())
        row["status"] = "ok"
    else:
        row["status"] = f"over limit ({child['over_limit']})" if child["over_limit"] else \
            f"failed (exit {child['returncode']})"
        row["partial"] = {
            "stages": progress["stages"], "figures": progress["metrics"], "calls": progress["calls"],
            "error": progress["error"],
            "open": [r["path"] for r in progress["open"]],
            "open_rss_kb": [r["rss_kb"] for r in progress["open"]],
            "open_since_s": [time.time() - r["t"] for r in progress["open"]],
            "baseline_kb": (progress["ready"] or {}).get("baseline_kb"),
            "stack": last_stack(log_path),
            "log_tail": log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else "",
        }
    say(f"{n_events:,} events: {row['status']} in {child['wall_s']:.0f}s, peak RSS "
        f"{process_peak_gb(row):.2f} GB")
    return row


# --------------------------------------------------------------------------------------------
# Figures and the report


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two usable points."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def stage_figures(row: dict) -> dict:
    """stage -> {wall_s, peak_gb, above_gb, start_gb, end_gb}; 'total' for a finished run only.
    A run that failed or was ended gives the stages it finished."""
    result = row.get("result")
    if result:
        base, stages = result["baseline_kb"], result["stages"]
    else:
        partial = row.get("partial") or {}
        base = (row.get("ready") or {}).get("baseline_kb") or partial.get("baseline_kb")
        stages = {k: v for k, v in (partial.get("stages") or {}).items() if not v.get("failed")}
        if not base:
            return {}
    out = {}
    for name in STAGES:
        s = stages.get(name)
        if s:
            out[name] = {"wall_s": s["wall_s"], "peak_gb": s["peak_kb"] * 1024 / GB,
                         "above_gb": (s["peak_kb"] - base) * 1024 / GB,
                         "start_gb": s["rss_start_kb"] * 1024 / GB, "end_gb": s["rss_end_kb"] * 1024 / GB}
    if out and result:
        peak_kb = max(stages[n]["peak_kb"] for n in out)
        out["total"] = {"wall_s": sum(v["wall_s"] for v in out.values()), "peak_gb": peak_kb * 1024 / GB,
                        "above_gb": (peak_kb - base) * 1024 / GB, "start_gb": base * 1024 / GB,
                        "end_gb": out[list(out)[-1]]["end_gb"]}
    return out


def evaluation_seconds(row: dict) -> dict[str, float]:
    """Seconds in score_lists per stage, wherever it was called from (the ranker's value-weight
    search scores its held-out lists with it too)."""
    result = row.get("result") or {}
    out = {}
    for path, c in result.get("calls", {}).items():
        if path.endswith("score_lists (evaluation)"):
            stage = path.split("/", 1)[0]
            out[stage] = out.get(stage, 0.0) + c["wall_s"]
    return out


def process_peak_gb(row: dict) -> float:
    """The child's peak RSS: its own record of every boundary's high-water mark, the parent's
    polls, and whatever finished stages and calls of a partial run say."""
    kbs = [row["child"].get("polled_max_rss_kb", 0), row["child"].get("ru_maxrss_kb", 0)]
    result = row.get("result")
    if result:
        kbs.append(result.get("process_peak_kb", 0))
        kbs += [s["peak_kb"] for s in result["stages"].values()]
    partial = row.get("partial") or {}
    kbs += [s["peak_kb"] for s in (partial.get("stages") or {}).values()]
    kbs += [c["peak_kb"] for c in (partial.get("calls") or {}).values()]
    return max(kbs) * 1024 / GB


def fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def fmt_seconds(x) -> str:
    """Seconds to one decimal, or to two significant digits below one second: a stage that
    takes 40 ms on a fast machine reads 0.040, not 0.0."""
    if x is None:
        return "-"
    if 0 < x < 1:
        return f"{x:.{1 - math.floor(math.log10(x))}f}"
    return fmt(x)


def fmt_slope(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def meets(value, target, measured=True) -> str:
    if not measured or value is None:
        return "not measured"
    return "yes" if value <= target else "**no**"


def where_it_was(partial: dict) -> str:
    error = partial.get("error") or {}
    path = error.get("path") or (partial["open"][-1] if partial.get("open") else None)
    where = " > ".join(path.split("/")) if path else "before the first stage"
    return f"{where} ({error['error'][:160]})" if error.get("error") else where


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Scale benchmark: data, retrieval and ranking on SYNTHETIC logs",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores, {meta['mem_gb']:.0f} GB memory; Python "
        f"{meta['python']}, TensorFlow {meta.get('tf', '?')}",
        f"- load average (1/5/15 min) at start / end: {meta['load_start']} / {meta['load_end']}",
        f"- commit: {meta['commit']}",
        f"- config overrides: {meta['overrides']}; exports {'run' if meta['export'] else 'skipped (no-op publish)'}",
        f"- TensorFlow's CPU allocator: {meta.get('environment') or 'the default (oneDNN pool)'}",
        f"- memory: peak RSS from {meta['peak_method']}; GB = 2^30 bytes; limits per size: "
        f"{meta['timeout_min']:g} min, {meta['cap']}",
        "",
    ]
    by_size = {r["events"]: stage_figures(r) for r in rows}

    # ---- the target
    lines += ["## Target", "", "| figure | measured | target | meets |", "|---|---:|---|---|"]
    target_row = next((r for r in rows if r["events"] == TARGET_EVENTS), None)
    largest = max(rows, key=lambda r: r["events"]) if rows else None
    for r in [target_row] if target_row else ([largest] if largest else []):
        n = r["events"]
        label = f"{n:,} events" + ("" if n == TARGET_EVENTS else f" (largest run; the target is for {TARGET_EVENTS:,})")
        tgt = n == TARGET_EVENTS
        if r.get("result"):
            total = by_size[n]["total"]["wall_s"]
            peak = process_peak_gb(r)
            lines.append(f"| {label}: wall of data + retrieval + ranking | {total / 60:,.1f} min | "
                         f"<= {TARGET_WALL_S / 60:.0f} min | {meets(total, TARGET_WALL_S, tgt) if tgt else '-'} |")
            lines.append(f"| {label}: peak memory (RSS) of the process | {peak:,.2f} GB | "
                         f"<= {TARGET_PEAK_GB:.0f} GB | {meets(peak, TARGET_PEAK_GB, tgt) if tgt else '-'} |")
        else:
            p = r["partial"]
            reached = r["child"].get("reached") or {}
            peak = process_peak_gb(r)
            over = r["child"].get("over_limit")
            lines.append(f"| {label}: wall of data + retrieval + ranking | {r['status']} after "
                         f"{r['child']['wall_s'] / 60:,.1f} min, in {where_it_was(p)} | "
                         f"<= {TARGET_WALL_S / 60:.0f} min | {'**no**' if over else 'not measured'} |")
            when = f" (RSS {reached.get('rss_kb', 0) * 1024 / GB:,.2f} GB when ended)" if over else ""
            lines.append(f"| {label}: peak memory (RSS) of the process | >= {peak:,.2f} GB{when} | "
                         f"<= {TARGET_PEAK_GB:.0f} GB | {'**no**' if peak > TARGET_PEAK_GB else 'not measured'} |")
    sizes_done = sorted(n for n, figs in by_size.items() if "total" in figs)
    if len(sizes_done) >= 2:
        for what, key in (("wall", "wall_s"), ("peak memory above start", "above_gb")):
            s = slope([(n, by_size[n]["total"][key]) for n in sizes_done])
            lines.append(f"| slope of total {what} against events, {sizes_done[0]:,} to {sizes_done[-1]:,} | "
                         f"{fmt_slope(s)} | <= {TARGET_SLOPE:.1f} | {meets(s, TARGET_SLOPE)} |")
    lines.append("")

    # ---- sizes
    lines += ["## Sizes", "",
              "| events | users | items in events | catalogue | train / validation / test events | "
              "retrieval pairs | candidate rows (test) | ranker training rows | generation s | "
              "child wall s (incl. imports) | status | load avg (1 min) start / end |",
              "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        f = (r.get("result") or {}).get("figures") or (r.get("partial") or {}).get("figures") or {}
        gen = r.get("generation", {})
        gen_s = "cached" if gen.get("cached") else fmt(gen.get("wall_s"))

        def cell(key, f=f):
            return f"{f[key]:,.0f}" if key in f else "-"

        split = (f"{cell('train_events')} / {cell('validation_events')} / {cell('test_events')}"
                 if "train_events" in f else "-")
        lines.append(f"| {r['events']:,} | {cell('distinct_users')} | {cell('distinct_items')} | "
                     f"{cell('catalogue')} | {split} | {cell('train_pairs')} | {cell('candidate_rows')} | "
                     f"{cell('training_rows')} | {gen_s} | {fmt(r['child']['wall_s'])} | {r['status']} | "
                     f"{r['load_start'][0]:.2f} / {r['load_end'][0]:.2f} |")
    lines.append("")

    # ---- per stage
    lines += ["## Per stage", "",
              "Wall seconds and peak RSS during each stage (the kernel's high-water mark, reset at "
              "the stage's start); \"above start\" subtracts the RSS after the imports. Evaluation "
              "(`score_lists`) runs inside the retrieval and ranking stages and is included there.",
              "",
              "| events | stage | wall s | share of wall | peak RSS GB | above start GB | RSS at end GB | "
              "target (10^7, whole pipeline) |",
              "|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        n = r["events"]
        figs = by_size.get(n)
        if figs and "total" in figs:
            total = figs["total"]["wall_s"]
            evals = evaluation_seconds(r)
            for name in (*STAGES, "total"):
                if name not in figs:
                    continue
                v = figs[name]
                target = ""
                if name == "total" and n == TARGET_EVENTS:
                    target = f"<= {TARGET_WALL_S / 60:.0f} min, <= {TARGET_PEAK_GB:.0f} GB"
                lines.append(f"| {n:,} | {name} | {fmt_seconds(v['wall_s'])} | {v['wall_s'] / total:.0%} | "
                             f"{v['peak_gb']:.2f} | {v['above_gb']:.2f} | {v['end_gb']:.2f} | {target} |")
                if name in evals:
                    lines.append(f"| {n:,} | &nbsp;&nbsp;of which evaluation (score_lists) | "
                                 f"{fmt_seconds(evals[name])} | {evals[name] / total:.0%} | - | - | - | |")
        else:
            p = r["partial"]
            base = p.get("baseline_kb") or 0
            for name in STAGES:
                if name in p["stages"]:
                    s = p["stages"][name]
                    label = f"{name} (failed in it)" if s.get("failed") else name
                    lines.append(f"| {n:,} | {label} | {fmt_seconds(s['wall_s'])} | - | {s['peak_kb'] * 1024 / GB:.2f} | "
                                 f"{(s['peak_kb'] - base) * 1024 / GB:.2f} | {s['rss_end_kb'] * 1024 / GB:.2f} | |")
            reached = r["child"].get("reached") or {}
            when = f"{reached.get('rss_kb', 0) * 1024 / GB:.2f} (when ended)" if reached else "-"
            lines.append(f"| {n:,} | {r['status']}: in {where_it_was(p)} | "
                         f"{fmt(r['child']['wall_s'])} (child) | - | "
                         f">= {process_peak_gb(r):.2f} | - | {when} | "
                         f"{'<= 30 min, <= 8 GB: **no**' if n == TARGET_EVENTS and r['child'].get('over_limit') else ''} |")
    lines.append("")

    # ---- slopes
    sizes_any = sorted(n for n, figs in by_size.items() if figs)
    if len(sizes_any) >= 2:
        steps = list(zip(sizes_any, sizes_any[1:]))
        step_names = ", ".join(f"{a:.0e}->{b:.0e}" for a, b in steps).replace("+0", "")
        lines += ["## Slopes of cost against events (log-log)", "",
                  f"Least squares over the sizes at which the stage finished (of {', '.join(f'{n:,}' for n in sizes_any)} "
                  "events); then per step "
                  f"({step_names}). Target: <= {TARGET_SLOPE:.1f} (no faster than linear).", "",
                  "| stage | wall slope | wall per step | peak RSS slope | peak above start slope | "
                  "above start per step | meets (wall and above start) |",
                  "|---|---:|---|---:|---:|---|---|"]
        for name in (*STAGES, "total"):
            pts = [n for n in sizes_any if name in by_size[n]]
            if len(pts) < 2:
                continue
            wall = slope([(n, by_size[n][name]["wall_s"]) for n in pts])
            peak = slope([(n, by_size[n][name]["peak_gb"]) for n in pts])
            above = slope([(n, by_size[n][name]["above_gb"]) for n in pts])

            def step(a, b, key, name=name):
                if name not in by_size[a] or name not in by_size[b]:
                    return "-"
                return fmt_slope(slope([(a, by_size[a][name][key]), (b, by_size[b][name][key])]))

            wall_steps = ", ".join(step(a, b, "wall_s") for a, b in steps)
            above_steps = ", ".join(step(a, b, "above_gb") for a, b in steps)
            ok = all(s is not None and s <= TARGET_SLOPE for s in (wall, above))
            lines.append(f"| {name} | {fmt_slope(wall)} | {wall_steps} | {fmt_slope(peak)} | {fmt_slope(above)} | "
                         f"{above_steps} | {'yes' if ok else '**no**'} |")
        lines += ["", "Peak RSS includes the ~0.6 GB of the imports, which flattens its slope at small "
                  "sizes; the slope of the peak above the start is the one to read.", ""]

    # ---- where it goes
    lines += render_calls(rows)
    for r in rows:
        if r.get("partial"):
            p = r["partial"]
            lines += [f"### {r['events']:,} events: {r['status']}", "",
                      f"Ended after {r['child']['wall_s']:.0f} s, in {where_it_was(p)}; RSS when ended "
                      f"{(r['child'].get('reached') or {}).get('rss_kb', 0) * 1024 / GB:.2f} GB "
                      f"(peak {process_peak_gb(r):.2f} GB). Calls still open, outermost "
                      "first (RSS when entered, seconds inside):", ""]
            for path, rss, since in zip(p["open"], p["open_rss_kb"], p["open_since_s"]):
                lines.append(f"- `{path.split('/')[-1]}`: entered at {rss * 1024 / GB:.2f} GB, "
                             f"{since:.0f} s before the end")
            if p.get("stack"):
                lines += ["", "Python stack when ended (innermost first):", ""]
                lines += [f"    {frame}" for frame in p["stack"]]
            lines += ["", f"Child log: `{r['log']}`", ""]
    return "\n".join(lines)


def render_calls(rows: list[dict]) -> list[str]:
    """Per probed call path, wall and peak per size: where the time and the memory go. Runs
    that failed or were ended show what they finished (and, for calls still open, the time
    spent so far); their figures enter no slope unless their stage finished."""
    runs = []
    for r in rows:
        result = r.get("result")
        calls = result["calls"] if result else (r.get("partial") or {}).get("calls") or {}
        if not calls:
            continue
        finished = set(result["stages"]) if result else {
            name for name, v in ((r.get("partial") or {}).get("stages") or {}).items() if not v.get("failed")}
        runs.append({"events": r["events"], "calls": calls, "finished": finished, "ok": bool(result)})
    if not runs:
        return []
    sizes = [x["events"] for x in runs]
    paths = []
    for run in reversed(runs):
        paths += [p for p in run["calls"] if p not in paths]

    def label(n, run):
        text = f"{n:.0e}".replace("+0", "")
        return text if run["ok"] else text + " (partial)"

    def cell_s(c):
        if c is None:
            return "-"
        if "open_s" in c:
            return f">= {c['wall_s'] + c['open_s']:,.0f} (open)"
        return fmt(c["wall_s"])

    def gb(c, key):
        return f"{c[key] * 1024 / GB:.2f}" if c and c["calls"] else "-"

    lines = ["## Where the time and the memory go", "",
             "Each row is a function called inside a stage (indented under its caller; figures "
             "include the calls below it; several calls add up). Peak: the RSS high-water mark "
             "during the call; above entry: the largest (peak - RSS when a call began), what the call "
             "holds at once on top of what it was given. A partial column is a run that failed or "
             "was ended: \"open\" is a call it was still in. Rows under 0.5% of their run's wall and "
             "0.05 GB above entry are left out.", "",
             "| call | calls @ largest | " + " | ".join(f"s @ {label(n, x)}" for n, x in zip(sizes, runs))
             + " | wall slope | " + " | ".join(f"peak GB @ {label(n, x)}" for n, x in zip(sizes, runs))
             + " | " + " | ".join(f"above entry GB @ {label(n, x)}" for n, x in zip(sizes, runs)) + " |",
             "|---|---:|" + "---:|" * (3 * len(sizes) + 1)]
    totals = [sum(c["wall_s"] for p, c in x["calls"].items() if "/" not in p) or 1.0 for x in runs]
    for path in paths:
        cells = [x["calls"].get(path) for x in runs]
        depth = path.count("/")
        big = any(c and (c["wall_s"] + c.get("open_s", 0) >= 0.005 * t or c["above_entry_kb"] * 1024 / GB >= 0.05)
                  for c, t in zip(cells, totals))
        if depth and not big:
            continue
        stage = path.split("/", 1)[0]
        points = [(n, c["wall_s"]) for n, c, x in zip(sizes, cells, runs)
                  if c and c["calls"] and "open_s" not in c and (x["ok"] or stage in x["finished"])]
        largest = next((c for c in reversed(cells) if c), None)
        name = "&nbsp;&nbsp;" * 2 * depth + path.split("/")[-1]
        lines.append(
            f"| {name} | {(largest['calls'] or 'open') if largest else '-'} | "
            + " | ".join(cell_s(c) for c in cells)
            + f" | {fmt_slope(slope(points))} | "
            + " | ".join(gb(c, "peak_kb") for c in cells) + " | "
            + " | ".join(gb(c, "above_entry_kb") for c in cells) + " |")
    lines.append("")
    done = [r for r in rows if r.get("result")]
    if done:
        base = done[-1]["result"]["baseline_kb"]
        lines += [f"RSS after the imports (start): {base * 1024 / GB:.2f} GB at {done[-1]['events']:,} events.", ""]
        missing = done[-1]["result"].get("missing") or []
        if missing:
            lines += [f"Functions not found (not timed): {', '.join(missing)}", ""]
    return lines


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/scale_bench.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="events per synthetic log, comma-separated "
                        f"(default {','.join(map(str, FULL_SIZES))}; 1e6 works too)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic logs (0)")
    parser.add_argument("--data-dir", type=Path, help="cache of the synthetic logs (default: a temp dir)")
    parser.add_argument("--work-dir", type=Path, help="run folders and child logs (default: a temp dir)")
    parser.add_argument("--timeout", type=float, help="minutes per size before the run is ended (45)")
    parser.add_argument("--max-memory-gb", type=float, default=16.0,
                        help="end a run whose RSS passes this many GB (2^30 bytes); 0: no cap (16)")
    parser.add_argument("--dump-every", type=float, help="seconds between Python stack dumps into the "
                        "child's log (off)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another config override, as train.py --set (repeatable)")
    parser.add_argument("--export", action="store_true", help="run the SavedModel exports too")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (2k, 5k events)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--from-json", type=Path, action="append", metavar="FILE",
                        help="render no run: the report of earlier --json files, their sizes "
                        "merged (repeatable; the header is the first file's)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=3, help=argparse.SUPPRESS)
    return parser


def child_meta(rows: list[dict]) -> dict:
    """TensorFlow's version and how the peaks were taken, as the children said."""
    ready = [r.get("ready") or r.get("result") or {} for r in rows]
    ready = [x for x in ready if x]
    kernel = [x.get("kernel_peaks") for x in ready]
    return {"tf": ready[0].get("tf", "?") if ready else "?",
            "peak_method": ("VmHWM reset through /proc/self/clear_refs (exact)" if kernel and all(kernel)
                            else "VmRSS sampled every 50 ms")}


def rerender(args) -> int:
    """The report of saved --json files, sizes merged (a later file's size replaces an earlier
    one's)."""
    saved = [json.loads(path.read_text()) for path in args.from_json]
    meta = dict(saved[0]["meta"])
    rows = {}
    for data in saved:
        for row in data["rows"]:
            rows[row["events"]] = row
    if len(saved) > 1:
        meta["command"] = " ; ".join(d["meta"]["command"] for d in saved)
        meta["date"] = " ; ".join(d["meta"]["date"] for d in saved)
        meta["commit"] = " ; ".join(dict.fromkeys(d["meta"]["commit"] for d in saved))
        meta["load_start"] = " ; ".join(d["meta"]["load_start"] for d in saved)
        meta["load_end"] = " ; ".join(d["meta"]["load_end"] for d in saved)
        meta["timeout_min"] = max(d["meta"]["timeout_min"] for d in saved)
        meta["cap"] = " ; ".join(dict.fromkeys(d["meta"]["cap"] for d in saved))
    rows = [rows[n] for n in sorted(rows)]
    if "ready" not in rows[-1] and not rows[-1].get("result"):  # saved before `ready` was kept
        progress = read_progress(Path(rows[-1]["log"]).with_name(f"{rows[-1]['events']}.progress.jsonl"))
        rows[-1]["ready"] = progress["ready"]
    meta.update(child_meta(rows))
    text = render(meta, rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def parse_size(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise SystemExit(f"--sizes: {text!r} is not a positive whole number of events")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.worker:
        return pipeline_worker(args.worker)
    if args.generate:
        n, seed, out = args.generate
        return generate_worker(int(n), int(seed), out)

    if args.from_json:
        return rerender(args)
    load_start = load_average()
    sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()}) if args.sizes else \
        list(QUICK_SIZES if args.quick else FULL_SIZES)
    args.timeout = args.timeout or (5.0 if args.quick else 45.0)

    def say(message: str) -> None:
        print(f"[scale_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    meta = {"command": "python bench/scale_bench.py " + shlex.join(argv),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **machine(), "commit": git_commit(), "load_start": load_start, "export": args.export,
            "overrides": ", ".join(f"{k}={json.dumps(v)}" if not isinstance(v, dict) else
                                   ", ".join(f"{k}.{a}={json.dumps(b)}" for a, b in v.items())
                                   for k, v in BENCH_OVERRIDES.items())
            + "".join(f", {s}" for s in args.set),
            "timeout_min": args.timeout,
            "cap": f"RSS cap {args.max_memory_gb:g} GB" if args.max_memory_gb else "no RSS cap",
            "environment": allocator_environment()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        work_dir = args.work_dir or Path(tmp) / "work"
        data_dir = args.data_dir or Path(tmp) / "data"
        work_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            rows.append(bench_size(n, args, data_dir, work_dir, say))
    meta["load_end"] = load_average()
    meta.update(child_meta(rows))
    text = render(meta, rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        say(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    failed = [r for r in rows if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
