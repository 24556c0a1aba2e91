"""Co-visitation on integer codes (`scale.covisit_table`) gives exactly the lists of the plain
string self-merge below, the reference that states what co-visitation means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopping_mtl.candidates.candidate_set import baseline_list
from shopping_mtl.candidates.registry import SourceDay
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.candidates.covisit import covisit, covisitation_counts
from shopping_mtl.candidates.lists import fill_from, top_k
from shopping_mtl.candidates.popularity import popularity
from shopping_mtl.scale import covisit_table
from tools import synthetic
from shopping_mtl.data.readers import read_dataset
from shopping_mtl.data.spec import load_spec
from shopping_mtl.data.split import ground_truth, split_events


def reference_counts(events: pd.DataFrame, max_session_items: int = 50) -> pd.DataFrame:
    """The string self-merge `covisitation_counts` was before integer codes."""
    sessions = pd.DataFrame({
        "user_id": events["user_id"].to_numpy(dtype=object),
        "day": events["timestamp"].dt.floor("D").to_numpy(),
        "item_id": events["item_id"].to_numpy(dtype=object),
    })
    sessions = sessions.drop_duplicates(["user_id", "day", "item_id"], keep="last")
    sessions = sessions.groupby(["user_id", "day"], sort=False).tail(max_session_items)
    sessions["session"] = sessions.groupby(["user_id", "day"], sort=False).ngroup()
    pairs = sessions[["session", "item_id"]].merge(
        sessions[["session", "item_id"]], on="session", suffixes=("_source", "_target"))
    pairs = pairs[pairs["item_id_source"] != pairs["item_id_target"]]
    counts = pairs.groupby(["item_id_source", "item_id_target"], sort=False).size()
    counts = counts.rename("count").reset_index()
    return counts.rename(columns={"item_id_source": "source", "item_id_target": "target"})


def reference_covisit(events, users, k, recent_items=20, decay=0.9, max_session_items=50):
    """The string `covisit` before integer codes."""
    counts = reference_counts(events, max_session_items)
    mine = events[events["user_id"].isin(set(users))]
    seeds = mine[["user_id", "item_id"]].iloc[::-1].drop_duplicates(["user_id", "item_id"], keep="first")
    seeds = seeds.groupby("user_id", sort=False).head(recent_items)
    seeds = seeds.assign(weight=decay ** seeds.groupby("user_id", sort=False).cumcount().to_numpy())
    joined = seeds.merge(counts, left_on="item_id", right_on="source")
    if joined.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             [("user_id", object), ("rank", "int64"), ("item_id", object), ("score", float)]})
    joined["score"] = joined["weight"] * joined["count"]
    scored = joined.groupby(["user_id", "target"], sort=False)["score"].sum().reset_index()
    return top_k(scored.rename(columns={"target": "item_id"}), k)


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal frames; an empty reference's id columns may be pandas' str dtype (groupby on no rows),
    the codes' are object like every non-empty one."""
    pd.testing.assert_frame_equal(got, expected, check_dtype=len(expected) > 0, check_index_type=len(expected) > 0)


