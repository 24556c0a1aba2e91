"""Candidate sources come from one registry: a new source is one module plus its registration,
and it reaches the candidate set, the per-source metrics and the `recommend` export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from shopping_mtl.candidates import registry
from shopping_mtl.candidates.candidate_set import build_candidate_set
from shopping_mtl.candidates.registry import ServingCandidates, Source, SourceDay
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.config import load_config
from shopping_mtl.errors import ConfigError
from shopping_mtl.export import graphs
from shopping_mtl.features import TIMESTAMP
from shopping_mtl.pipeline import run
from conftest import serve_fresh
from tools import synthetic


def newest_items(events: pd.DataFrame, n: int) -> np.ndarray:
    """The n items first seen last (new arrivals), newest first; ties by id."""
    first = events.groupby("item_id", sort=True)["timestamp"].min()
    return first.sort_values(ascending=False, kind="stable").index.to_numpy(dtype=object)[:n]


class NewestServing(tf.Module):
    def __init__(self, context, quota: int):
        super().__init__()
        self.items = tf.constant(newest_items(context.events, quota).astype(str).reshape(1, -1))

    def __call__(self, request) -> ServingCandidates:
        items = tf.tile(self.items, [tf.shape(request[TIMESTAMP])[0], 1])
        return ServingCandidates(items, tf.not_equal(items, ""))


def _newest_lists(day: SourceDay, k: int) -> pd.DataFrame:
    items = newest_items(day.events, k)
    users = sorted(day.users)
    return pd.DataFrame({"user_id": np.repeat(users, len(items)).astype(object),
                         "rank": np.tile(np.arange(1, len(items) + 1), len(users)),
                         "item_id": np.tile(items, len(users)), "score": 0.0})


@pytest.fixture
def newest_source():
    source = registry.register(Source("newest", _newest_lists, NewestServing))
    yield source
    registry.unregister("newest")


def test_a_toy_source_registered_alone_reaches_the_set_the_metrics_and_the_export(newest_source, tmp_path):
    spec = synthetic.generate(tmp_path / "data", 8_000, seed=4)
    quotas = {"two_tower": 5, "user_history": 5, "covisit": 5, "newest": 5, "popularity": 5}
    config = load_config(overrides={
        "run_dir": str(tmp_path / "run"), "data": {"dataset": str(spec)},
        "tracking": {"enabled": False}, "evaluation": {"bootstrap_resamples": 0},
        "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
        "candidates": {"quotas": quotas},
        "ranking": {"epochs": 1, "compare_single_task": False, "bottom_layers": [8], "tower_layers": [4],
                    "extra_days": 1, "list_size": 100},
    })
    state = run(config)
    newest = set(newest_items(state.split.history, 5))
    candidate_set = pd.read_parquet(state.run_dir / "candidate_set.parquet")
    mine = candidate_set[candidate_set["source"] == "newest"]
    assert len(mine) and set(mine["item_id"]) <= newest
    assert state.metrics["candidate_set/share/newest"] == pytest.approx(len(mine) / len(candidate_set))
    assert state.metrics["candidate_set/share/newest"] > 0
    # The recommend export lists every valid candidate (at most 25 per user, list_size 100): the
    # newest items it knows are among its answers, from a process that imports only TensorFlow.
    users = list(state.truth.users[:3])
    request = graphs.requests_for(users, state.split.history, state.split.test_start, state.dataset.users,
                                  state.retrieval.data.features, config.ranking.history_length)
    answer = serve_fresh(state.info["exports"]["recommend"], request, tmp_path, "newest")
    known = newest & set(state.retrieval.data.catalogue["item_id"])
    assert known
    for row in range(len(users)):
        assert known <= set(answer["item_ids"][row].astype(str))


def test_the_same_builder_gives_every_day_its_set(newest_source):
    """The candidate set of any day comes from one function; a source without lists that day
    (the two-tower model before it was fitted) is left out, the others keep their quotas."""
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    events = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "item_id": ["x", "y", "x", "z", "w"],
                           "event": ["click"] * 5, "timestamp": [t0 + pd.Timedelta(hours=h) for h in range(5)]})
    day = SourceDay(events, ["a", "b"], t0 + pd.Timedelta(days=1), BaselineConfig())
    merged = build_candidate_set(day, {"two_tower": 3, "user_history": 1, "newest": 2, "popularity": 1})
    assert "two_tower" not in set(merged["source"])
    assert merged.groupby("user_id")["source"].apply(lambda s: (s == "user_history").sum()).tolist() == [1, 1]
    assert set(merged.loc[merged["source"] == "newest", "item_id"]) <= {"w", "z"}
    assert not merged.duplicated(["user_id", "item_id"]).any()


def test_a_quota_for_an_unknown_source_fails_before_any_work(tmp_path):
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "candidates": {"quotas": {"nearest": 10}},
                                    "tracking": {"enabled": False}})
    with pytest.raises(ConfigError, match="candidates.quotas has unknown key 'nearest'"):
        run(config)
    assert not (tmp_path / "run").exists()
