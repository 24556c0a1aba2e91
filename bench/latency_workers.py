#!/usr/bin/env python
"""The fresh processes that time exported SavedModels: they import TensorFlow and numpy and
nothing of the project (`shopping_mtl`, `tensorflow_recommenders`), as a serving process would,
and say which project modules got imported so that the caller can check.

  python bench/latency_workers.py retrieval JOB.json   # retrieval_bench.py: exports beside the matmul floor
  python bench/latency_workers.py recommend JOB.json   # serving_bench.py: recommend beside retrieval alone

Each prints one `RESULT {json}` line; `bench_common.run_latency_worker` runs them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

K = 100  # top-k of the retrieval exports and of the floor
PROJECT = ("shopping_mtl", "tensorflow_recommenders")


def project_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in PROJECT)


def percentiles(times: dict[str, list[float]]) -> dict:
    return {name: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
            for name, v in times.items()}


def retrieval_latency(job: dict) -> dict:
    """Load the exports named in the job, time them against the floor (a bare matmul + top_k
    over a variable of the same shape).

    Each timed iteration calls every variant once, in an order rotated per iteration, so that
    noise from other processes falls on all of them alike.
    """
    n_items, dim, calls, budget = job["items"], job["dim"], job["calls"], job["budget_s"]
    started = time.perf_counter()
    # name -> (serving_default, takes the raw request (True) or a query vector (False))
    signatures = {name: (tf.saved_model.load(path).signatures["serving_default"], name != "index_only")
                  for name, path in job["exports"].items()}
    load_s = time.perf_counter() - started

    rng = np.random.default_rng(job["seed"])
    items = rng.standard_normal((n_items, dim), dtype=np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    items = tf.Variable(items, trainable=False)  # (n_items, dim), like the index's variable

    @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32)])
    def floor(query):
        scores = tf.linalg.matmul(query, items, transpose_b=True)  # (batch, n_items)
        return tf.math.top_k(scores, k=K)  # (batch, K) values and indices

    raw = np.load(job["queries"], allow_pickle=False)
    n_rows = len(raw[next(iter(raw.files))])
    variants = ["exported", "floor", *[n for n in signatures if n != "exported"]]
    results = {}
    for batch in job["batches"]:
        # A few different request batches, cycled; strings as the server would receive them.
        requests, vectors = [], []
        for j in range(8):
            rows = (np.arange(batch) + j * batch) % n_rows
            requests.append({name: tf.constant(raw[name][rows]) for name in raw.files})
            q = rng.standard_normal((batch, dim), dtype=np.float32)
            vectors.append(tf.constant(q / np.linalg.norm(q, axis=1, keepdims=True)))

        def call(name, j):
            if name == "floor":
                return floor(vectors[j])
            fn, takes_request = signatures[name]
            return fn(**requests[j]) if takes_request else fn(query=vectors[j])

        # Warm-up, also an estimate of one iteration's cost for the call budget.
        warm = time.perf_counter()
        for j in range(job["warmup"]):
            for name in variants:
                call(name, j % 8)
        per_iteration = (time.perf_counter() - warm) / max(job["warmup"], 1)
        n_calls = int(min(calls, max(job["min_calls"], budget / max(per_iteration, 1e-9))))
        times = {name: [] for name in variants}
        for i in range(n_calls):
            for r in range(len(variants)):
                name = variants[(i + r) % len(variants)]
                t0 = time.perf_counter_ns()
                call(name, i % 8)
                times[name].append((time.perf_counter_ns() - t0) / 1e6)
        results[str(batch)] = {"calls": n_calls, **percentiles(times)}
    return {"load_s": load_s, "results": results}


def recommend_latency(job: dict) -> dict:
    """Load the exports (`recommend`, `retrieval`), time them on the requests, interleaved."""
    started = time.perf_counter()
    signatures = {name: tf.saved_model.load(path).signatures["serving_default"]
                  for name, path in job["exports"].items()}
    load_s = time.perf_counter() - started
    raw = np.load(job["requests"])
    n_rows = len(raw["timestamp"])
    inputs = {name: set(fn.structured_input_signature[1]) for name, fn in signatures.items()}
    results = {}
    for batch in job["batches"]:
        requests = []
        for j in range(8):
            rows = (np.arange(batch) + j * batch) % n_rows
            requests.append({name: tf.constant(raw[name][rows]) for name in raw.files})
        names = list(signatures)

        def call(name, j):
            return signatures[name](**{k: v for k, v in requests[j].items() if k in inputs[name]})

        for j in range(job["warmup"]):
            for name in names:
                call(name, j % 8)
        times = {name: [] for name in names}
        deadline = time.perf_counter() + job["budget_s"]
        n_calls = 0
        while n_calls < job["calls"] and (n_calls < 20 or time.perf_counter() < deadline):
            for r in range(len(names)):
                name = names[(n_calls + r) % len(names)]
                t0 = time.perf_counter_ns()
                call(name, n_calls % 8)
                times[name].append((time.perf_counter_ns() - t0) / 1e6)
            n_calls += 1
        results[str(batch)] = {"calls": n_calls, **percentiles(times)}
    return {"load_s": load_s, "results": results}


WORKERS = {"retrieval": retrieval_latency, "recommend": recommend_latency}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in WORKERS:
        print(f"usage: python bench/latency_workers.py {{{','.join(WORKERS)}}} JOB.json", file=sys.stderr)
        return 2
    out = WORKERS[argv[0]](json.loads(Path(argv[1]).read_text()))
    print("RESULT " + json.dumps({**out, "project_modules_loaded": project_modules()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
