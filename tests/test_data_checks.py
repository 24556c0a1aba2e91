"""Nonsense in a log refused or flagged by the data stage (issue 19, items 4, 6, 9 and 10).

Ids written as missing values and impossible times are malformed rows (file, line, value); a
split whose validation or test part is tiny is warned about; a log the ranker cannot learn from
stops the run right after the split, saying what it lacks; the split's log line gives the exact
cut times; what reading dropped is printed, and `rows_read` counts every data row.
"""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandas._libs.parsers import STR_NA_VALUES

from conftest import CSV_SPEC, DAY, T0, event_lines, run_cli, tiny_log, tiny_rows, write_spec
from shopping_mtl.config import load_config
from shopping_mtl.data.readers import MISSING_ID_TEXT, read_dataset
from shopping_mtl.data.spec import load_spec
from shopping_mtl.data.split import split_events, truth_for
from shopping_mtl.data.stage import run_data
from shopping_mtl.errors import DataError
from shopping_mtl.ranking.days import ranking_day_users
from shopping_mtl.ranking.examples import split_users
from shopping_mtl.run_state import RunState

EVENTS_ONLY = CSV_SPEC.split("items:")[0]
NOW = pd.Timestamp("2024-01-01 12:00", tz="UTC")


def read(spec_path, on_bad_rows="fail", now=None):
    return read_dataset(load_spec(str(spec_path)), on_bad_rows, now)


def with_bad_line(tmp_path, bad_line: str, spec: str = EVENTS_ONLY):
    """tiny_rows() with `bad_line` as the fifth line of events.csv."""
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()[:4]) + bad_line + event_lines(tiny_rows()[4:]))
    return write_spec(tmp_path, spec)


def data_stage(folder, rows, stages=("data", "baselines"), **overrides) -> RunState:
    """The data stage run on `rows` (user, item, behaviour, unix time) written as a CSV log."""
    (folder / "events.csv").write_text(event_lines(rows))
    spec = write_spec(folder, EVENTS_ONLY)
    config = load_config(overrides={"run_dir": str(folder / "run"), "data": {"dataset": str(spec)},
                                    "tracking": {"enabled": False}, "stages": list(stages), **overrides})
    state = RunState(config=config, run_dir=folder / "run")
    state.run_dir.mkdir(exist_ok=True)
    state.data = run_data(state)
    return state


# --------------------------------------------------------------------------------------------
# Item 6: ids written as missing values, times before 1970 or in the future
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["NaN", "nan", "NULL", "null", "None", " N/A ", "<NA>", "#N/A"])
@pytest.mark.parametrize("column", [0, 1], ids=["user", "item"])
def test_missing_value_text_as_id_is_a_malformed_row(tmp_path, text, column):
    """Was: "NaN" became a real user or item."""
    fields = ["u9", "x", "pv", str(T0)]
    fields[column] = text
    spec = with_bad_line(tmp_path, ",".join(fields) + "\n")
    role = ("user_id", "item_id")[column]
    with pytest.raises(DataError) as err:
        read(spec)
    assert "1 malformed rows (missing_id 1)" in str(err.value)
    assert (f"events.csv:5: {role} is a missing value written as text (NaN, NULL, None, N/A, ...), "
            f"not an id: {text!r}") in str(err.value)
    skipped = read(spec, "skip")
    assert len(skipped.events) == len(tiny_rows())
    assert text.strip() not in set(skipped.events[role])
    assert skipped.report.metrics()["data/bad_rows/events/missing_id"] == 1
    row = skipped.report.bad_rows_frame().iloc[0]
    # The value is the text as written: the CSV reader never turned it into a missing value.
    assert (row["line"], row["reason"], row["value"]) == (5, "missing_id", text)


def test_missing_id_list_is_pandas_default_na_strings():
    """The documented list (README, Bad input) is exactly what pandas would read as missing."""
    assert set(MISSING_ID_TEXT) == set(STR_NA_VALUES)


def test_ids_that_only_look_like_missing_values_are_kept(tmp_path):
    rows = [(u, i, "pv", T0 + n) for n, (u, i) in enumerate([("nano", "NaN1"), ("Nonesuch", "nullable"), ("na", "n")])]
    (tmp_path / "events.csv").write_text(event_lines(rows))
    events = read(write_spec(tmp_path, EVENTS_ONLY)).events
    assert list(events["user_id"]) == ["nano", "Nonesuch", "na"]


def test_missing_value_text_as_side_table_key_is_a_malformed_row(tmp_path):
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\nNULL,c2,2\n")
    spec = write_spec(tmp_path, CSV_SPEC)
    with pytest.raises(DataError, match=r"items.csv:3: item_id is a missing value written as text .*: 'NULL'"):
        read(spec)
    assert list(read(spec, "skip").items["item_id"]) == ["a"]


