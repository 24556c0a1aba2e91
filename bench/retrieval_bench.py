#!/usr/bin/env python
"""Retrieval benchmark: two-tower training throughput and exported top-100 latency, each beside
its baseline, written as a markdown table with the machine, the date and the exact command.

1. Training throughput (pairs/s). A SYNTHETIC log (`tools.synthetic.generate`, seed 0) is
   read and split by the data stage (`pipeline.run_stage("data", state)`), retrieval pairs are
   prepared (`retrieval.stage.prepare`) and the two-tower model is fitted (`retrieval.stage.fit`)
   as `train.py` does, with `early_stopping: val_loss` and a fixed number of epochs (patience =
   epochs, so it never stops early). The figure is the project's own (`fit["pairs_per_s"]`:
   training pairs / training time of an epoch, its validation pass excluded), median over
   epochs 2..N (the first traces the graphs), then median over `--repeats` fresh fits.
   Baseline: the issue's target, 50,000 pairs/s on the 2-core machine.

2. Exported top-100 latency (ms). For each catalogue size, random unit item vectors are indexed
   (`retrieval.index.build_index`, TFRS BruteForce) behind an untrained query tower
   (`retrieval.model.build_towers`; latency does not depend on weights) and exported with
   `retrieval.index.export_retrieval`, as the export stage does. A fresh Python process that
   imports only TensorFlow (`bench/latency_workers.py retrieval`) loads it and calls
   `signatures["serving_default"]` on real query rows (user id, last-20 history, timestamp) at
   batch 1 and 64. Baseline, timed in the same
   process and interleaved call by call: the floor, a bare `tf.function` doing
   `tf.linalg.matmul(query, items, transpose_b=True)` + `tf.math.top_k(k=100)` over a variable
   of the same shape. Ratio = exported p50 / floor p50 in that process, median over repeats.
   More exports split the exported time: the query tower alone, the BruteForce index alone
   (query vector in: matmul + top_k + the string-id gather) and, when the project exports with
   `exclude_seen`, the same export without it.

Usage:
  python bench/retrieval_bench.py                                # full run (about 10 minutes)
  python bench/retrieval_bench.py --items 10000,100000 --repeats 5 --out bench/results.md
  python bench/retrieval_bench.py --parts latency --items 100000 --profile
  python bench/retrieval_bench.py --quick --out /tmp/x.md        # smoke run, tiny sizes

`--profile` adds a split of one training step (input pipeline, lookups, towers, loss,
gradients, optimizer) measured in-process on the same batches.

The latency is timed in `bench/latency_workers.py`, a process that imports TensorFlow and
nothing of the project; this script imports the project at the top. The markdown is rendered by
`bench/retrieval_report.py` (standard library only), where the targets are.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and tools/ import from here on

import numpy as np
import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from bench_common import git_commit, machine, run_latency_worker
from retrieval_report import render
from shopping_mtl import pipeline
from shopping_mtl.config import load_config
from shopping_mtl.export import publishing
from shopping_mtl.retrieval import index as index_lib, model as model_lib, stage
from tools.synthetic import generate

K = 100
FULL = {"events": 200_000, "items": "10000,100000,1000000", "epochs": 3, "repeats": 3,
        "calls": 200, "budget": 20.0}
QUICK = {"events": 6_000, "items": "2000,5000", "epochs": 2, "repeats": 1, "calls": 20,
         "budget": 2.0}
BATCHES = (1, 64)


# --------------------------------------------------------------------------------------------
# The main process: data, training, exports.


def synthetic_run(workdir: Path, n_events: int, config_overrides: dict):
    """Generate the synthetic log, read and split it as `train.py` does (the data stage); return
    the run state."""
    spec = generate(workdir / "synthetic", n_events, seed=0)
    config = load_config(overrides={"data": {"dataset": str(spec)}, "run_dir": str(workdir / "run"),
                                    "stages": ["data"], "tracking": {"enabled": False}, **config_overrides})
    state = pipeline.prepare_state(config)
    pipeline.run_stage("data", state)
    return state


def bench_config(state, epochs: int, dim: int):
    """The run's retrieval config with a fixed number of epochs and val_loss early stopping."""
    return dataclasses.replace(state.config.retrieval, early_stopping="val_loss", epochs=epochs,
                               patience=epochs, embedding_dim=dim)


