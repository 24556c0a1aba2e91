"""The multi-task ranker's pieces: user-item features by hand, every architecture, ESMM's order,
calibration, and the labelled rows."""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import tiny_log
from shopping_mtl.config import load_config
from shopping_mtl.data.split import GroundTruth
from shopping_mtl.errors import ConfigError
from shopping_mtl.features import FeatureSet, FeatureSpec
from shopping_mtl.ranking import cross, examples, model as model_lib
from shopping_mtl.ranking.calibration import Platt, expected_calibration_error
from shopping_mtl.ranking.config import ARCHITECTURES, RankingConfig
from shopping_mtl.ranking.cross import ATTENTION_LENGTH, CROSS_FEATURES, SEQUENCE_FEATURES, cross_features


def test_cross_features_by_hand():
    # History (most recent first): a clicked 0.5 days ago, b saved 1 day ago, a bought 2 days ago.
    out = cross_features(
        tf.constant([["a", "b", "a", ""]]), tf.constant([["x", "y", "x", ""]]),
        tf.constant([["click", "save", "purchase", ""]]), tf.constant([[0.5, 1.0, 2.0, 0.0]]),
        tf.constant([["a", "c"]]), tf.constant([["x", "y"]]),
    ).numpy()[0]
    got = dict(zip(CROSS_FEATURES, out[0]))  # candidate a
    assert got["ui_clicks"] == pytest.approx(math.log1p(1))
    assert got["ui_purchases"] == pytest.approx(math.log1p(1))
    assert got["ui_saves"] == 0.0
    assert got["ui_recency"] == pytest.approx(math.exp(-0.5))
    # engagement = 1 * 0.5**0.5 + 4 * 0.5**2 = 0.7071 + 1.0
    assert got["ui_engagement"] == pytest.approx(math.log1p(0.5 ** 0.5 + 4 * 0.25), rel=1e-5)
    assert got["uc_events"] == pytest.approx(math.log1p(2))  # two events in category x
    assert got["history_size"] == pytest.approx(math.log1p(3))  # padding does not count
    other = dict(zip(CROSS_FEATURES, out[1]))  # candidate c: never touched, category y once
    assert other["ui_clicks"] == other["ui_recency"] == other["ui_engagement"] == 0.0
    assert other["uc_events"] == pytest.approx(math.log1p(1))
    assert other["uc_recency"] == pytest.approx(math.exp(-1.0))


@pytest.fixture(scope="module")
def tiny_features():
    events, items = tiny_log()
    spec = FeatureSpec.from_dict({
        "user": {"user_id": {"type": "id"}},
        "item": {"item_id": {"type": "id"}, "category": {"type": "categorical"},
                 "price": {"type": "numeric", "transform": "log1p", "buckets": 4}},
        "context": ["hour", "weekday"]})
    features = FeatureSet.adapt(spec, events, items=items)
    return features, events, items


def _inputs(features, events, items, n_rows=256, seed=1):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, 40, n_rows)],
                         "item_id": [f"i{i}" for i in rng.integers(0, 60, n_rows)],
                         "two_tower_score": rng.random(n_rows).astype(np.float32)})
    click = rng.random(n_rows) < 0.3
    rows["click"] = click.astype(np.float32)
    rows["save"] = (click & (rng.random(n_rows) < 0.4)).astype(np.float32)
    rows["purchase"] = (click & (rng.random(n_rows) < 0.2)).astype(np.float32)
    at = events["timestamp"].max() + pd.Timedelta(hours=1)
    return examples.ranking_inputs(rows, events, at, None, items, features, history_length=10)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_builds_and_trains_a_step(tiny_features, architecture):
    features, events, items = tiny_features
    arrays = _inputs(features, events, items)
    config = RankingConfig(architecture=architecture, bottom_layers=(16,), expert_layers=(8,), experts=2,
                           tower_layers=(8,), epochs=1, batch_size=64, cross_layer=architecture == "mmoe",
                           loss_weighting="uncertainty" if architecture == "ple" else "fixed")
    model, fitted = model_lib.train_ranker(features, arrays, arrays, config, seed=0)
    assert np.isfinite(fitted["history"]["loss"][0])
    p = model_lib.predict(model.scorer, arrays)
    for task in ("click", "save", "purchase"):
        assert p[task].shape == (256,) and ((p[task] > 0) & (p[task] < 1)).all()
    if architecture == "esmm":
        assert (p["save"] <= p["click"] + 1e-7).all() and (p["purchase"] <= p["click"] + 1e-7).all()