def test_parquet_null_and_nan_text_ids_are_malformed_rows(tmp_path):
    table = pa.table({"user_id": ["u1", None, "nan", "u2"], "item_id": ["a", "a", "a", "b"],
                      "behavior": ["pv"] * 4, "timestamp": [str(T0 + n) for n in range(4)]})
    pq.write_table(table, tmp_path / "events.parquet")
    spec = write_spec(tmp_path, "events:\n  paths: [events.parquet]\n  behaviors: {pv: click}\n")
    skipped = read(spec, "skip")
    assert list(skipped.events["user_id"]) == ["u1", "u2"]
    bad = skipped.report.bad_rows_frame()
    assert list(zip(bad["line"], bad["reason"])) == [(2, "empty_id"), (3, "missing_id")]


@pytest.mark.parametrize("stamp, reads_as", [
    ("-5", "1969-12-31T23:59:55+00:00"),
    ("-86400", "1969-12-31T00:00:00+00:00"),
])
def test_time_before_1970_is_a_malformed_row(tmp_path, stamp, reads_as):
    """Was: a timestamp of -5 became a 1969 event."""
    spec = with_bad_line(tmp_path, f"u9,x,pv,{stamp}\n")
    with pytest.raises(DataError) as err:
        read(spec)
    assert "1 malformed rows (timestamp_out_of_range 1)" in str(err.value)
    assert (f"events.csv:5: timestamp reads as {reads_as}, before 1970-01-01T00:00:00+00:00: {stamp!r}"
            in str(err.value))
    skipped = read(spec, "skip")
    assert skipped.events["timestamp"].min() == pd.Timestamp(T0 + 10, unit="s", tz="UTC")
    assert skipped.report.metrics()["data/bad_rows/events/timestamp_out_of_range"] == 1


def test_text_time_before_1970_is_a_malformed_row(tmp_path):
    (tmp_path / "events.csv").write_text("u1,a,pv,1970-01-01 00:00:00\nu2,a,pv,1969-12-31 23:59:59\n")
    spec = write_spec(tmp_path, EVENTS_ONLY.replace("timestamp_format: unix",
                                                    'timestamp_format: "%Y-%m-%d %H:%M:%S"'))
    with pytest.raises(DataError, match=r"events.csv:2: timestamp reads as 1969-12-31T23:59:59\+00:00, before 1970"):
        read(spec)
    assert len(read(spec, "skip").events) == 1  # the epoch itself is a valid time


def test_time_in_the_year_2100_is_a_malformed_row(tmp_path):
    """Was: a stray event in 2100 was kept, and became the whole test day (one user)."""
    spec = with_bad_line(tmp_path, "u9,x,pv,4102444800\n")
    with pytest.raises(DataError) as err:
        read(spec, now=NOW)
    assert ("events.csv:5: timestamp reads as 2100-01-01T00:00:00+00:00, after 2024-01-02T12:00:00+00:00 "
            "(the reading time plus one day): '4102444800'") in str(err.value)
    # With the clock as the reading time, too.
    with pytest.raises(DataError, match="timestamp_out_of_range 1"):
        read(spec)
    skipped = read(spec, "skip")
    assert len(skipped.events) == len(tiny_rows())
    assert skipped.events["timestamp"].max() == pd.Timestamp(T0 + 3 * DAY + 4, unit="s", tz="UTC")


def test_time_within_a_day_of_now_is_kept(tmp_path):
    """A log written in a zone ahead of UTC may end on the reader's "tomorrow"."""
    soon = int((NOW + pd.Timedelta(hours=23)).timestamp())
    late = int((NOW + pd.Timedelta(hours=25)).timestamp())
    (tmp_path / "events.csv").write_text(event_lines([("u1", "a", "pv", soon), ("u2", "a", "pv", late)]))
    skipped = read(write_spec(tmp_path, EVENTS_ONLY), "skip", now=NOW)
    assert list(skipped.events["user_id"]) == ["u1"]
    assert list(skipped.report.bad_rows_frame()["line"]) == [2]


# --------------------------------------------------------------------------------------------
# Item 6: a tiny validation or test part is warned about
# --------------------------------------------------------------------------------------------

def log_rows():
    """tiny_log(): 600 events of 40 users over five days, as CSV rows."""
    events, _ = tiny_log()
    kinds = {"click": "pv", "save": "fav", "purchase": "buy"}
    return [(u, i, kinds[e], int(t.timestamp())) for u, i, e, t in events.itertuples(index=False)]


def test_no_warning_on_a_log_with_large_enough_parts(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="shopping_mtl.data.stage"):
        state = data_stage(tmp_path, log_rows())
    assert "split:" not in caplog.text
    assert "warnings" not in state.info["split"]


