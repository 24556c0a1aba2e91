"""The quality bench's report: markdown tables from a dataset's run files (`metrics.json`,
`run_info.json`, the fit clock) and the figures the bench computed itself (the candidate sources'
metrics, paired ratios of the final list over the other lists). One block per dataset (its run,
the lists under every variant and ground truth, the candidate set and its sources, the ranker's
heads, the final list against the best baseline, the training speed) and a summary row each;
`render` puts them under the bench's header. Standard library only: no figure is computed here
beyond the fit clock's throughput, and nothing is read from disk."""

from __future__ import annotations

import math
import re
import statistics

DATASETS = {
    "ecomm": "EComm (Alibaba EComm sample, bundled in data/ecomm)",
    "taobao": "Taobao (UserBehavior head and tail files)",
    "taobao_timeslice": "Taobao two-hour slice",
}
# (metric key prefix, label): the list variants and ground-truth types of docs/EVALUATION.md.
VARIANTS = [("", "all items"), ("excl_seen/", "excl_seen: the user's train+validation items removed from the list"),
            ("new_gt/", "new_gt: seen items removed from the list and the ground truth")]
GT_TYPES = [("", "any engagement"), ("save/", "saves"), ("purchase/", "purchases")]
BASELINES = ("popularity", "user_history", "covisit")
NDCG_TARGET = 1.15  # README: the final list's NDCG@10 over the user-history baseline's, the project's aim