def test_steps_per_call_change_neither_weights_nor_the_epoch_loss(tiny_features):
    """Several steps per call into TensorFlow (`steps_per_execution`) run the same steps: the
    same weights, and the same epoch losses in the history (the mean over the epoch's batches,
    kept in the graph since Python no longer sees every batch)."""
    features, events, items = tiny_features
    arrays = _inputs(features, events, items, n_rows=600)
    fits = {}
    for steps in (1, 4):
        config = RankingConfig(bottom_layers=(16,), tower_layers=(8,), epochs=2, batch_size=64,
                               steps_per_execution=steps, listwise_weight=0.0)
        model, fitted = model_lib.train_ranker(features, arrays, arrays, config, seed=0)
        fits[steps] = ([w.numpy() for w in model.scorer.weights], fitted["history"])
    (one, one_history), (four, four_history) = fits[1], fits[4]
    assert len(one) == len(four) and all(np.array_equal(a, b) for a, b in zip(one, four))
    assert one_history["loss"] == four_history["loss"] and len(one_history["loss"]) == 2
    assert "epoch_loss" not in one_history and "val_epoch_loss" not in one_history


def test_the_loss_is_each_heads_mean_cross_entropy_per_row_weighted(tiny_features):
    """A head's loss is its binary cross-entropy averaged over the batch's rows, weighted."""
    features, events, items = tiny_features
    arrays = _inputs(features, events, items, n_rows=200)
    weights = {"click": 1.0, "save": 2.0, "purchase": 4.0}
    config = RankingConfig(bottom_layers=(16,), tower_layers=(8,), epochs=1, batch_size=64,
                           listwise_weight=0.0, loss_weights=weights)
    model, _ = model_lib.train_ranker(features, arrays, arrays, config, seed=0)
    batch = {k: tf.constant(v) for k, v in arrays.items()}
    predicted = {t: np.clip(v.numpy().astype(np.float64), 1e-7, 1 - 1e-7) for t, v in model(batch).items()}
    expected = sum(w * np.mean(-(arrays[f"label_{t}"] * np.log(predicted[t])
                                 + (1 - arrays[f"label_{t}"]) * np.log(1 - predicted[t])))
                   for t, w in weights.items())
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-4)
    assert expected > 0.5  # three heads' entropies, weighted: not a rounding error


@pytest.mark.parametrize("order_loss", ["softmax", "lambda"])
def test_the_order_loss_trains_on_whole_lists_and_adds_with_its_weight(tiny_features, order_loss):
    from shopping_mtl.ranking.model import CLICK_LOGIT, lambda_loss, listwise_loss

    features, events, items = tiny_features
    arrays = _inputs(features, events, items, n_rows=200)
    arrays["list_id"] = pd.factorize(pd.Series(arrays["user_id"]))[0].astype(np.int64)
    pointwise = RankingConfig(bottom_layers=(16,), tower_layers=(8,), epochs=1, batch_size=64, listwise_weight=0.0)
    config = dataclasses.replace(pointwise, listwise_weight=2.0, order_loss=order_loss)
    model, fitted = model_lib.train_ranker(features, arrays, arrays, config, seed=0)
    assert np.isfinite(fitted["history"]["loss"]).all()
    batch = {k: tf.constant(v) for k, v in arrays.items()}
    logits = model(batch)[CLICK_LOGIT]
    if order_loss == "lambda":
        order = lambda_loss(logits, batch["label_click"] + batch["label_save"] + batch["label_purchase"],
                            batch["list_id"])
    else:
        order = listwise_loss(logits, batch["label_click"], batch["list_id"])
    without = model_lib.MultiTaskRanker(model.scorer, pointwise)
    assert float(model.compute_loss(batch)) == pytest.approx(float(without.compute_loss(batch)) + 2.0 * float(order),
                                                             rel=1e-5)
    assert float(order) > 0


