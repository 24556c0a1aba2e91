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
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project imports from here on

import numpy as np
import pandas as pd

from bench_common import git_commit, load_average, machine
from shopping_mtl import pipeline
from shopping_mtl.config import load_config
from shopping_mtl.evaluation import lists_by_user, score_lists, user_metrics

DATASETS = {
    "ecomm": "EComm (Alibaba EComm sample, bundled in data/ecomm)",
    "taobao": "Taobao (UserBehavior head and tail files)",
    "taobao_timeslice": "Taobao two-hour slice",
}
# train.py flags of a --quick run: tiny data, short fits, fewer resamples.
QUICK_FLAGS = ["--max-events", "3000", "--set", "retrieval.epochs=2", "--set", "ranking.epochs=2",
               "--set", "ranking.extra_days=0", "--set", "evaluation.bootstrap_resamples=100"]
VARIANTS = [("", "all items"), ("excl_seen/", "excl_seen: the user's train+validation items removed from the list"),
            ("new_gt/", "new_gt: seen items removed from the list and the ground truth")]
GT_TYPES = [("", "any engagement"), ("save/", "saves"), ("purchase/", "purchases")]
BASELINES = ("popularity", "user_history", "covisit")
NDCG_TARGET = 1.15  # README: the final list's NDCG@10 over the user-history baseline's, the project's aim


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


def extra_figures(run_dir: Path) -> dict:
    """Per-source figures of the candidate set, and paired ratios of the final list over each
    baseline and over retrieval order; also checks that the re-scored lists give metrics.json's
    figures (the same truth)."""
    config = load_config(run_dir / "config.yaml")
    ev = config.evaluation
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp:
        # The run's data stage again (read, split, ground truth), into a scratch run folder.
        state = pipeline.prepare_state(dataclasses.replace(config, run_dir=tmp))
        pipeline.run_stage("data", state)
    truth = state.truth
    out: dict = {"metrics": {}, "sources": {}, "paired": {}}
    size = config.candidates.size
    ks = sorted({*ev.ks, size})
    path = run_dir / "candidate_set.parquet"
    if path.is_file():
        merged = pd.read_parquet(path)
        n_users = max(len(truth.users), 1)
        for name, quota in config.candidates.quotas.items():
            part = merged[merged["source"] == name].copy()
            part["rank"] = part["source_rank"]
            out["metrics"].update(score_lists(part, truth, f"source/{name}", ks, ev.bootstrap_resamples,
                                              ev.bootstrap_seed))
            out["sources"][name] = {"quota": int(quota), "items_per_user": len(part) / n_users,
                                    "share": len(part) / max(len(merged), 1)}
        out["size"] = size
    # Paired ratios: the final list over each other list, the same resampled users for both.
    lists = {"pipeline": run_dir / "recommendations.parquet", "retrieval_order": path,
             **{f"baseline/{b}": run_dir / "baselines" / f"{b}.parquet" for b in BASELINES}}
    frames = {name: lists_by_user(pd.read_parquet(p)) for name, p in lists.items() if p.is_file()}
    if "pipeline" not in frames:
        return out
    for variant, _ in VARIANTS:
        for gt_type, _ in GT_TYPES:
            relevant = truth.for_variant(gt_type.strip("/") or "any", variant.strip("/") or "all")
            if not relevant:
                continue
            per_user = {}
            for name, ranked in frames.items():
                if variant:
                    ranked = {u: [i for i in items if i not in truth.seen.get(u, frozenset())]
                              for u, items in ranked.items()}
                per_user[name] = user_metrics(ranked, relevant, ev.ks)
            n = len(relevant)
            rng = np.random.default_rng(ev.bootstrap_seed)
            idx = rng.integers(0, n, size=(max(ev.bootstrap_resamples, 1), n))
            for metric, values in per_user["pipeline"].items():
                key = f"{variant}{gt_type}{metric}"
                for other, figures in per_user.items():
                    if other == "pipeline":
                        continue
                    a, b = values, figures[metric]
                    ratio = a.mean() / b.mean() if b.mean() > 0 else math.nan
                    with np.errstate(divide="ignore", invalid="ignore"):
                        boot = a[idx].mean(axis=1) / b[idx].mean(axis=1)
                    boot = boot[np.isfinite(boot)]
                    low, high = (np.percentile(boot, [2.5, 97.5]) if len(boot) and ev.bootstrap_resamples
                                 else (math.nan, math.nan))
                    out["paired"][(key, other)] = (float(ratio), float(low), float(high), float(b.mean()))
                out["paired"][(key, "pipeline")] = (1.0, 1.0, 1.0, float(values.mean()))
    return out


