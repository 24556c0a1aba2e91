#!/usr/bin/env python
"""Serving benchmark: latency of the exported `recommend` signature (retrieval and ranking in
one graph) in a fresh process, beside the issue's target and the `retrieval` export alone.

For each catalogue size, a SYNTHETIC log (`tools.synthetic.generate`, seed 0) whose
item table has about that many items goes through `train.py`'s whole pipeline with short
training (one epoch each; latency does not depend on the weights, only on the shapes and the
catalogue), whose export stage publishes `retrieval`, `ranker` and `recommend`. A fresh Python
process that imports only TensorFlow (`bench/latency_workers.py recommend`; it checks) loads
`recommend` and `retrieval` and calls their
`serving_default` signatures on real requests (the test users' raw features and last 150
events) at batch 1 and 64, interleaved call by call so that noise falls on both alike: p50 and
p99 over up to `--calls` calls after 5 warm-up calls.

Baselines: the target, recommend p99 at batch 1 over 100k items at most 20 ms on the 2-core
machine; and the retrieval export alone (the top 100 from the index): what ranking adds.

Usage:
  python bench/serving_bench.py                          # 10k and 100k items, about 6 minutes
  python bench/serving_bench.py --items 100000 --calls 500 --out /tmp/serving.md
  python bench/serving_bench.py --quick --out /tmp/x.md  # smoke run, about a minute

The latency is timed in `bench/latency_workers.py`, a process that imports TensorFlow and
nothing of the project; this script imports the project at the top.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and tools/ import from here on

import numpy as np
import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

from bench_common import git_commit, load_average, machine, run_latency_worker
from shopping_mtl import pipeline
from shopping_mtl.config import load_config
from shopping_mtl.export import graphs
from tools import synthetic

TARGET_P99_MS = 20.0  # recommend p99 at batch 1 over 100k items
TARGET_ITEMS = 100_000
BATCHES = (1, 64)
# Synthetic events whose item table has about this many items (items.parquet grows with the log).
EVENTS_FOR_ITEMS = {2_000: 1_000, 10_000: 3_000, 100_000: 90_000}


def build(n_items: int, folder: Path, log) -> dict:
    """Run the pipeline on a synthetic log sized for about `n_items` items; return the exports,
    the catalogue size and the requests file."""
    n_events = EVENTS_FOR_ITEMS.get(n_items) or max(1_000, int(n_items * 0.9))
    log(f"{n_items} items: generating {n_events:,} synthetic events, running the pipeline")
    spec = synthetic.generate(folder / "data", n_events, seed=0)
    config = load_config(overrides={
        "run_dir": str(folder / "run"), "data": {"dataset": str(spec)},
        # The baselines stage only scores the null models: no part of the exports.
        "stages": ["data", "retrieval", "candidates", "ranking", "export"],
        "evaluation": {"bootstrap_resamples": 0},
        "tracking": {"enabled": False},  # a benchmark's models are no candidates for the registry
        "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
        "ranking": {"epochs": 1, "extra_days": 1, "compare_single_task": False},
    })
    state = pipeline.run(config)
    users = list(state.truth.users) or sorted(set(state.split.history["user_id"]))
    request = graphs.requests_for(users[:512], state.split.history, state.split.test_start, state.dataset.users,
                                  state.retrieval.data.features, config.ranking.history_length)
    requests = folder / "requests.npz"
    np.savez(requests, **request)
    return {"exports": {"recommend": state.info["exports"]["recommend"], "retrieval": state.info["exports"]["retrieval"]},
            "catalogue": int(len(state.retrieval.data.catalogue)), "requests": str(requests),
            "users": len(users)}


def render(meta: dict, rows: list[dict]) -> str:
    lines = [
        "## `recommend` latency (exported, fresh process)",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; commit {meta['commit']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores, Python {meta['python']}",
        f"- load average at start / end: {meta['load_start']} / {meta['load_end']}",
        "- requests: the test users' raw features and last 150 events; SYNTHETIC logs",
        "",
        "| catalogue items | batch | calls | recommend p50 ms | recommend p99 ms | retrieval alone p50 ms | retrieval alone p99 ms | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for batch, figures in row["results"].items():
            target = ""
            if batch == "1" and row["catalogue"] >= 0.9 * TARGET_ITEMS:
                ok = figures["recommend"]["p99"] <= TARGET_P99_MS
                target = f"p99 <= {TARGET_P99_MS:.0f} ms: {'met' if ok else 'NOT met'}"
            lines.append(
                f"| {row['catalogue']:,} | {batch} | {figures['calls']} | {figures['recommend']['p50']:.2f} | "
                f"{figures['recommend']['p99']:.2f} | {figures['retrieval']['p50']:.2f} | "
                f"{figures['retrieval']['p99']:.2f} | {target} |")
    lines += ["", "Load time of both SavedModels in the worker: "
              + ", ".join(f"{r['catalogue']:,} items {r['load_s']:.1f} s" for r in rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default=None, help="catalogue sizes, comma-separated (default 10000,100000)")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per figure at most (default 300)")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timed calls per batch size at most")
    parser.add_argument("--quick", action="store_true", help="one small catalogue, few calls: a smoke run")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in (args.items or ("2000" if args.quick else "10000,100000")).split(",")]
    calls, budget = (20, 2.0) if args.quick else (args.calls, args.budget)
    meta = {**machine(), "command": "python bench/serving_bench.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
            "load_start": load_average()}

    def log(message: str) -> None:
        print(f"[serving_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        for n_items in sizes:
            folder = Path(tmp) / str(n_items)
            built = build(n_items, folder, log)
            log(f"{built['catalogue']:,} items: timing in a fresh process")
            result = run_latency_worker("recommend", {
                "exports": built["exports"], "requests": built["requests"], "batches": list(BATCHES),
                "calls": calls, "budget_s": budget, "warmup": 5}, folder, 1800)
            rows.append({"catalogue": built["catalogue"], **result})
    meta["load_end"] = load_average()
    text = render(meta, rows)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
