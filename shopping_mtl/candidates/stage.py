"""The candidates stage: the test users' candidate set, every registered source merged with
its quota, written as candidate_set.parquet and scored (its recall, and each source's share)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from shopping_mtl.candidates.candidate_set import build_candidate_set
from shopping_mtl.candidates.registry import SourceDay
from shopping_mtl.evaluation import score_lists
from shopping_mtl.run_state import RunState
from shopping_mtl.scale import shards

log = logging.getLogger(__name__)


@dataclass
class CandidatesOutput:
    """The candidates stage's hand-off: the test users' merged candidate set (`user_id, rank,
    item_id, score, source, source_rank`), a `FrameOnDisk` when the run streams."""

    candidate_set: pd.DataFrame | shards.FrameOnDisk


def run_candidates(state: RunState) -> CandidatesOutput:
    """Build, write and score the test day's candidate set from train + validation events.

    The two-tower source lists only when the retrieval stage ran in this run; its test lists
    are consumed here (`RetrievalOutput.test_lists` is set to None)."""
    config, split = state.config, state.split
    ev = config.evaluation
    two_tower = None
    if state.retrieval is not None:
        two_tower, state.retrieval.test_lists = state.retrieval.test_lists, None
    day = SourceDay(split.history, state.truth.users, split.test_start, config.baselines.in_days(split.period_days),
                    two_tower)
    merged = build_candidate_set(day, config.candidates.quotas)
    del day, two_tower  # tens of millions of rows at 10^7 events; the merged set is what stays
    path = state.write_list(merged, "candidate_set.parquet")
    state.metrics.update(score_lists(merged, state.truth, "candidate_set", (100, config.candidates.size),
                                     ev.bootstrap_resamples, ev.bootstrap_seed))
    state.metrics["candidate_set/mean_size"] = float(merged.groupby("user_id").size().mean())
    for name in config.candidates.quotas:
        state.metrics[f"candidate_set/share/{name}"] = float((merged["source"] == name).mean())
    log.info("candidates: %d rows for %d users", len(merged), merged["user_id"].nunique())
    # A streaming run reads it back from its file when the ranking stage scores it.
    spill = state.examples_dir("retrieval") is not None
    return CandidatesOutput(shards.FrameOnDisk(path) if spill else merged)
