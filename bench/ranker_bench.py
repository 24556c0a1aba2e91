#!/usr/bin/env python
"""Ranker benchmark: training throughput of the multi-task ranker (rows/s), beside the two-tower
model's (pairs/s) on the same log, in the same process, measured the same way.

The project records the two-tower model's throughput (`run_info.json`, `retrieval_pairs_per_s`)
but not the ranker's, so this benchmark measures it with `bench/fit_clock.py` (one more Keras
callback on every fit: the seconds from an epoch's start to its validation pass; the project's
code is not changed). A SYNTHETIC log (`tools.synthetic.generate`, seed 0) goes through the
project's own path: the data stage (`pipeline.run_stage("data", state)`: read, split), the
retrieval stage (`pipeline.run_stage("retrieval", state)`: the two-tower fit with
`early_stopping: val_loss` and patience = epochs, so it runs every epoch; its validation lists,
a candidate source of the ranking rows), `ranking.stage.prepare_ranking` (the rows of the
validation day and `ranking.extra_days` train days, as `train.py` builds them) and
`ranking.model.train_ranker` (the default multi-task ranker: click, save, purchase; patience =
epochs) `--repeats` times on the same rows. Figures: rows (or pairs) of one epoch / the epoch's training seconds, median of epochs 2..N
(the first traces the graphs), then the median over the fits. Every epoch of the ranker covers
all its training rows (whole lists, `batches.make_list_dataset`).

Usage:
  python bench/ranker_bench.py                          # 200k events, 3 epochs, 2 fits
  python bench/ranker_bench.py --events 100000 --repeats 3 --out /tmp/ranker.md
  python bench/ranker_bench.py --quick --out /tmp/x.md  # smoke run, seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and tools/ import from here on

import fit_clock  # first: it imports shopping_mtl before TensorFlow (TF_USE_LEGACY_KERAS)
import tensorflow as tf

from bench_common import git_commit, machine
from shopping_mtl import pipeline
from shopping_mtl.config import load_config, merge, parse_override
from shopping_mtl.ranking import model as model_lib
from shopping_mtl.ranking.stage import prepare_ranking
from tools.synthetic import generate
TARGET_PAIRS_PER_S = 50_000.0  # the two-tower target on the 2-core machine
FULL = {"events": 200_000, "epochs": 3, "repeats": 2, "extra_days": None}
QUICK = {"events": 3_000, "epochs": 2, "repeats": 1, "extra_days": 0}


def later_epochs(fit: dict, rows: float) -> list[float]:
    """rows / training seconds of each epoch after the first (all of them if there is one)."""
    rates = [rows / e["train_s"] for e in fit["epochs"] if e["train_s"] > 0]
    return rates[1:] or rates


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/ranker_bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, help=f"synthetic events (default {FULL['events']:,})")
    parser.add_argument("--epochs", type=int, help="epochs per fit, both models (default 3; figure: epochs 2..N)")
    parser.add_argument("--repeats", type=int, help="ranker fits on the same rows (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another config override, as train.py --set (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (seconds)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    return parser


def bench_config(folder: Path, spec: Path, epochs: int, extra_days: int | None, sets: list[str]):
    """The run's config: the data and retrieval stages (then the ranking rows and fits, timed
    one by one), `epochs` per fit with patience = epochs, no intervals, no tracking."""
    ranking = {"epochs": epochs, "patience": epochs, "compare_single_task": False}
    if extra_days is not None:
        ranking["extra_days"] = extra_days
    overrides = {
        "run_dir": str(folder / "run"), "data": {"dataset": str(spec)},
        "stages": ["data", "retrieval"],
        "evaluation": {"bootstrap_resamples": 0},
        "tracking": {"enabled": False},
        "retrieval": {"epochs": epochs, "early_stopping": "val_loss", "patience": epochs},
        "ranking": ranking,
    }
    for text in sets:
        overrides = merge(overrides, parse_override(text))
    return load_config(overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    defaults = QUICK if args.quick else FULL
    events = args.events or defaults["events"]
    epochs = args.epochs or defaults["epochs"]
    repeats = args.repeats or defaults["repeats"]
    load_start = os.getloadavg()

    def log(message: str) -> None:
        print(f"[ranker_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    records = fit_clock.install()
    meta = {"command": "python bench/ranker_bench.py " + shlex.join(argv), **machine(), "tf": tf.__version__,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit()}
    with tempfile.TemporaryDirectory(prefix="ranker-bench-") as tmp:
        tmp = Path(tmp)
        spec = generate(tmp / "synthetic", events, seed=0)
        config = bench_config(tmp, spec, epochs, defaults["extra_days"], args.set)
        state = pipeline.prepare_state(config)
        started = time.perf_counter()
        pipeline.run_stage("data", state)
        data_s = time.perf_counter() - started
        split = state.split
        log(f"data in {data_s:.1f}s: train {len(split.train):,}, validation {len(split.validation):,}, "
            f"test {len(split.test):,} events")
        started = time.perf_counter()
        pipeline.run_stage("retrieval", state)
        retrieval_s = time.perf_counter() - started
        pairs = float(state.metrics["retrieval/train_pairs"])
        retrieval_fit = [r for r in records if r["model"] == "TwoTowerModel"][-1]
        log(f"retrieval stage in {retrieval_s:.1f}s (fit {retrieval_fit['wall_s']:.1f}s)")
        started = time.perf_counter()
        ranking = prepare_ranking(state)
        prepare_s = time.perf_counter() - started
        rows = ranking.n_fit_rows
        log(f"ranking rows of {ranking.n_days} days in {prepare_s:.1f}s: {rows:,} training rows, "
            f"{len(ranking.holdout_rows):,} holdout rows")
        features = state.retrieval.data.features
        fits = []
        for r in range(repeats):
            model_lib.train_ranker(features, ranking.fit_inputs, ranking.holdout_inputs, config.ranking, config.seed)
            fit = [rec for rec in records if rec["model"] == "MultiTaskRanker"][-1]
            fits.append(fit)
            rates = later_epochs(fit, rows)
            log(f"ranker fit {r + 1}/{repeats}: epochs "
                + ", ".join(f"{rows / e['train_s']:,.0f}" for e in fit["epochs"])
                + f" rows/s -> {statistics.median(rates):,.0f}")
    meta["load_end"] = os.getloadavg()
    meta["load_start"] = load_start
    retrieval_rate = statistics.median(later_epochs(retrieval_fit, pairs))
    per_fit = [statistics.median(later_epochs(f, rows)) for f in fits]
    ranker_rate = statistics.median(per_fit)
    steps = fits[0]["epochs"][0]["steps"]
    text = render(meta, {
        "events": events, "epochs": epochs, "repeats": repeats, "split": split, "pairs": pairs, "rows": rows,
        "holdout_rows": len(ranking.holdout_rows), "days": ranking.n_days, "prepare_s": prepare_s,
        "retrieval_rate": retrieval_rate, "retrieval_fit": retrieval_fit, "ranker_rate": ranker_rate,
        "per_fit": per_fit, "fits": fits, "steps": steps, "batch": config.ranking.batch_size,
        "rbatch": config.retrieval.batch_size, "architecture": config.ranking.architecture,
        "listwise": config.ranking.listwise_weight})
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        log(f"wrote {args.out}")
    return 0


def render(meta: dict, f: dict) -> str:
    def load(values) -> str:
        return " ".join(f"{x:.2f}" for x in values)

    split = f["split"]
    ratio = f["ranker_rate"] / f["retrieval_rate"] if f["retrieval_rate"] else float("nan")
    ranker_epoch_s = statistics.median(e["train_s"] for fit in f["fits"] for e in fit["epochs"][1:] or fit["epochs"])
    lines = [
        "## Training throughput: ranker beside the two-tower model",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores; Python {meta['python']}, TensorFlow {meta['tf']}",
        f"- load average (1/5/15 min) at start / end: {load(meta['load_start'])} / {load(meta['load_end'])}",
        f"- commit: {meta['commit']}",
        f"- data: SYNTHETIC log of {f['events']:,} events (seed 0): train {len(split.train):,}, validation "
        f"{len(split.validation):,}, test {len(split.test):,} events",
        f"- {f['epochs']} epochs per fit (patience = epochs: never stops early); ranker fits: {f['repeats']} on the "
        "same rows; figures: median of epochs 2..N, then median over fits",
        "",
        "| model | unit | measured | baseline | measured / baseline | rows per epoch | batch | training s per epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| two-tower (retrieval), same log, 1 fit | pairs/s | {f['retrieval_rate']:,.0f} | {TARGET_PAIRS_PER_S:,.0f} (issue target) | "
        f"{f['retrieval_rate'] / TARGET_PAIRS_PER_S:.2f} | {f['pairs']:,.0f} | {f['rbatch']} | "
        f"{statistics.median(e['train_s'] for e in f['retrieval_fit']['epochs'][1:] or f['retrieval_fit']['epochs']):.2f} |",
        f"| multi-task ranker ({f['architecture']}, 3 heads) | rows/s | {f['ranker_rate']:,.0f} | "
        f"{f['retrieval_rate']:,.0f} (two-tower pairs/s above) | {ratio:.2f} | {f['rows']:,} | "
        f"{f['batch']} (whole lists, {f['steps']} steps) | {ranker_epoch_s:.2f} |",
        "",
        f"Ranker per fit (median of epochs 2..N): {', '.join(f'{x:,.0f}' for x in f['per_fit'])} rows/s. "
        f"Its rows are the merged candidates of {f['days']} days (validation day and train days before it, "
        f"`prepare_ranking`: {f['prepare_s']:.1f} s), {f['holdout_rows']:,} held-out rows besides; "
        f"listwise weight {f['listwise']:g}. The issue sets no target for the ranker: the two-tower figure "
        "on the same log is its baseline (a ranker row is one candidate with its user-item features, "
        "a two-tower pair one (query state, item) with in-batch negatives). Seconds: from an epoch's "
        "start to its validation pass (`bench/fit_clock.py`; the project records no ranker throughput).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
