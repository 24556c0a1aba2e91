"""Co-visitation on integer codes gives exactly the lists of the string self-merge it replaced,
and a reused table is never served for a different log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopping_mtl import baselines
from shopping_mtl.baselines import BaselineConfig, run_baseline
from shopping_mtl.data import synthetic
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
    return baselines._top_k(scored.rename(columns={"target": "item_id"}), k)


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
    assert_same(baselines.covisitation_counts(events, max_session_items),
                                  reference_counts(events, max_session_items))
    for k in (1, 5, 200):
        assert_same(
            baselines.covisit(events, users, k, recent_items, decay, max_session_items),
            reference_covisit(events, users, k, recent_items, decay, max_session_items))


def test_codes_equal_string_merge_on_synthetic_log(tmp_path):
    data = read_dataset(load_spec(str(synthetic.generate(tmp_path / "data", 20_000, seed=3))))
    split = split_events(data.events)
    truth = ground_truth(split)
    history = split.history
    assert_same(baselines.covisitation_counts(history), reference_counts(history))
    for start in (split.validation_start - pd.Timedelta(days=1), split.validation_start):
        before = split.train[split.train["timestamp"] < start]
        assert_same(baselines.covisit(before, truth.users, 200),
                                      reference_covisit(before, truth.users, 200))
    # The filled list of run_baseline, as the baselines stage writes it.
    config = BaselineConfig()
    got = run_baseline("covisit", history, truth.users, 100, config, now=split.test_start)
    expected = baselines.fill_from(reference_covisit(history, truth.users, 100),
                                   baselines.popularity(history, truth.users, 100), 100)
    assert_same(got, expected)


def test_table_reused_only_for_the_same_sessions():
    events = random_log(2000, seed=1)
    first = baselines._covisit_table(events, 50)
    # Another frame object with the same (user, day, item) sequence: the same table.
    assert baselines._covisit_table(events.copy(), 50) is first
    assert baselines._covisit_table(events.assign(timestamp=events["timestamp"] + pd.Timedelta(seconds=1))
                                    .where(events["timestamp"].dt.second < 59, events), 50) is first
    # A changed item, a moved day, a dropped row or another cap: rebuilt, and right.
    changed = events.copy()
    changed.loc[7, "item_id"] = "brand-new"
    moved = events.assign(timestamp=events["timestamp"] + pd.Timedelta(hours=12))
    for other, cap in [(changed, 50), (moved, 50), (events.iloc[1:], 50), (events, 3)]:
        table = baselines._covisit_table(other, cap)
        assert table is not first
        assert_same(baselines.covisitation_counts(other, cap), reference_counts(other, cap))
    # In-place edits of the frame the table was built from are seen too.
    baselines._covisit_table(changed, 50)
    changed.loc[8, "user_id"] = "u-new"
    assert_same(baselines.covisitation_counts(changed, 50), reference_counts(changed, 50))
    # Forgotten (the stages do once no one asks again): built anew.
    kept = baselines._covisit_table(events, 50)
    baselines.forget_covisit_table()
    assert not baselines._LAST_TABLE and baselines._covisit_table(events, 50) is not kept


def test_empty_log():
    events = random_log(10, seed=0).iloc[:0]
    assert_same(baselines.covisitation_counts(events), reference_counts(events))
    assert_same(baselines.covisit(events, ["u1"], 5), reference_covisit(events, ["u1"], 5))


@pytest.mark.parametrize("max_pairs", [1, 7, 100, 10**9])
def test_the_table_is_the_same_whatever_the_ranges_it_is_counted_in(max_pairs):
    """Counted one range of source items at a time (one item per range at max_pairs=1), the
    table is the one counted at once, `covisitation_counts` keeps the merge's order, and the
    lists scored a range of users at a time are the string merge's."""
    events = random_log(3_000, seed=5)
    whole = baselines._build_covisit_table(events, 6, max_pairs=10**12)
    ranged = baselines._build_covisit_table(events, 6, max_pairs=max_pairs)
    for name in ("indptr", "target", "count", "first"):
        np.testing.assert_array_equal(getattr(ranged, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(ranged.appearance(), whole.appearance())
    # Every pair is a row of covisitation_counts, once.
    np.testing.assert_array_equal(np.sort(whole.appearance()), np.arange(len(whole.target)))
    assert len(whole.target) > 1000 and whole.count.max() > 1
    baselines._LAST_TABLE.clear()
    original = baselines.COVISIT_PAIRS_PER_PASS
    try:
        baselines.COVISIT_PAIRS_PER_PASS = max_pairs
        got = baselines.covisitation_counts(events, 6)
        users = [f"u{i}" for i in range(0, 40, 3)]
        # The lists too: users scored a range of codes at a time (one user a pass at 1).
        lists = baselines.covisit(events, users, 15, recent_items=5, max_session_items=6)
    finally:
        baselines.COVISIT_PAIRS_PER_PASS = original
        baselines._LAST_TABLE.clear()
    assert_same(got, reference_counts(events, 6))
    assert_same(lists, reference_covisit(events, users, 15, recent_items=5, max_session_items=6))
    assert lists["user_id"].nunique() > 5


def test_the_sources_table_leaves_out_the_order_only_the_snapshot_needs():
    """The candidate sources' table has no first-co-occurrence numbers; `covisitation_counts`
    builds a table with them, and that table serves the sources as well, with the same pairs."""
    events = random_log(2000, seed=2)
    users = [f"u{i}" for i in range(0, 30, 2)]
    baselines.forget_covisit_table()
    try:
        lists = baselines.covisit(events, users, 10)
        plain = baselines._LAST_TABLE[0]
        assert not plain.ordered
        with pytest.raises(ValueError, match="without its pairs' order"):
            plain.appearance()
        assert_same(baselines.covisitation_counts(events, 50), reference_counts(events, 50))
        ordered = baselines._LAST_TABLE[0]
        assert ordered.ordered and ordered is not plain
        for name in ("indptr", "target", "count", "user_codes", "item_codes"):
            np.testing.assert_array_equal(getattr(ordered, name), getattr(plain, name), err_msg=name)
        assert_same(baselines.covisit(events, users, 10), lists)
        assert baselines._LAST_TABLE[0] is ordered  # reused, not rebuilt without the order
    finally:
        baselines.forget_covisit_table()
    assert_same(lists, reference_covisit(events, users, 10))