def bench_training(data, rconfig, seed: int, repeats: int, log) -> dict:
    """`repeats` fresh fits; per fit, the median pairs/s of epochs 2..N."""
    per_fit, epochs_seen = [], []
    for r in range(repeats):
        _, fitted = stage.fit(data, rconfig, seed)
        figures = fitted["pairs_per_s"]
        epochs_seen.append(len(figures))
        later = figures[1:] or figures
        per_fit.append(statistics.median(later))
        log(f"training fit {r + 1}/{repeats}: epochs {', '.join(f'{x:,.0f}' for x in figures)} "
            f"pairs/s -> {per_fit[-1]:,.0f}")
    return {"pairs_per_s": statistics.median(per_fit), "per_fit": per_fit,
            "train_pairs": len(data.train["sample_weight"]),
            "batch_size": min(rconfig.batch_size, len(data.train["sample_weight"])),
            "epochs": min(epochs_seen)}


def query_rows(data, query_model, n: int):
    """Real query inputs (user, last items, time) from the validation pairs: name -> array."""
    rows = {}
    for name in query_model.input_names:
        values = np.asarray(data.validation[name])[:n]
        rows[name] = values.astype(str) if values.dtype == object else values
    return rows


def build_exports(data, rconfig, n_items: int, dim: int, folder: Path, queries: dict,
                  query_model) -> dict:
    """The project's retrieval export over `n_items` random unit vectors, plus the two exports
    that split its time (query tower alone, index alone). Returns their paths."""
    rng = np.random.default_rng(n_items)
    vectors = rng.standard_normal((n_items, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # (n_items, dim)
    ids = np.char.add("i", np.arange(n_items).astype(str))
    sample = {k: tf.constant(v[:2]) for k, v in queries.items()}

    index = index_lib.build_index(query_model, ids, vectors, K)
    index(sample)  # a TFRS BruteForce layer will not save until it has been called once
    paths = {"exported": index_lib.export_retrieval(  # exclude_seen as the export stage exports it
        index, query_model, data.features, K, folder / "retrieval" / "1", exclude_seen=rconfig.exclude_seen)}
    if rconfig.exclude_seen:
        paths["exported_keep_seen"] = index_lib.export_retrieval(
            index, query_model, data.features, K, folder / "keep_seen" / "1", exclude_seen=False)

    signature = data.features.input_signature("user", "history", "context")
    signature = {name: signature[name] for name in query_model.input_names}
    tower = tf.Module()
    tower.model = query_model
    tower.serve = tf.function(lambda f: {"query": tower.model(f)}, input_signature=[signature])
    paths["query_tower"] = publishing.save_atomic(
        tower, {"serving_default": tower.serve.get_concrete_function()}, folder / "query_tower" / "1")

    bare = tfrs.layers.factorized_top_k.BruteForce(k=K)
    bare.index(tf.constant(vectors), tf.constant(ids))
    bare(tf.constant(vectors[:1]))
    holder = tf.Module()
    holder.index = bare

    def index_serve(query):
        scores, item_ids = holder.index(query, k=K)  # (batch, K) each
        return {"item_ids": item_ids, "scores": scores}

    query_spec = tf.TensorSpec([None, dim], tf.float32, name="query")
    holder.serve = tf.function(index_serve, input_signature=[query_spec])
    paths["index_only"] = publishing.save_atomic(
        holder, {"serving_default": holder.serve.get_concrete_function()}, folder / "index_only" / "1")
    return {k: str(v) for k, v in paths.items()}


def bench_latency(data, rconfig, sizes, dim, repeats, calls, budget, workdir, log, seed=0) -> dict:
    """Per catalogue size: build the exports once, then `repeats` fresh worker processes."""
    query_model, _ = model_lib.build_towers(data.features, rconfig)
    queries = query_rows(data, query_model, 8 * max(BATCHES))
    queries_path = workdir / "queries.npz"
    np.savez(queries_path, **queries)
    out = {}
    for n_items in sizes:
        folder = workdir / f"exports-{n_items}"
        started = time.perf_counter()
        paths = build_exports(data, rconfig, n_items, dim, folder, queries, query_model)
        log(f"latency {n_items:,} items: exports built in {time.perf_counter() - started:.1f}s")
        runs = []
        for r in range(repeats):
            job = {"exports": paths, "items": n_items, "dim": dim, "calls": calls, "min_calls": 20,
                   "warmup": 5, "budget_s": budget, "batches": list(BATCHES),
                   "queries": str(queries_path),
                   "seed": seed + r}
            result = run_latency_worker("retrieval", job, folder, timeout=600)
            runs.append(result)
            for batch, row in result["results"].items():
                log(f"latency {n_items:,} items, batch {batch}, run {r + 1}/{repeats}: exported p50 "
                    f"{row['exported']['p50']:.2f} ms, floor p50 {row['floor']['p50']:.2f} ms, "
                    f"ratio {row['exported']['p50'] / row['floor']['p50']:.2f} ({row['calls']} calls)")
        out[n_items] = summarize_latency(runs)
        shutil.rmtree(folder, ignore_errors=True)
    out_meta = {"exclude_seen": rconfig.exclude_seen,
                "vocab": {name: len(a.vocabulary) for name, a in data.features.adapted.items()
                          if a.vocabulary}}
    return {"sizes": out, "meta": out_meta}


def summarize_latency(runs: list[dict]) -> dict:
    """Median over repeats of each figure; ratios are taken within a process first."""
    summary = {}
    for batch in runs[0]["results"]:
        rows = [run["results"][batch] for run in runs]
        cell = {"calls": min(r["calls"] for r in rows),
                "load_s": statistics.median(run["load_s"] for run in runs)}
        for name in rows[0]:
            if name == "calls":
                continue
            for q in ("p50", "p99"):
                cell[f"{name}_{q}"] = statistics.median(r[name][q] for r in rows)
        cell["ratio_p50"] = statistics.median(r["exported"]["p50"] / r["floor"]["p50"] for r in rows)
        cell["ratio_p99"] = statistics.median(r["exported"]["p99"] / r["floor"]["p99"] for r in rows)
        summary[int(batch)] = cell
    return summary


def profile_step(data, rconfig, seed: int, repeats: int, log) -> list[tuple[str, float, float | None]]:
    """ms per training batch of the pieces of one step, timed on the same (up to) 20 batches
    of the fit's own pipeline, interleaved over repeats. Returns (piece, ms, adds): the rows from
    the towers down are nested, each including the one above, and `adds` is the difference."""
    batch_size = min(rconfig.batch_size, len(data.train["sample_weight"]))
    dataset = model_lib.make_dataset(data.train, batch_size, shuffle=True, seed=seed,
                                     id_dropout=rconfig.id_dropout)
    n_batches = len(data.train["sample_weight"]) // batch_size
    batches = list(dataset.take(min(20, n_batches)))
    tf.keras.utils.set_random_seed(seed)
    query_model, candidate_model = model_lib.build_towers(data.features, rconfig)
    model = model_lib.TwoTowerModel(query_model, candidate_model, rconfig)
    model.compile(optimizer=tf.keras.optimizers.Adam(rconfig.learning_rate))
    features = data.features
    lookups_of = {name: (name, features.indexer(name)) for name in features.adapted}
    lookups_of |= {part.name: ("timestamp", features.indexer(part.name))
                   for part in features.spec.context}

    @tf.function
    def lookups(b):
        out = [layer(b[column]) for column, layer in lookups_of.values() if column in b]
        if "history_item_ids" in b and "item_id" in lookups_of:
            out.append(lookups_of["item_id"][1](b["history_item_ids"]))
        return [tf.reduce_sum(tf.cast(o, tf.float32)) for o in out]

    @tf.function
    def towers(b):
        return (query_model({k: b[k] for k in query_model.input_names}),
                candidate_model({k: b[k] for k in candidate_model.input_names}))

    @tf.function
    def loss(b):
        return model.compute_loss(b, training=True)

    @tf.function
    def gradients(b):
        with tf.GradientTape() as tape:
            value = model.compute_loss(b, training=True)
        grads = tape.gradient(value, model.trainable_variables)
        return [tf.reduce_sum(g.values if isinstance(g, tf.IndexedSlices) else g) for g in grads]

    @tf.function
    def train_step(b):
        return model.train_step(b)

    def pipeline_epoch():
        for _ in dataset:
            pass

    # (name, function, nested): nested rows include the row above them.
    pieces = [("string/number lookups alone (index layers)", lookups, False),
              ("query + candidate towers, forward (lookups included)", towers, False),
              ("+ TFRS Retrieval loss, forward", loss, True),
              ("+ backward (gradients)", gradients, True),
              ("+ Adam update = full train step", train_step, True)]
    pipeline_name = "input pipeline alone (tf.data, runs beside the step)"
    for _, fn, _ in pieces:
        fn(batches[0])
    times = {name: [] for name in [pipeline_name, *(p[0] for p in pieces)]}
    for _ in range(max(repeats, 3)):
        started = time.perf_counter()
        pipeline_epoch()
        times[pipeline_name].append((time.perf_counter() - started) / max(n_batches, 1) * 1e3)
        for name, fn, _ in pieces:
            started = time.perf_counter()
            for b in batches:
                result = fn(b)
            _ = [np.asarray(x) for x in tf.nest.flatten(result)]
            times[name].append((time.perf_counter() - started) / len(batches) * 1e3)
    nested = {name: flag for name, _, flag in pieces}
    rows, previous = [], None
    for name, values in times.items():
        ms = statistics.median(values)
        adds = ms - previous if nested.get(name) and previous is not None else None
        rows.append((name, ms, adds))
        previous = ms
        log(f"profile: {name}: {ms:.2f} ms/batch")
    return rows


# --------------------------------------------------------------------------------------------
# The command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/retrieval_bench.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", help=f"catalogue sizes for the latency (default {FULL['items']})")
    parser.add_argument("--dim", type=int, default=64, help="embedding dim of towers and items (64)")
    parser.add_argument("--repeats", type=int, help="fits and latency processes per figure (3)")
    parser.add_argument("--events", type=int, help=f"synthetic events (default {FULL['events']:,})")
    parser.add_argument("--epochs", type=int, help="epochs per fit (default 3; figure: epochs 2..N)")
    parser.add_argument("--calls", type=int, help="timed calls per latency figure (default 200; "
                        "fewer when one would take longer than --budget seconds)")
    parser.add_argument("--budget", type=float, help="seconds of timed calls per catalogue size "
                        "and batch in one process (default 20)")
    parser.add_argument("--parts", default="train,latency",
                        help="what to run: train, latency or both (default train,latency)")
    parser.add_argument("--profile", action="store_true",
                        help="also split one training step into pipeline / lookups / towers / "
                        "loss / gradients / optimizer")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (seconds)")
    parser.add_argument("--out", help="write the markdown table here")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)

    load_start = os.getloadavg()[0]
    defaults = QUICK if args.quick else FULL
    events = args.events or defaults["events"]
    sizes = [int(x) for x in (args.items or defaults["items"]).split(",") if x.strip()]
    repeats = args.repeats or defaults["repeats"]
    epochs = args.epochs or defaults["epochs"]
    calls = args.calls or defaults["calls"]
    budget = args.budget or defaults["budget"]
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - {"train", "latency"}:
        raise SystemExit(f"--parts has unknown part(s) {sorted(parts - {'train', 'latency'})}; "
                         "known: train, latency")
    if min(sizes) < K:
        raise SystemExit(f"--items must be at least {K} (top-{K})")

    def log(message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    meta = {"command": "python bench/retrieval_bench.py " + shlex.join(argv),
            "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            **machine(), "tf": tf.__version__, "commit": git_commit(), "load_start": load_start,
            "events": events, "repeats": repeats, "dim": args.dim}
    training = latency = profile = None
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        state = synthetic_run(workdir, events, {})
        rconfig = bench_config(state, epochs, args.dim)
        data = stage.prepare(state.dataset, state.split, rconfig)
        split = state.split
        meta["split"] = (f"train {len(split.train):,}, validation {len(split.validation):,}, "
                         f"test {len(split.test):,} events")
        meta["batch_size"] = min(rconfig.batch_size, len(data.train["sample_weight"]))
        log(f"data and pairs ready in {time.perf_counter() - started:.1f}s: {meta['split']}")
        if "train" in parts:
            training = bench_training(data, rconfig, state.config.seed, repeats, log)
        if args.profile:
            profile = profile_step(data, rconfig, state.config.seed, repeats, log)
        if "latency" in parts:
            latency = bench_latency(data, rconfig, sizes, args.dim, repeats, calls, budget,
                                    workdir, log)
    meta["load_end"] = os.getloadavg()[0]
    text = render(meta, training, latency, profile)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
