"""Tests of the feature spec, the adapted preprocessing layers and the history features."""

import json
import math
import subprocess
import sys

import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from shopping_mtl.features import (
    FeatureSet,
    FeatureSpec,
    HistoryPooling,
    NumericPreprocessing,
    hour_and_weekday,
)
from shopping_mtl.history import last_items_before, to_unix_seconds

SPEC = {
    "embedding_dim": 4,
    "num_oov_indices": 2,
    "history_length": 3,
    "history_features": ["item_id", "category"],
    "user": {
        "user_id": {"type": "id"},
        "gender": {"type": "categorical"},
        "income": {"type": "numeric", "transform": "log1p"},
    },
    "item": {
        "item_id": {"type": "id", "dim": 3},
        "category": {"type": "categorical"},
        "brand": {"type": "hashed", "bins": 16},
        "price": {"type": "numeric", "transform": "log1p"},
    },
    "context": ["hour", "weekday"],
}


def ts(text):
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture(autouse=True)
def seeds():
    tf.keras.utils.set_random_seed(0)


@pytest.fixture
def train_events():
    # Counts: u1 3, u2 2, u3 1; i1 3, i2 1, i3 1, i4 1.
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u1"],
            "item_id": ["i1", "i2", "i1", "i3", "i1", "i4"],
            "event": ["click", "click", "purchase", "save", "click", "click"],
            "timestamp": [
                ts("2024-01-01 08:00"),
                ts("2024-01-02 09:00"),
                ts("2024-01-02 10:00"),
                ts("2024-01-03 11:00"),
                ts("2024-01-03 12:00"),
                ts("2024-01-03 13:00"),
            ],
        }
    )


@pytest.fixture
def items():
    # i9 exists in the catalogue but never occurs in the train events.
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4", "i9"],
            "category": ["c1", "c1", "c2", "c3", "c9"],
            "brand": ["b1", "b2", None, "b1", "b9"],
            "price": [9.0, 99.0, 0.0, np.nan, 1e6],
        }
    )


@pytest.fixture
def users():
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u9"],
            "gender": ["F", "M", None, "X"],
            "income": [1000.0, 0.0, np.nan, 5.0],
        }
    )


@pytest.fixture
def feature_set(train_events, items, users):
    return FeatureSet.adapt(FeatureSpec.from_dict(SPEC), train_events, items=items, users=users)


def lookup(feature_set, name, values):
    return feature_set.indexer(name)(tf.constant(values)).numpy().tolist()


# ---- spec validation


@pytest.mark.parametrize(
    "change, named, known",
    [
        ({"embeding_dim": 8}, "'embeding_dim'", "embedding_dim"),
        ({"item": {"brand": {"type": "hashed", "bin": 8}}}, "'bin'", "bins"),
        ({"item": {"brand": {"type": "hash", "bins": 8}}}, "'hash'", "hashed"),
        ({"user": {"income": {"type": "numeric", "transform": "log"}}}, "'log'", "log1p"),
        ({"context": ["hour", "month"]}, "'month'", "weekday"),
        ({"history_features": ["item_id", "price"]}, "'price'", "category"),
    ],
)
def test_spec_errors_name_the_bad_key_and_the_known_ones(change, named, known):
    with pytest.raises(ValueError, match=named) as error:
        FeatureSpec.from_dict({**SPEC, **change})
    assert known in str(error.value)


def test_spec_defaults_and_values():
    spec = FeatureSpec.from_dict(
        {"history_length": 5, "item": {"item_id": {"type": "id"}, "price": {"type": "numeric"}}}
    )
    assert spec.history_features == ("item_id",)
    assert spec.feature("item_id").dim == 32 and spec.feature("item_id").num_oov_indices == 8
    assert spec.feature("price").dim == 0 and not spec.feature("price").embedded
    with pytest.raises(ValueError, match="bins"):
        FeatureSpec.from_dict({"item": {"brand": {"type": "hashed"}}})
    with pytest.raises(ValueError, match="history_length"):
        FeatureSpec.from_dict({"history_length": -1})