def random_log(n: int, seed: int) -> pd.DataFrame:
    """Few users, items and days, so sessions repeat items, run past the cap and share pairs."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 4 * 86400, n))
    return pd.DataFrame({
        "user_id": np.array([f"u{i}" for i in rng.integers(0, 30, n)], dtype=object),
        "item_id": np.array([f"i{i}" for i in rng.zipf(1.5, n) % 60], dtype=object),
        "event": rng.choice(["click", "save", "purchase"], n),
        "timestamp": pd.to_datetime(1_600_000_000 + seconds, unit="s", utc=True),
    })


@pytest.mark.parametrize("max_session_items,recent_items,decay", [(50, 20, 0.9), (4, 3, 0.7), (1, 20, 0.9)])
def test_codes_equal_string_merge_on_random_log(max_session_items, recent_items, decay):
    events = random_log(3000, seed=max_session_items)
    users = [f"u{i}" for i in range(0, 40, 2)]  # some unknown to the log
    assert_same(covisitation_counts(events, max_session_items),
                                  reference_counts(events, max_session_items))
    for k in (1, 5, 200):
        assert_same(
            covisit(events, users, k, recent_items, decay, max_session_items),
            reference_covisit(events, users, k, recent_items, decay, max_session_items))


def test_codes_equal_string_merge_on_synthetic_log(tmp_path):
    data = read_dataset(load_spec(str(synthetic.generate(tmp_path / "data", 20_000, seed=3))))
    split = split_events(data.events)
    truth = ground_truth(split)
    history = split.history
    assert_same(covisitation_counts(history), reference_counts(history))
    for start in (split.validation_start - pd.Timedelta(days=1), split.validation_start):
        before = split.train[split.train["timestamp"] < start]
        assert_same(covisit(before, truth.users, 200),
                                      reference_covisit(before, truth.users, 200))
    # The filled list, as the baselines stage writes it.
    got = baseline_list("covisit", SourceDay(history, truth.users, split.test_start, BaselineConfig()), 100)
    expected = fill_from(reference_covisit(history, truth.users, 100), popularity(history, truth.users, 100), 100)
    assert_same(got, expected)


def test_empty_log():
    events = random_log(10, seed=0).iloc[:0]
    assert_same(covisitation_counts(events), reference_counts(events))
    assert_same(covisit(events, ["u1"], 5), reference_covisit(events, ["u1"], 5))


@pytest.mark.parametrize("max_pairs", [1, 7, 100, 10**9])
def test_the_table_is_the_same_whatever_the_ranges_it_is_counted_in(max_pairs):
    """Counted one range of source items at a time (one item per range at max_pairs=1), the
    table is the one counted at once, `covisitation_counts` keeps the merge's order, and the
    lists scored a range of users at a time are the string merge's."""
    events = random_log(3_000, seed=5)
    whole = covisit_table.build_table(events, 6, max_pairs=10**12, ordered=True)
    ranged = covisit_table.build_table(events, 6, max_pairs=max_pairs, ordered=True)
    for name in ("indptr", "target", "count", "first"):
        np.testing.assert_array_equal(getattr(ranged, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(ranged.appearance(), whole.appearance())
    # Every pair is a row of covisitation_counts, once.
    np.testing.assert_array_equal(np.sort(whole.appearance()), np.arange(len(whole.target)))
    assert len(whole.target) > 1000 and whole.count.max() > 1
    original = covisit_table.COVISIT_PAIRS_PER_PASS
    try:
        covisit_table.COVISIT_PAIRS_PER_PASS = max_pairs
        got = covisitation_counts(events, 6)
        users = [f"u{i}" for i in range(0, 40, 3)]
        # The lists too: users scored a range of codes at a time (one user a pass at 1).
        lists = covisit(events, users, 15, recent_items=5, max_session_items=6)
    finally:
        covisit_table.COVISIT_PAIRS_PER_PASS = original
    assert_same(got, reference_counts(events, 6))
    assert_same(lists, reference_covisit(events, users, 15, recent_items=5, max_session_items=6))
    assert lists["user_id"].nunique() > 5


def test_the_sources_table_leaves_out_the_order_only_the_pair_counts_need():
    """The candidate source's table has no first-co-occurrence numbers; the ordered table that
    `covisitation_counts` builds has them, and otherwise the same pairs and codes."""
    events = random_log(2000, seed=2)
    plain = covisit_table.build_table(events, 50)
    assert not plain.ordered
    with pytest.raises(ValueError, match="without its pairs' order"):
        plain.appearance()
    ordered = covisit_table.build_table(events, 50, ordered=True)
    assert ordered.ordered
    for name in ("indptr", "target", "count", "user_codes", "item_codes"):
        np.testing.assert_array_equal(getattr(ordered, name), getattr(plain, name), err_msg=name)
    users = [f"u{i}" for i in range(0, 30, 2)]
    assert_same(covisitation_counts(events, 50), reference_counts(events, 50))
    assert_same(covisit(events, users, 10), reference_covisit(events, users, 10))
