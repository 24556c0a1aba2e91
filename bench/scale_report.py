"""The scale bench's report: the target, the sizes, every stage's wall time and peak memory per
size, and the slope of each cost against the number of events. Standard library only: the
scale bench's parent renders it (and `--from-json` re-renders saved figures) without
TensorFlow."""

from __future__ import annotations

import math

GB = float(1 << 30)
KB_PER_GB = GB / 1024
TARGET_EVENTS = 10_000_000
TARGET_WALL_S = 30 * 60.0
TARGET_PEAK_GB = 8.0
TARGET_SLOPE = 1.0


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than two usable points."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def gb(kb) -> float | None:
    return None if kb is None else kb / KB_PER_GB


def fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def fmt_seconds(x) -> str:
    """Seconds to one decimal, or to two significant digits below one second (a stage of 40 ms
    reads 0.040, not 0.0)."""
    if x is None:
        return "-"
    if 0 < x < 1:
        return f"{x:.{1 - math.floor(math.log10(x))}f}"
    return fmt(x)


def fmt_slope(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def meets(value, target) -> str:
    """Whether a figure meets its target as printed (a slope of 1.0000001 reads 1.00: it does)."""
    return "not measured" if value is None else ("yes" if round(value, 2) <= target else "**no**")


def stage_figures(row: dict) -> dict:
    """stage -> {wall_s, peak_gb, above_gb, end_gb, tf_peak_gb}, in the order the stages ran, and
    'total' for a finished run (wall: the whole loop of stages, measured around it; peak: the
    largest stage peak). A run that failed or was ended gives the stages it finished."""
    result = row.get("result")
    source = result or row.get("partial") or {}
    base = source.get("baseline_kb") or (row.get("ready") or {}).get("baseline_kb")
    if not base:
        return {}
    out = {}
    for name, s in (source.get("stages") or {}).items():
        out[name] = {"wall_s": s["wall_s"], "peak_gb": gb(s["peak_kb"]), "above_gb": gb(s["peak_kb"] - base),
                     "end_gb": gb(s["rss_end_kb"]), "tf_peak_gb": gb(s.get("tf_peak_kb"))}
    if out and result:
        peak_kb = max(s["peak_kb"] for s in result["stages"].values())
        tf_peaks = [v["tf_peak_gb"] for v in out.values() if v["tf_peak_gb"] is not None]
        out["total"] = {"wall_s": result["run_s"], "peak_gb": gb(peak_kb), "above_gb": gb(peak_kb - base),
                        "end_gb": out[list(out)[-1]]["end_gb"], "tf_peak_gb": max(tf_peaks) if tf_peaks else None}
    return out


def process_peak_gb(row: dict) -> float:
    """The child's peak RSS: the kernel's (`ru_maxrss` from the parent's wait, `VmHWM` read by
    the child at its end), the parent's 50 ms polls, and every stage's sampled peak."""
    child = row["child"]
    kbs = [child.get("polled_max_rss_kb", 0), child.get("ru_maxrss_kb", 0)]
    source = row.get("result") or row.get("partial") or {}
    kbs.append(source.get("vmhwm_kb", 0))
    kbs += [s["peak_kb"] for s in (source.get("stages") or {}).values()]
    return gb(max(kbs))


def where_it_was(row: dict) -> str:
    """Where a run failed or was ended: "in STAGE" (with its error) or "before the first stage"."""
    partial = row.get("partial") or {}
    error = partial.get("error") or {}
    stage = error.get("stage") or partial.get("open")
    where = f"in {stage}" if stage else "before the first stage"
    return f"{where} ({error['error'][:160]})" if error.get("error") else where


def header(meta: dict) -> list[str]:
    return [
        "# Scale benchmark: the pipeline's stages on SYNTHETIC logs",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores, {meta['mem_gb']:.0f} GB memory; Python "
        f"{meta['python']}, TensorFlow {meta.get('tf', '?')}",
        f"- load average (1/5/15 min) at start / end: {meta['load_start']} / {meta['load_end']}",
        f"- commit: {meta['commit']}",
        f"- stages (`pipeline.run_stage`, one child process per size): {', '.join(meta.get('stages') or ['?'])}"
        f"; exports {'run (the export stage)' if meta['export'] else 'not run (no export stage)'}",
        f"- config overrides: {meta['overrides']}",
        f"- TensorFlow's CPU allocator: {meta.get('environment') or 'the default (oneDNN pool)'}",
        "- memory: peak RSS per stage from /proc/self/statm, read every 50 ms by a thread of the child and at "
        "every stage boundary; the process's peak from the kernel (ru_maxrss, VmHWM) and the parent's 50 ms "
        f"polls; GB = 2^30 bytes; limits per size: {meta['timeout_min']:g} min, {meta['cap']}",
        "",
    ]


def target_lines(rows: list[dict], by_size: dict) -> list[str]:
    lines = ["## Target", "", "| figure | measured | target | meets |", "|---|---:|---|---|"]
    if not rows:
        return lines + [""]
    row = next((r for r in rows if r["events"] == TARGET_EVENTS), None) or max(rows, key=lambda r: r["events"])
    n, is_target = row["events"], row["events"] == TARGET_EVENTS
    label = f"{n:,} events" + ("" if is_target else f" (largest run; the target is for {TARGET_EVENTS:,})")
    names = " + ".join(name for name in by_size[n] if name != "total") or "the stages"
    peak = process_peak_gb(row)
    if row.get("result"):
        total = by_size[n]["total"]["wall_s"]
        lines.append(f"| {label}: wall of {names} | {total / 60:,.1f} min | <= {TARGET_WALL_S / 60:.0f} min | "
                     f"{meets(total, TARGET_WALL_S) if is_target else '-'} |")
        lines.append(f"| {label}: peak memory (RSS) of the process | {peak:,.2f} GB | <= {TARGET_PEAK_GB:.0f} GB | "
                     f"{meets(peak, TARGET_PEAK_GB) if is_target else '-'} |")
    else:
        over = row["child"].get("over_limit")
        lines.append(f"| {label}: wall of the stages | {row['status']} after {row['child']['wall_s'] / 60:,.1f} min, "
                     f"{where_it_was(row)} | <= {TARGET_WALL_S / 60:.0f} min | {'**no**' if over else 'not measured'} |")
        lines.append(f"| {label}: peak memory (RSS) of the process | >= {peak:,.2f} GB | <= {TARGET_PEAK_GB:.0f} GB | "
                     f"{'**no**' if peak > TARGET_PEAK_GB else 'not measured'} |")
    done = sorted(n for n, figs in by_size.items() if "total" in figs)
    if len(done) >= 2:
        for what, key in (("wall", "wall_s"), ("peak memory above start", "above_gb")):
            s = slope([(n, by_size[n]["total"][key]) for n in done])
            lines.append(f"| slope of total {what} against events, {done[0]:,} to {done[-1]:,} | {fmt_slope(s)} | "
                         f"<= {TARGET_SLOPE:.1f} | {meets(s, TARGET_SLOPE)} |")
    return lines + [""]


def size_lines(rows: list[dict]) -> list[str]:
    lines = ["## Sizes", "",
             "| events | users | items in events | catalogue | train / validation / test events | retrieval pairs | "
             "candidate rows (test) | ranker training rows | generation s | child wall s (incl. imports) | status | "
             "load avg (1 min) start / end |",
             "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        f = (r.get("result") or r.get("partial") or {}).get("figures") or {}

        def cell(key, f=f):
            return f"{f[key]:,.0f}" if key in f else "-"

        split = " / ".join(cell(k) for k in ("train_events", "validation_events", "test_events")) \
            if "train_events" in f else "-"
        gen = r.get("generation", {})
        lines.append(f"| {r['events']:,} | {cell('distinct_users')} | {cell('distinct_items')} | {cell('catalogue')} | "
                     f"{split} | {cell('train_pairs')} | {cell('candidate_rows')} | {cell('training_rows')} | "
                     f"{'cached' if gen.get('cached') else fmt(gen.get('wall_s'))} | {fmt(r['child']['wall_s'])} | "
                     f"{r['status']} | {r['load_start'][0]:.2f} / {r['load_end'][0]:.2f} |")
    return lines + [""]


def stage_lines(rows: list[dict], by_size: dict) -> list[str]:
    lines = ["## Per stage", "",
             "Wall seconds of each stage (`state.timings`, the pipeline's clock; the total is the whole loop of "
             "stages, measured around it) and peak RSS during it; \"above start\" subtracts the RSS after the "
             "imports, before the data stage. TF allocator: the peak of TensorFlow's CPU allocator during the "
             "stage (`tf.config.experimental.get_memory_info`), part of the RSS. Evaluation runs inside the "
             "stages whose lists it scores.", "",
             "| events | stage | wall s | share of wall | peak RSS GB | above start GB | RSS at end GB | "
             "TF allocator peak GB | target (10^7, whole run) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        n, figs = r["events"], by_size.get(r["events"]) or {}
        total = (figs.get("total") or {}).get("wall_s")
        for name, v in figs.items():
            share = f"{v['wall_s'] / total:.0%}" if total else "-"
            target = (f"<= {TARGET_WALL_S / 60:.0f} min, <= {TARGET_PEAK_GB:.0f} GB"
                      if name == "total" and n == TARGET_EVENTS else "")
            lines.append(f"| {n:,} | {name} | {fmt_seconds(v['wall_s'])} | {share} | {v['peak_gb']:.2f} | "
                         f"{v['above_gb']:.2f} | {v['end_gb']:.2f} | {fmt(v['tf_peak_gb'], 2)} | {target} |")
        if not r.get("result"):
            reached = r["child"].get("reached") or {}
            when = f"{gb(reached['rss_kb']):.2f} (when ended)" if reached else "-"
            lines.append(f"| {n:,} | {r['status']}: {where_it_was(r)} | {fmt(r['child']['wall_s'])} (child) | - | "
                         f">= {process_peak_gb(r):.2f} | - | {when} | - | |")
    return lines + [""]


def slope_lines(by_size: dict) -> list[str]:
    sizes = sorted(n for n, figs in by_size.items() if figs)
    if len(sizes) < 2:
        return []
    steps = list(zip(sizes, sizes[1:]))
    names = list(dict.fromkeys(name for n in sizes for name in by_size[n] if name != "total")) + ["total"]
    lines = ["## Slopes of cost against events (log-log)", "",
             f"Least squares over the sizes at which the stage finished (of {', '.join(f'{n:,}' for n in sizes)} "
             "events); then per step (" + ", ".join(f"{a:,}->{b:,}" for a, b in steps) + "). Target: <= "
             f"{TARGET_SLOPE:.1f} (no faster than linear).", "",
             "| stage | wall slope | wall per step | peak RSS slope | peak above start slope | above start per step | "
             "meets (wall and above start) |",
             "|---|---:|---|---:|---:|---|---|"]
    for name in names:
        pts = [n for n in sizes if name in by_size[n]]
        if len(pts) < 2:
            continue
        wall, peak, above = (slope([(n, by_size[n][name][key]) for n in pts]) for key in ("wall_s", "peak_gb", "above_gb"))

        def step(a, b, key, name=name):
            if name not in by_size[a] or name not in by_size[b]:
                return "-"
            return fmt_slope(slope([(a, by_size[a][name][key]), (b, by_size[b][name][key])]))

        ok = all(meets(s, TARGET_SLOPE) == "yes" for s in (wall, above))
        lines.append(f"| {name} | {fmt_slope(wall)} | {', '.join(step(a, b, 'wall_s') for a, b in steps)} | "
                     f"{fmt_slope(peak)} | {fmt_slope(above)} | {', '.join(step(a, b, 'above_gb') for a, b in steps)} | "
                     f"{'yes' if ok else '**no**'} |")
    return lines + ["", "Peak RSS includes the ~0.7 GB of the imports, which flattens its slope at small sizes; "
                    "the slope of the peak above the start is the one to read.", ""]


def partial_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if r.get("result"):
            continue
        reached = r["child"].get("reached")
        when = f"; RSS when ended {gb(reached['rss_kb']):.2f} GB" if reached else ""
        lines += [f"### {r['events']:,} events: {r['status']}", "",
                  f"{'Ended' if reached else 'Failed'} after {r['child']['wall_s']:.0f} s, {where_it_was(r)}{when} "
                  f"(peak RSS {process_peak_gb(r):.2f} GB).", ""]
        partial = r.get("partial") or {}
        if partial.get("stack"):
            lines += ["Python stack when ended (innermost first):", ""] + [f"    {f}" for f in partial["stack"]] + [""]
        elif partial.get("log_tail"):  # failed on its own: the end of its log says why
            lines += ["The end of the child's log:", ""] + [f"    {line}" for line in
                                                              partial["log_tail"].splitlines()[-15:]] + [""]
        lines += [f"Child log: `{r['log']}`", ""]
    return lines


def render(meta: dict, rows: list[dict]) -> str:
    by_size = {r["events"]: stage_figures(r) for r in rows}
    return "\n".join(header(meta) + target_lines(rows, by_size) + size_lines(rows) + stage_lines(rows, by_size)
                     + slope_lines(by_size) + partial_lines(rows))