# ---- lookups


def test_ids_map_to_stable_indices_and_unknowns_to_oov(feature_set):
    # Index 0 is "" (missing), 1..2 the OOV buckets, then the vocabulary by count, ties by value.
    assert feature_set.adapted["item_id"].vocabulary == ("i1", "i2", "i3", "i4")
    assert feature_set.adapted["user_id"].vocabulary == ("u1", "u2", "u3")
    assert lookup(feature_set, "item_id", ["i1", "i2", "i4", ""]) == [3, 4, 6, 0]
    unknown = lookup(feature_set, "item_id", ["never-seen", "i9", "zzz"])
    assert all(1 <= i <= 2 for i in unknown)
    # Categorical: one OOV row; the gender of u3 was missing, so it is not a vocabulary entry.
    assert feature_set.adapted["gender"].vocabulary == ("F", "M")
    assert lookup(feature_set, "gender", ["F", "M", "X", ""]) == [2, 3, 1, 0]
    assert feature_set.num_indices("item_id") == 1 + 2 + 4
    hashed = lookup(feature_set, "brand", ["", "b1", "anything"])
    assert hashed[0] == 0 and all(1 <= i <= 16 for i in hashed[1:])


def test_min_count_sends_rare_ids_to_oov(train_events):
    spec = FeatureSpec.from_dict({"item": {"item_id": {"type": "id", "min_count": 2}}})
    fs = FeatureSet.adapt(spec, train_events)
    assert fs.adapted["item_id"].vocabulary == ("i1",)
    assert lookup(fs, "item_id", ["i1"]) == [9]  # 1 mask + 8 default OOV rows
    assert 1 <= lookup(fs, "item_id", ["i2"])[0] <= 8


# ---- numerics


def test_normalization_uses_train_log1p_price_and_maps_missing_to_zero(feature_set):
    # Train items i1..i4 (i9 never occurs in train): log1p(9) = ln 10, log1p(99) = ln 100 =
    # 2 ln 10, log1p(0) = 0, i4's NaN is left out. mean = (ln10 + 2 ln10 + 0) / 3 = ln 10;
    # variance = ((0)^2 + (ln10)^2 + (-ln10)^2) / 3 = (2/3) (ln 10)^2 (population variance).
    price = feature_set.adapted["price"]
    assert price.mean == pytest.approx(math.log(10))
    assert price.variance == pytest.approx(2 / 3 * math.log(10) ** 2)
    out = feature_set.indexer("price")(tf.constant([99.0, 9.0, np.nan, -5.0, np.inf])).numpy()
    # 99 -> (2 ln10 - ln10) / sqrt(2/3 ln10^2) = sqrt(3/2); the mean -> 0; missing -> 0.
    np.testing.assert_allclose(out[:, 0], [math.sqrt(1.5), 0.0, 0.0, 0.0, 0.0], atol=1e-5)
    assert np.isfinite(out).all()


def test_bucket_boundaries_are_train_quantiles():
    spec = FeatureSpec.from_dict({"item": {"price": {"type": "numeric", "buckets": 4, "dim": 2}}})
    events = pd.DataFrame(
        {"user_id": "u", "item_id": [f"i{k}" for k in range(1, 9)], "timestamp": ts("2024-01-01")}
    )
    table = pd.DataFrame({"item_id": [f"i{k}" for k in range(1, 9)], "price": np.arange(1.0, 9.0)})
    fs = FeatureSet.adapt(spec, events, items=table)
    # Prices 1..8, linear quantiles at 1/4, 1/2, 3/4: positions 7q = 1.75, 3.5, 5.25
    # -> 2.75, 4.5, 6.25.
    assert fs.adapted["price"].boundaries == pytest.approx((2.75, 4.5, 6.25))
    # Bucket 0 is missing; a value on a boundary falls in the upper bucket.
    buckets = fs.indexer("price")(tf.constant([1.0, 2.75, 5.0, 100.0, np.nan])).numpy().tolist()
    assert buckets == [1, 2, 3, 4, 0]
    assert fs.num_indices("price") == 5


