"""`generate`: write a SYNTHETIC event log of any size into a folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tools.synthetic.profile import SyntheticProfile, default_profile
from tools.synthetic.world import _World
from tools.synthetic.writers import (
    _readme,
    _schema_metadata,
    _spec_yaml,
    _write_events,
    _write_items,
)


def _check_positive_int(name: str, value: Any) -> int:
    """`value` as an int; ValueError naming `name` unless it is an integer > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def generate(
    out_dir: str | Path,
    n_events: int,
    profile: SyntheticProfile | None = None,
    seed: int = 0,
    n_days: int | None = None,
    chunk_events: int = 1_000_000,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
) -> Path:
    """Write a SYNTHETIC event log of exactly `n_events` events into `out_dir`; return the spec.

    Writes `events-00000.parquet`... (at most `chunk_events` rows each; users contiguous, each
    user's events in time order), `items.parquet`, `README.md`, and `spec.yaml` last, so a
    folder with a spec is complete. The events are the same for a seed whatever
    `chunk_events` is (only the shard boundaries move); the same seed and chunk size give
    byte-identical files. Memory holds one block of `world.USERS_PER_BLOCK` users and
    per-category arrays, never the log nor a per-item array; items.parquet is written in slices.

    Args:
        out_dir: folder to create (or an empty one).
        n_events: number of events, > 0.
        profile: calibration profile; None uses the shipped EComm profile.
        seed: random seed (>= 0).
        n_days: span of the timestamps in days; None uses the profile's span. Events per user
            do not change with it.
        chunk_events: rows per Parquet shard.
        progress: called as progress(events_written, n_events) after each block.
        command: the command line to record in the README; None writes the equivalent one.

    Returns:
        The path of the written `spec.yaml`.

    Raises:
        ValueError: a bad `n_events`, `seed`, `n_days` or `chunk_events`.
        FileExistsError: `out_dir` exists and is not an empty folder.
    """
    n_events = _check_positive_int("n_events", n_events)
    chunk_events = _check_positive_int("chunk_events", chunk_events)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if profile is None:
        profile = default_profile()
    n_days = profile.activity.span_days if n_days is None else _check_positive_int("n_days", n_days)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"output folder {out} exists and is not empty; give a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)

    world = _World.build(profile, n_events, int(seed), n_days)
    metadata = _schema_metadata(int(seed), n_events)
    n_users = _write_events(world, out, chunk_events, metadata, progress)
    _write_items(world, out, metadata)
    n_shards = math.ceil(n_events / chunk_events)
    if command is None:
        command = (
            f"python -m tools.synthetic generate --events {n_events} --seed {seed} "
            f"--days {n_days} --chunk-events {chunk_events} --out DIR"
        )
    (out / "README.md").write_text(_readme(world, command, n_users, n_shards, chunk_events))
    spec = out / "spec.yaml"
    spec.write_text(_spec_yaml(n_events, int(seed), profile))
    return spec