def test_stray_late_event_makes_a_tiny_test_part_and_a_warning(tmp_path, caplog):
    """Was: a one-user test day, a week after the rest of the log, evaluated without a word."""
    rows = log_rows()
    last = max(t for *_, t in rows)
    rows.append(("u1", "i1", "pv", last + 7 * DAY))
    with caplog.at_level(logging.WARNING, logger="shopping_mtl.data.stage"):
        state = data_stage(tmp_path, rows)
    test_day = pd.Timestamp(last + 7 * DAY, unit="s", tz="UTC").floor("D").isoformat()
    expected = (f"the test part (from {test_day}, calendar_day split) holds 1 of the 601 events (0.17%) and "
                "1 test user (an event in it and one in train): under 1% of the events and under 20 users, "
                "its figures are mostly noise.")
    assert expected in caplog.text
    assert any(r.levelno == logging.WARNING and expected in r.getMessage() for r in caplog.records)
    # The validation day before it is empty: warned too.
    assert "the validation part" in caplog.text and "holds 0 of the 601 events" in caplog.text
    warnings = state.info["split"]["warnings"]
    assert len(warnings) == 2 and warnings[1].startswith(expected)


def test_validation_part_with_few_users_is_warned_about(tmp_path, caplog):
    """Plenty of events, but only 5 validation users."""
    rows = [(f"u{u}", f"i{(u + d) % 30}", "pv", T0 + d * DAY + 60 * u + k)
            for d in range(5) for u in range(60 if d != 3 else 5) for k in range(3)]
    with caplog.at_level(logging.WARNING, logger="shopping_mtl.data.stage"):
        state = data_stage(tmp_path, rows)
    assert state.info["split"]["warnings"] == [
        f"the validation part (from {pd.Timestamp(T0 + 3 * DAY, unit='s', tz='UTC').isoformat()}, calendar_day "
        "split) holds 15 of the 735 events (2.04%) and 5 validation users (an event in it and one in train): "
        "under 20 users, its figures are mostly noise. A few stray events far from the rest of the log, or a "
        "short log or one with few users, give this."]


# --------------------------------------------------------------------------------------------
# Item 4: the split's log line gives the exact cut times
# --------------------------------------------------------------------------------------------

def test_split_log_line_gives_exact_cut_times(tmp_path, caplog):
    """Was: "test from 2023-11-18", the date only."""
    with caplog.at_level(logging.INFO, logger="shopping_mtl.data.stage"):
        data_stage(tmp_path, tiny_rows())
    assert ("split (calendar_day): train 5, validation 2, test 4 events; validation from "
            "2023-11-17T00:00:00+00:00, test from 2023-11-18T00:00:00+00:00; 1 validation user, "
            "2 test users") in caplog.text


def test_quantile_split_log_line_gives_the_time_of_day(tmp_path, caplog):
    rows = [(f"u{i % 4}", f"i{i}", "pv", T0 + 600 * i) for i in range(20)]
    with caplog.at_level(logging.INFO, logger="shopping_mtl.data.stage"):
        data_stage(tmp_path, rows)
    # Events 12 and 16 (of 0..19) start validation and test.
    assert ("validation from 2023-11-15T02:00:00+00:00, test from 2023-11-15T02:40:00+00:00"
            in caplog.text)


# --------------------------------------------------------------------------------------------
# Item 9: a log the ranker cannot learn from stops the run in the data stage
# --------------------------------------------------------------------------------------------

MODEL_STAGES = ("data", "retrieval", "candidates", "ranking")


def daily_rows(n_users: int, days: int = 5):
    return [(f"u{u}", f"i{(7 * u + 3 * d + k) % 20}", "buy" if k == 0 else "pv", T0 + d * DAY + 100 * u + k)
            for d in range(days) for u in range(n_users) for k in range(3)]


def test_one_user_log_fails_in_the_data_stage_saying_what_it_lacks(tmp_path):
    """Was: ValueError "Expected input data to be non-empty" with a traceback from Keras, in the
    ranking stage, after the retrieval model was fitted."""
    with pytest.raises(DataError) as err:
        data_stage(tmp_path, daily_rows(1), MODEL_STAGES)
    assert str(err.value) == (
        "the log cannot train the ranker: it learns from user-days of the validation part and the 4 periods "
        "of its length before it (ranking.extra_days), each a user with an event in that period and an earlier "
        "one in train, and "
        "holds 20% of the train users out (ranking.holdout_share, by a hash of the id and the seed 42) for "
        "early stopping and calibration. It needs at least one user-day to train on and one held out, so at "
        "least 2 users with such days. This log has 1 user in train and 3 such user-days of 1 user (u0): "
        "0 to train on, 3 held out. Use a log with more users, or leave the ranking stage out "
        "(--stages data,retrieval,candidates).")


