"""The retrieval bench's report: markdown tables from its figures, each beside its baseline or
target. The header (command, date, machine, load, commit, data), two-tower training throughput
against the issue's 50,000 pairs/s, the exported top-100 latency against the matmul floor with
the split of the exported time, and the split of one training step. Standard library only: it
formats what the bench measured and computes nothing but ratios and differences."""

from __future__ import annotations

TARGET_PAIRS_PER_S = 50_000.0  # the target on the 2-core machine
TARGET_RATIO = 1.5  # exported top-100 over 100k items within 1.5x the matmul floor
TARGET_ITEMS = 100_000


def fmt(x: float, digits: int = 2) -> str:
    """A figure with thousands separators and `digits` decimals."""
    return f"{x:,.{digits}f}"


def header_lines(meta: dict) -> list[str]:
    """The report's title and what every figure was measured with: command, date, machine
    (`cpu`, `cores`, `python`, `tf`), 1-minute load at start and end, commit, the synthetic data
    (`events`, `split`) and the repeats."""
    return [
        "# Retrieval benchmark",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores; Python {meta['python']}, "
        f"TensorFlow {meta['tf']}",
        f"- load average (1 min) at start / end: {meta['load_start']:.2f} / {meta['load_end']:.2f}",
        f"- commit: {meta['commit']}",
        f"- data: SYNTHETIC log of {meta['events']:,} events (seed 0): {meta['split']}",
        f"- repeats: {meta['repeats']}; every figure is the median over them",
        "",
    ]


def training_lines(meta: dict, training: dict) -> list[str]:
    """Two-tower training pairs/s against the issue's target. `training`: pairs_per_s (median
    over fits), per_fit, train_pairs, batch_size, epochs; `meta["dim"]`: the embedding dim."""
    ratio = training["pairs_per_s"] / TARGET_PAIRS_PER_S
    return [
        "## Training throughput",
        "",
        "| figure | measured | baseline | measured / baseline | meets target |",
        "|---|---:|---:|---:|---|",
        f"| two-tower training pairs/s | {fmt(training['pairs_per_s'], 0)} | "
        f"{fmt(TARGET_PAIRS_PER_S, 0)} (issue target) | {ratio:.2f} | "
        f"{'yes' if ratio >= 1 else 'no'} |",
        "",
        f"{training['train_pairs']:,} training pairs, batch {training['batch_size']}, "
        f"{training['epochs']} epochs per fit, embedding dim {meta['dim']}; per fit (median of "
        f"epochs 2..N): {', '.join(fmt(x, 0) for x in training['per_fit'])} pairs/s. The "
        "project's figure: training pairs / training time of the epoch (its validation pass excluded).",
        "",
    ]


def latency_lines(latency: dict) -> list[str]:
    """The exported top-100 latency against the floor, a row per catalogue size and batch, and
    its explanation. `latency`: {"sizes": items -> batch -> figures (`exported_p50`,
    `floor_p99`, `ratio_p50`, `calls`, ...), "meta": {"exclude_seen", "vocab"}}."""
    lines = [
        "## Exported top-100 latency",
        "",
        "| items | batch | exported p50 ms | exported p99 ms | floor p50 ms | floor p99 ms | "
        "exported / floor (p50) | exported / floor (p99) | target | calls |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for n_items, by_batch in latency["sizes"].items():
        for batch, c in by_batch.items():
            target = f"<= {TARGET_RATIO}x (issue)" if int(n_items) == TARGET_ITEMS else "-"
            lines.append(
                f"| {int(n_items):,} | {batch} | {fmt(c['exported_p50'])} | "
                f"{fmt(c['exported_p99'])} | "
                f"{fmt(c['floor_p50'])} | {fmt(c['floor_p99'])} | {c['ratio_p50']:.2f} | "
                f"{c['ratio_p99']:.2f} | {target} | {c['calls']} |")
    lines += [
        "",
        "Exported: `tf.saved_model.load(path).signatures['serving_default'](**inputs)` on the "
        "project's retrieval export (query tower + TFRS BruteForce"
        f"{', exclude_seen' if latency['meta']['exclude_seen'] else ''}), in a fresh process "
        "that imports only TensorFlow. Floor: `tf.linalg.matmul` + `tf.math.top_k(k=100)` in a "
        "`tf.function` over the same number of items and dim, same process, interleaved call by "
        f"call. Query tower vocabularies: {latency['meta']['vocab']}.",
        "",
    ]
    return lines


def split_lines(latency: dict) -> list[str]:
    """Where the exported time goes: the p50 of each SavedModel (query tower alone, index alone,
    floor, the export without exclude_seen where it was timed, the export) per catalogue size
    and batch, and the export's excess over the floor."""
    lines = [
        "### Where the exported time goes (p50 ms)",
        "",
        "Each column is its own SavedModel, loaded and timed in the same fresh process, "
        "interleaved with the others.",
        "",
    ]
    keep_seen = any("exported_keep_seen_p50" in c for by in latency["sizes"].values()
                    for c in by.values())
    header = ["items", "batch", "query tower alone", "index alone (matmul + top_k + id gather)",
              "floor"]
    if keep_seen:
        header.append("exported, exclude_seen off")
    header += ["exported", "exported - floor"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for n_items, by_batch in latency["sizes"].items():
        for batch, c in by_batch.items():
            cells = [f"{int(n_items):,}", str(batch), fmt(c["query_tower_p50"]),
                     fmt(c["index_only_p50"]), fmt(c["floor_p50"])]
            if keep_seen:
                cells.append(fmt(c["exported_keep_seen_p50"]))
            cells += [fmt(c["exported_p50"]), fmt(c["exported_p50"] - c["floor_p50"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def profile_lines(meta: dict, profile: list) -> list[str]:
    """One training step split into pieces: (piece, ms per batch, ms it adds or None) rows, with
    the pairs/s each would give as the whole step at batch `meta["batch_size"]`."""
    lines = [
        "## One training step, split (ms per batch, in-process)",
        "",
        "| piece | ms/batch | adds (ms) | pairs/s if it were the whole step |",
        "|---|---:|---:|---:|",
    ]
    batch = meta["batch_size"]
    for name, ms, adds in profile:
        lines.append(f"| {name} | {fmt(ms)} | {'-' if adds is None else fmt(adds)} | "
                     f"{fmt(batch / ms * 1e3, 0)} |")
    lines += ["", f"Batch {batch}, the fit's own batches (id dropout on); the Keras fit adds its "
              "per-step overhead and the val_loss pass on top of the full step.", ""]
    return lines


def render(meta: dict, training: dict | None, latency: dict | None,
           profile: list | None) -> str:
    """The report: the header, then each part that ran (None: left out); no trailing newline."""
    lines = header_lines(meta)
    if training is not None:
        lines += training_lines(meta, training)
    if latency is not None:
        lines += latency_lines(latency)
        lines += split_lines(latency)
    if profile is not None:
        lines += profile_lines(meta, profile)
    return "\n".join(lines)
