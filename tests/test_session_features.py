"""Sessions and activity in the ranker's history features: where a spec names a session column,
each candidate is described against the user's latest session, the same offline and in the
`recommend` export; a spec without one keeps the ranker's inputs as they were. The activity
features' values (`ranking.activity_features`); their serving twin: tests/test_serving.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tensorflow as tf

from conftest import tiny_log
from shopping_mtl.candidates.candidate_set import build_candidate_set
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.candidates.registry import SourceDay
from shopping_mtl.data.readers import read_dataset
from shopping_mtl.data.spec import load_spec
from shopping_mtl.data.split import split_events
from shopping_mtl.export import graphs
from shopping_mtl.features import FeatureSet, FeatureSpec
from shopping_mtl.ranking import examples, model as model_lib
from shopping_mtl.ranking.calibration import Platt, calibrate
from shopping_mtl.ranking.config import TASKS, RankingConfig
from shopping_mtl.ranking.cross import SESSION_FEATURES, session_features, user_item_activity
from shopping_mtl.retrieval.stage import feature_set
from test_spec_roles import write_visits

SPEC = {"user": {"user_id": {"type": "id"}},
        "item": {"item_id": {"type": "id"}, "category": {"type": "categorical"}}}


def test_the_latest_session_is_the_most_recent_events_session():
    # Most recent first: a and b in session s2 (the latest), a and c in s1, then padding.
    history = tf.constant([["a", "b", "a", "c", ""]])
    categories = tf.constant([["x", "y", "x", "x", ""]])
    candidates, candidate_categories = tf.constant([["a", "c", "d"]]), tf.constant([["x", "x", ""]])
    got = session_features(history, categories, tf.constant([["s2", "s2", "s1", "s1", ""]]),
                           candidates, candidate_categories).numpy()[0]
    assert got.shape == (3, len(SESSION_FEATURES))
    np.testing.assert_allclose(got[:, 0], np.log1p([1, 0, 0]))  # a once in s2; c only in s1
    np.testing.assert_allclose(got[:, 1], np.log1p([1, 1, 0]))  # category x once in s2; d has none
    np.testing.assert_allclose(got[:, 2], np.log1p([2, 2, 2]))  # s2 holds two events
    # Unknown sessions ("") are in no session: a request without them gets 0s, not one session.
    unknown = session_features(history, categories, tf.fill([1, 5], ""), candidates, candidate_categories)
    assert not np.any(unknown.numpy())


def test_only_a_spec_with_a_session_role_gives_the_ranker_a_session_input(tmp_path):
    sessions = ["v1", "v2", "v3", "w1", "w2", "w3", "x1", "v4", "v4", "w4", "x2"]
    spec = load_spec(str(write_visits(tmp_path, sessions)))
    dataset = read_dataset(spec)
    split = split_events(dataset.events)
    with_sessions = feature_set(dataset, split)
    assert with_sessions.spec.history_sessions
    without = FeatureSet(dataclasses.replace(with_sessions.spec, history_sessions=False), with_sessions.adapted)
    config = RankingConfig(bottom_layers=(8,), tower_layers=(4,))
    assert examples.SESSION_INPUT in model_lib.build_scorer(with_sessions, config).input_names
    assert examples.SESSION_INPUT not in model_lib.build_scorer(without, config).input_names
    assert graphs.HISTORY_SESSIONS in graphs._request_signature(with_sessions)
    assert graphs.HISTORY_SESSIONS not in graphs._request_signature(without)


def test_the_recommend_export_computes_the_session_features_as_offline():
    events, items = tiny_log()
    rng = np.random.default_rng(5)
    events["session_id"] = np.array([f"s{k}" for k in rng.integers(0, 3, len(events))], dtype=object)
    spec = dataclasses.replace(FeatureSpec.from_dict(SPEC), history_sessions=True)
    features = FeatureSet.adapt(spec, events, items=items)
    at, length = events["timestamp"].max() + pd.Timedelta(hours=1), 60
    assert events["user_id"].value_counts().max() <= length  # every request holds the whole history
    settings, quotas = BaselineConfig(), {"user_history": 15, "covisit": 20, "popularity": 10}
    users = sorted(set(events["user_id"]))[:10]
    rows = examples.label_rows(build_candidate_set(SourceDay(events, users, at, settings), quotas), None,
                               add_missed=False)
    arrays = examples.ranking_inputs(rows, events, at, None, items, features, history_length=length)
    assert arrays[examples.SESSION_INPUT].shape == (len(rows), len(SESSION_FEATURES))
    assert arrays[examples.SESSION_INPUT][:, 0].any()  # some candidates were in the latest session

    scorer = model_lib.build_scorer(features, RankingConfig(bottom_layers=(16,), tower_layers=(8,),
                                                            history_length=length))
    platt = {task: Platt(1.0, 0.0) for task in TASKS}
    offline = rows.assign(**{f"p_{t}": p for t, p in calibrate(model_lib.predict(scorer, arrays), platt,
                                                                 False).items()}).set_index(["user_id", "item_id"])
    snapshot = graphs.CatalogueSnapshot.from_events(items, events, at)
    graph = graphs.RankerGraph(scorer, features, snapshot, platt, {"click": 1.0}, length, False)
    module = graphs.RecommendServing(graph, snapshot, events, settings, quotas, list_size=100)
    request = graphs.requests_for(users, events, at, None, features, length)
    assert request[graphs.HISTORY_SESSIONS].shape == request["history_item_ids"].shape
    answer = {k: v.numpy() for k, v in module.serve({k: tf.constant(v) for k, v in request.items()}).items()}
    for row, user in enumerate(users):
        got = answer["item_ids"][row].astype(str)
        got = got[got != ""]
        assert sorted(got) == sorted(offline.loc[user].index)
        np.testing.assert_allclose(answer["click"][row][:len(got)], offline.loc[user].loc[got, "p_click"], atol=1e-5)
    # The same history without its sessions scores otherwise: the graph reads them.
    blind = {**request, graphs.HISTORY_SESSIONS: np.full_like(request[graphs.HISTORY_SESSIONS], "")}
    blind_answer = module.serve({k: tf.constant(v) for k, v in blind.items()})
    assert not np.allclose(blind_answer["scores"].numpy(), answer["scores"])


def test_activity_features_see_the_latest_save_and_purchase_and_the_users_last_day():
    history = tf.constant([["a", "b", "a", "a", ""]])
    events = tf.constant([["click", "purchase", "save", "purchase", ""]])
    ages = tf.constant([[0.5, 2.0, 3.0, 10.0, 0.0]])
    got = user_item_activity(history, events, ages, tf.constant([["a", "b", "c"]])).numpy()[0]
    np.testing.assert_allclose(got[:, 0], [np.exp(-3.0), 0.0, 0.0], rtol=1e-6)  # a saved 3 days ago
    np.testing.assert_allclose(got[:, 1], [np.exp(-10.0), np.exp(-2.0), 0.0], rtol=1e-6)  # latest purchase
    np.testing.assert_allclose(got[:, 2], np.log1p([1, 1, 1]))  # one event in the last day
    np.testing.assert_allclose(got[:, 3], np.log1p([3, 3, 3]))  # three in the last week (padding not)


def test_no_rows_give_empty_inputs_of_each_width():
    """A ranking day without held-out users has no rows; its inputs still concatenate with
    another day's (each history input keeps its width)."""
    events, items = tiny_log()
    events["session_id"] = "s"
    features = FeatureSet.adapt(dataclasses.replace(FeatureSpec.from_dict(SPEC), history_sessions=True), events,
                                items=items)
    rows = pd.DataFrame({"user_id": pd.Series([], dtype=object), "item_id": pd.Series([], dtype=object),
                         "two_tower_score": np.zeros(0, np.float32)})
    arrays = examples.ranking_inputs(rows, events, events["timestamp"].max(), None, items, features,
                                     history_length=10, engagement_features=True, target_attention=True)
    assert arrays["cross"].shape == (0, 8) and arrays["engagement"].shape == (0, 3)
    assert arrays[examples.SESSION_INPUT].shape == (0, len(SESSION_FEATURES))
    assert arrays[examples.ACTIVITY_INPUT].shape == (0, 4) and arrays["history_sequence"].shape[0] == 0