def cell(m: dict, key: str, digits: int = 4) -> str:
    """`m[key]` with its 95% interval (`KEY/ci95_low`, `KEY/ci95_high`) where recorded; "-" when
    `key` is not in `m`."""
    if key not in m:
        return "-"
    value, low, high = m[key], m.get(f"{key}/ci95_low"), m.get(f"{key}/ci95_high")
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def plain(value, digits: int = 4) -> str:
    """A figure without interval; "-" for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def list_rows(m: dict, sources: dict) -> list[tuple[str, str]]:
    """(metric key prefix, row label) of every list that has a figure in `m`, in table order."""
    rows = [("pipeline", "final list (ranked)"), ("retrieval", "two-tower model alone"),
            ("retrieval_order", "candidate set in retrieval order, top 100"),
            ("candidate_set", "candidate set, whole (only @100, @size)"),
            ("gbdt", "GBDT reference (LightGBM LambdaRank, the ranker's rows and features)")]
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
    """Throughput from the fit clock: rows per epoch / training seconds, median of epochs 2..N.
    Keys (each only where its fits and row count are recorded): "retrieval" (pairs/s, epochs) of
    the last two-tower fit, "ranker" (rows/s, epochs, fit wall) of the first multi-task ranker
    fit, "single" (median rows/s, fits, summed wall) of the single-task ranker fits."""
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


# --------------------------------------------------------------------------------------------
# One dataset's block, a function per part


def run_lines(name: str, run_dir: str, meta: dict, m: dict, info: dict) -> list[str]:
    """The dataset's heading and its run: the command (or the reused folder), the training's
    date, wall and load, the data and its split, the test users. `run_dir` as it is shown."""
    lines = [f"### {name}: {DATASETS.get(name, name)}", ""]
    if meta.get("reused"):
        lines.append(f"- run folder: `{run_dir}`, REUSED (`--reuse`): metrics.json of {meta['date']}")
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
    ]
    gbdt = meta.get("gbdt")
    if gbdt:
        folds = gbdt["folds"]
        held = ", ".join(f"{f} {i['holdout_ndcg@10']:.4f} ({i['chosen']['num_leaves']} leaves, "
                         f"{i['best_iteration']} trees)" for f, i in folds.items())
        same = all(i.get("same_candidates") for i in folds.values())
        lines.append(f"- GBDT reference (`bench/gbdt_reference.py`, LightGBM LambdaRank on the ranker's rows and "
                     f"features, settings chosen on the held-out users): {gbdt['wall_s']:.0f} s; held-out NDCG@10 "
                     f"per fold: {held}; the run's candidate sets rebuilt identically: "
                     f"{'yes' if same else 'NO (the GBDT saw other candidates than the ranker)'}")
    lines.append("")
    return lines


def lists_lines(m: dict, sources: dict, columns: list[str]) -> list[str]:
    """A table of every list per variant and ground-truth type (nine), then their footnote."""
    lines = []
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
    return lines


def sources_lines(m: dict, sources: dict, size: int | None) -> list[str]:
    """The candidate set and each of its sources at full depth (@`size`); none without a size
    or sources."""
    if not (size and sources):
        return []
    lines = [f"#### Candidate set and its sources (full depth, @{size})", "",
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
    return lines


def heads_lines(m: dict) -> list[str]:
    """The ranker's heads on the test candidates, beside the single-task models; none without
    ranker figures."""
    heads = [h for h in ("click", "save", "purchase") if f"ranker/{h}/auc" in m]
    if not heads:
        return []
    lines = ["#### Ranker heads (test candidates)", "",
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
    return lines


def versus_lines(m: dict, paired: dict, columns: list[str]) -> tuple[list[str], dict]:
    """The final list against the best baseline per metric (paired ratio), then a warning per
    figure (five at most) where the bench's re-scoring disagrees with metrics.json. `paired`:
    (metric key, other list) -> (ratio, CI low, CI high, the other list's value). Also returns
    NDCG@10's figures for the summary row (final_ndcg, best, best_ndcg, ratio, ratio_ci; empty
    where not scored). No lines without paired figures."""
    found: dict = {}
    if not paired:
        return [], found
    keys = [c for c in columns] + [f"{v}{t}{c}" for v, _ in VARIANTS for t, _ in GT_TYPES
                                   if v or t for c in ("recall@100", "ndcg@10")]
    lines = ["#### The final list against the best baseline", "",
             "| metric | users | final list | best baseline | its value | final / best [95% CI, paired] | "
             "final / retrieval order | final / GBDT [95% CI] | target |", "|---|---:|---:|---|---:|---:|---:|---:|---|"]
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
        gbdt = paired.get((key, "gbdt"))
        gbdt_cell = "-" if gbdt is None or math.isnan(gbdt[0]) else (
            f"{gbdt[0]:.2f}" + (f" [{gbdt[1]:.2f}, {gbdt[2]:.2f}]" if not math.isnan(gbdt[1]) else ""))
        target = ""
        if key == "ndcg@10":
            target = f">= {NDCG_TARGET}x (project aim, README): {'met' if ratio >= NDCG_TARGET else 'NOT met'}"
        ci = f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else ""
        lines.append(f"| {key} | {users:,.0f} | {m[f'pipeline/{key}']:.4f} | {best} | {value:.4f} | "
                     f"{'-' if math.isnan(ratio) else f'{ratio:.2f}'}{ci} | "
                     f"{'-' if order is None or math.isnan(order[0]) else f'{order[0]:.2f}'} | {gbdt_cell} | "
                     f"{target} |")
        if key == "ndcg@10":
            found.update(final_ndcg=m[f"pipeline/{key}"], best=best, best_ndcg=value, ratio=ratio,
                         ratio_ci=(low, high), gbdt_ndcg=None if gbdt is None else gbdt[3],
                         gbdt_ratio=None if gbdt is None else gbdt[:3])
    lines += ["", "Best baseline: the baseline with the highest figure for that metric. The ratio's interval is a "
              "paired bootstrap over users (the same resampled users for both lists; resamples and seed of the "
              "run's config), over all folds' test users, computed by this benchmark from each fold's "
              "`recommendations.parquet` and `baselines/*.parquet` (the run's `vs_best_baseline/*` are the same "
              "figures); `final / retrieval order`: what ranking adds over the merged set's order; `final / GBDT`: "
              "the TF ranker's list over the LightGBM reference's (`bench/gbdt_reference.py`).", ""]
    # The re-scored lists must give metrics.json's own figures (the same ground truth).
    off = [f"{other}/{key}: {got:.6f} re-scored, {m[f'{other}/{key}']:.6f} in metrics.json"
           for (key, other), (_, _, _, got) in paired.items()
           if f"{other}/{key}" in m and abs(got - m[f"{other}/{key}"]) > 1e-6]
    for check in off[:5]:
        lines.append(f"- WARNING, the benchmark's scoring disagrees with the run's: {check}")
    if off:
        lines.append("")
    return lines, found


def folds_lines(m: dict, info: dict) -> list[str]:
    """One row per fold of a rolling-origin run (its test users and headline figures); none for
    a run of one test day."""
    folds = info.get("folds", [])
    if len(folds) < 2:
        return []
    lines = ["#### Each test day (fold)", "",
             "| test day | test users | final NDCG@10 | final / best baseline NDCG@10 | final purchase NDCG@10 | "
             "final / best on purchase NDCG@10 | ranker held-out NDCG@10 (validation) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in folds:
        def f(key, digits=4):
            return plain(m.get(f"fold/{name}/{key}"), digits)
        lines.append(f"| {name} | {f('eval/test_users', 0)} | {f('pipeline/ndcg@10')} | "
                     f"{f('vs_best_baseline/ndcg@10', 3)} | {f('pipeline/purchase/ndcg@10')} | "
                     f"{f('vs_best_baseline/purchase/ndcg@10', 3)} | {f('ranker/holdout_ndcg@10')} |")
    lines += ["", "Every stage is fitted again for each fold on the days before its test day; the tables above "
              "pool all folds' test users (docs/EVALUATION.md, Rolling origin).", ""]
    return lines


def speed_lines(m: dict, info: dict, speeds: dict) -> list[str]:
    """The run's training speed: the project's two-tower pairs/s, the fit clock's figures
    (`fit_speeds`), the ranker's rows/s from run_info.json alone, the stages' seconds."""
    timings = info.get("timings_s", {})
    lines = ["#### Training speed of this run", "",
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
    return lines


def render_dataset(name: str, run_dir: str, meta: dict, m: dict, info: dict, extra: dict,
                   clock: list | None) -> tuple[list[str], dict]:
    """The markdown lines of one dataset and its summary row (for `render`). `run_dir`: the run
    folder as shown; `meta`: the bench's record of the run (trained or reused); `m`, `info`: its
    metrics.json and run_info.json; `extra`: the bench's own figures ("metrics" merged over `m`,
    "sources", "size", "paired"); `clock`: the fit clock's fits, or None."""
    sources = extra.get("sources", {})
    m = {**m, **extra.get("metrics", {})}
    size = extra.get("size")
    columns = metric_columns(m)
    lines = run_lines(name, run_dir, meta, m, info)
    lines += lists_lines(m, sources, columns)
    lines += sources_lines(m, sources, size)
    lines += heads_lines(m)
    summary = {"dataset": name, "users": m.get("eval/test_users"), "cold": m.get("eval/cold_item_share")}
    versus, ndcg = versus_lines(m, extra.get("paired", {}), columns)
    lines += versus
    lines += folds_lines(m, info)
    summary.update(ndcg)
    summary["two_tower_new"] = m.get("retrieval/new_gt/recall@100")
    summary["set_recall"] = m.get(f"candidate_set/recall@{size}") if size else None
    summary["set_size"] = m.get("candidate_set/mean_size")
    speeds = fit_speeds(clock, m) if clock else {}
    lines += speed_lines(m, info, speeds)
    summary["ranker_rows_s"] = speeds.get("ranker", (None,))[0]
    summary["pairs_s"] = info.get("retrieval_pairs_per_s")
    return lines, summary


