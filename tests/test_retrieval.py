"""Two-tower retrieval: the loss by hand, raw inputs, the export round trip, and no leakage."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import run_cli
from shopping_mtl.config import load_config
from tools import synthetic
from shopping_mtl.pipeline import run_stage
from shopping_mtl.run_state import RunState
from shopping_mtl.retrieval import examples, index as index_lib, stage
from shopping_mtl.retrieval.config import RetrievalConfig
from shopping_mtl.retrieval.model import build_towers, make_task


def test_retrieval_loss_golden_numbers():
    # Two queries and two candidates in 2-d; temperature 0.5.
    #   Q = [[1, 0], [0, 1]], C = [[1, 0], [1, 1]]
    #   Q @ C.T = [[1, 1], [0, 1]]  ->  / 0.5 = [[2, 2], [0, 2]]
    # logQ: subtract log q = log([0.5, 0.25]) from each column:
    #   [[2 - log .5, 2 - log .25], [0 - log .5, 2 - log .25]] = [[2.6931, 3.3863], [0.6931, 3.3863]]
    # row 0 (positive = column 0): -log softmax = log(e^2.6931 + e^3.3863) - 2.6931 = 1.0986 (= log 3)
    # row 1 (positive = column 1): log(e^0.6931 + e^3.3863) - 3.3863 = 0.0654
    # sample weights [1, 2], summed: 1 * 1.0986 + 2 * 0.0654 = 1.2294
    task = make_task(RetrievalConfig(temperature=0.5, remove_accidental_hits=False))
    queries = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    candidates = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    loss = task(queries, candidates, sample_weight=tf.constant([1.0, 2.0]),
                candidate_sampling_probability=tf.constant([0.5, 0.25]), compute_metrics=False)
    row0 = math.log(math.exp(2 - math.log(0.5)) + math.exp(2 - math.log(0.25))) - (2 - math.log(0.5))
    row1 = math.log(math.exp(0 - math.log(0.5)) + math.exp(2 - math.log(0.25))) - (2 - math.log(0.25))
    assert row0 == pytest.approx(math.log(3), abs=1e-4)
    assert float(loss) == pytest.approx(row0 + 2 * row1, abs=1e-4)
    assert float(loss) == pytest.approx(1.2294, abs=1e-3)


def test_accidental_hit_is_not_a_negative():
    # Both rows engaged the same item (id 7): without removal, row 0's softmax counts row 1's copy
    # of its own item as a negative: loss = 2 * log 2. With removal it is masked: loss = 0.
    queries = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    candidates = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    ids = tf.constant([7, 7])
    kept = make_task(RetrievalConfig(temperature=1.0, remove_accidental_hits=False))(
        queries, candidates, compute_metrics=False)
    removed = make_task(RetrievalConfig(temperature=1.0, remove_accidental_hits=True))(
        queries, candidates, candidate_ids=ids, compute_metrics=False)
    assert float(kept) == pytest.approx(2 * math.log(2), abs=1e-5)
    assert float(removed) == pytest.approx(0.0, abs=1e-5)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A small synthetic log read and split by the project, and its retrieval data."""
    folder = tmp_path_factory.mktemp("synthetic")
    spec = synthetic.generate(folder / "data", 20_000, seed=1)
    config = load_config(overrides={
        "run_dir": str(folder / "run"), "data": {"dataset": str(spec)},
        "retrieval": {"epochs": 2, "batch_size": 512, "early_stopping": "val_loss"},
    })
    state = RunState(config=config, run_dir=folder / "run")
    state.run_dir.mkdir()
    run_stage("data", state)
    data = stage.prepare(state.dataset, state.split, config.retrieval)
    return state, data