def test_numeric_layer_log1p_treats_negative_as_missing():
    layer = NumericPreprocessing("log1p", boundaries=[1.0])
    assert layer(tf.constant([-1.0, 0.5, math.e - 1, np.nan])).numpy().tolist() == [0, 1, 2, 0]


# ---- context


def test_hour_and_weekday_of_known_timestamps():
    # 2024-03-15 13:45:10 UTC: 2024-01-01 is day 19723 since 1970-01-01; + 31 (Jan) + 29 (Feb)
    # + 14 = day 19797 -> 19797 * 86400 + 13*3600 + 45*60 + 10 = 1710510310.
    # hour = (1710510310 mod 86400) // 3600 = 49510 // 3600 = 13;
    # weekday = (19797 + 3) mod 7 = 4 (day 0 was a Thursday = 3, Monday = 0) -> Friday.
    # -1 is 1969-12-31 23:59:59, a Wednesday: floordiv(-1, 86400) = -1 -> (-1 + 3) mod 7 = 2.
    seconds = to_unix_seconds(pd.Series([ts("2024-03-15 13:45:10"), ts("1969-12-31 23:59:59")]))
    assert seconds.tolist() == [1710510310, -1]
    hour, weekday = hour_and_weekday(tf.constant(seconds, tf.int64))
    assert hour.numpy().tolist() == [13, 23]
    assert weekday.numpy().tolist() == [4, 2]


# ---- history


def test_history_is_strictly_before_most_recent_first_and_padded(train_events, items):
    queries = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "nobody"],
            "timestamp": [
                ts("2024-01-03 13:00"),  # the i4 event is at this very time: not history
                ts("2024-01-03 13:00:01"),
                ts("2024-01-02 09:00"),
                ts("2024-01-02 10:00"),
                ts("2024-01-05"),
            ],
        }
    )
    out = last_items_before(train_events, queries, 3, item_attrs=items[["item_id", "category"]])
    assert out["history_item_ids"].tolist() == [
        ["i2", "i1", ""],
        ["i4", "i2", "i1"],
        ["i1", "", ""],
        ["", "", ""],
        ["", "", ""],
    ]
    assert out["history_category"].tolist()[:2] == [["c1", "c1", ""], ["c3", "c1", "c1"]]
    assert out["history_count"].tolist() == [2, 3, 1, 0, 0]
    # Fewer slots keep the most recent; attributes can also come from event columns.
    events = train_events.assign(category=["x1", "x2", "x1", "x3", "x1", "x4"])
    short = last_items_before(events, queries.iloc[[1]], 2, item_attrs=["category"])
    assert short["history_item_ids"].tolist() == [["i4", "i2"]]
    assert short["history_category"].tolist() == [["x4", "x2"]]


def test_history_on_day_granularity_excludes_same_day():
    events = pd.DataFrame(
        {
            "user_id": ["u"] * 3,
            "item_id": ["a", "b", "c"],
            "timestamp": [ts("2019-06-10"), ts("2019-06-11"), ts("2019-06-11")],
        }
    )
    queries = pd.DataFrame({"user_id": ["u"], "timestamp": [ts("2019-06-11")]})
    assert last_items_before(events, queries, 2)["history_item_ids"].tolist() == [["a", ""]]


# ---- pooling and encoders


