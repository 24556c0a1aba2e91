#!/usr/bin/env python
"""Quality benchmark: every metric of `docs/EVALUATION.md` on EComm and Taobao, for the
final list, the two-tower model alone, the merged candidate set and each of its sources, and each
baseline, with 95% bootstrap intervals; the ranker's heads; the final list against the best
baseline; and the runs' training speed.

For each dataset `train.py` runs once into `<runs-dir>/bench-<dataset>` (the whole pipeline with
the project's defaults and the dataset spec's own `defaults:`; MLflow tracking off, as a
benchmark's models are no candidates for the registry), through `bench/fit_clock.py`, which only
adds a timing callback to every Keras fit (the project records no ranker throughput). With
`--reuse` an existing run folder's `metrics.json` is read instead of training.

The tables come from the run's `metrics.json`, except what the project does not record, which
this script computes from the run folder's lists with the project's own scoring
(`shopping_mtl.evaluation`, the same ground truth, the same bootstrap resamples and seed):
- each candidate source's part of the merged candidate set (`candidate_set.parquet`, the rows
  whose `source` is that source, in its own order): what each source brings to the ranker;
- the final list over the best baseline as a ratio with a paired 95% bootstrap interval (both
  lists scored on the same resampled users);
- training throughput of the ranker (from `fit_clock.json`).

Usage:
  python bench/quality_bench.py                                  # both datasets, ~10 min on 2 cores
  python bench/quality_bench.py --datasets ecomm --reuse --out /tmp/q.md
  python bench/quality_bench.py --quick --out /tmp/x.md          # smoke run: 3,000 events each

The markdown is rendered by `bench/quality_report.py` (standard library only) from the run's
files and the figures computed here.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project imports from here on

import pandas as pd

import gbdt_reference
from bench_common import git_commit, load_average, machine
from quality_report import BASELINES, render, render_dataset
from shopping_mtl import pipeline
from shopping_mtl.config import load_config
from shopping_mtl.data.split import fold_cuts
from shopping_mtl.data.stage import fold_data
from shopping_mtl.evaluation import pool, ratio_interval, summarize, user_values

# train.py flags of a --quick run: tiny data, short fits, fewer resamples.
QUICK_FLAGS = ["--max-events", "3000", "--set", "retrieval.epochs=2", "--set", "ranking.epochs=2",
               "--set", "ranking.extra_days=0", "--set", "evaluation.bootstrap_resamples=100"]


def rel(path: str | Path) -> str:
    """A path relative to the repository root when it is inside it."""
    try:
        return os.path.relpath(path, ROOT) if Path(os.path.abspath(path)).is_relative_to(ROOT) else str(path)
    except (OSError, ValueError):
        return str(path)


def python_cmd() -> str:
    return rel(sys.executable)


def log(message: str) -> None:
    print(f"[quality_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Running train.py


def train(dataset: str, run_dir: Path, extra: list[str], timeout_s: float, commit: str) -> dict:
    """One `train.py` run through the fit clock; returns what the report says of it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    train_args = ["train.py", "--dataset", dataset, "--run-dir", rel(run_dir),
                  "--set", "tracking.enabled=false", *extra]
    clock = run_dir / "fit_clock.json"
    clock.unlink(missing_ok=True)
    argv = [sys.executable, "bench/fit_clock.py", "--out", rel(clock), "--", *train_args]
    command = shlex.join([python_cmd(), *argv[1:]])
    meta = {"command": command, "train_command": shlex.join(["python", *train_args]),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_start": load_average(), "commit": commit, "reused": False}
    log(f"{dataset}: {command}")
    started = time.time()
    log_path = run_dir / "bench_train.log"
    with open(log_path, "w") as out:
        try:
            proc = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    meta.update(wall_s=time.time() - started, load_end=load_average(), exit=code, log=rel(log_path))
    (run_dir / "bench_command.json").write_text(json.dumps(meta, indent=1))
    if code != 0 or not (run_dir / "metrics.json").is_file() or (run_dir / "metrics.json").stat().st_mtime < started:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"train.py on {dataset} failed (exit {code}); the end of {rel(log_path)}:\n{tail}")
    log(f"{dataset}: trained in {meta['wall_s']:.0f}s")
    return meta