# --------------------------------------------------------------------------------------------
# Rendering


def cell(m: dict, key: str, digits: int = 4) -> str:
    if key not in m:
        return "-"
    value, low, high = m[key], m.get(f"{key}/ci95_low"), m.get(f"{key}/ci95_high")
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def plain(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def list_rows(m: dict, sources: dict) -> list[tuple[str, str]]:
    rows = [("pipeline", "final list (ranked)"), ("retrieval", "two-tower model alone"),
            ("retrieval_order", "candidate set in retrieval order, top 100"),
            ("candidate_set", "candidate set, whole (only @100, @size)")]
    rows += [(f"source/{name}", f"source {name}: its part of the set*") for name in sources]
    rows += [(f"baseline/{b}", f"baseline {b}") for b in BASELINES]
    return [(key, label) for key, label in rows if any(k.startswith(key + "/") for k in m)]


def metric_columns(m: dict) -> list[str]:
    """recall@k and hitrate@k for the ks of the final list, then ndcg@k: EVALUATION.md's metrics."""
    names = {k.split("/", 1)[1] for k in m if k.startswith("pipeline/") and
             re.fullmatch(r"pipeline/(recall|hitrate|ndcg)@\d+", k)}
    order = {"recall": 0, "hitrate": 1, "ndcg": 2}
    return sorted(names, key=lambda n: (order[n.split("@")[0]], int(n.split("@")[1])))


def fit_speeds(clock: list[dict], m: dict) -> dict:
    """Throughput from the fit clock: rows per epoch / training seconds, median of epochs 2..N."""
    def rate(fit, rows):
        rates = [rows / e["train_s"] for e in fit["epochs"] if e["train_s"] > 0]
        rates = rates[1:] or rates
        return statistics.median(rates) if rates else math.nan

    out = {}
    pairs, rows = m.get("retrieval/train_pairs"), m.get("ranker/training_rows")
    towers = [f for f in clock if f["model"] == "TwoTowerModel"]
    rankers = [f for f in clock if f["model"] == "MultiTaskRanker"]
    if towers and pairs:
        out["retrieval"] = (rate(towers[-1], pairs), len(towers[-1]["epochs"]))
    multi = [f for f in rankers if not f.get("tasks") or len(f["tasks"]) > 1]
    single = [f for f in rankers if f.get("tasks") and len(f["tasks"]) == 1]
    if multi and rows:
        out["ranker"] = (rate(multi[0], rows), len(multi[0]["epochs"]), multi[0]["wall_s"])
    if single and rows:
        out["single"] = (statistics.median(rate(f, rows) for f in single), len(single),
                         sum(f["wall_s"] for f in single))
    return out


def render_dataset(name: str, run_dir: Path, meta: dict, m: dict, info: dict, extra: dict,
                   clock: list | None) -> tuple[list[str], dict]:
    """The markdown of one dataset and its summary row."""
    sources = extra.get("sources", {})
    m = {**m, **extra.get("metrics", {})}
    lines = [f"### {name}: {DATASETS.get(name, name)}", ""]
    if meta.get("reused"):
        lines.append(f"- run folder: `{rel(run_dir)}`, REUSED (`--reuse`): metrics.json of {meta['date']}")
        if meta.get("command"):
            lines.append(f"- it was trained by: `{meta['command']}`")
    else:
        lines.append(f"- command: `{meta['command']}`")
    if meta.get("train_command"):
        lines.append(f"- the figures are those of `{meta['train_command']}` (fit_clock only adds a timing "
                     "callback)")
    if "wall_s" in meta:
        lines.append(f"- trained {meta['date']} at commit {meta.get('commit', 'not recorded')}, wall "
                     f"{meta['wall_s']:.0f} s; load average (1/5/15 min) at start / end: {meta['load_start']} / "
                     f"{meta['load_end']}; log `{meta.get('log', '-')}`")
    split = info.get("split", {})
    lines += [
        f"- data: {m.get('data/events_used', 0):,.0f} events, {m.get('data/distinct_users', 0):,.0f} users, "
        f"{m.get('data/distinct_items', 0):,.0f} items; split by {split.get('method', '?')}: train "
        f"{m.get('split/train_events', 0):,.0f}, validation {m.get('split/validation_events', 0):,.0f}, test "
        f"{m.get('split/test_events', 0):,.0f} events (test from {split.get('test_start', '?')})",
        f"- test users: {m.get('eval/test_users', 0):,.0f}; cold-item share of the test ground truth (never "
        f"in train): {m.get('eval/cold_item_share', math.nan):.3f}, never seen before the test day: "
        f"{m.get('eval/unseen_before_test_share', math.nan):.3f}",
        f"- data fingerprint: `{str(info.get('data_fingerprint', '?'))[:16]}`",
        "",
    ]
    columns = metric_columns(m)
    rows = list_rows(m, sources)
    for v_key, v_label in VARIANTS:
        for t_key, t_label in GT_TYPES:
            users = m.get(f"pipeline/{v_key}{t_key}users")
            lines += [f"#### Lists, {t_label}, {v_label} ({users:,.0f} users)" if users is not None
                      else f"#### Lists, {t_label}, {v_label}", ""]
            lines += ["| list | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
            for key, label in rows:
                cells = [cell(m, f"{key}/{v_key}{t_key}{c}") for c in columns]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["Each cell: value [95% bootstrap interval over users]; `-`: not recorded for that list (the "
              "candidate set is scored at 100 and at its full size only). The candidate set in retrieval order starts with the "
              "two-tower source (first in the merge, quota 100 or more by default), so its top 100 is the two-tower "
              "model's and the two rows agree. *Computed by this benchmark, not "
              "recorded by the project: each source's rows of `candidate_set.parquet` in the source's own "
              "order, scored with `shopping_mtl.evaluation.score_lists` on the same ground truth and "
              "resamples; the sources partition the set (an item belongs to the first source that brought "
              "it), so their recalls at full depth add up to the whole set's.", ""]

    # The candidate set and its sources at full depth.
    size = extra.get("size")
    if size and sources:
        lines += [f"#### Candidate set and its sources (full depth, @{size})", "",
                  "| source | quota | items per user | share of the set | recall | hit rate | new_gt recall | "
                  "purchase recall | NDCG@10 (own order) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for src, s in sources.items():
            p = f"source/{src}"
            lines.append(f"| {src} | {s['quota']} | {s['items_per_user']:.1f} | {s['share']:.3f} | "
                         f"{cell(m, f'{p}/recall@{size}')} | {cell(m, f'{p}/hitrate@{size}')} | "
                         f"{cell(m, f'{p}/new_gt/recall@{size}')} | {cell(m, f'{p}/purchase/recall@{size}')} | "
                         f"{cell(m, f'{p}/ndcg@10')} |")
        total = sum(m.get(f"source/{s}/recall@{size}", 0.0) for s in sources)
        lines.append(f"| **whole set** | {size} | {m.get('candidate_set/mean_size', math.nan):.1f} | 1.000 | "
                     f"{cell(m, f'candidate_set/recall@{size}')} | {cell(m, f'candidate_set/hitrate@{size}')} | "
                     f"{cell(m, f'candidate_set/new_gt/recall@{size}')} | "
                     f"{cell(m, f'candidate_set/purchase/recall@{size}')} | {cell(m, 'candidate_set/ndcg@10')} |")
        lines += ["", f"Sum of the sources' recall: {total:.4f} (the whole set's, from metrics.json: "
                  f"{m.get(f'candidate_set/recall@{size}', math.nan):.4f}). Shares from metrics.json: "
                  + ", ".join(f"{s} {m.get(f'candidate_set/share/{s}', math.nan):.3f}" for s in sources) + ".", ""]

    # The ranker's heads.
    heads = [h for h in ("click", "save", "purchase") if f"ranker/{h}/auc" in m]
    if heads:
        lines += ["#### Ranker heads (test candidates)", "",
                  "| head | AUC | GAUC | log loss | ECE before Platt | ECE after Platt | positive rate | "
                  "single-task AUC | single-task GAUC | AUC multi - single |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for h in heads:
            auc, single = m.get(f"ranker/{h}/auc"), m.get(f"ranker/single_task/{h}/auc")
            diff = f"{auc - single:+.4f}" if single is not None else "-"
            lines.append(f"| {h} | {plain(auc)} | {plain(m.get(f'ranker/{h}/gauc'))} | "
                         f"{plain(m.get(f'ranker/{h}/logloss'))} | {plain(m.get(f'ranker/{h}/ece_uncalibrated'))} | "
                         f"{plain(m.get(f'ranker/{h}/ece'))} | {plain(m.get(f'ranker/{h}/positive_rate'), 5)} | "
                         f"{plain(single)} | {plain(m.get(f'ranker/single_task/{h}/gauc'))} | {diff} |")
        lines += ["", f"Ranker: {m.get('ranker/training_rows', 0):,.0f} training rows, "
                  f"{m.get('ranker/epochs', 0):.0f} epochs; held-out users' NDCG@10 (validation, not test): "
                  f"{plain(m.get('ranker/holdout_ndcg@10'))}, the same lists ordered by the engagement feature "
                  f"alone {plain(m.get('ranker/holdout_reference_ndcg@10'))}; value weights "
                  + ", ".join(f"{h} {m.get(f'ranker/value_weight/{h}', math.nan):g}" for h in heads)
                  + ". The project records no intervals for the head metrics (one figure each).", ""]

    # The final list against the best baseline.
    paired = extra.get("paired", {})
    summary = {"dataset": name, "users": m.get("eval/test_users"), "cold": m.get("eval/cold_item_share")}
    if paired:
        keys = [c for c in columns] + [f"{v}{t}{c}" for v, _ in VARIANTS for t, _ in GT_TYPES
                                       if v or t for c in ("recall@100", "ndcg@10")]
        lines += ["#### The final list against the best baseline", "",
                  "| metric | users | final list | best baseline | its value | final / best [95% CI, paired] | "
                  "final / retrieval order | target |", "|---|---:|---:|---|---:|---:|---:|---|"]
        for key in keys:
            if f"pipeline/{key}" not in m:
                continue
            scored = {b: paired[(key, f"baseline/{b}")] for b in BASELINES if (key, f"baseline/{b}") in paired}
            if not scored:
                continue
            best = max(scored, key=lambda b: scored[b][3])
            ratio, low, high, value = scored[best]
            users = m.get(f"pipeline/{key.rsplit('/', 1)[0]}/users" if "/" in key else "pipeline/users")
            order = paired.get((key, "retrieval_order"))
            target = ""
            if key == "ndcg@10":
                target = f">= {NDCG_TARGET}x (project aim, README): {'met' if ratio >= NDCG_TARGET else 'NOT met'}"
            ci = f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else ""
            lines.append(f"| {key} | {users:,.0f} | {m[f'pipeline/{key}']:.4f} | {best} | {value:.4f} | "
                         f"{'-' if math.isnan(ratio) else f'{ratio:.2f}'}{ci} | "
                         f"{'-' if order is None or math.isnan(order[0]) else f'{order[0]:.2f}'} | {target} |")
            if key == "ndcg@10":
                summary.update(final_ndcg=m[f"pipeline/{key}"], best=best, best_ndcg=value, ratio=ratio,
                               ratio_ci=(low, high))
        lines += ["", "Best baseline: the baseline with the highest figure for that metric. The ratio's interval is a "
                  "paired bootstrap over users (the same resampled users for both lists; resamples and seed of the "
                  "run's config), computed by this benchmark from `recommendations.parquet` and "
                  "`baselines/*.parquet`; `final / retrieval order`: what ranking adds over the merged set's "
                  "order.", ""]
        # The re-scored lists must give metrics.json's own figures (the same ground truth).
        off = [f"{other}/{key}: {got:.6f} re-scored, {m[f'{other}/{key}']:.6f} in metrics.json"
               for (key, other), (_, _, _, got) in paired.items()
               if f"{other}/{key}" in m and abs(got - m[f"{other}/{key}"]) > 1e-6]
        for check in off[:5]:
            lines.append(f"- WARNING, the benchmark's scoring disagrees with the run's: {check}")
        if off:
            lines.append("")
    summary["two_tower_new"] = m.get("retrieval/new_gt/recall@100")
    summary["set_recall"] = m.get(f"candidate_set/recall@{size}") if size else None
    summary["set_size"] = m.get("candidate_set/mean_size")

    # Training speed of the run.
    timings = info.get("timings_s", {})
    speeds = fit_speeds(clock, m) if clock else {}
    lines += ["#### Training speed of this run", "",
              "| figure | value | how |", "|---|---:|---|"]
    if "retrieval_pairs_per_s" in info:
        lines.append(f"| two-tower pairs/s (project) | {info['retrieval_pairs_per_s']:,.0f} | `run_info.json` "
                     "`retrieval_pairs_per_s`: median over epochs of training pairs / epoch training time |")
    if "retrieval" in speeds:
        r, n = speeds["retrieval"]
        lines.append(f"| two-tower pairs/s, epochs 2..N | {r:,.0f} | fit clock, {n} epochs, "
                     f"{m.get('retrieval/train_pairs', 0):,.0f} pairs per epoch |")
    if "ranker" in speeds:
        r, n, wall = speeds["ranker"]
        lines.append(f"| ranker rows/s (multi-task), epochs 2..N | {r:,.0f} | fit clock: "
                     f"{m.get('ranker/training_rows', 0):,.0f} training rows / an epoch's training seconds; "
                     f"{n} epochs, fit wall {wall:.1f} s |")
    if "single" in speeds:
        r, n, wall = speeds["single"]
        lines.append(f"| ranker rows/s (single-task models) | {r:,.0f} | fit clock, median of {n} fits "
                     f"(wall {wall:.1f} s together) |")
    if timings.get("ranking_fit") and m.get("ranker/training_rows"):
        approx = m["ranker/training_rows"] * m.get("ranker/epochs", 0) / timings["ranking_fit"]
        lines.append(f"| ranker rows/s from run_info alone | {approx:,.0f} | training_rows x epochs / "
                     f"`timings_s.ranking_fit` ({timings['ranking_fit']:.1f} s): a lower bound, as that "
                     "timer spans the whole ranking stage (rows of every day, the fit, test scoring, "
                     "single-task fits) |")
    stage_s = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    lines.append(f"| stage seconds | {info.get('wall_s', math.nan):.1f} | `run_info.json` wall; "
                 f"`timings_s`: {stage_s} |")
    lines.append("")
    summary["ranker_rows_s"] = speeds.get("ranker", (None,))[0]
    summary["pairs_s"] = info.get("retrieval_pairs_per_s")
    return lines, summary


def render(meta: dict, blocks: list[list[str]], summaries: list[dict], failures: list[str]) -> str:
    lines = [
        "## Quality benchmark",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores; Python {meta['python']}",
        f"- load average (1/5/15 min) at start / end: {meta['load_start']} / {meta['load_end']}",
        f"- commit: {meta['commit']}",
        "- protocol: `docs/EVALUATION.md` (split by calendar day, test = last day; Recall@K, HitRate@K, "
        "NDCG@10; any engagement, save, purchase; all items, excl_seen, new_gt; 95% bootstrap intervals over "
        "users, the resamples and seed of each run's config)",
        "",
    ]
    if summaries:
        lines += ["### Summary", "",
                  "| dataset | test users | cold-item share | final list NDCG@10 | best baseline NDCG@10 | "
                  "final / best [95% CI] | two-tower new_gt recall@100 | candidate set recall (mean size) | "
                  "two-tower pairs/s | ranker rows/s |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        for s in summaries:
            ratio = "-"
            if s.get("ratio") is not None and not math.isnan(s["ratio"]):
                low, high = s["ratio_ci"]
                ratio = f"{s['ratio']:.2f}" + (f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else "")
            best = f"{s['best_ndcg']:.4f} ({s['best']})" if s.get("best") else "-"
            size = f"{s['set_recall']:.4f} ({s['set_size']:.0f})" if s.get("set_recall") is not None else "-"
            lines.append(f"| {s['dataset']} | {s['users']:,.0f} | {plain(s.get('cold'), 3)} | "
                         f"{plain(s.get('final_ndcg'))} | {best} | {ratio} | {plain(s.get('two_tower_new'))} | "
                         f"{size} | {'-' if s.get('pairs_s') is None else format(s['pairs_s'], ',.0f')} | "
                         f"{'-' if s.get('ranker_rows_s') is None else format(s['ranker_rows_s'], ',.0f')} |")
        lines.append("")
    for failure in failures:
        lines += [failure, ""]
    for block in blocks:
        lines += block
    return "\n".join(lines)


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
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: train.py " + " ".join(QUICK_FLAGS))
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    sys.path.insert(0, str(ROOT / "bench"))

    meta = {"command": shlex.join([python_cmd(), "bench/quality_bench.py", *argv]), **machine(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
            "load_start": load_average()}
    extra_flags = (QUICK_FLAGS if args.quick else []) + [x for s in args.set for x in ("--set", s)]
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
            log(f"{name}: scoring the candidate sources and the paired ratios")
            extra = extra_figures(run_dir)
            block, summary = render_dataset(name, run_dir, run_meta, metrics, info, extra, clock)
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
