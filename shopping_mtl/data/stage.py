"""The data stage: read and validate the log, limit it for a smoke run, split it by the
protocol and find the test users' ground truth.

Right after the split it warns on a validation or test part too small to mean much, and stops
a run whose ranking stage would find nothing to learn from (`ranking.days.check_ranker_days`), before any
model is fitted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopping_mtl.data.readers import Dataset, read_dataset, spec_files
from shopping_mtl.data.spec import load_spec
from shopping_mtl.data.split import (Fold, GroundTruth, Split, cold_item_shares, events_before, ground_truth,
                                     plural, scored_users, small_parts, split_events)
from shopping_mtl.ranking.days import check_ranker_days
from shopping_mtl.run_state import RunState

log = logging.getLogger(__name__)


@dataclass
class DataOutput:
    """The data stage's hand-off: the events read, their split, and the test users' truth."""

    dataset: Dataset
    split: Split
    truth: GroundTruth


def limit_events(events: pd.DataFrame, max_events: int, seed: int) -> pd.DataFrame:
    """Keep whole users, in a fixed pseudo-random order, until `max_events` events are kept.

    Whole users keep histories and every day intact, so a smoke run still has a real split.
    """
    users = pd.Index(events["user_id"].unique())
    order = np.argsort(pd.util.hash_array(users.to_numpy(dtype=object), hash_key=f"{seed:016d}"[:16]),
                       kind="stable")
    counts = events["user_id"].value_counts().reindex(users[order]).to_numpy()
    keep_n = max(1, int(np.searchsorted(np.cumsum(counts), max_events, side="right")))
    kept = set(users[order][:keep_n])
    return events[events["user_id"].isin(kept)].reset_index(drop=True)


def data_fingerprint(spec_path: Path, files: list[Path]) -> str:
    """SHA-256 over the spec and the bytes of every input file: which data a figure came from."""
    digest = hashlib.sha256(spec_path.read_bytes())
    for path in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def run_data(state: RunState) -> DataOutput:
    """Read, validate, limit and split the dataset; compute the ground truth. The split is the
    last fold's (the whole log); `fold_data` gives the earlier folds'."""
    config = state.config
    spec = load_spec(config.data.dataset, config.data.root)
    dataset = read_dataset(spec, config.data.on_bad_rows)
    report = dataset.report
    if report.n_bad:
        path = state.run_dir / "bad_rows.csv"
        report.bad_rows_frame().to_csv(path, index=False)
        log.warning("%d skipped rows are listed in %s", report.n_bad, path)
    state.metrics.update(report.metrics())
    events = dataset.events
    if config.data.max_events is not None and len(events) > config.data.max_events:
        events = limit_events(events, config.data.max_events, config.seed)
        log.info("--max-events %d: kept %d events of %d users", config.data.max_events,
                 len(events), events["user_id"].nunique())
        dataset.events = events
    if config.data.until is not None:
        until = pd.Timestamp(config.data.until)
        until = until.tz_localize("UTC") if until.tzinfo is None else until.tz_convert("UTC")
        kept = events_before(events, until)
        log.info("data.until %s: %d of %d events kept, the later ones left out", until.isoformat(), len(kept),
                 len(events))
        state.metrics["data/events_after_until"] = float(len(events) - len(kept))
        events = dataset.events = kept
    state.metrics.update({
        "data/events_used": float(len(events)),
        "data/distinct_users": float(events["user_id"].nunique()),
        "data/distinct_items": float(events["item_id"].nunique()),
    })
    input_files = spec_files(spec)
    state.info.update({
        "dataset": spec.name,
        "spec": str(spec.path),
        "data_root": str(spec.root),
        "synthetic": spec.synthetic,
        "data_fingerprint": data_fingerprint(spec.path, input_files),
        "input_files": [str(p) for p in input_files],
    })
    return split_data(state, dataset)


def split_data(state: RunState, dataset: Dataset) -> DataOutput:
    """Split `dataset`'s events by the protocol, find the test users' truth, and record the
    split's figures on `state`."""
    config = state.config
    split = split_events(dataset.events, config.split.min_days, config.split.quantile)
    truth = ground_truth(split)
    validation_users = scored_users(split.train, split.validation)
    state.metrics.update({
        "split/train_events": float(len(split.train)),
        "split/validation_events": float(len(split.validation)),
        "split/test_events": float(len(split.test)),
        "eval/test_users": float(len(truth.users)),
        **cold_item_shares(split, truth),
    })
    state.info["split"] = split.describe()
    log.info("split (%s): train %d, validation %d, test %d events; validation from %s, test from %s; %s, %s",
             split.method, len(split.train), len(split.validation), len(split.test),
             split.validation_start.isoformat(), split.test_start.isoformat(),
             plural(len(validation_users), "validation user"), plural(len(truth.users), "test user"))
    if not truth.users:
        log.warning("no test users: no user has events both in train and on the test day")
    warnings = small_parts(split, len(validation_users), len(truth.users))
    for warning in warnings:
        log.warning("split: %s", warning)
    if warnings:
        state.info["split"]["warnings"] = warnings
    if "ranking" in config.stages:
        check_ranker_days(split, config)
    return DataOutput(dataset, split, truth)


def fold_data(state: RunState, data: DataOutput, fold: Fold) -> DataOutput:
    """The data of one rolling-origin fold: `data`'s log cut before the fold's end (its later
    events unseen), split as a whole log is, the figures recorded on `state` (the fold's)."""
    if fold.end is None:
        return data
    events = events_before(data.dataset.events, fold.end)
    return split_data(state, dataclasses.replace(data.dataset, events=events))
