"""The approximate offline index (faiss inverted file): exact when every cell is scanned, close
to exact when a few are, the same lists' format as brute force, its recall a metric of the run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from shopping_mtl.config import load_config
from tools import synthetic
from shopping_mtl.errors import ConfigError
from shopping_mtl.pipeline import run_stage
from shopping_mtl.run_state import RunState
from shopping_mtl.retrieval import index as index_lib, stage
from shopping_mtl.retrieval.config import RetrievalConfig
from shopping_mtl.retrieval.model import build_towers


def clustered(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    """Unit vectors around `centres` directions, as trained towers' vectors are."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, dim))
    x = middle[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_scanning_every_cell_is_exact_and_few_cells_come_close():
    items, queries = clustered(20_000, 16, 50, seed=0), clustered(200, 16, 50, seed=1)
    exact_scores, exact = index_lib.exact_top_k(queries, items, 100)
    every = index_lib.IvfSettings(lists=64, probe=64, fp16=False)
    scores, positions = index_lib.ivf_top_k(queries, items, 100, every)
    # Same items; ties aside, the same order (scores from the same inner products).
    np.testing.assert_array_equal(np.sort(positions, axis=1), np.sort(exact, axis=1))
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-4, atol=1e-5)
    assert index_lib.recall_of_exact(queries, items, positions) == 1.0
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first

    few = index_lib.IvfSettings(lists=141, probe=16, fp16=False)  # sqrt(20k) cells, 11% scanned
    _, approx = index_lib.ivf_top_k(queries, items, 100, few)
    recall = np.mean([len(np.intersect1d(a, b)) / 100 for a, b in zip(approx, exact)])
    assert 0.9 <= recall < 1.0
    # Counting near-ties as found can only add a few.
    assert recall <= index_lib.recall_of_exact(queries, items, approx) <= recall + 0.002
    # Reproducible: the k-means sample and initialisation follow the seed.
    np.testing.assert_array_equal(index_lib.ivf_top_k(queries, items, 100, few)[1], approx)


def test_the_recall_check_cuts_at_the_exported_indexs_kth_score(monkeypatch):
    # recall_of_exact scores in numpy, a few queries at a time; its cut is the k-th score of
    # the TensorFlow matmul and top_k that the exported index runs.
    items, queries = clustered(20_000, 16, 50, seed=0), clustered(300, 16, 50, seed=1)
    exact_scores, _ = index_lib.exact_top_k(queries, items, 100)
    kth = index_lib.exact_kth_scores(queries, items, 100)
    np.testing.assert_allclose(kth, exact_scores[:, -1], rtol=1e-5, atol=1e-6)
    # Batches of a few queries (at 20k items a batch holds 3,355) give the same cut.
    monkeypatch.setattr(index_lib, "query_batch_size", lambda n_items: 7)
    np.testing.assert_allclose(index_lib.exact_kth_scores(queries, items, 100), kth, rtol=1e-6)
    monkeypatch.undo()
    # k above the catalogue: the last item's score.
    np.testing.assert_allclose(index_lib.exact_kth_scores(queries[:2], items[:50], 100),
                               (queries[:2] @ items[:50].T).min(axis=1), rtol=1e-6)