def test_labels_and_missed_positives():
    candidates = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "source": ["two_tower", "covisit"],
                               "score": [0.7, 3.0]})
    target = pd.DataFrame({"user_id": ["u", "u", "u"], "item_id": ["a", "a", "z"],
                           "event": ["click", "purchase", "save"]})
    rows = examples.label_rows(candidates, target, add_missed=True).set_index("item_id")
    assert rows.loc["a", ["click", "save", "purchase"]].tolist() == [1.0, 0.0, 1.0]
    assert rows.loc["b", ["click", "save", "purchase"]].tolist() == [0.0, 0.0, 0.0]
    assert rows.loc["z", ["click", "save", "purchase"]].tolist() == [1.0, 1.0, 0.0]  # missed, added
    assert rows.loc["a", "two_tower_score"] == pytest.approx(0.7) and rows.loc["b", "two_tower_score"] == 0.0
    assert "z" not in examples.label_rows(candidates, target, add_missed=False)["item_id"].tolist()


def test_platt_scaling_fixes_a_miscalibrated_head():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.01, 0.3, 20_000)
    labels = (rng.random(20_000) < truth).astype(float)
    overconfident = 1 / (1 + np.exp(-(2 * np.log(truth / (1 - truth)) + 1)))  # too extreme, too high
    before = expected_calibration_error(overconfident, labels)
    after = expected_calibration_error(Platt.fit(overconfident, labels)(overconfident), labels)
    assert before > 0.04 and after < 0.01


def test_ece_by_hand():
    # Two bins: p = 0.1 (labels 0, 0) and p = 0.8 (labels 1, 0): 0.5 * |0 - 0.1| + 0.5 * |0.5 - 0.8| = 0.2
    assert expected_calibration_error(np.array([0.1, 0.1, 0.8, 0.8]), np.array([0, 0, 1, 0])) == pytest.approx(0.2)


def test_listwise_loss_by_hand():
    from shopping_mtl.ranking.model import listwise_loss

    # Lists 7 (two rows, logits 0 and 0, the first positive) and 9 (one positive row, logit 1):
    #   list 7: -log softmax = -log(e^0 / (e^0 + e^0)) = log 2 = 0.6931; list 9: -log 1 = 0.
    #   mean over the two positives: 0.3466
    logits = tf.constant([0.0, 0.0, 1.0])
    loss = listwise_loss(logits, tf.constant([1.0, 0.0, 1.0]), tf.constant([7, 7, 9], tf.int64))
    assert float(loss) == pytest.approx(math.log(2) / 2, abs=1e-5)


def lambda_loss_reference(logits, relevance, list_ids):
    """LambdaRank's loss written out pair by pair, list by list (the reference for the batched one)."""
    total, lists = 0.0, 0
    for list_id in dict.fromkeys(list_ids):
        rows = [i for i, x in enumerate(list_ids) if x == list_id]
        if not any(relevance[i] > 0 for i in rows):
            continue
        lists += 1
        order = sorted(rows, key=lambda i: (-logits[i], i))
        rank = {i: r + 1 for r, i in enumerate(order)}
        gains = sorted((2.0 ** relevance[i] - 1 for i in rows), reverse=True)
        ideal = sum(g / math.log2(1 + r + 1) for r, g in enumerate(gains))
        for i in rows:
            for j in rows:
                if relevance[i] > relevance[j]:
                    swap = abs((2.0 ** relevance[i] - 2.0 ** relevance[j])
                               * (1 / math.log2(1 + rank[i]) - 1 / math.log2(1 + rank[j]))) / ideal
                    total += swap * math.log1p(math.exp(logits[j] - logits[i]))
    return total / max(lists, 1)


