"""The protocol's split, ground truth, baselines, and that nothing for a test user sees the test."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import DAY, T0, event_lines, tiny_rows, write_spec, CSV_SPEC
from shopping_mtl.candidates.candidate_set import baseline_list
from shopping_mtl.candidates.registry import SourceDay
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.candidates.covisit import covisit, covisitation_counts
from shopping_mtl.candidates.popularity import popularity
from shopping_mtl.candidates.user_history import user_history
from shopping_mtl.data.readers import read_dataset
from shopping_mtl.data.spec import load_spec
from shopping_mtl.data.split import cold_item_shares, ground_truth, split_events


def events_of(rows):
    return pd.DataFrame({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "event": [{"pv": "click", "fav": "save", "cart": "save", "buy": "purchase"}[r[2]] for r in rows],
        "timestamp": pd.to_datetime([r[3] for r in rows], unit="s", utc=True),
    }).sort_values("timestamp", kind="stable").reset_index(drop=True)


def test_calendar_day_split_and_ground_truth():
    split = split_events(events_of(tiny_rows()))
    assert split.method == "calendar_day"
    assert split.test_start == pd.Timestamp(T0 + 3 * DAY, unit="s", tz="UTC")
    assert (len(split.train), len(split.validation), len(split.test)) == (5, 2, 4)
    truth = ground_truth(split)
    # u3 has test events but none in train (only validation): not a test user.
    assert truth.users == ("u1", "u2")
    assert truth.items["any"] == {"u1": {"c", "a"}, "u2": {"d"}}
    assert truth.items["purchase"] == {"u1": {"a"}}
    assert truth.items["save"] == {"u2": {"d"}}
    assert truth.seen == {"u1": {"a", "b"}, "u2": {"b", "c"}}
    assert truth.for_variant("any", "new_gt") == {"u1": {"c"}, "u2": {"d"}}
    shares = cold_item_shares(split, truth)
    # GT pairs (u1,c) (u1,a) (u2,d): c and a are in train, d is not -> 1/3.
    assert shares["eval/cold_item_share"] == pytest.approx(1 / 3)


def test_quantile_split_for_short_logs():
    rows = [(f"u{i % 4}", f"i{i}", "pv", T0 + 60 * i) for i in range(20)]
    split = split_events(events_of(rows))
    assert split.method == "quantile"
    assert (len(split.train), len(split.validation), len(split.test)) == (12, 4, 4)
    assert split.train["timestamp"].max() < split.validation["timestamp"].min()
    assert split.validation["timestamp"].max() < split.test["timestamp"].min()


def test_quantile_split_never_cuts_through_one_timestamp():
    # Events 14-17 share one timestamp, and the 80% cut (index 16) falls among them.
    times = [T0 + 60 * i for i in range(14)] + [T0 + 5000] * 4 + [T0 + 6000, T0 + 6001]
    split = split_events(events_of([(f"u{i}", "a", "pv", t) for i, t in enumerate(times)]))
    assert (len(split.train), len(split.validation), len(split.test)) == (12, 2, 6)
    assert not set(split.validation["timestamp"]) & set(split.test["timestamp"])


@pytest.mark.parametrize("short", [False, True])
def test_sorted_events_are_split_into_slices_that_share_the_log(short):
    """Periods of a time-sorted log are slices of it (its columns shared, no copy), equal to the
    filtered periods; train + validation is a slice too. An unsorted log is filtered."""
    step = 60 if short else 8 * 3600
    rows = [(f"u{i % 7}", f"i{i % 11}", "pv" if i % 3 else "buy", T0 + step * i) for i in range(40)]
    events = events_of(rows).astype({"user_id": "str", "item_id": "str"})
    split = split_events(events)
    assert split.method == ("quantile" if short else "calendar_day")
    time = events["timestamp"]
    filtered = {"train": events[time < split.validation_start],
                "validation": events[(time >= split.validation_start) & (time < split.test_start)],
                "test": events[time >= split.test_start]}
    for name, expected in filtered.items():
        pd.testing.assert_frame_equal(getattr(split, name), expected.reset_index(drop=True))
    pd.testing.assert_frame_equal(split.history, pd.concat([filtered["train"], filtered["validation"]],
                                                           ignore_index=True))
    assert split.history["user_id"].array._pa_array.chunks[0].buffers()[2].address == \
        events["user_id"].array._pa_array.chunks[0].buffers()[2].address  # the log's bytes
    shuffled = split_events(events.sample(frac=1, random_state=0))
    assert shuffled.events is None
    pd.testing.assert_frame_equal(shuffled.history.sort_values(["timestamp", "item_id"]).reset_index(drop=True),
                                  split.history.sort_values(["timestamp", "item_id"]).reset_index(drop=True))


def test_popularity_weights_and_ties():
    rows = [("u1", "a", "pv", T0), ("u2", "b", "fav", T0), ("u3", "c", "buy", T0),
            ("u1", "d", "pv", T0), ("u2", "d", "pv", T0)]
    got = popularity(events_of(rows), ["u1"], k=3)
    # scores: a 1, b 2, c 4, d 1 + 1 = 2; ties by item id: c, b, d
    assert list(got["item_id"]) == ["c", "b", "d"]
    assert list(got["score"]) == [4.0, 2.0, 2.0]
    assert list(got["rank"]) == [1, 2, 3]


def test_user_history_recency_weighting():
    rows = [("u1", "old", "buy", T0), ("u1", "new", "pv", T0 + 3 * DAY), ("u1", "mid", "pv", T0 + 2 * DAY)]
    now = pd.Timestamp(T0 + 4 * DAY, unit="s", tz="UTC")
    got = user_history(events_of(rows), ["u1"], 10, half_life_days=1.0, now=now)
    # old: 4 * 0.5**4 = 0.25; new: 1 * 0.5**1 = 0.5; mid: 1 * 0.5**2 = 0.25 -> new, then mid/old by id
    assert list(got["item_id"]) == ["new", "mid", "old"]
    assert list(got["score"]) == pytest.approx([0.5, 0.25, 0.25])


def test_covisit_counts_same_day_sessions():
    rows = [("u1", "a", "pv", T0), ("u1", "b", "pv", T0 + 1), ("u2", "a", "pv", T0),
            ("u2", "b", "pv", T0 + 5), ("u2", "c", "pv", T0 + 9), ("u3", "c", "pv", T0 + DAY)]
    counts = covisitation_counts(events_of(rows)).set_index(["source", "target"])["count"]
    assert counts[("a", "b")] == 2 and counts[("b", "a")] == 2 and counts[("a", "c")] == 1
    assert ("c", "c") not in counts.index
    got = covisit(events_of(rows), ["u3"], 10)
    # u3's only seed is c, co-visited once with a and once with b
    assert sorted(got["item_id"]) == ["a", "b"]


def test_lists_are_filled_to_k_with_popular_items():
    events = events_of(tiny_rows())
    now = events["timestamp"].max()
    got = baseline_list("user_history", SourceDay(events, ["u1"], now, BaselineConfig()), 4)
    assert len(got) == 4 and got["item_id"].is_unique and list(got["rank"]) == [1, 2, 3, 4]
    unfilled = baseline_list("user_history", SourceDay(events, ["u1"], now, BaselineConfig(fill_with_popularity=False)), 4)
    assert set(unfilled["item_id"]) == set(events.loc[events.user_id == "u1", "item_id"])


def test_planted_test_event_reaches_no_baseline(tmp_path):
    """An event in the test period changes no list computed for test users."""
    def lists_for(rows):
        (tmp_path / "events.csv").write_text(event_lines(rows))
        (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
        data = read_dataset(load_spec(str(write_spec(tmp_path, CSV_SPEC))))
        split = split_events(data.events)
        truth = ground_truth(split)
        day = SourceDay(split.history, truth.users, split.test_start, BaselineConfig())
        out = {name: baseline_list(name, day, 10) for name in BaselineConfig().names}
        return out, split

    clean, _ = lists_for(tiny_rows())
    planted_rows = tiny_rows() + [("u1", "PLANTED", "buy", T0 + 3 * DAY + 7)] * 1 + [
        ("u2", "PLANTED", "buy", T0 + 3 * DAY + 8), ("u2", "a", "buy", T0 + 3 * DAY + 9)]
    planted, split = lists_for(planted_rows)
    assert "PLANTED" in set(split.test["item_id"])
    for name in BaselineConfig().names:
        pd.testing.assert_frame_equal(clean[name], planted[name], obj=name)
        assert "PLANTED" not in set(planted[name]["item_id"])