def test_masked_pooling_ignores_padding():
    indexer = tf.keras.layers.StringLookup(vocabulary=["a", "b", "c"], mask_token="")
    ids = tf.constant([["a", "c", ""], ["", "", ""], ["b", "zz", ""]])
    # 'ones' weights: every real slot is [1, 1]; an unmasked mean over 3 slots would give 2/3.
    ones = tf.keras.layers.Embedding(5, 2, embeddings_initializer="ones")
    pooled = HistoryPooling(indexer, ones)(ids).numpy()
    np.testing.assert_array_equal(pooled, [[1, 1], [0, 0], [1, 1]])
    # Row k = [k, 10k]; indices: "" 0, OOV 1, a 2, b 3, c 4.
    # Row 0: mean(2, 4) = 3 -> [3, 30]; row 1: empty -> [0, 0];
    # row 2: mean(b = 3, OOV = 1) = 2 -> [2, 20].
    known = tf.keras.layers.Embedding(5, 2)
    known.build((None,))
    known.set_weights([np.array([[k, 10 * k] for k in range(5)], np.float32)])
    pooled = HistoryPooling(indexer, known)(ids).numpy()
    np.testing.assert_allclose(pooled, [[3, 30], [0, 0], [2, 20]])


def test_history_encoder_shares_item_embeddings(feature_set):
    item_encoder = feature_set.encoder("item")
    history_encoder = feature_set.encoder("history", share_with=item_encoder)
    assert history_encoder.embeddings["item_id"] is item_encoder.embeddings["item_id"]
    assert history_encoder.embeddings["category"] is item_encoder.embeddings["category"]
    items_in = {"item_id": tf.constant(["i2"]), "category": tf.constant(["c1"]),
                "brand": tf.constant(["b1"]), "price": tf.constant([9.0])}
    history_in = {"history_item_ids": tf.constant([["i2", "", ""]]),
                  "history_category": tf.constant([["c1", "", ""]])}
    item_out = item_encoder(items_in, concat=False)
    history_out = history_encoder(history_in, concat=False)
    np.testing.assert_allclose(history_out["history_item_ids"], item_out["item_id"])
    assert item_encoder.output_dim == 3 + 4 + 4 + 1
    assert item_encoder(items_in).shape == (1, 12)
    unshared = feature_set.encoder("history")
    assert unshared.embeddings["item_id"] is not item_encoder.embeddings["item_id"]


# ---- save and reload on raw inputs

RELOAD = """
import json, sys
import numpy as np
import tensorflow as tf  # plain TensorFlow: no project code, as in TF Serving

path, inputs_file, out_file = sys.argv[1:]
signature = tf.saved_model.load(path).signatures["serving_default"]
specs = signature.structured_input_signature[1]
raw = json.load(open(inputs_file))
result = signature(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in raw.items()})
json.dump({"inputs": sorted(specs), "outputs": {k: v.numpy().tolist() for k, v in result.items()}},
          open(out_file, "w"))
"""


