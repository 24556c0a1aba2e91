"""Training examples streamed from Parquet shards: the same examples as in memory, every one
read once per epoch in an order fixed by (seed, epoch), whole lists kept whole, and files that
are either finished or absent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from conftest import staged_state
from shopping_mtl.scale import shards as shards_lib
from shopping_mtl.scale.batches import make_dataset, make_list_dataset
from shopping_mtl.errors import ConfigError
from shopping_mtl.export.stage import warmup_lists
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.ranking.examples import label_rows
from shopping_mtl.ranking.stage import fit_ranker, predict_rows, prepare_ranking, ranking_day
from shopping_mtl.run_state import write_parquet_atomic
from shopping_mtl.retrieval import stage as retrieval_stage
from shopping_mtl.scale.shards import MANIFEST, ExampleShards, ShardWriter
from shopping_mtl.training import EpochClock


def _table(n_lists: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    list_id = np.repeat(np.arange(n_lists), rng.integers(1, 9, n_lists))
    n = len(list_id)
    return {"row": np.arange(n), "list_id": list_id, "weight": rng.random(n).astype(np.float32),
            "item_id": np.array([f"i{r}" for r in range(n)], dtype=object),
            "history": np.array([[f"h{r}", "", f"g{r % 3}"] for r in range(n)], dtype=object),
            "cross": rng.random((n, 4)).astype(np.float32)}


def _write(folder, table, max_rows, list_column=None, pieces=3) -> ExampleShards:
    writer = ShardWriter(folder, max_rows, list_column)
    cuts = np.linspace(0, len(table["row"]), pieces + 1).astype(int)
    if list_column:  # chunks end at list boundaries, as the ranking stage writes them
        starts = np.flatnonzero(np.r_[True, np.diff(table[list_column]) != 0])
        cuts = np.r_[starts[np.searchsorted(starts, cuts[:-1])], len(table["row"])]
    for a, b in zip(cuts[:-1], cuts[1:]):
        writer.write({k: v[a:b] for k, v in table.items()})
    return writer.close()


def test_shards_give_back_every_column_as_written(tmp_path):
    table = _table()
    shards = _write(tmp_path / "s", table, max_rows=25)
    assert len(shards.files) > 3 and shards.rows == len(table["row"])
    for name, values in table.items():
        back = shards[name]
        assert back.dtype == values.dtype and back.shape == values.shape
        assert np.array_equal(back, values)


def test_a_folder_without_its_manifest_is_refused_and_a_rewrite_starts_clean(tmp_path):
    table = _table()
    _write(tmp_path / "s", table, max_rows=25)
    (tmp_path / "s" / MANIFEST).unlink()  # as a write killed before its end leaves it
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ExampleShards(tmp_path / "s")
    again = _write(tmp_path / "s", {k: v[:30] for k, v in table.items()}, max_rows=1000, pieces=1)
    assert [p.name for p in sorted((tmp_path / "s").iterdir())] == [MANIFEST, "part-00000.parquet"]
    assert again.rows == 30


def test_every_row_once_per_epoch_in_an_order_fixed_by_seed_and_epoch(tmp_path):
    table = _table()
    shards = _write(tmp_path / "s", table, max_rows=20)
    n = len(table["row"])

    def epoch(number, seed=3):
        return [b["row"] for b in shards.epoch_batches(number, seed, 16, mix=2)]

    first = epoch(1)
    assert [len(b) for b in first] == [16] * (n // 16) + ([n % 16] if n % 16 else [])
    assert sorted(np.concatenate(first).tolist()) == list(range(n))
    assert all(np.array_equal(a, b) for a, b in zip(first, epoch(1)))
    assert not np.array_equal(np.concatenate(first), np.concatenate(epoch(2)))
    assert not np.array_equal(np.concatenate(first), np.concatenate(epoch(1, seed=4)))
    # Batches mix rows of different files, not one file after another.
    file_of = np.repeat(np.arange(len(shards.files)), [f["rows"] for f in shards.files])
    assert max(len(set(file_of[b])) for b in first) > 1


def test_list_batches_hold_whole_lists_and_the_same_number_every_epoch(tmp_path):
    table = _table(n_lists=60)
    shards = _write(tmp_path / "s", table, max_rows=30, list_column="list_id")
    for f in shards.files:  # no list spans two files
        ids = shards.read_file(shards.files.index(f), ["list_id"])["list_id"]
        assert f["lists"] == len(np.unique(ids))
    assert shards.lists == 60
    sizes = pd.Series(table["list_id"]).value_counts()
    clock = EpochClock()
    data = make_list_dataset(shards, None, batch_size=int(round(5 * len(table["row"]) / 60)), seed=1, clock=clock)
    per_epoch = []
    for number in range(3):
        clock.variable.assign(number)
        batches = [{k: v.numpy() for k, v in b.items()} for b in data]
        per_epoch.append(len(batches))
        for b in batches:  # each list complete in its batch
            counts = pd.Series(b["list_id"]).value_counts()
            assert (counts == sizes[counts.index]).all()
        assert sorted(np.concatenate([b["row"] for b in batches]).tolist()) == list(range(len(table["row"])))
    assert per_epoch == [12] * 3 and int(data.cardinality()) == 12


def test_two_workers_read_disjoint_batches_the_same_number_each(tmp_path):
    table = _table(n_lists=50)
    shards = _write(tmp_path / "s", table, max_rows=25)
    parts = [[b["row"].numpy() for b in make_dataset(shards, 8, shuffle=True, seed=2, shard=(i, 2), epochs=1)]
             for i in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(table["row"]) // 8 // 2
    rows = [np.concatenate(p) for p in parts]
    assert not set(rows[0]) & set(rows[1])


@pytest.mark.parametrize("whole_lists", [False, True])
def test_streamed_batches_hold_the_shards_values_strings_included(tmp_path, whole_lists):
    """The tf.data input cuts strings out of Arrow's buffers (no Python str per value): the
    values, empty and non-ASCII strings included, and the batch order are epoch_batches'."""
    table = _table(n_lists=60)
    table["item_id"][::7] = ""
    table["history"][1::5, 0] = "été ☕"
    shards = _write(tmp_path / "s", table, max_rows=20, list_column="list_id")
    if whole_lists:
        streamed = make_list_dataset(shards, None, 16, seed=3, epochs=2)
        per_batch = max(1, int(round(16 * shards.lists / shards.rows)))
    else:
        streamed = make_dataset(shards, 16, shuffle=True, seed=3, epochs=2)
        per_batch = 16
    expected = [b for epoch in range(2)
                for b in shards.epoch_batches(epoch, 3, per_batch, whole_lists=whole_lists)]
    got = list(streamed)
    assert len(got) == len(expected) > 4
    for mine, theirs in zip(got, expected):
        assert set(mine) == set(theirs)
        for name, values in theirs.items():
            back = mine[name].numpy()
            if values.dtype == object:
                back = np.vectorize(lambda v: v.decode("utf-8"), otypes=[object])(back)
            assert back.shape == values.shape and np.array_equal(back, values), name