def reused(run_dir: Path) -> dict:
    """What the report says of an existing run folder (`--reuse`): the date of its metrics.json
    and, where `bench_command.json` was left by an earlier `train`, that run's record."""
    if not (run_dir / "metrics.json").is_file():
        raise RuntimeError(f"--reuse: {rel(run_dir)} holds no metrics.json")
    meta = {"reused": True, "date": dt.datetime.fromtimestamp((run_dir / "metrics.json").stat().st_mtime,
                                                              dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    saved = run_dir / "bench_command.json"
    if saved.is_file():
        meta.update({k: v for k, v in json.loads(saved.read_text()).items() if k not in ("reused", "date")})
    return meta


# --------------------------------------------------------------------------------------------
# Figures the project does not record, from the run folder's lists


def fold_truths(config) -> list[tuple[str | None, object]]:
    """Each fold's name (None: a run of one test day) and test users' ground truth, from the
    run's data stage again (read, cut, split) in a scratch folder."""
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp:
        state = pipeline.prepare_state(dataclasses.replace(config, run_dir=tmp))
        pipeline.run_stage("data", state)
        ev = config.evaluation
        folds = fold_cuts(state.dataset.events, ev.test_days, config.split.min_days, config.split.quantile)
        if len(folds) == 1:
            return [(None, state.truth)]
        return [(fold.name, fold_data(state, state.data, fold).truth) for fold in folds]


def extra_figures(run_dir: Path) -> dict:
    """Per-source figures of the candidate set, and paired ratios of the final list over each
    baseline, retrieval order and the GBDT reference (where `gbdt.parquet` was written), pooled
    over the run's folds with the project's own scoring (`evaluation.user_values`, `pool`,
    `ratio_interval`); also checks that the re-scored lists give metrics.json's figures."""
    config = load_config(run_dir / "config.yaml")
    ev = config.evaluation
    size = config.candidates.size
    ks = sorted({*ev.ks, size})
    lists = {"pipeline": "recommendations.parquet", "retrieval_order": "candidate_set.parquet",
             "gbdt": "gbdt.parquet", **{f"baseline/{b}": f"baselines/{b}.parquet" for b in BASELINES}}
    fold_values, source_counts, n_users = [], {}, 0
    for name, truth in fold_truths(config):
        folder = run_dir if name is None else run_dir / "folds" / name
        values = {}
        path = folder / "candidate_set.parquet"
        if path.is_file():
            merged = pd.read_parquet(path)
            for source in config.candidates.quotas:
                part = merged[merged["source"] == source].copy()
                part["rank"] = part["source_rank"]
                values.update(user_values(part, truth, f"source/{source}", ks))
                rows, total = source_counts.get(source, (0, 0))
                source_counts[source] = (rows + len(part), total + len(merged))
            n_users += len(truth.users)
        for key, file in lists.items():
            if (folder / file).is_file():
                values.update(user_values(pd.read_parquet(folder / file), truth, key, ev.ks))
        fold_values.append(values)
    pooled = pool(fold_values)
    out: dict = {"metrics": {}, "sources": {}, "paired": {}, "size": size}
    out["metrics"] = summarize({k: v for k, v in pooled.items() if k.startswith(("source/", "gbdt/"))},
                               ev.bootstrap_resamples, ev.bootstrap_seed)
    for source, quota in config.candidates.quotas.items():
        if source in source_counts:
            rows, total = source_counts[source]
            out["sources"][source] = {"quota": int(quota), "items_per_user": rows / max(n_users, 1),
                                      "share": rows / max(total, 1)}
    # Paired ratios: the final list over each other list, the same resampled users for both.
    for key, values in pooled.items():
        if not key.startswith("pipeline/") or not len(values):
            continue
        rest = key[len("pipeline/"):]
        for other in lists:
            theirs = pooled.get(f"{other}/{rest}")
            if other == "pipeline" or theirs is None or not len(theirs):
                continue
            ratio, low, high = ratio_interval(values, theirs, ev.bootstrap_resamples, ev.bootstrap_seed)
            out["paired"][(rest, other)] = (ratio, low, high, float(theirs.mean()))
        out["paired"][(rest, "pipeline")] = (1.0, 1.0, 1.0, float(values.mean()))
    return out


# --------------------------------------------------------------------------------------------
# The command line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="bench/quality_bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="ecomm,taobao", help="comma-separated (default ecomm,taobao)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs",
                        help="run folders go to RUNS_DIR/bench-<dataset> (default runs/; --quick: "
                        "bench-quick-<dataset>)")
    parser.add_argument("--reuse", action="store_true",
                        help="read an existing run folder's metrics.json instead of training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to train.py as --set (repeatable)")
    parser.add_argument("--timeout", type=float, default=60, help="minutes per train.py run (60)")
    parser.add_argument("--test-days", type=int,
                        help="rolling-origin folds (evaluation.test_days; default 3, --quick 2: the last "
                        "days, each a test day in turn, figures pooled over them)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: train.py " + " ".join(QUICK_FLAGS))
    parser.add_argument("--no-gbdt", action="store_true",
                        help="leave out the LightGBM LambdaRank reference (bench/gbdt_reference.py), fitted per "
                        "fold on the ranker's rows and features after each run")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    sys.path.insert(0, str(ROOT / "bench"))

    meta = {"command": shlex.join([python_cmd(), "bench/quality_bench.py", *argv]), **machine(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
            "load_start": load_average()}
    test_days = args.test_days or (2 if args.quick else 3)
    extra_flags = (["--set", f"evaluation.test_days={test_days}"] + (QUICK_FLAGS if args.quick else [])
                   + [x for s in args.set for x in ("--set", s)])
    blocks, summaries, failures = [], [], []
    for name in datasets:
        run_dir = args.runs_dir / (f"bench-quick-{name}" if args.quick else f"bench-{name}")
        try:
            run_meta = (reused(run_dir) if args.reuse
                        else train(name, run_dir, extra_flags, args.timeout * 60, git_commit()))
            metrics = json.loads((run_dir / "metrics.json").read_text())
            info = json.loads((run_dir / "run_info.json").read_text())
            clock_path = run_dir / "fit_clock.json"
            clock = json.loads(clock_path.read_text()) if clock_path.is_file() else None
            if not args.no_gbdt and (args.reuse is False or not any(run_dir.rglob("gbdt.parquet"))):
                log(f"{name}: the GBDT reference, per fold (the stages up to candidates again, then LightGBM)")
                started = time.time()
                gbdt = gbdt_reference.gbdt_for_run(run_dir)
                run_meta["gbdt"] = {"wall_s": time.time() - started, "folds": gbdt}
            log(f"{name}: scoring the candidate sources and the paired ratios")
            extra = extra_figures(run_dir)
            block, summary = render_dataset(name, rel(run_dir), run_meta, metrics, info, extra, clock)
            blocks.append(block)
            summaries.append(summary)
        except Exception as err:  # one dataset's failure leaves the others' tables
            log(f"{name}: FAILED: {err}")
            failures.append(f"**{name}: FAILED**\n\n```\n{str(err)[-3000:]}\n```")
    meta["load_end"] = load_average()
    text = render(meta, blocks, summaries, failures)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        log(f"wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
