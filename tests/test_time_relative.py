"""Settings relative to the log's pace (issue 19, item 3): `baselines.history_half_life_days`
and `ranking.extra_days` count validation periods, a day on a daily log; heads that cannot be
trusted are named in the run's warnings."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import T0
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.candidates.user_history import user_history
from shopping_mtl.data.split import split_events
from shopping_mtl.pipeline import run_stage
from shopping_mtl.ranking.days import ranking_day_users
from shopping_mtl.ranking.stage import head_warnings
from test_data_checks import daily_rows, data_stage

HOUR = 3600


def three_hour_rows(n_users: int = 12):
    """Each user touches items every ten minutes over three hours: a log of one calendar day."""
    return [(f"u{u}", f"i{(u + k) % 15}", "buy" if k % 7 == 0 else "pv", T0 + 600 * k + 7 * u)
            for u in range(n_users) for k in range(18)]


def as_events(rows) -> pd.DataFrame:
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "behavior", "seconds"])
    events["event"] = events["behavior"].map({"pv": "click", "buy": "purchase"})
    events["timestamp"] = pd.to_datetime(events["seconds"], unit="s", utc=True)
    return events.sort_values("timestamp", kind="stable").reset_index(drop=True)


def test_the_validation_period_is_a_day_on_a_daily_log_and_its_length_on_a_short_one():
    daily = split_events(as_events(daily_rows(6)))
    assert daily.method == "calendar_day" and daily.period == pd.Timedelta(days=1) and daily.period_days == 1.0
    short = split_events(as_events(three_hour_rows()))
    assert short.method == "quantile"
    assert short.period == short.test_start - short.validation_start
    assert pd.Timedelta(minutes=10) < short.period < pd.Timedelta(hours=1)


def test_half_life_in_days_scales_with_the_period_and_is_unchanged_on_a_daily_log():
    settings = BaselineConfig(history_half_life_days=0.25)
    assert settings.in_days(1.0) is settings
    assert settings.in_days(0.5).history_half_life_days == pytest.approx(0.125)


def test_ranking_days_on_a_short_log_are_periods_before_validation():
    """Was: days of 24 hours before the validation part, which on a three-hour log are empty, so
    the ranker learned from one period only."""
    split = split_events(as_events(three_hour_rows()))
    days = ranking_day_users(split, 4)
    assert len(days[0]) == 12  # the validation part
    assert sum(len(users) for users in days[1:]) > 0  # earlier periods of train hold ranking days
    window = [split.validation_start - split.period, split.validation_start]
    in_window = split.train[(split.train["timestamp"] >= window[0]) & (split.train["timestamp"] < window[1])]
    first_seen = split.train.groupby("user_id")["timestamp"].min()
    expected = sorted(u for u in in_window["user_id"].unique() if first_seen[u] < window[0])
    assert sorted(days[1]) == expected


def test_the_user_history_baseline_of_a_short_log_uses_the_half_life_in_periods(tmp_path):
    state = data_stage(tmp_path, three_hour_rows(), ("data", "baselines"),
                       baselines={"history_half_life_days": 0.25})
    run_stage("baselines", state)
    split = state.split
    listed = pd.read_parquet(state.run_dir / "baselines" / "user_history.parquet")
    own = listed[listed["source"] == "user_history"] if "source" in listed else listed
    expected = user_history(split.history, state.truth.users, len(own), half_life_days=0.25 * split.period_days,
                            now=split.test_start)
    got = own.merge(expected, on=["user_id", "item_id"], suffixes=("", "_expected"))
    assert len(got) > 0 and len(got) == len(expected[expected["user_id"].isin(own["user_id"])])
    assert got["score"].to_numpy() == pytest.approx(got["score_expected"].to_numpy(), rel=1e-6)
    # A day-long half-life on a three-hour log would leave every event of it at nearly full weight.
    flat = user_history(split.history, state.truth.users, len(own), half_life_days=0.25, now=split.test_start)
    assert not flat.merge(expected, on=["user_id", "item_id"])[["score_x", "score_y"]].pipe(
        lambda f: (f["score_x"] - f["score_y"]).abs() < 1e-9).all()


def test_untrustworthy_heads_are_named():
    assert head_warnings({"click": 900, "save": 300, "purchase": 120},
                         {"click": 0.81, "save": 0.74, "purchase": 0.69}) == []
    warnings = head_warnings({"click": 900, "save": 14, "purchase": 24},
                             {"click": 0.81, "save": 0.49, "purchase": 0.6})
    assert warnings == [
        "ranker: the save head had 14 positive training rows (under 50): its probabilities mean little",
        "ranker: the save head learned nothing (held-out AUC 0.490, within 0.02 of 0.5); it is exported as it "
        "is: do not use its probability",
        "ranker: the purchase head had 24 positive training rows (under 50): its probabilities mean little",
    ]
