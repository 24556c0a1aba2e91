"""The LightGBM LambdaRank reference of the quality benchmark (`bench/gbdt_reference.py`): its
feature matrix, and its lists on a small synthetic run (the contract `bench/quality_bench.py`
relies on, and that its order beats a random one)."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import pytest

lgb = pytest.importorskip("lightgbm")

from conftest import ROOT, staged_state  # noqa: E402
from shopping_mtl.errors import ConfigError  # noqa: E402
from shopping_mtl.evaluation import score_lists  # noqa: E402
from shopping_mtl.scale import shards  # noqa: E402
from shopping_mtl.scale.top_lists import top_lists  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import gbdt_reference  # noqa: E402


def test_feature_matrix_codes_strings_and_flattens_cross():
    fit = {"user_id": np.array(["u1", "u2", "u3"], dtype=object),
           "item_id": np.array(["a", "b", "c"], dtype=object),
           "brand": np.array(["x", "", "y"], dtype=object),
           "price": np.array([1.0, np.nan, 3.0], np.float32),
           "cross": np.arange(3 * 8, dtype=np.float32).reshape(3, 8),
           "label_click": np.array([1, 1, 0], np.float32), "label_save": np.array([0, 1, 0], np.float32),
           "label_purchase": np.array([1, 0, 0], np.float32), "list_id": np.array([0, 0, 1]),
           "source": np.array([3, 0, 3], np.int32)}
    encoder = gbdt_reference.FeatureEncoder.fit(fit, ["price", "cross", "brand", "source"])
    assert encoder.feature_names == ["brand", "cross_ui_clicks", "cross_ui_saves", "cross_ui_purchases",
                                     "cross_ui_recency", "cross_ui_engagement", "cross_uc_events", "cross_uc_recency",
                                     "cross_history_size", "price", "source"]
    assert encoder.categorical == ["brand", "source"]
    # Another split's rows: a brand or source the fitting rows never had, and "", are missing (NaN).
    other = {**fit, "brand": np.array(["y", "z", ""], dtype=object), "source": np.array([0, 3, 5], np.int32)}
    matrix = encoder.matrix(other)
    assert matrix.shape == (3, 11) and matrix.dtype == np.float32
    assert matrix[0, 0] == 1.0 and np.isnan(matrix[1:, 0]).all()  # codes: x 0, y 1
    assert np.array_equal(matrix[:, 1:9], fit["cross"]) and np.isnan(matrix[1, 9])
    assert matrix[0, 10] == 0.0 and matrix[1, 10] == 1.0 and np.isnan(matrix[2, 10])  # codes: 0 0, 3 1
    # Purchase 3 > save 2 > click 1 > none 0.
    assert gbdt_reference.relevance(fit).tolist() == [3, 2, 0]


def test_grouped_makes_lists_contiguous_in_first_appearance_order():
    order, sizes = gbdt_reference.grouped(np.array(["b", "a", "b", "c", "a"], dtype=object))
    assert order.tolist() == [0, 2, 1, 4, 3] and sizes.tolist() == [2, 2, 1]
    order, sizes = gbdt_reference.grouped(np.array([5, 5, 7]))
    assert order.tolist() == [0, 1, 2] and sizes.tolist() == [2, 1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small synthetic log through the data, retrieval (one epoch) and candidates stages."""
    return staged_state(tmp_path_factory.mktemp("gbdt"), ranking={"list_size": 20})


def test_gbdt_lists_rank_each_test_users_candidates(prepared):
    state = prepared
    frame, info = gbdt_reference.gbdt_lists(state, seed=0)
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score"]
    candidates = shards.held(state.candidates.candidate_set, ["user_id", "item_id"])
    per_user = candidates.groupby("user_id")["item_id"].agg(set)
    assert set(frame["user_id"]) == set(per_user.index)  # one list per test user with candidates
    size = state.config.ranking.list_size
    for user, rows in frame.groupby("user_id"):
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
        assert len(rows) == min(size, len(per_user[user]))
        assert rows["item_id"].is_unique and set(rows["item_id"]) <= per_user[user]
        assert rows["score"].is_monotonic_decreasing
    # Choices on the held-out users: a grid point was kept, early-stopped, its NDCG a fraction.
    assert 0.0 <= info["holdout_ndcg@10"] <= 1.0
    assert info["chosen"] in info["grid"] and info["best_iteration"] >= 1
    assert info["holdout_ndcg@10"] == max(t["holdout_ndcg@10"] for t in info["grid"])
    assert "user_id" not in info["features"] and "item_id" not in info["features"]
    assert "cross_ui_engagement" in info["features"] and info["fit_rows"] > 0

    # The synthetic users come back to their own items: the learnt order beats a random one
    # over the same candidates, on the test day, by a wide margin.
    rng = np.random.default_rng(0)
    shuffled = top_lists(candidates["user_id"], candidates["item_id"], rng.random(len(candidates)), {}, size)
    gbdt = score_lists(frame, state.truth, "g", (10,), n_resamples=0)["g/ndcg@10"]
    random = score_lists(shuffled, state.truth, "r", (10,), n_resamples=0)["r/ndcg@10"]
    assert gbdt > random + 0.05, (gbdt, random)

    # The same seed gives the same lists (deterministic LightGBM on two threads).
    again, _ = gbdt_reference.gbdt_lists(state, seed=0)
    pd.testing.assert_frame_equal(frame, again)


def test_features_are_the_ranker_inputs_less_the_ids(prepared):
    features, rconfig = prepared.retrieval.data.features, prepared.config.ranking
    names = gbdt_reference.ranker_features(features, rconfig)
    assert {"cross", "item_popularity", "two_tower_score", "brand", "category", "price"} <= set(names)
    assert not {"user_id", "item_id", "list", "label_click", "list_id"} & set(names)
    # The ranker's switches and exclusions reach the GBDT through the scorer's inputs.
    changed = dataclasses.replace(rconfig, list_features=True, exclude_features=("brand",))
    assert set(gbdt_reference.ranker_features(features, changed)) == set(names) - {"brand"} | {"list"}


def test_streaming_runs_are_refused(prepared):
    data = dataclasses.replace(prepared.config.data, stream_above_events=0)
    streaming = dataclasses.replace(prepared, config=dataclasses.replace(prepared.config, data=data))
    with pytest.raises(ConfigError, match="stream_above_events"):
        gbdt_reference.gbdt_lists(streaming)