def test_lambda_loss_matches_the_pair_by_pair_reference():
    from shopping_mtl.ranking.model import lambda_loss

    rng = np.random.default_rng(3)
    list_ids = np.repeat([4, 2, 9, 5], [6, 3, 5, 4])  # list 5 has no relevant row
    relevance = rng.integers(0, 4, len(list_ids)).astype(np.float32)
    relevance[list_ids == 5] = 0
    logits = rng.normal(size=len(list_ids)).astype(np.float32)
    logits[1] = logits[0]  # a tie, broken by position as the reference breaks it
    got = float(lambda_loss(tf.constant(logits), tf.constant(relevance), tf.constant(list_ids, tf.int64)))
    assert got == pytest.approx(lambda_loss_reference(logits.tolist(), relevance.tolist(), list_ids.tolist()), rel=1e-5)
    assert got > 0


def test_lambda_loss_pushes_the_relevant_row_up():
    from shopping_mtl.ranking.model import lambda_loss

    logits = tf.Variable([0.5, 0.0, 1.0])  # the relevant row (1) ranks last
    with tf.GradientTape() as tape:
        loss = lambda_loss(logits, tf.constant([0.0, 1.0, 0.0]), tf.constant([1, 1, 1], tf.int64))
    grad = tape.gradient(loss, logits).numpy()
    assert grad[1] < 0 and grad[0] > 0 and grad[2] > 0  # descent raises row 1, lowers the others
    assert grad[2] > grad[0]  # the row ranked first costs more NDCG: pushed down harder


def test_learnability_single_category_clickers():
    """Users who only ever click one category: the ranker learns it (held-out click AUC > 0.9)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    n_users, n_categories = 120, 8
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(160)], "category": [f"c{i % n_categories}" for i in range(160)],
                          "price": rng.uniform(1, 100, 160)})
    taste = {f"u{u}": f"c{u % n_categories}" for u in range(n_users)}
    by_category = items.groupby("category")["item_id"].apply(list).to_dict()
    t0 = pd.Timestamp("2024-03-01", tz="UTC")
    history = pd.DataFrame([
        {"user_id": user, "item_id": rng.choice(by_category[category]), "event": "click",
         "timestamp": t0 + pd.Timedelta(hours=int(rng.integers(0, 96)))}
        for user, category in taste.items() for _ in range(6)]).sort_values("timestamp", ignore_index=True)
    at = t0 + pd.Timedelta(days=4)
    rows = pd.DataFrame([{"user_id": user, "item_id": item} for user in taste
                         for item in rng.choice(items["item_id"], 30, replace=False)])
    category = items.set_index("item_id")["category"]
    rows["click"] = (category.reindex(rows["item_id"]).to_numpy() == rows["user_id"].map(taste).to_numpy()).astype(np.float32)
    rows["save"] = rows["purchase"] = 0.0
    rows["two_tower_score"] = 0.0
    spec = FeatureSpec.from_dict({"user": {"user_id": {"type": "id"}},
                                  "item": {"item_id": {"type": "id"}, "category": {"type": "categorical"}}})
    features = FeatureSet.adapt(spec, history, items=items)
    arrays = examples.ranking_inputs(rows, history, at, None, items, features, history_length=20)
    held = rows["user_id"].isin([f"u{u}" for u in range(0, n_users, 5)]).to_numpy()
    fit = {k: v[~held] for k, v in arrays.items()}
    holdout = {k: v[held] for k, v in arrays.items()}
    config = RankingConfig(bottom_layers=(32,), tower_layers=(16,), epochs=8, batch_size=128, patience=8,
                           loss_weights={"click": 1.0, "save": 0.0, "purchase": 0.0})
    model, _ = model_lib.train_ranker(features, fit, holdout, config, seed=0, tasks=("click",))
    p = model_lib.predict(model.scorer, holdout)["click"]
    assert roc_auc_score(holdout["label_click"], p) > 0.9


def test_ranking_features_ignore_events_at_or_after_the_prediction_time(tiny_features):
    """Leakage: events on the labelled day (or later) change no feature of that day's rows."""
    features, events, items = tiny_features
    at = events["timestamp"].quantile(0.6)
    before = events[events["timestamp"] < at]
    rows = pd.DataFrame({"user_id": events["user_id"].iloc[:50].to_numpy(), "item_id": events["item_id"].iloc[-50:].to_numpy(),
                         "two_tower_score": np.float32(0.0), "click": 0.0, "save": 0.0, "purchase": 0.0})
    # Plant, after `at`, a purchase of every row's item by its user: the strongest signal there is.
    planted = pd.DataFrame({"user_id": rows["user_id"], "item_id": rows["item_id"], "event": "purchase",
                            "timestamp": at + pd.Timedelta(seconds=1)})
    clean = examples.ranking_inputs(rows, before, at, None, items, features, history_length=10)
    leaky = examples.ranking_inputs(rows, pd.concat([events, planted], ignore_index=True), at, None, items, features,
                                    history_length=10)
    for name in clean:
        np.testing.assert_array_equal(clean[name], leaky[name], err_msg=name)
    # The same plant one second before `at` is history, and shows: the test can see a leak.
    visible = examples.ranking_inputs(rows, pd.concat([before, planted.assign(timestamp=at - pd.Timedelta(seconds=1))],
                                                      ignore_index=True), at, None, items, features, history_length=10)
    ui = CROSS_FEATURES.index("ui_purchases")
    assert (visible["cross"][:, ui] > clean["cross"][:, ui]).all()