def test_16_bit_cells_find_the_float_cells_items_scored_exactly():
    items, queries = clustered(20_000, 16, 50, seed=0), clustered(200, 16, 50, seed=1)
    settings = index_lib.IvfSettings(lists=141, probe=16)
    assert settings.fp16  # the default
    scores, positions = index_lib.ivf_top_k(queries, items, 100, settings)
    _, full = index_lib.ivf_top_k(queries, items, 100, dataclasses.replace(settings, fp16=False))
    # Scores are the float32 inner products of the items found, best first.
    exact = np.einsum("qd,qkd->qk", queries, items[positions])
    np.testing.assert_allclose(scores, exact, rtol=1e-6, atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()
    # The same cells scanned at half precision: the same items but for near-ties at the cut.
    same = np.mean([len(np.intersect1d(a, b)) / 100 for a, b in zip(positions, full)])
    assert same >= 0.99
    assert abs(index_lib.recall_of_exact(queries, items, positions)
               - index_lib.recall_of_exact(queries, items, full)) <= 0.005
    np.testing.assert_array_equal(index_lib.ivf_top_k(queries, items, 100, settings)[1], positions)


def test_fewer_items_in_the_probed_cells_than_k_are_marked_and_left_out_of_lists():
    items, queries = clustered(500, 8, 5, seed=2), clustered(3, 8, 5, seed=3)
    scores, positions = index_lib.ivf_top_k(queries, items, 400, index_lib.IvfSettings(lists=20, probe=1))
    assert (positions == -1).any()  # one cell of ~25 items cannot fill 400 slots
    ids = np.array([f"i{i}" for i in range(500)], dtype=object)
    item_ids = np.where(positions >= 0, ids[np.maximum(positions, 0)], "")
    lists = index_lib.lists_frame(np.array(["a", "b", "c"], dtype=object), item_ids, scores)
    assert list(lists.columns) == ["user_id", "rank", "item_id", "score"]
    assert (lists["item_id"] != "").all()
    assert len(lists) == (positions >= 0).sum()
    for user, found in zip("abc", positions):
        got = lists[lists["user_id"] == user]
        assert list(got["rank"]) == list(range(1, (found >= 0).sum() + 1))


def test_config_names_a_bad_index_setting():
    with pytest.raises(ConfigError, match="retrieval.index is 'annoy'; known: auto, brute_force, ivf"):
        load_config(overrides={"retrieval": {"index": "annoy"}})
    with pytest.raises(ConfigError, match="retrieval.ivf_probe must be positive"):
        load_config(overrides={"retrieval": {"ivf_probe": 0}})
    auto = RetrievalConfig()
    assert not auto.uses_ivf(1_000_000) and auto.uses_ivf(1_000_001)
    assert RetrievalConfig(index="ivf").uses_ivf(10) and not RetrievalConfig(index="brute_force").uses_ivf(10**9)


def test_stage_lists_from_an_inverted_file_match_brute_force(tmp_path):
    """Through the stage's `test_lists`: with every cell scanned (float32 cells) the inverted
    file's lists are the brute-force lists (the exported index's), and the recall check says 1.0."""
    spec = synthetic.generate(tmp_path / "data", 8_000, seed=3)
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "data": {"dataset": str(spec)}})
    state = RunState(config=config, run_dir=tmp_path / "run")
    state.run_dir.mkdir()
    run_stage("data", state)
    users = list(state.truth.users)[:40]

    data = stage.prepare(state.dataset, state.split, config.retrieval)
    query_model, candidate_model = build_towers(data.features, config.retrieval)  # untrained: any weights do
    model = type("Towers", (), {"query_model": query_model, "candidate_model": candidate_model})

    def lists(**settings):
        given = dataclasses.replace(data, config=dataclasses.replace(config.retrieval, **settings), index_recall={})
        _, got = stage.test_lists(model, given, users, 50)
        return got, given

    brute, brute_data = lists(index="brute_force")
    n_items = len(brute_data.catalogue)
    ivf, ivf_data = lists(index="ivf", ivf_lists=16, ivf_probe=16, ivf_fp16=False)
    assert brute_data.index_recall == {} and ivf_data.index_recall == {"test": pytest.approx(1.0)}
    assert n_items > 16
    assert list(ivf.columns) == list(brute.columns)
    assert list(ivf["user_id"]) == list(brute["user_id"]) and list(ivf["rank"]) == list(brute["rank"])
    assert (ivf.groupby("user_id").size() == 50).all()
    # The same score at every rank: the same lists up to the order of tied items (an untrained
    # tower gives items with the same content, and ids hidden, one vector; ties are many here).
    np.testing.assert_allclose(ivf["score"], brute["score"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 7, 1 << 18])
def test_index_filled_in_slices_equals_the_layers_own_index(tmp_path, rows):
    """`build_index` fills the BruteForce layer's variables a slice at a time: the same
    variables (names, values) and the same top k as the layer's own `index()`; the parts
    spilled to disk build the same index again."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    ids = pd.Series([f"item-{i}" for i in range(50)], dtype="str")
    queries = tf.constant(rng.normal(size=(6, 8)).astype(np.float32))
    reference = tfrs.layers.factorized_top_k.BruteForce(k=5)
    reference.index(tf.constant(vectors), tf.constant(ids.to_numpy(dtype=str)))
    built = index_lib.build_index(None, ids, vectors, 5, rows=rows)
    assert sorted(v.name for v in built.weights) == sorted(v.name for v in reference.weights)
    for got, expected in zip(built(queries), reference(queries)):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
    parts = index_lib.IndexParts(None, ids, vectors, 5)
    parts.spill(tmp_path / "vectors.npy")
    assert parts.vectors == tmp_path / "vectors.npy" and not list(tmp_path.glob("*.partial"))
    for got, expected in zip(parts.build()(queries), reference(queries)):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())