def test_model_saves_and_reloads_with_equal_outputs_on_raw_inputs(
    feature_set, train_events, items, tmp_path
):
    groups = ("user", "item", "context")
    inputs = feature_set.inputs(*groups, "history")
    item_encoder = feature_set.encoder("item")
    vectors = [
        feature_set.encoder("user")(inputs),
        item_encoder(inputs),
        feature_set.encoder("history", share_with=item_encoder)(inputs),
        feature_set.encoder("context")(inputs),
    ]
    model = tf.keras.Model(inputs, tf.keras.layers.Concatenate(name="features")(vectors))

    # Raw rows: known ids, an unseen user / item / brand, missing gender, NaN and negative numbers.
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "new-user", "u3"],
            "gender": ["F", "X", None],
            "income": [1000.0, np.nan, -3.0],
            "item_id": ["i1", "new-item", ""],
            "category": ["c1", "c-new", None],
            "brand": ["b1", "b-new", ""],
            "price": [9.0, np.nan, 1e9],
            "timestamp": [ts("2024-01-03 12:00"), ts("2024-01-04 00:30"), ts("2024-01-02")],
        }
    )
    raw = feature_set.to_inputs(frame, groups)
    raw |= last_items_before(train_events, frame, 3, item_attrs=items[["item_id", "category"]])
    raw.pop("history_count")
    expected = model({k: tf.constant(v) for k, v in raw.items()}).numpy()
    assert expected.shape == (3, 4 + 4 + 1 + 12 + 3 + 4 + 4 + 4) and np.isfinite(expected).all()

    path = tmp_path / "model"
    tf.saved_model.save(model, str(path))
    inputs_file, out_file = tmp_path / "inputs.json", tmp_path / "out.json"
    script = tmp_path / "reload.py"
    inputs_file.write_text(json.dumps({k: v.tolist() for k, v in raw.items()}))
    script.write_text(RELOAD)
    subprocess.run(
        [sys.executable, str(script), str(path), str(inputs_file), str(out_file)], check=True
    )
    reloaded = json.loads(out_file.read_text())
    assert reloaded["inputs"] == sorted(
        ["user_id", "gender", "income", "item_id", "category", "brand", "price", "timestamp",
         "history_item_ids", "history_category"]
    )
    assert list(reloaded["outputs"]) == ["features"]
    np.testing.assert_allclose(np.array(reloaded["outputs"]["features"]), expected, rtol=1e-6)


# ---- leakage


def test_test_period_event_reaches_no_vocabulary_statistic_or_earlier_history(
    train_events, items, users
):
    test_start = ts("2024-01-05")
    planted_items = pd.DataFrame(
        {"item_id": ["i-new"], "category": ["c-new"], "brand": ["b-new"], "price": [1e12]}
    )
    planted_users = pd.DataFrame({"user_id": ["u-new"], "gender": ["G-new"], "income": [1e12]})
    planted_events = pd.DataFrame(
        {
            "user_id": ["u-new", "u1"],
            "item_id": ["i-new", "i-new"],
            "event": ["purchase", "click"],
            "timestamp": [ts("2024-01-05 10:00"), ts("2024-01-05 11:00")],
        }
    )
    all_events = pd.concat([train_events, planted_events], ignore_index=True)
    all_items = pd.concat([items, planted_items], ignore_index=True)
    all_users = pd.concat([users, planted_users], ignore_index=True)
    bucketed = {"type": "numeric", "transform": "log1p", "buckets": 3}
    spec = FeatureSpec.from_dict({**SPEC, "item": {**SPEC["item"], "price": bucketed}})

    # The caller passes train events only; the tables hold the planted rows all the same.
    train = all_events[all_events["timestamp"] < test_start]
    fs = FeatureSet.adapt(spec, train, items=all_items, users=all_users)
    clean = FeatureSet.adapt(spec, train_events, items=items, users=users)
    assert fs.adapted == clean.adapted  # the planted rows changed nothing
    vocabularies = {name: a.vocabulary for name, a in fs.adapted.items()}
    planted = {"user_id": "u-new", "item_id": "i-new", "category": "c-new", "gender": "G-new"}
    for name, value in planted.items():
        assert value not in vocabularies[name]
    # Train users u1 (1000) and u2 (0); u3's NaN is missing; u-new's 1e12 must not count.
    assert fs.adapted["income"].mean == pytest.approx(math.log1p(1000) / 2)
    assert max(fs.adapted["price"].boundaries) < math.log1p(1e6)

    # Histories built from ALL events: a query before the test period never sees the plant,
    # and a query at the start of the test period neither.
    queries = pd.DataFrame(
        {"user_id": ["u1", "u1", "u-new"], "timestamp": [ts("2024-01-04"), test_start, test_start]}
    )
    attrs = all_items[["item_id", "category"]]
    history = last_items_before(all_events, queries, 3, item_attrs=attrs)
    assert "i-new" not in history["history_item_ids"].ravel().tolist()
    assert "c-new" not in history["history_category"].ravel().tolist()
    assert history["history_count"].tolist() == [3, 3, 0]