def test_towers_take_raw_values_including_unknown_ids(synthetic_run):
    _, data = synthetic_run
    query_model, candidate_model = build_towers(data.features, RetrievalConfig())
    length = data.features.spec.history_length
    queries = {
        "user_id": tf.constant(["never-seen-user", ""]),
        "timestamp": tf.constant([1_700_000_000, 0], tf.int64),
        "history_item_ids": tf.constant([["never-seen-item"] + [""] * (length - 1), [""] * length]),
    }
    queries = {k: v for k, v in queries.items() if k in query_model.input_names}
    vectors = query_model(queries).numpy()
    assert vectors.shape == (2, RetrievalConfig().embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    items = {"item_id": tf.constant(["never-seen-item", ""]), "category": tf.constant(["?", ""]),
             "brand": tf.constant(["", "b"]), "price": tf.constant([np.nan, -3.0], tf.float32)}
    items = {k: v for k, v in items.items() if k in candidate_model.input_names}
    assert np.isfinite(candidate_model(items).numpy()).all()


def test_export_reloads_in_fresh_process_with_identical_top_k(synthetic_run, tmp_path):
    state, data = synthetic_run
    model, _ = stage.fit(data, data.config, seed=0)
    users = list(state.truth.users)[:5]
    parts, lists = stage.test_lists(model, data, users, k=10)
    index = parts.build()
    queries = pd.DataFrame({"user_id": users, "timestamp": data.split.test_start})
    arrays = examples.query_arrays(queries, data.split.history, data.users, data.catalogue, data.features)
    target = index_lib.export_retrieval(index, model.query_model, data.features, 10,
                                        tmp_path / "export" / "retrieval" / "1", exclude_seen=True)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    inputs = {k: v.tolist() if v.dtype != object else v.astype(str).tolist() for k, v in arrays.items()
              if k in model.query_model.input_names}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    script = textwrap.dedent(f"""
        import json, sys, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import tensorflow as tf
        assert "shopping_mtl" not in sys.modules and "tensorflow_recommenders" not in sys.modules
        serve = tf.saved_model.load({str(target)!r}).signatures["serving_default"]
        raw = json.load(open({str(tmp_path / "inputs.json")!r}))
        spec = serve.structured_input_signature[1]
        out = serve(**{{k: tf.constant(v, dtype=spec[k].dtype) for k, v in raw.items()}})
        # A history of any length up to the model's: the graph pads it, as padding by hand does.
        short = {{k: tf.constant([row[:3] for row in v] if k.startswith("history_") else v, dtype=spec[k].dtype)
                 for k, v in raw.items()}}
        padded = {{k: tf.constant([row[:3] + [""] * (len(row) - 3) for row in v] if k.startswith("history_") else v,
                                  dtype=spec[k].dtype) for k, v in raw.items()}}
        same = all(bool(tf.reduce_all(serve(**short)[o] == serve(**padded)[o])) for o in ("item_ids", "scores"))
        print(json.dumps({{"keys": sorted(out), "ids": out["item_ids"].numpy().astype(str).tolist(),
                          "scores": out["scores"].numpy().tolist(), "short_as_padded": same,
                          "history_width": [spec[k].shape[1] for k in raw if k.startswith("history_")]}}))
    """)
    done = run_cli("-c", script)
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["keys"] == ["item_ids", "scores"]
    assert served["short_as_padded"] and served["history_width"] and set(served["history_width"]) == {None}
    # Expected in the training process: the index's top 10 + history length, the request's
    # history items removed, the first 10 kept.
    length = data.features.spec.history_length
    scores, ids = index({k: tf.constant(v) for k, v in inputs.items()}, k=10 + length)
    expected_ids, expected_scores = [], []
    for row, history in enumerate(inputs["history_item_ids"]):
        keep = [j for j, item in enumerate(ids.numpy()[row].astype(str)) if item not in set(history)][:10]
        expected_ids.append(ids.numpy()[row].astype(str)[keep].tolist())
        expected_scores.append(scores.numpy()[row][keep])
    assert served["ids"] == expected_ids
    np.testing.assert_allclose(served["scores"], np.array(expected_scores), rtol=1e-5, atol=1e-6)
    assert any(any(h) for h in inputs["history_item_ids"])  # the masking had something to do


def test_no_test_period_event_reaches_training_pairs_or_query_history(synthetic_run):
    state, data = synthetic_run
    split = state.split
    user = state.truth.users[0]
    planted = pd.DataFrame({
        "user_id": [user], "item_id": ["PLANTED-ITEM"], "event": ["purchase"],
        "timestamp": [split.test_start + pd.Timedelta(hours=1)], "category": ["PLANTED-CAT"]})
    dataset = dataclasses.replace(state.dataset) if dataclasses.is_dataclass(state.dataset) else state.dataset
    from shopping_mtl.data.split import split_events

    events = pd.concat([state.dataset.events, planted], ignore_index=True)
    replanted = split_events(events.sort_values("timestamp", kind="stable").reset_index(drop=True))
    assert "PLANTED-ITEM" in set(replanted.test["item_id"])
    again = stage.prepare(dataset, replanted, data.config)
    for name, values in data.train.items():
        np.testing.assert_array_equal(values, again.train[name], err_msg=name)
    assert "PLANTED-ITEM" not in set(again.catalogue["item_id"])
    assert "PLANTED-ITEM" not in again.features.adapted["item_id"].vocabulary
    queries = pd.DataFrame({"user_id": [user], "timestamp": [replanted.test_start]})
    before = examples.query_arrays(queries, split.history, data.users, data.catalogue, data.features)
    after = examples.query_arrays(queries, replanted.history, again.users, again.catalogue, again.features)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_seen_items_found_by_integer_keys_as_by_sets():
    from shopping_mtl.retrieval.stage import _seen
    rng = np.random.default_rng(3)
    catalogue = pd.Index([f"i{i}" for i in range(50)], dtype=object)
    users = np.array([f"u{u}" for u in range(12)], dtype=object)
    history = pd.DataFrame({"user_id": rng.choice(list(users[:10]) + ["other"], 200),
                            "item_id": rng.choice(list(catalogue) + ["gone"], 200)})
    positions = rng.integers(-1, 50, (12, 30))
    got = _seen(users, positions, history, catalogue)
    sets = history.groupby("user_id")["item_id"].agg(set)
    expected = np.array([[p >= 0 and catalogue[p] in sets.get(u, set()) for p in row] for u, row in zip(users, positions)])
    assert got.any() and np.array_equal(got, expected)
    assert not _seen(users, positions, history.iloc[:0], catalogue).any()
