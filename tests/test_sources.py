"""Merging candidate sources with quotas (`candidates.merge.merge_sources`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopping_mtl.candidates.merge import merge_sources


def _reference(sources, quotas) -> pd.DataFrame:
    """The merge as a plain pandas sort and de-duplication on the string columns."""
    parts = []
    for priority, (name, frame) in enumerate(sources.items()):
        quota = int(quotas.get(name, 0))
        if quota <= 0 or frame.empty:
            continue
        top = frame[frame["rank"] <= quota]
        parts.append(top.assign(source=name, source_rank=top["rank"], _priority=priority))
    merged = pd.concat(parts, ignore_index=True)
    merged = merged.sort_values(["user_id", "_priority", "source_rank"], kind="stable")
    merged = merged.drop_duplicates(["user_id", "item_id"], keep="first")
    merged["rank"] = merged.groupby("user_id", sort=False).cumcount() + 1
    return merged[["user_id", "rank", "item_id", "score", "source", "source_rank"]].reset_index(drop=True)


def _lists(rng, users, items, depth, dtype=None) -> pd.DataFrame:
    rows = []
    for user in users:
        chosen = rng.choice(items, size=min(depth, len(items)), replace=False)
        rows += [(user, r + 1, item, float(rng.random())) for r, item in enumerate(chosen)]
    frame = pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])
    frame = frame.sample(frac=1.0, random_state=int(rng.integers(1 << 30)))  # any row order
    if dtype is not None:
        frame = frame.astype({"user_id": dtype, "item_id": dtype})
    return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_equals_the_string_sort_and_dedup(seed):
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in rng.permutation(40)] + ["", "Zed", "é"]
    items = [f"i{i}" for i in range(60)]
    sources = {"two_tower": _lists(rng, users[:30], items, 25, dtype=object),
               "user_history": _lists(rng, users[10:], items, 15),
               "empty": _lists(rng, [], items, 5),
               "covisitation": _lists(rng, users, items, 20),
               "popularity": _lists(rng, users, items[:10], 10)}
    quotas = {"two_tower": 20, "user_history": 10, "empty": 3, "covisitation": 15, "popularity": 5}
    merged = merge_sources(sources, quotas)
    expected = _reference(sources, quotas)
    pd.testing.assert_frame_equal(merged, expected, check_dtype=False)  # str or object ids alike
    assert not merged.duplicated(["user_id", "item_id"]).any()
    assert merged["user_id"].is_monotonic_increasing
    # A source with quota 0 gives nothing; all-empty sources give the empty frame.
    assert "popularity" not in set(merge_sources(sources, {**quotas, "popularity": 0})["source"])
    assert list(merge_sources({"a": sources["empty"]}, {"a": 3}).columns) == list(expected.columns)


@pytest.mark.parametrize("rows", [1, 3, 7, 1_000_000])
def test_first_of_each_pair_in_slices_equals_one_pass(rows):
    from shopping_mtl.scale.merge_codes import first_of_each_pair as _first_of_each_pair

    rng = np.random.default_rng(rows)
    users = rng.integers(0, 6, 200).astype(np.int32)
    items = rng.integers(0, 9, 200).astype(np.int32)
    order = np.argsort(users, kind="stable")
    expected = order[~pd.Series(users[order].astype(np.int64) * 9 + items[order]).duplicated().to_numpy()]
    np.testing.assert_array_equal(_first_of_each_pair(order, users, items, rows=rows), expected)


@pytest.mark.parametrize("max_key", [2**63, 1])
def test_priority_order_is_the_stable_sort_by_user_source_and_rank(monkeypatch, max_key):
    """The rows' order by one in-place sorted key (or, where the key would not fit, a stable
    argsort) is the stable lexicographic order by (user, source, source rank)."""
    from shopping_mtl.scale import merge_codes as sources_lib

    monkeypatch.setattr(sources_lib, "MAX_KEY", max_key)
    rng = np.random.default_rng(3)
    offsets = np.array([0, 400, 450, 1000, 1000, 1300])  # one source without rows
    users = rng.integers(0, 40, offsets[-1]).astype(np.int32)
    source_rank = rng.integers(1, 12, offsets[-1]).astype(np.int32)  # repeated ranks: ties
    source = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    expected = np.lexsort((np.arange(offsets[-1]), source_rank, source, users))
    np.testing.assert_array_equal(sources_lib.priority_order(users, source_rank, offsets), expected)
