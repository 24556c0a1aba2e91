"""The ranker and recommend exports: what a fresh TensorFlow-only process answers equals what the
training process computed, for every architecture, and odd requests get sensible answers."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from conftest import BackgroundCli, run_client, serve_fresh, stand_in_server, start_early, tiny_log
from shopping_mtl.export import graphs as serving
from shopping_mtl.ranking.calibration import Platt, calibrate
from shopping_mtl.ranking.config import ARCHITECTURES, TASKS, RankingConfig

TINY_RANKER = {"epochs": 1, "compare_single_task": False, "bottom_layers": [16], "tower_layers": [8],
               "extra_days": 2}


@pytest.fixture(scope="module")
def ranked_run(tmp_path_factory):
    """Every stage on a small synthetic log (ranking and its exports included)."""
    from shopping_mtl.config import load_config
    from tools import synthetic
    from shopping_mtl.pipeline import run

    folder = tmp_path_factory.mktemp("ranked")
    spec = synthetic.generate(folder / "data", 15_000, seed=2)
    config = load_config(overrides={
        "run_dir": str(folder / "run"), "data": {"dataset": str(spec)},
        "evaluation": {"bootstrap_resamples": 10},
        "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
        "ranking": TINY_RANKER,
    })
    assert config.stages == ("data", "baselines", "retrieval", "candidates", "ranking", "export")  # every stage
    return run(config)


@pytest.fixture(scope="module")
def check_export_started(ranked_run, tmp_path_factory):
    """`python -m shopping_mtl check-export` on the run's export base, started in the background
    once the run is there (six TensorFlow processes, one after another, that only read the
    exports and assert no timing): the module's other tests run meanwhile."""
    started = BackgroundCli(tmp_path_factory.mktemp("check_export"), "-m", "shopping_mtl", "check-export",
                            str(ranked_run.run_dir / "export"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module", autouse=True)
def start_check_export_early(request):
    start_early(request, "check_export_started")


def _request(state, users):
    return serving.requests_for(users, state.split.history, state.split.test_start, state.dataset.users,
                                state.retrieval.data.features, state.config.ranking.history_length)


def test_every_stage_runs_by_default_and_writes_the_final_list(ranked_run):
    state = ranked_run
    recommendations = pd.read_parquet(state.run_dir / "recommendations.parquet")
    assert list(recommendations.columns) == ["user_id", "rank", "item_id", "score", "p_click", "p_save", "p_purchase"]
    assert recommendations.groupby("user_id").size().max() <= 100
    assert set(recommendations["user_id"]) == set(state.truth.users)
    for key in ("pipeline/ndcg@10", "ranker/click/auc", "ranker/purchase/ece", "ranker/save/ece_uncalibrated"):
        assert key in state.metrics, key
    for name in ("retrieval", "ranker", "recommend"):
        path = state.run_dir / "export" / name / "1"
        assert (path / "saved_model.pb").is_file() and state.info["exports"][name] == str(path)


def test_recommend_export_answers_as_the_offline_pipeline_ranks(ranked_run, tmp_path):
    """One request per test user, answered in a fresh process: the same items as
    recommendations.parquet and, item for item, the same calibrated probabilities."""
    state = ranked_run
    users = list(state.truth.users)[:8]
    answer = serve_fresh(state.info["exports"]["recommend"], _request(state, users), tmp_path, "recommend")
    assert set(answer) == {"item_ids", "scores", *TASKS}
    offline = pd.read_parquet(state.run_dir / "recommendations.parquet").set_index(["user_id", "item_id"])
    shared = total = 0
    for row, user in enumerate(users):
        mine = offline.loc[user]
        served = answer["item_ids"][row].astype(str)
        common = [j for j, item in enumerate(served) if item in mine.index]
        shared, total = shared + len(common), total + len(mine)
        for task in TASKS:
            np.testing.assert_allclose(answer[task][row][common], mine.loc[served[common], f"p_{task}"], atol=1e-5)
        np.testing.assert_allclose(answer["scores"][row][common], mine.loc[served[common], "score"], atol=1e-5)
        assert served[0] == mine.index[0]
    # The request carries the user's last events, not the whole log, and co-visitation keeps
    # each seed's top neighbours: the sets differ at the margin only.
    assert shared / total >= 0.9


def test_recommend_answers_unknown_users_empty_histories_and_unknown_items(ranked_run, tmp_path):
    state = ranked_run
    request = _request(state, [state.truth.users[0]] * 3)
    request["user_id"] = np.array(["never-seen", "", state.truth.users[0]])
    history = request["history_item_ids"].astype(object)
    history[0] = ""  # no history at all
    history[1, :3] = ["no-such-item", "", "another-unknown"]  # only items the catalogue lacks
    history[1, 3:] = ""
    request["history_item_ids"] = history.astype(str)
    answer = serve_fresh(state.info["exports"]["recommend"], request, tmp_path, "odd")
    catalogue = set(state.retrieval.data.catalogue["item_id"])
    for row in range(3):
        items = answer["item_ids"][row].astype(str)
        assert len(items) == 100 and set(items) <= catalogue and len(set(items)) == 100
        assert np.all(np.diff(answer["scores"][row]) <= 1e-7)  # best first
        for task in TASKS:
            assert np.all((answer[task][row] > 0) & (answer[task][row] < 1))
    # A batch whose history has no columns at all also answers.
    bare = {k: v[:1] for k, v in request.items()}
    for name in ("history_item_ids", "history_events"):
        bare[name] = np.zeros((1, 0), dtype=str)
    bare["history_timestamps"] = np.zeros((1, 0), np.int64)
    answer = serve_fresh(state.info["exports"]["recommend"], bare, tmp_path, "bare")
    assert answer["item_ids"].shape == (1, 100) and (answer["item_ids"] != b"").all()


def test_ranker_export_scores_given_candidates_as_offline(ranked_run, tmp_path):
    state = ranked_run
    user = state.truth.users[1]
    candidates = state.candidates.candidate_set[state.candidates.candidate_set["user_id"] == user]
    request = _request(state, [user])
    catalogue = state.retrieval.data.catalogue.set_index("item_id").reindex(candidates["item_id"])
    for feature in state.retrieval.data.features.spec.item:
        values = candidates["item_id"] if feature.name == "item_id" else catalogue[feature.name]
        request[feature.name] = (values.to_numpy(np.float32) if feature.type == "numeric"
                                 else values.fillna("").to_numpy(dtype=str))[None, :]
    request["two_tower_score"] = np.where(candidates["source"] == "two_tower", candidates["score"], 0.0
                                          ).astype(np.float32)[None, :]
    answer = serve_fresh(state.info["exports"]["ranker"], request, tmp_path, "ranker")
    offline = pd.read_parquet(state.run_dir / "recommendations.parquet").query("user_id == @user").set_index("item_id")
    position = {item: j for j, item in enumerate(candidates["item_id"])}
    for task in TASKS:
        got = answer[task][0][[position[i] for i in offline.index]]
        np.testing.assert_allclose(got, offline[f"p_{task}"], atol=1e-5)


def test_every_architecture_exports_and_reloads_with_equal_outputs(tmp_path):
    """Train a step, export the ranker, answer in a fresh process: equal to the training
    process's own scoring of the same rows (features computed offline in numpy + TF)."""
    from shopping_mtl.features import FeatureSet, FeatureSpec
    from shopping_mtl.ranking import examples, model as model_lib

    events, items = tiny_log()
    spec = FeatureSpec.from_dict({
        "user": {"user_id": {"type": "id"}},
        "item": {"item_id": {"type": "id"}, "category": {"type": "categorical"},
                 "price": {"type": "numeric", "transform": "log1p", "buckets": 4}},
        "context": ["hour", "weekday"]})
    features = FeatureSet.adapt(spec, events, items=items)
    at = events["timestamp"].max() + pd.Timedelta(hours=1)
    users = [f"u{i}" for i in range(5)] + ["unknown-user"]
    candidates = [f"i{i}" for i in range(0, 60, 3)] + ["unknown-item"]
    rows = pd.DataFrame({"user_id": np.repeat(users, len(candidates)), "item_id": np.tile(candidates, len(users))})
    rng = np.random.default_rng(3)
    rows["two_tower_score"] = rng.random(len(rows)).astype(np.float32)
    rows["click"] = (rng.random(len(rows)) < 0.3).astype(np.float32)
    rows["save"] = rows["click"] * (rng.random(len(rows)) < 0.5)
    rows["purchase"] = rows["click"] * (rng.random(len(rows)) < 0.3)
    arrays = examples.ranking_inputs(rows, events, at, None, items, features, history_length=10, list_features=True)
    snapshot = serving.CatalogueSnapshot.from_events(items, events, at)
    request = serving.requests_for(users, events, at, None, features, 10)
    shaped = lambda column: column.reshape(len(users), len(candidates))  # noqa: E731
    table = items.set_index("item_id").reindex(candidates)
    request["item_id"] = np.tile(np.array(candidates, dtype=str), (len(users), 1))
    request["category"] = np.tile(table["category"].fillna("").to_numpy(dtype=str), (len(users), 1))
    request["price"] = np.tile(table["price"].to_numpy(np.float32), (len(users), 1))
    request["two_tower_score"] = shaped(arrays["two_tower_score"])
    platt = {"click": Platt(1.2, -0.3), "save": Platt(0.8, 0.1), "purchase": Platt(1.0, 0.5)}
    expected = {}
    for architecture in ARCHITECTURES:
        config = RankingConfig(architecture=architecture, bottom_layers=(16,), expert_layers=(8,), experts=2,
                               tower_layers=(8,), epochs=1, batch_size=64, history_length=10,
                               list_features=architecture == "mmoe", cross_layer=architecture == "ple")
        fitted_arrays = dict(arrays)
        model, _ = model_lib.train_ranker(features, fitted_arrays, fitted_arrays, config, seed=0)
        ordered = architecture == "esmm"
        offline = calibrate(model_lib.predict(model.scorer, arrays), platt, ordered)
        graph = serving.RankerGraph(model.scorer, features, snapshot, platt, {"click": 1.0, "purchase": 2.0},
                                    10, config.list_features, ordered=ordered)
        path = serving.export(serving.RankerServing(graph), tmp_path / architecture / "1")
        expected[architecture] = (path, offline)
    for architecture, (path, offline) in expected.items():
        answer = serve_fresh(path, request, tmp_path, architecture)
        for task in TASKS:
            np.testing.assert_allclose(answer[task], shaped(offline[task]), atol=1e-5, err_msg=f"{architecture} {task}")
        np.testing.assert_allclose(answer["score"], answer["click"] + 2 * answer["purchase"], atol=1e-6)
        if architecture == "esmm":
            assert (answer["save"] <= answer["click"]).all() and (answer["purchase"] <= answer["click"]).all()


def test_check_export_verifies_the_three_models_of_a_run(ranked_run, check_export_started):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = ranked_run.run_dir / "export"
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((base / "models.config").read_text(), config)
    assert [c.name for c in config.model_config_list.config] == ["retrieval", "ranker", "recommend"]
    done = check_export_started.result(timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("warmup requests replayed: 10, stock ops only: yes, saved_model_cli: ok") == 3
    assert "3 of 3 exports verified" in done.stdout


def _odd_rows(request: dict, n: int, rng) -> dict:
    """`n` rows drawn from `request`, with unknown and empty user ids, unknown and empty history
    items, and whole histories missing mixed in."""
    rows = rng.integers(0, len(request["timestamp"]), n)
    odd = {k: v[rows].astype(object) if v.dtype.kind == "U" else v[rows].copy() for k, v in request.items()}
    odd["user_id"][::3] = "never-seen-user"
    odd["user_id"][1::3] = ""
    odd["history_item_ids"][::4, 0] = "never-seen-item"
    odd["history_item_ids"][2::5] = ""
    return {k: v.astype(str) if v.dtype == object else v for k, v in odd.items()}


def test_every_signature_answers_odd_inputs_and_a_batch_of_1000(ranked_run, tmp_path):
    state = ranked_run
    rng = np.random.default_rng(0)
    exports = state.info["exports"]
    request = _odd_rows(_request(state, list(state.truth.users)), 1000, rng)

    answer = serve_fresh(exports["recommend"], request, tmp_path, "recommend-1000")
    assert answer["item_ids"].shape == (1000, 100) and (answer["item_ids"] != b"").all()
    assert all(np.isfinite(answer[k]).all() for k in ("scores", *TASKS))

    length = state.retrieval.data.features.spec.history_length
    catalogue = state.retrieval.data.catalogue.set_index("item_id")
    retrieval_request = {"user_id": request["user_id"], "timestamp": request["timestamp"],
                         "history_item_ids": request["history_item_ids"][:, :length]}
    if "category" in state.retrieval.data.features.spec.history_features:
        retrieval_request["history_category"] = catalogue["category"].reindex(
            retrieval_request["history_item_ids"].reshape(-1)).fillna("").to_numpy(dtype=str).reshape(1000, length)
    answer = serve_fresh(exports["retrieval"], retrieval_request, tmp_path, "retrieval-1000")
    assert answer["item_ids"].shape == (1000, 100) and np.isfinite(answer["scores"]).all()

    # The ranker: 20 candidates per row, unknown and empty item ids, NaN, negative and huge prices.
    items = rng.choice(catalogue.index.to_numpy(dtype=str), (1000, 20))
    items[:, 0], items[:, 1] = "never-seen-item", ""
    ranker = dict(request, item_id=items, two_tower_score=rng.random((1000, 20)).astype(np.float32))
    for feature in state.retrieval.data.features.spec.item:
        if feature.name == "item_id":
            continue
        values = catalogue[feature.name].reindex(items.reshape(-1))
        ranker[feature.name] = (values.to_numpy(np.float32) if feature.type == "numeric"
                                else values.fillna("").to_numpy(dtype=str)).reshape(1000, 20)
    ranker["price"][:, 2], ranker["price"][:, 3], ranker["price"][:, 4] = np.nan, -5.0, 1e30
    answer = serve_fresh(exports["ranker"], ranker, tmp_path, "ranker-1000")
    for task in TASKS:
        real = answer[task][:, [0, *range(2, 20)]]
        assert real.shape == (1000, 19) and ((real > 0) & (real < 1)).all()
        assert (answer[task][:, 1] == 0).all()  # an empty id is no candidate
    assert np.isneginf(answer["score"][:, 1]).all() and np.isfinite(answer["score"][:, 2:]).all()


@pytest.mark.parametrize("client", ["grpc", "rest"])
def test_client_examples_get_a_list(ranked_run, client):
    """examples/{grpc,rest}_recommend.py against a stand-in for the model server's two APIs (the
    same protos, JSON and signature call; no tensorflow_model_server binary exists here): the
    request is built from the signature the server reports."""
    state = ranked_run
    with stand_in_server(state.info["exports"]["recommend"]) as (grpc_address, rest_address):
        server = grpc_address if client == "grpc" else rest_address
        events = state.split.history[state.split.history["user_id"] == state.truth.users[0]].tail(3).iloc[::-1]
        history = ",".join(f"{r.item_id}:{r.event}:{int(r.timestamp.timestamp())}" for r in events.itertuples())
        done = run_client(client, server, "--user", state.truth.users[0], "--history", history, "--top", "5")
        assert done.returncode == 0, done.stderr[-2000:]
        rows = [line.split() for line in done.stdout.splitlines()[1:]]
        assert len(rows) == 5 and [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
        assert set(r[1] for r in rows) <= set(state.retrieval.data.catalogue["item_id"])
        cold = run_client(client, server, "--user", "someone-new")
        assert cold.returncode == 0 and len(cold.stdout.splitlines()) == 11, cold.stderr[-2000:]
        unknown = run_client(client, server, "--user", "u1", "--feature", "shoe_size=42")
        assert unknown.returncode == 2 and "the model has no input shoe_size" in unknown.stderr
        assert "Traceback" not in unknown.stderr


@pytest.mark.parametrize("client,address", [("grpc", "127.0.0.1:9"), ("rest", "http://127.0.0.1:9")])
def test_client_examples_say_when_no_server_answers(client, address):
    done = run_client(client, address, "--user", "u1", "--timeout", "5")
    assert done.returncode == 2 and f"no model server answers at {address}" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_run_is_tracked_in_mlflow_with_its_exports_registered(ranked_run):
    import os

    from mlflow import MlflowClient

    state = ranked_run
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(state.info["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == state.run_dir.name
    assert run.data.params["ranking.architecture"] == "shared_bottom"
    assert run.data.params["data.dataset"].endswith("spec.yaml")
    assert run.data.metrics["pipeline/ndcg_at_10"] == pytest.approx(state.metrics["pipeline/ndcg@10"])
    assert run.data.metrics["ranker/click/auc"] == pytest.approx(state.metrics["ranker/click/auc"])
    assert len(client.get_metric_history(run.info.run_id, "ranker/epoch/val_mean_auc")) == state.metrics["ranker/epochs"]
    for tag in ("git.commit", "git.dirty", "data.fingerprint", "versions.tensorflow"):
        assert tag in run.data.tags, tag
    assert run.data.tags["data.fingerprint"] == state.info["data_fingerprint"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "summary.txt", "calibration.png", "recall_curves.png",
            "model_summary.txt"} <= artifacts
    assert "exports" not in artifacts  # each export is stored once, in its logged model
    for name in ("retrieval", "ranker", "recommend"):
        versions = client.search_model_versions(f"name='shopping-{name}'")
        assert any(v.run_id == run.info.run_id for v in versions)
        assert client.get_registered_model(f"shopping-{name}").aliases  # a champion exists


def test_an_unreachable_tracking_server_stops_the_run_before_any_work(tmp_path):
    import os
    import socket

    from conftest import run_cli

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env_before = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    try:
        done = run_cli("train.py", "--run-dir", str(tmp_path / "run"), "--max-events", "3000", timeout=120)
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = env_before
    assert done.returncode == 2
    assert f"127.0.0.1:{port}" in done.stderr and "unreachable" in done.stderr
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "baselines").exists()


def test_recommend_graph_knows_where_candidates_came_from_as_the_offline_set(tmp_path):
    """With requests that hold each user's whole history, the `recommend` graph's merged
    candidates carry the offline candidate set's source, source rank, merged rank and source
    score (ties broken by item id, as offline: the log's times are cut to whole days), and a
    ranker reading them, the extra engagement half-lives, the attention sequence and the activity
    features scores every candidate as the offline rows; the `ranker` export, given the set's
    columns, answers the same."""
    import tensorflow as tf

    from shopping_mtl.candidates.candidate_set import build_candidate_set
    from shopping_mtl.candidates.config import BaselineConfig
    from shopping_mtl.candidates.registry import SourceDay
    from shopping_mtl.features import FeatureSet, FeatureSpec
    from shopping_mtl.ranking import examples, model as model_lib

    events, items = tiny_log()
    events["timestamp"] = events["timestamp"].dt.floor("D")  # many equal scores: ties by item id
    spec = FeatureSpec.from_dict({"user": {"user_id": {"type": "id"}},
                                  "item": {"item_id": {"type": "id"}, "category": {"type": "categorical"}},
                                  "context": ["hour", "weekday"]})
    features = FeatureSet.adapt(spec, events, items=items)
    at, length = events["timestamp"].max() + pd.Timedelta(days=1), 60
    assert events["user_id"].value_counts().max() <= length  # every request holds the whole history
    settings = BaselineConfig(history_half_life_days=0.25)
    quotas = {"user_history": 15, "covisit": 20, "popularity": 10}
    users = sorted(set(events["user_id"]))[:10]
    offline = build_candidate_set(SourceDay(events, users, at, settings), quotas)
    assert set(offline["source"]) == set(quotas)
    rows = examples.label_rows(offline, None, add_missed=False, provenance=True)
    arrays = examples.ranking_inputs(rows, events, at, None, items, features, history_length=length,
                                     engagement_features=True, target_attention=True, activity_features=True)
    assert arrays["item_recent_popularity"].any() and arrays["activity"][:, 3].any()
    config = RankingConfig(bottom_layers=(16,), tower_layers=(8,), history_length=length,
                           source_features=True, engagement_features=True, target_attention=True,
                           activity_features=True)
    scorer = model_lib.build_scorer(features, config)
    platt = {"click": Platt(1.2, -0.3), "save": Platt(0.8, 0.1), "purchase": Platt(1.0, 0.5)}
    expected = calibrate(model_lib.predict(scorer, arrays), platt, False)
    snapshot = serving.CatalogueSnapshot.from_events(items, events, at)
    graph = serving.RankerGraph(scorer, features, snapshot, platt, {"click": 1.0, "purchase": 2.0}, length, False)
    module = serving.RecommendServing(graph, snapshot, events, settings, quotas, list_size=100)
    request = serving.requests_for(users, events, at, None, features, length)

    merged = {k: v.numpy() for k, v in module.candidates({k: tf.constant(v) for k, v in request.items()}).items()}
    served = pd.DataFrame({"user_id": np.repeat(users, merged["valid"].shape[1]),
                           **{k: merged[k].reshape(-1) for k in ("item_id", "valid", "source", "source_rank", "rank",
                                                                 "source_score")}})
    served = served[served["valid"]].assign(item_id=lambda f: f["item_id"].str.decode("utf-8"))
    served = served.set_index(["user_id", "item_id"]).sort_index()
    want = offline.set_index(["user_id", "item_id"]).sort_index()
    assert served.index.equals(want.index)
    codes = examples.source_codes(want["source"])
    np.testing.assert_array_equal(served["source"], codes)
    np.testing.assert_array_equal(served["source_rank"], want["source_rank"])
    np.testing.assert_array_equal(served["rank"], want["rank"])
    np.testing.assert_allclose(served["source_score"], want["score"], rtol=1e-6)

    # Every candidate scored (list_size > candidates), in process and from the export.
    offline_p = rows.assign(**{f"p_{t}": expected[t] for t in TASKS}).set_index(["user_id", "item_id"])
    answer = serve_fresh(serving.export(module, tmp_path / "recommend" / "1"), request, tmp_path, "provenance")
    for row, user in enumerate(users):
        mine = offline_p.loc[user]
        got = answer["item_ids"][row].astype(str)
        got = got[got != ""]
        assert sorted(got) == sorted(mine.index)
        for task in TASKS:
            np.testing.assert_allclose(answer[task][row][:len(got)], mine.loc[got, f"p_{task}"], atol=1e-5)

    # The ranker export, given the offline set in its merged order and its provenance columns.
    user = users[0]
    mine = offline[offline["user_id"] == user].sort_values("rank")
    ranker_request = serving.requests_for([user], events, at, None, features, length)
    ranker_request["item_id"] = mine["item_id"].to_numpy(dtype=str)[None, :]
    ranker_request["category"] = items.set_index("item_id").loc[mine["item_id"], "category"].to_numpy(dtype=str)[None, :]
    ranker_request["two_tower_score"] = np.zeros((1, len(mine)), np.float32)
    ranker_request["source"] = mine["source"].to_numpy(dtype=str)[None, :]
    ranker_request["source_rank"] = mine["source_rank"].to_numpy(np.int64)[None, :]
    ranker_request["source_score"] = mine["score"].to_numpy(np.float32)[None, :]
    answer = serve_fresh(serving.export(serving.RankerServing(graph), tmp_path / "ranker" / "1"), ranker_request,
                         tmp_path, "ranker-provenance")
    for task in TASKS:
        np.testing.assert_allclose(answer[task][0], offline_p.loc[user].loc[mine["item_id"], f"p_{task}"], atol=1e-5)