def _rows(arrays) -> list[tuple]:
    """Every example as one hashable row, for comparing example tables as multisets."""
    columns = {k: (v if v.ndim == 1 else ["|".join(map(str, r)) for r in v]) for k, v in arrays.items()}
    return sorted(zip(*(columns[k] for k in sorted(columns))), key=repr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small synthetic log through the data stage and a one-epoch two-tower fit."""
    return staged_state(tmp_path_factory.mktemp("shards"), ranking={"extra_days": 2})


def test_streamed_training_pairs_are_the_in_memory_ones(trained, tmp_path):
    state = trained
    config = state.config.retrieval
    memory = retrieval_stage.prepare(state.dataset, state.split, config)
    streamed = retrieval_stage.prepare(state.dataset, state.split, config, tmp_path / "pairs", shard_rows=300)
    assert isinstance(streamed.train, ExampleShards) and len(streamed.train.files) > 2
    assert set(streamed.train) == set(memory.train)
    assert _rows({k: streamed.train[k] for k in streamed.train}) == _rows(memory.train)
    # The validation pairs on disk too, in the same order (the in-batch loss depends on it).
    validation = streamed.validation
    assert isinstance(validation, ExampleShards) and len(validation.files) > 1
    assert validation.folder == tmp_path / "pairs-validation"
    assert set(validation) == set(memory.validation)
    for name, values in memory.validation.items():
        assert np.array_equal(validation[name], values), name
    first = shards_lib.head(validation, ["history_item_ids", "sample_weight"], 3)
    assert np.array_equal(first["history_item_ids"], memory.validation["history_item_ids"][:3])
    assert np.array_equal(shards_lib.head(memory.validation, ["sample_weight"], 3)["sample_weight"],
                          memory.validation["sample_weight"][:3])


def test_streamed_ranking_rows_are_the_in_memory_ones(trained):
    state = trained
    memory = prepare_ranking(state)
    data = dataclasses.replace(state.config.data, stream_above_events=0, shard_rows=900)
    streamed_state = dataclasses.replace(state, config=dataclasses.replace(state.config, data=data))
    streamed = prepare_ranking(streamed_state)
    shards = streamed.fit_inputs
    assert isinstance(shards, ExampleShards) and len(shards.files) > 2
    assert shards.folder == state.run_dir / ".examples" / "ranker"
    assert streamed.n_fit_rows == memory.n_fit_rows == shards.rows
    assert streamed.fit_positive_rates == memory.fit_positive_rates
    assert _rows(streamed.holdout_inputs) == _rows(memory.holdout_inputs)
    # Row for row by (list, item); the history features equal to float rounding (TensorFlow
    # sums a chunk's batch in another order than the whole day's, and vectorises exp over it).
    back = {k: shards[k] for k in shards}
    keys = [pd.MultiIndex.from_arrays([a["list_id"], a["item_id"]]) for a in (back, memory.fit_inputs)]
    assert keys[0].is_unique and set(keys[0]) == set(keys[1])
    order = [np.argsort(keys[0]), np.argsort(keys[1])]
    for name in memory.fit_inputs:
        a, b = back[name][order[0]], memory.fit_inputs[name][order[1]]
        if name in ("cross", "activity"):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
        else:
            assert np.array_equal(a, b), name


def test_training_list_cap_keeps_a_sample_of_recent_users_and_the_whole_holdout(trained):
    state = trained
    full = prepare_ranking(state)
    assert full.n_days == 3 and full.n_fit_lists > 60
    ranking = state.config.ranking

    def capped(cap):
        return prepare_ranking(state, dataclasses.replace(ranking, max_training_lists=cap))

    # Fewer places than the validation day has fitting users: that day only, `cap` lists.
    first_day = capped(10)
    assert first_day.n_days == 1 and first_day.n_fit_lists == 10
    fit_lists = pd.Series(first_day.fit_inputs["list_id"]).nunique()
    assert fit_lists == 10 and (first_day.fit_inputs["list_id"] < 10_000_000).all()
    # Held-out users are not counted and all kept: the first day's holdout as without the cap.
    day0 = [u for u in full.holdout_truth.users if u.endswith("@0")]
    assert list(first_day.holdout_truth.users) == day0
    assert _rows(first_day.holdout_inputs) == _rows(
        {k: v[full.holdout_rows["user_id"].str.endswith("@0").to_numpy()] for k, v in full.holdout_inputs.items()})
    # The same sample on a rerun (by hash, not by order of arrival).
    assert _rows(capped(10).fit_inputs) == _rows(first_day.fit_inputs)
    # A cap the days do not reach changes nothing.
    assert _rows(capped(full.n_fit_lists).fit_inputs) == _rows(full.fit_inputs)
    # A cap between: the validation day whole, then part of the day before; the third not built.
    day0_lists = pd.Series(full.fit_inputs["list_id"][full.fit_inputs["list_id"] < 10_000_000]).nunique()
    some = capped(day0_lists + 5)
    assert some.n_fit_lists == day0_lists + 5 and some.n_days == 2
    with pytest.raises(ConfigError, match="ranking.max_training_lists"):
        dataclasses.replace(ranking, max_training_lists=0).validate()


def test_test_candidates_scored_a_chunk_of_users_at_a_time_as_all_at_once(trained, caplog):
    state = trained
    rconfig = dataclasses.replace(state.config.ranking, epochs=1, compare_single_task=False)
    fitted = fit_ranker(state.retrieval.data.features, prepare_ranking(state, rconfig), rconfig, seed=0)
    rows = label_rows(state.candidates.candidate_set, state.split.test, add_missed=False)
    whole, whole_labels = predict_rows(state, rows, {"ranker": fitted.model.scorer})
    assert len(rows) > 1000 and sum(whole_labels["click"]) > 0
    data = dataclasses.replace(state.config.data, stream_above_events=0, shard_rows=len(rows) // 20)
    streaming = dataclasses.replace(state, config=dataclasses.replace(state.config, data=data))
    with caplog.at_level("INFO", logger="shopping_mtl.ranking.stage"):
        parts, labels = predict_rows(streaming, rows, {"ranker": fitted.model.scorer, "again": fitted.model.scorer})
    n = -(-len(rows) // (4 * data.shard_rows))
    assert n >= 5 and f"chunk {n} of {n}" in caplog.text
    for task in TASKS:
        assert np.array_equal(labels[task], whole_labels[task])
        for name in ("ranker", "again"):  # same rows, same order; the cross features' float sums
            np.testing.assert_allclose(parts[name][task], whole["ranker"][task], rtol=1e-5, atol=1e-6)


def test_catalogue_vectors_built_a_slice_at_a_time_are_the_whole_catalogues(trained):
    data, model = trained.retrieval.data, trained.retrieval.model
    whole = retrieval_stage.catalogue_vectors(model, data, data.catalogue, rows=10 ** 9)
    sliced = retrieval_stage.catalogue_vectors(model, data, data.catalogue, rows=len(data.catalogue) // 7)
    assert whole.shape == (len(data.catalogue), sliced.shape[1]) and len(data.catalogue) > 1000
    np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-6)


def test_a_frame_on_disk_reads_back_as_the_frame_it_was(trained, tmp_path):
    """A streaming run keeps the validation lists and the candidate set on disk between the
    stages: read back whole, for some users, or some columns, they are the frames in memory,
    and the ranking day built from the lists on disk is the one built from memory."""

    state = trained
    lists = state.retrieval.validation_lists
    write_parquet_atomic(lists, tmp_path / "lists.parquet")
    on_disk = shards_lib.FrameOnDisk(tmp_path / "lists.parquet")
    assert len(on_disk) == len(lists) > 1000
    pd.testing.assert_frame_equal(shards_lib.held(on_disk), lists)
    users = sorted(set(lists["user_id"]))[3:40:2] + ["nobody"]
    expected = lists[lists["user_id"].isin(users)]
    pd.testing.assert_frame_equal(shards_lib.held(lists, users=users), expected)
    pd.testing.assert_frame_equal(shards_lib.held(on_disk, users=users), expected.reset_index(drop=True))
    pd.testing.assert_frame_equal(shards_lib.held(on_disk, ["item_id", "rank"]), lists[["item_id", "rank"]])
    pd.testing.assert_frame_equal(warmup_lists(on_disk, 7), warmup_lists(lists, 7))
    assert warmup_lists(lists, 7)["user_id"].nunique() == 7

    spilled = dataclasses.replace(state, retrieval=dataclasses.replace(state.retrieval, validation_lists=on_disk))
    memory, disk = ranking_day(state, 0, set()), ranking_day(spilled, 0, set())
    assert memory.n_fit_rows == disk.n_fit_rows > 0
    assert _rows(memory.fit_inputs) == _rows(disk.fit_inputs)


def test_user_chunks_of_arrow_strings_are_those_of_object_ids():
    """`user_chunks` codes Arrow-string columns without a Python str per row: the chunks are
    those of the same ids as Python objects, each user's rows and history events in one chunk,
    positions ascending; a row without a user falls in the last chunk, history events of users
    without rows in none."""
    from shopping_mtl.retrieval.examples import user_chunks

    rng = np.random.default_rng(2)
    rows = pd.Series(rng.choice([f"u{i}" for i in range(30)], 500), dtype="str")
    rows.iloc[7] = None
    history = pd.Series(rng.choice([f"u{i}" for i in range(45)], 800), dtype="str")
    got = user_chunks(rows, history, 4)
    same = user_chunks(rows.to_numpy(dtype=object), history.to_numpy(dtype=object), 4)
    assert len(got) == len(same) == 4
    for (r, h), (r2, h2) in zip(got, same):
        np.testing.assert_array_equal(r, r2)
        np.testing.assert_array_equal(h, h2)
        assert (np.diff(r) > 0).all() and (np.diff(h) > 0).all()
        assert set(history.iloc[h]) <= set(rows.iloc[r].dropna())
    assert 7 in got[-1][0]
    assert sorted(np.concatenate([r for r, _ in got]).tolist()) == list(range(500))
    owners = set(rows.dropna())
    assert sorted(np.concatenate([h for _, h in got]).tolist()) == [i for i, u in enumerate(history) if u in owners]


def test_a_frame_read_back_coded_scores_as_its_strings(tmp_path):
    """The candidate set read back with categorical id columns (an int32 code a row) gives
    every list metric exactly as the frame of strings does."""
    from shopping_mtl.data.split import GroundTruth
    from shopping_mtl.evaluation import score_lists

    rng = np.random.default_rng(4)
    users = [f"u{i:03d}" for i in range(60)]
    frame = pd.DataFrame({"user_id": np.repeat(users, 30),
                          "rank": np.tile(np.arange(1, 31), 60),
                          "item_id": rng.choice([f"i{i}" for i in range(300)], 60 * 30)}).astype(
        {"user_id": "str", "item_id": "str"})
    path = tmp_path / "set.parquet"
    frame.to_parquet(path, index=False)
    on_disk = shards_lib.FrameOnDisk(path)
    coded = shards_lib.held(on_disk, ["user_id", "rank", "item_id"], coded=True)
    assert isinstance(coded["user_id"].dtype, pd.CategoricalDtype)
    assert isinstance(coded["item_id"].dtype, pd.CategoricalDtype)
    assert coded["item_id"].astype(str).tolist() == frame["item_id"].tolist()
    items = {u: frozenset(rng.choice([f"i{i}" for i in range(300)], 8)) for u in users[:50]}
    seen = {u: frozenset(rng.choice([f"i{i}" for i in range(300)], 5)) for u in users[10:]}
    truth = GroundTruth(tuple(users[:50]), {"any": items, "save": items, "purchase": items}, seen)
    assert score_lists(coded, truth, "x", (10, 30), n_resamples=20) == \
        score_lists(frame, truth, "x", (10, 30), n_resamples=20)
    # Rows out of list order too (sorted on the codes, not in order as written).
    assert score_lists(coded.sample(frac=1, random_state=1), truth, "x", (10, 30), n_resamples=20) == \
        score_lists(frame.sample(frac=1, random_state=1), truth, "x", (10, 30), n_resamples=20)