def test_one_user_log_on_the_command_line_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "events.csv").write_text(event_lines(daily_rows(1)))
    spec = write_spec(tmp_path, EVENTS_ONLY)
    failed = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(tmp_path / "run"), "-q")
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "error: the log cannot train the ranker:" in failed.stderr
    assert "(--stages data,baselines,retrieval,candidates,export)" in failed.stderr
    assert "split: the test part" in failed.stderr  # the warning shows with -q too


def test_one_user_log_runs_the_stages_that_need_no_ranker(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="shopping_mtl.data.stage"):
        state = data_stage(tmp_path, daily_rows(1), ("data", "baselines"))
    assert state.metrics["eval/test_users"] == 1
    assert "1 test user (an event in it and one in train): under 20 users" in caplog.text


@pytest.mark.parametrize("seed, fails", [(42, False), (2, True)])
def test_two_users_fail_only_when_none_is_held_out(tmp_path, seed, fails):
    """With seed 2 neither u0 nor u1 is in the held-out share, so the ranker would have no
    held-out rows (Keras failed on them); with seed 42 it trains (checked by hand: the ranking
    stage fits)."""
    if fails:
        with pytest.raises(DataError, match=r"6 such user-days of 2 users \(u0, u1\): 6 to train on, 0 held out"):
            data_stage(tmp_path, daily_rows(2), MODEL_STAGES, seed=seed)
    else:
        data_stage(tmp_path, daily_rows(2), MODEL_STAGES, seed=seed)


def test_ranking_day_users_are_the_ranking_stage_users():
    """`ranking_day_users` against the ranking stage's own definition of a day's users
    (`truth_for(before, before, day)`, ranking.stage.ranking_day)."""
    events, _ = tiny_log()
    split = split_events(events)
    days = ranking_day_users(split, 5)
    for back, users in enumerate(days):
        start = split.validation_start - pd.Timedelta(days=back)
        before = split.train[split.train["timestamp"] < start]
        day = split.validation if back == 0 else split.train[
            (split.train["timestamp"] >= start) & (split.train["timestamp"] < start + pd.Timedelta(days=1))]
        assert sorted(users) == list(truth_for(before, before, day).users)
    # Days -4 and -5 come before the log (the 14th of November has no earlier event): empty.
    assert [len(u) for u in days] == [37, 37, 35, 11, 0, 0]
    everyone = sorted(set(split.train["user_id"]))
    assert split_users(everyone, 0.2, 42).sum() > 0  # the check's held-out users come from here


# --------------------------------------------------------------------------------------------
# Item 10: what reading dropped is printed; rows_read counts every data row
# --------------------------------------------------------------------------------------------

def test_duplicates_and_repeated_keys_are_printed(tmp_path, caplog):
    """Was: only in metrics.json."""
    rows = tiny_rows()
    (tmp_path / "events.csv").write_text(event_lines(rows + rows[:3]))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\na,c1,1\na,c9,2\nb,c2,3\n")
    with caplog.at_level(logging.INFO, logger="shopping_mtl.data.readers"):
        read(write_spec(tmp_path, CSV_SPEC))
    messages = {r.getMessage(): r.levelno for r in caplog.records}
    assert messages["events: 14 rows read, 11 kept; 3 exact duplicate rows dropped"] == logging.INFO
    assert messages["items: 2 rows kept; 1 exact duplicate rows dropped, 1 repeated keys (the first row of "
                    "each kept)"] == logging.INFO
    assert messages["items: 1 repeated keys (a key on several rows with different values): the first row of "
                    "each is kept, the others left out (data/items/repeated_keys)"] == logging.WARNING


def test_rows_read_counts_every_data_row(tmp_path, caplog):
    """Was: rows with the wrong column count, lines that are not UTF-8 and a truncated last line
    were left out of rows_read."""
    (tmp_path / "events.csv").write_bytes(
        event_lines(tiny_rows()).encode() + b"u9,x,pv\n" + b"u9,caf\xe9,pv,1700000000\n" + b"u9,x,like,1700000000\n"
        + b"u9,NaN,pv,1700000000\n" + event_lines(tiny_rows()[:1]).encode() + b"u9,x")
    with caplog.at_level(logging.INFO, logger="shopping_mtl.data.readers"):
        data = read(write_spec(tmp_path, EVENTS_ONLY), "skip")
    metrics = data.report.metrics()
    assert metrics["data/events/rows_read"] == 17
    assert (metrics["data/events"] + metrics["data/bad_rows/total"] + metrics["data/events/duplicate_rows"]
            + metrics["data/events/truncated_last_line"]) == 17
    assert ("events: 17 rows read, 11 kept; 1 exact duplicate rows dropped, 4 malformed rows skipped, "
            "1 truncated last line dropped") in caplog.text