# --------------------------------------------------------------------------------------------
# The whole report


def summary_lines(summaries: list[dict]) -> list[str]:
    """A row per dataset: its headline figures (from `render_dataset`'s summaries); none
    without summaries."""
    if not summaries:
        return []
    lines = ["### Summary", "",
             "| dataset | test users | cold-item share | final list NDCG@10 | best baseline NDCG@10 | "
             "final / best [95% CI] | GBDT NDCG@10 | final / GBDT [95% CI] | two-tower new_gt recall@100 | "
             "candidate set recall (mean size) | two-tower pairs/s | ranker rows/s |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        ratio = "-"
        if s.get("ratio") is not None and not math.isnan(s["ratio"]):
            low, high = s["ratio_ci"]
            ratio = f"{s['ratio']:.2f}" + (f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else "")
        best = f"{s['best_ndcg']:.4f} ({s['best']})" if s.get("best") else "-"
        size = f"{s['set_recall']:.4f} ({s['set_size']:.0f})" if s.get("set_recall") is not None else "-"
        gbdt = "-"
        if s.get("gbdt_ratio") is not None and not math.isnan(s["gbdt_ratio"][0]):
            r, low, high = s["gbdt_ratio"]
            gbdt = f"{r:.2f}" + (f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else "")
        lines.append(f"| {s['dataset']} | {s['users']:,.0f} | {plain(s.get('cold'), 3)} | "
                     f"{plain(s.get('final_ndcg'))} | {best} | {ratio} | {plain(s.get('gbdt_ndcg'))} | {gbdt} | "
                     f"{plain(s.get('two_tower_new'))} | "
                     f"{size} | {'-' if s.get('pairs_s') is None else format(s['pairs_s'], ',.0f')} | "
                     f"{'-' if s.get('ranker_rows_s') is None else format(s['ranker_rows_s'], ',.0f')} |")
    lines.append("")
    return lines


def render(meta: dict, blocks: list[list[str]], summaries: list[dict], failures: list[str]) -> str:
    """The report: the bench's header (`meta`: command, date, machine, load, commit), the summary
    table, each failure's markdown, then each dataset's block; no trailing newline."""
    lines = [
        "## Quality benchmark",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores; Python {meta['python']}",
        f"- load average (1/5/15 min) at start / end: {meta['load_start']} / {meta['load_end']}",
        f"- commit: {meta['commit']}",
        "- protocol: `docs/EVALUATION.md` (rolling origin: each of the last days a test day in turn, every "
        "stage fitted per fold, figures pooled over all folds' test users; Recall@K, HitRate@K, "
        "NDCG@10; any engagement, save, purchase; all items, excl_seen, new_gt; 95% bootstrap intervals over "
        "users, the resamples and seed of each run's config)",
        "",
    ]
    lines += summary_lines(summaries)
    for failure in failures:
        lines += [failure, ""]
    for block in blocks:
        lines += block
    return "\n".join(lines)