def _list_rows(features, events, items, users, seed):
    """20 distinct candidates for each of `users`, a quarter of them clicked at random."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame([{"user_id": f"u{u}", "item_id": f"i{i}"} for u in users
                         for i in rng.choice(60, 20, replace=False)])
    rows["two_tower_score"] = rng.random(len(rows)).astype(np.float32)
    click = rng.random(len(rows)) < 0.25
    rows["click"] = click.astype(np.float32)
    rows["save"] = (click & (rng.random(len(rows)) < 0.4)).astype(np.float32)
    rows["purchase"] = (click & (rng.random(len(rows)) < 0.2)).astype(np.float32)
    at = events["timestamp"].max() + pd.Timedelta(hours=1)
    return rows, examples.ranking_inputs(rows, events, at, None, items, features, history_length=10)


def test_early_stopping_restores_the_epoch_with_the_best_holdout_ndcg(tiny_features):
    from shopping_mtl.ranking import stage

    features, events, items = tiny_features
    fit_rows, fit_inputs = _list_rows(features, events, items, range(30), seed=1)
    holdout_rows, holdout_inputs = _list_rows(features, events, items, range(30, 40), seed=2)
    clicked = holdout_rows[holdout_rows["click"] > 0]
    truth = GroundTruth(tuple(sorted(set(holdout_rows["user_id"]))),
                        {"any": {u: frozenset(g) for u, g in clicked.groupby("user_id")["item_id"]},
                         "save": {}, "purchase": {}}, {})
    # What fit_ranker reads of a RankingData.
    data = types.SimpleNamespace(fit_rows=fit_rows, fit_inputs=fit_inputs, holdout_rows=holdout_rows,
                                 holdout_inputs=holdout_inputs, holdout_truth=truth)
    # Without the activity inputs: on these rows their NDCG then peaks before the last epoch.
    config = RankingConfig(bottom_layers=(16,), tower_layers=(8,), epochs=4, patience=4, batch_size=64,
                           listwise_weight=0.0, activity_features=False)
    assert config.early_stopping == "holdout_ndcg@10"
    fitted = stage.fit_ranker(features, data, config, seed=0)
    watched = fitted.history["val_objective"]  # the held-out NDCG@10 after each epoch
    assert len(watched) == len(fitted.history["loss"]) == 4
    # On these labels (a quarter clicked at random) the NDCG peaks before the last epoch, so
    # the fit must have gone back to the best epoch's weights.
    assert int(np.argmax(watched)) < 3
    restored = stage.holdout_ndcg_objective(data, config)(fitted.model)
    assert restored == pytest.approx(max(watched), abs=1e-6)
    # The heads' held-out AUCs are still logged from the validation rows.
    assert fitted.holdout_mean_auc == max(fitted.history["val_mean_auc"])


def test_unknown_early_stopping_is_a_config_error():
    with pytest.raises(ConfigError, match=r"ranking.early_stopping is 'ndcg'; known: holdout_ndcg@10, val_mean_auc"):
        load_config(overrides={"ranking": {"early_stopping": "ndcg"}})


def test_labels_by_integer_keys_equal_the_left_merge_row_for_row():
    rng = np.random.default_rng(4)
    users, items = [f"u{i}" for i in range(30)], [f"i{i}" for i in range(50)]
    candidates = pd.DataFrame({"user_id": rng.choice(users, 400), "item_id": rng.choice(items, 400),
                               "source": rng.choice(["two_tower", "popularity"], 400), "score": rng.random(400)})
    candidates = candidates.drop_duplicates(["user_id", "item_id"])
    target = pd.DataFrame({"user_id": rng.choice(users + ["new"], 300), "item_id": rng.choice(items + ["x"], 300),
                           "event": rng.choice(["view", "cart", "save", "purchase"], 300)})
    rows = examples.label_rows(candidates, target, add_missed=False)
    expected = candidates[["user_id", "item_id"]].merge(
        target.assign(click=1.0, save=(target["event"] == "save") * 1.0, purchase=(target["event"] == "purchase") * 1.0)
        .groupby(["user_id", "item_id"])[["click", "save", "purchase"]].max().reset_index(),
        on=["user_id", "item_id"], how="left").fillna(0.0)
    assert rows[["user_id", "item_id"]].values.tolist() == candidates[["user_id", "item_id"]].values.tolist()
    for task in ("click", "save", "purchase"):
        assert rows[task].dtype == np.float32 and np.array_equal(rows[task].to_numpy(), expected[task].to_numpy())
    assert rows["click"].sum() > 10 and rows["purchase"].sum() > 0
    # No engagement with any candidate: every label 0, no row lost.
    none = examples.label_rows(candidates, target.assign(item_id="x"), add_missed=False)
    assert len(none) == len(candidates) and not none[["click", "save", "purchase"]].to_numpy().any()


def test_final_lists_on_codes_equal_the_string_sort():
    from shopping_mtl.scale.top_lists import top_lists as _lists
    rng = np.random.default_rng(5)
    n = 3000
    users = rng.choice([f"u{i}" for i in range(80)] + ["", "é"], n).astype(object)
    items = rng.choice([f"i{i}" for i in range(400)], n).astype(object)
    score = rng.integers(0, 6, n).astype(np.float32) / 5  # many ties, broken by item id, then row order
    probabilities = {t: rng.random(n).astype(np.float32) for t in ("click", "save", "purchase")}
    frame = pd.DataFrame({"user_id": users, "item_id": items, "score": score,
                          **{f"p_{t}": v for t, v in probabilities.items()}})
    frame = frame.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    frame = frame.groupby("user_id", sort=False).head(10)
    frame.insert(1, "rank", frame.groupby("user_id", sort=False).cumcount() + 1)
    expected = frame.reset_index(drop=True)
    pd.testing.assert_frame_equal(_lists(users, items, score, probabilities, 10), expected)
    # The candidate frames' columns (Arrow strings) give the same frame, coded without Python strs.
    as_series = _lists(pd.Series(users, dtype="str"), pd.Series(items, dtype="str"), score, probabilities, 10)
    pd.testing.assert_frame_equal(as_series, expected)
    # Rows already by user (as the candidate set comes) are ordered a few users at a time.
    by_user = np.argsort(users, kind="stable")
    for rows_per_pass in (1, 7, 10**6):
        got = _lists(users[by_user], items[by_user], score[by_user],
                     {t: p[by_user] for t, p in probabilities.items()}, 10, rows_per_pass=rows_per_pass)
        pd.testing.assert_frame_equal(got, expected)


def test_engagement_half_lives_and_provenance_by_hand():
    from shopping_mtl.ranking.cross import ENGAGEMENT_FEATURES, ENGAGEMENT_HALF_LIVES, provenance_features

    # History (most recent first): a clicked 0.5 days ago, a bought 2 days ago.
    out = cross_features(tf.constant([["a", "a"]]), tf.constant([["x", "x"]]), tf.constant([["click", "purchase"]]),
                         tf.constant([[0.5, 2.0]]), tf.constant([["a", "c"]]), tf.constant([["x", "y"]]),
                         ENGAGEMENT_HALF_LIVES).numpy()[0]
    assert out.shape == (2, len(CROSS_FEATURES) + len(ENGAGEMENT_FEATURES))
    for j, half_life in enumerate(ENGAGEMENT_HALF_LIVES):
        expected = math.log1p(0.5 ** (0.5 / half_life) + 4 * 0.5 ** (2.0 / half_life))
        assert out[0, len(CROSS_FEATURES) + j] == pytest.approx(expected, rel=1e-5)
        assert out[1, len(CROSS_FEATURES) + j] == 0.0  # c: never touched
    # The cross features themselves do not change with the extra columns.
    plain = cross_features(tf.constant([["a", "a"]]), tf.constant([["x", "x"]]), tf.constant([["click", "purchase"]]),
                           tf.constant([[0.5, 2.0]]), tf.constant([["a", "c"]]), tf.constant([["x", "y"]])).numpy()[0]
    np.testing.assert_array_equal(out[:, :len(CROSS_FEATURES)], plain)
    # source_rank 4 at merged position 9 with score 2.5; a two-tower score of -1; no source.
    values = provenance_features(tf.constant([4.0, 1.0, 0.0]), tf.constant([9.0, 1.0, 0.0]),
                                 tf.constant([2.5, -1.0, 0.0])).numpy()
    np.testing.assert_allclose(values[0], [0.25, math.log1p(4), math.log1p(9), math.log1p(2.5)], rtol=1e-6)
    np.testing.assert_allclose(values[1], [1.0, math.log1p(1), math.log1p(1), -math.log1p(1.0)], rtol=1e-6)
    assert not values[2].any()


def test_rows_keep_where_candidates_came_from_and_missed_positives_come_from_none():
    candidates = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "rank": [1, 2],
                               "score": [0.7, 3.0], "source": ["two_tower", "covisit"], "source_rank": [1, 5]})
    target = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["b", "z"], "event": ["click", "save"]})
    for add_missed in (False, True):
        rows = examples.label_rows(candidates, target, add_missed=add_missed, provenance=True).set_index("item_id")
        assert rows.loc["b", ["source", "source_rank", "rank", "source_score"]].tolist() == ["covisit", 5, 2, 3.0]
        assert rows.loc["a", "source_score"] == pytest.approx(0.7)
    assert rows.loc["z", ["source", "source_rank", "rank", "source_score"]].tolist() == ["", 0, 0, 0.0]
    inputs = examples.provenance_inputs(rows["source"], rows["source_rank"], rows["rank"], rows["source_score"])
    vocabulary = examples.source_vocabulary()
    assert {"two_tower", "user_history", "covisit", "popularity"} <= set(vocabulary)
    assert inputs["source"].tolist() == [vocabulary.index("two_tower") + 1, vocabulary.index("covisit") + 1, 0]
    assert inputs["provenance"].shape == (3, 4) and not inputs["provenance"][2].any()


def test_the_ranker_reads_sources_and_engagement_when_told(tiny_features):
    features, events, items = tiny_features
    rng = np.random.default_rng(7)
    rows = pd.DataFrame({"user_id": [f"u{i}" for i in rng.integers(0, 40, 300)],
                         "item_id": [f"i{i}" for i in rng.integers(0, 60, 300)],
                         "two_tower_score": np.float32(0.0), "click": (rng.random(300) < 0.3).astype(np.float32),
                         "source": rng.choice(["user_history", "covisit", "popularity", ""], 300),
                         "source_rank": rng.integers(1, 30, 300), "rank": rng.integers(1, 60, 300),
                         "source_score": rng.random(300) * 10})
    rows["save"] = rows["purchase"] = np.float32(0.0)
    arrays = examples.ranking_inputs(rows, events, events["timestamp"].max(), None, items, features, history_length=10,
                                     engagement_features=True, target_attention=True)
    assert arrays["engagement"].shape == (300, 3) and arrays["provenance"].shape == (300, 4)
    assert arrays["history_sequence"].shape == (300, ATTENTION_LENGTH, len(SEQUENCE_FEATURES))
    plain = examples.ranking_inputs(rows.drop(columns=["source"]), events, events["timestamp"].max(), None, items,
                                    features, history_length=10)
    assert not {"engagement", "provenance", "history_sequence"} & set(plain)  # nothing computed that is not read
    for flag in (False, True):
        config = RankingConfig(bottom_layers=(16,), tower_layers=(8,), epochs=1, batch_size=64,
                               source_features=flag, engagement_features=flag, target_attention=flag)
        model, fitted = model_lib.train_ranker(features, arrays, arrays, config, seed=0)
        for name in ("source", "engagement", "history_sequence"):
            assert (name in model.scorer.input_names) == flag
        assert np.isfinite(fitted["history"]["loss"][0])
    # Another source, or another history, for the same rows changes the scores: the model reads them.
    moved = dict(arrays, source=np.where(arrays["source"] > 0, 0, 1).astype(np.int32))
    assert not np.allclose(model_lib.predict(model.scorer, arrays)["click"], model_lib.predict(model.scorer, moved)["click"])
    forgotten = dict(arrays, history_sequence=np.zeros_like(arrays["history_sequence"]))
    assert not np.allclose(model_lib.predict(model.scorer, arrays)["click"],
                           model_lib.predict(model.scorer, forgotten)["click"])


def test_sequence_features_describe_each_recent_event_against_the_candidate():
    # One user: history (most recent first) a click on b (category y, 0.5 days ago), a save on
    # a (x, 2 days ago), padding; candidates b (category y) and z (x).
    values = cross.sequence_features(tf.constant([["b", "a", ""]]), tf.constant([["y", "x", ""]]),
                                     tf.constant([["click", "save", ""]]), tf.constant([[0.5, 2.0, 0.0]]),
                                     tf.constant([["b", "z"]]), tf.constant([["y", "x"]]), length=4).numpy()
    assert values.shape == (1, 2, 4, len(SEQUENCE_FEATURES))
    columns = {name: values[..., i] for i, name in enumerate(SEQUENCE_FEATURES)}
    np.testing.assert_array_equal(columns["same_item"][0], [[1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(columns["same_category"][0], [[1, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(columns["click"][0, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(columns["save"][0, 1], [0, 1, 0, 0])
    np.testing.assert_allclose(columns["log_age"][0, 0], [np.log1p(0.5), np.log1p(2.0), 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(columns["present"][0], [[1, 1, 0, 0]] * 2)
    # Slots past `length` are cut: the most recent events are kept.
    cut = cross.sequence_features(tf.constant([["b", "a", ""]]), tf.constant([["y", "x", ""]]),
                                  tf.constant([["click", "save", ""]]), tf.constant([[0.5, 2.0, 0.0]]),
                                  tf.constant([["b", "z"]]), tf.constant([["y", "x"]]), length=1).numpy()
    np.testing.assert_array_equal(cut, values[:, :, :1])
