"""Readers and validation: every bad-input case gives a clear message naming file, line and value."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from conftest import CSV_SPEC, T0, event_lines, run_cli, tiny_rows, write_spec
from shopping_mtl.data.readers import read_dataset, shared_strings
from shopping_mtl.data.spec import load_spec
from shopping_mtl.errors import ConfigError, DataError


def read(spec_path, on_bad_rows="fail"):
    return read_dataset(load_spec(str(spec_path)), on_bad_rows)


def test_reads_canonical_events(tiny_dataset):
    data = read(tiny_dataset)
    events = data.events
    assert list(events.columns) == ["user_id", "item_id", "event", "timestamp"]
    assert len(events) == len(tiny_rows())
    assert set(events["event"]) == {"click", "save", "purchase"}
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert events["timestamp"].is_monotonic_increasing
    # cart and fav both map to save
    assert (events["event"] == "save").sum() == 3
    assert data.items.set_index("item_id").loc["c", "price"] == 100.0
    assert data.report.n_bad == 0


@pytest.mark.parametrize(
    "bad_line, reason, detail, value",
    [
        ("u9,x,pv\n", "wrong_column_count", "expected 4 fields, got 3", "u9,x,pv"),
        ("u9,x,pv,1,2\n", "wrong_column_count", "expected 4 fields, got 5", "u9,x,pv,1,2"),
        ("u9,x,pv,yesterday\n", "bad_timestamp", "timestamp does not parse", "yesterday"),
        ("u9,x,like,1700000000\n", "unknown_behavior", "unknown behaviour value", "like"),
        (",x,pv,1700000000\n", "empty_id", "user_id is empty", ""),
        ("u9, ,pv,1700000000\n", "empty_id", "item_id is empty", " "),
        ("\n", "empty_id", "user_id is empty", ""),
    ],
)
def test_bad_event_row_is_reported_with_file_line_and_value(tmp_path, bad_line, reason, detail, value):
    rows = event_lines(tiny_rows()[:4]) + bad_line + event_lines(tiny_rows()[4:])
    (tmp_path / "events.csv").write_text(rows)
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    spec = write_spec(tmp_path, CSV_SPEC)
    with pytest.raises(DataError) as err:
        read(spec)
    message = str(err.value)
    assert f"1 malformed rows ({reason} 1)" in message
    assert "events.csv:5: " in message  # the bad row is the fifth line
    assert detail in message
    assert repr(value) in message
    assert "--on-bad-rows skip" in message

    skipped = read(spec, on_bad_rows="skip")
    assert len(skipped.events) == len(tiny_rows())
    assert skipped.report.metrics()[f"data/bad_rows/events/{reason}"] == 1
    assert skipped.report.metrics()["data/bad_rows/total"] == 1
    row = skipped.report.bad_rows_frame().iloc[0]
    assert (row["file"].endswith("events.csv"), row["line"], row["reason"]) == (True, 5, reason)


@pytest.mark.parametrize(
    "price, detail",
    [("nan", "price is not a finite number"), ("", "price is not a finite number"),
     ("-3.5", "price is negative"), ("cheap", "price is not a finite number")],
)
def test_bad_item_price_is_reported(tmp_path, price, detail):
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text(f"item_id,category,price\na,c1,1\nb,c1,{price}\n")
    spec = write_spec(tmp_path, CSV_SPEC)
    with pytest.raises(DataError, match=rf"items.csv:3: {detail}: '{price}'"):
        read(spec)
    skipped = read(spec, on_bad_rows="skip")
    assert list(skipped.items["item_id"]) == ["a"]
    assert skipped.report.metrics()["data/bad_rows/items/bad_number"] == 1


def test_declared_missing_value_is_not_bad(tmp_path):
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\nb,c1,-1\n")
    spec = write_spec(tmp_path, CSV_SPEC + "  missing_values: {price: ['-1']}\n")
    items = read(spec).items.set_index("item_id")
    assert pd.isna(items.loc["b", "price"]) and items.loc["a", "price"] == 1.0


def test_many_bad_rows_fail_with_count_and_first_five(tmp_path):
    bad = "".join(f"u{i},x,like,{T0}\n" for i in range(12))
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()) + bad)
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    spec = write_spec(tmp_path, CSV_SPEC)
    with pytest.raises(DataError) as err:
        read(spec)
    message = str(err.value)
    assert message.startswith("12 malformed rows (unknown_behavior 12); the first 5:")
    assert message.count("unknown behaviour value") == 5


def test_truncated_last_line_is_dropped_and_counted(tmp_path):
    text = event_lines(tiny_rows()) + "u1,zz,pv"  # no timestamp, no newline: cut off mid-write
    with gzip.open(tmp_path / "events.csv.gz", "wt") as handle:
        handle.write(text)
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    spec = write_spec(tmp_path, CSV_SPEC.replace("[events.csv]", "[events.csv.gz]"))
    data = read(spec)
    assert len(data.events) == len(tiny_rows())
    assert data.report.metrics()["data/events/truncated_last_line"] == 1
    assert "zz" not in set(data.events["item_id"])


def test_short_last_line_with_newline_is_a_bad_row(tmp_path):
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()) + "u1,zz,pv\n")
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    with pytest.raises(DataError, match="wrong column count"):
        read(write_spec(tmp_path, CSV_SPEC))


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    rows = tiny_rows()
    (tmp_path / "events.csv").write_text(event_lines(rows + rows[:3]))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\na,c1,1\na,c9,2\n")
    data = read(write_spec(tmp_path, CSV_SPEC))
    metrics = data.report.metrics()
    assert len(data.events) == len(rows)
    assert metrics["data/events/duplicate_rows"] == 3
    assert metrics["data/items/duplicate_rows"] == 1
    assert metrics["data/items/repeated_keys"] == 1  # same key, other values: first kept
    assert data.items.set_index("item_id").loc["a", "category"] == "c1"


def test_missing_file(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    with pytest.raises(DataError, match=r"file not found: .*events.csv"):
        read(write_spec(tmp_path, CSV_SPEC))


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("user_id,item_id,behavior,timestamp\n", "has a header but no rows"),
])
def test_empty_and_header_only_files(tmp_path, content, message):
    (tmp_path / "events.csv").write_text(content)
    spec = write_spec(tmp_path, """\
        name: h
        events:
          paths: [events.csv]
          behaviors: {pv: click}
        """)
    with pytest.raises(DataError, match=message):
        read(spec)


def test_empty_gzip_file(tmp_path):
    with gzip.open(tmp_path / "events.csv.gz", "wt"):
        pass
    spec = write_spec(tmp_path, """\
        events:
          paths: [events.csv.gz]
          behaviors: {pv: click}
        """)
    with pytest.raises(DataError, match="empty"):
        read(spec)


def test_header_without_needed_column(tmp_path):
    (tmp_path / "events.csv").write_text("user,item_id,behavior,timestamp\nu1,a,pv,1\n")
    spec = write_spec(tmp_path, "events:\n  paths: [events.csv]\n  behaviors: {pv: click}\n")
    with pytest.raises(DataError, match="header has no column 'user_id'; it has user, item_id"):
        read(spec)


@pytest.mark.parametrize("extra, message", [
    ("colour: red\n", "unknown key 'colour'"),
    ("events:\n  paths: [e.csv]\n  behaviours: {pv: click}\n", "unknown key 'behaviours' \\(did you mean 'behaviors'\\?\\)"),
    ("events:\n  paths: [e.csv]\n  behaviors: {pv: clicks}\n", "maps 'pv' to unknown event 'clicks'; known: click, save, purchase"),
    ("events:\n  paths: [e.csv]\n  header: false\n  behaviors: {pv: click}\n", "a CSV without header needs 'columns'"),
    ("events:\n  paths: [e.csv]\n  timestamp_unit: hours\n  behaviors: {pv: click}\n", "timestamp_unit is 'hours'"),
    # Found by test_readers_property.py: each was a raw TypeError / ValueError / pandas or zoneinfo
    # error while reading, or (marked *) silently accepted.
    ("events:\n  paths: 5\n  behaviors: {pv: click}\n", "events.paths must be a file name or a list of them, got 5"),
    ("events:\n  paths: [e.csv]\n  header: false\n  columns: user_id\n  behaviors: {pv: click}\n",  # *
     "events.columns must be a list of column names, got 'user_id'"),
    ("events:\n  paths: [e.csv]\n  item_columns: [category]\n  behaviors: {pv: click}\n",
     "events.item_columns must be a mapping, got list"),
    ("events:\n  paths: [e.csv]\n  item_columns: {timestamp: int}\n  behaviors: {pv: click}\n",  # *
     "item_columns.timestamp would replace the canonical events column 'timestamp'"),
    ("events:\n  paths: [e.csv]\n  header: false\n  columns: [user_id, item_id, behavior, timestamp]\n"
     "  item_columns: {category: string}\n  behaviors: {pv: click}\n",
     "events.item_columns names column 'category', which is not in"),
    ("events:\n  paths: [e.csv]\n  timezone: Europe/Pariss\n  behaviors: {pv: click}\n",
     "events.timezone 'Europe/Pariss' is not a time zone"),
    ("events:\n  paths: [e.csv]\n  timezone: ''\n  behaviors: {pv: click}\n", "events.timezone '' is not a time zone"),
    ("events:\n  paths: [e.csv]\n  timestamp_format: '%Q'\n  behaviors: {pv: click}\n",
     "events.timestamp_format '%Q' is not a strftime pattern"),
    ("events:\n  paths: [e.csv]\n  timestamp_format: yyyymmdd\n  behaviors: {pv: click}\n",  # *
     "events.timestamp_format is 'yyyymmdd'"),
    ('events:\n  paths: [e.csv]\n  delimiter: "\\0"\n  behaviors: {pv: click}\n', "events.delimiter must be one ASCII"),
    ('events:\n  paths: [e.csv]\n  delimiter: "é"\n  behaviors: {pv: click}\n', "events.delimiter must be one ASCII"),
    ("events:\n  paths: [e.csv]\n  delimiter: '\"'\n  behaviors: {pv: click}\n", "events.delimiter must be one ASCII"),
    ("events:\n  paths: [e.csv]\n  user_id: [customer]\n  behaviors: {pv: click}\n", "events.user_id must be text"),
    ("events:\n  paths: [e.csv]\n  behaviors: {}\n", "events.behaviors must map raw values"),  # *
    ("events:\n  paths: [e.csv]\n  behaviors: {yes: click}\n", "has the YAML value True as a raw value"),  # *
    ("events:\n  paths: [e.csv]\n  behaviors: {1: click, '1': save}\n", "events.behaviors maps '1' twice"),  # *
    ("items:\n  paths: [i.csv]\n  types: [category, price]\n", "items.types must be a mapping, got list"),
    ("items:\n  paths: [i.csv]\n  types: {item_id: float}\n", "items.types.item_id would replace the key"),  # *
    ("items:\n  paths: [i.csv]\n  types: {price: float}\n  missing_values: [price]\n",
     "items.missing_values must be a mapping, got list"),
    ("items: 0\n", "items must be a mapping, got int: 0"),  # *
    ("defaults: [a, b]\n", "defaults must be a mapping"),
    ("features: [a]\n", "features must be a mapping"),  # *
    ("synthetic: 'no'\n", "synthetic must be true or false, got 'no'"),  # * (read as True)
    ("root: 5\n", "root must be a folder name, got 5"),  # *
])
def test_spec_errors_name_the_key(tmp_path, extra, message):
    base = "name: bad\n" + ("events:\n  paths: [e.csv]\n  behaviors: {pv: click}\n" if not extra.startswith("events") else "")
    spec = write_spec(tmp_path, base + extra)
    with pytest.raises(ConfigError, match=message):
        load_spec(str(spec))


def test_spec_file_that_is_not_utf8(tmp_path):
    """Was a raw UnicodeDecodeError from load_spec."""
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"name: caf\xe9\nevents:\n  paths: [e.csv]\n  behaviors: {pv: click}\n")
    with pytest.raises(ConfigError, match=r"spec.yaml: not UTF-8 text"):
        load_spec(str(path))


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown dataset 'ecom'; known: ecomm, taobao"):
        load_spec("ecom")


# --------------------------------------------------------------------------------------------
# Regressions found by test_readers_property.py
# --------------------------------------------------------------------------------------------

HEADER_SPEC = "events:\n  paths: [events.csv]\n  behaviors: {pv: click, fav: save, cart: save, buy: purchase}\n"


@pytest.mark.parametrize("header", [False, True])
def test_row_that_is_not_utf8_is_a_bad_row_at_its_line(tmp_path, header):
    """Was: the whole read failed on pyarrow's "Row #12 ... invalid UTF8 data" (no line, not
    skippable), or with a header a raw UnicodeDecodeError."""
    top = b"user_id,item_id,behavior,timestamp\n" if header else b""
    (tmp_path / "events.csv").write_bytes(top + event_lines(tiny_rows()).encode() + b"u9,caf\xe9,pv,1700000000\n")
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    spec = write_spec(tmp_path, HEADER_SPEC if header else CSV_SPEC)
    line = 12 + header
    with pytest.raises(DataError) as err:
        read(spec)
    assert f"events.csv:{line}: not UTF-8 text" in str(err.value)
    assert repr("u9,caf\\xe9,pv,1700000000") in str(err.value)
    skipped = read(spec, on_bad_rows="skip")
    assert len(skipped.events) == len(tiny_rows())
    row = skipped.report.bad_rows_frame().iloc[0]
    assert (row["line"], row["reason"]) == (line, "bad_encoding")


def test_header_that_is_not_utf8_names_file_and_line(tmp_path):
    """Was a raw UnicodeDecodeError."""
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_bytes(b"item_id,cat\xe9gory,price\na,c1,1\n")
    with pytest.raises(DataError, match=r"items.csv:1: the header is not UTF-8 text"):
        read(write_spec(tmp_path, CSV_SPEC))


def test_byte_order_mark_before_the_header_is_not_part_of_a_name(tmp_path):
    """Was "header has no column 'user_id'; it has \ufeffuser_id, ..." (pyarrow skips the mark)."""
    (tmp_path / "events.csv").write_bytes(b"\xef\xbb\xbfuser_id,item_id,behavior,timestamp\n"
                                          + event_lines(tiny_rows()).encode())
    assert len(read(write_spec(tmp_path, HEADER_SPEC)).events) == len(tiny_rows())


@pytest.mark.parametrize("lines, at, span", [
    # A quote never closed took every later line into one bad row: "no valid events are left".
    (['u9,"zz,pv,1700000000'], 1, "lines 1-12"),
    # Two lines became one *valid* event (u8 with item 'a,pv,1\nu9,b'): u9's event vanished.
    (['u8,"a,pv,1', 'u9,b",pv,1700000000'], 1, "lines 1-2"),
    # A quoted line break was read as one event, and every later line number was off by one.
    (['u9,"a', 'b",pv,1700000000'], 1, "lines 1-2"),
])
def test_quoted_field_over_a_line_break_is_an_error_at_its_line(tmp_path, lines, at, span):
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n" + event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    spec = write_spec(tmp_path, CSV_SPEC)
    for mode in ("fail", "skip"):
        with pytest.raises(DataError) as err:
            read(spec, on_bad_rows=mode)
        assert f"events.csv:{at}: a quoted field runs over a line break ({span};" in str(err.value)


def test_quoted_delimiter_still_reads(tmp_path):
    """The quote check must not reject quoting that stays on its line."""
    (tmp_path / "events.csv").write_text('u1,"a,b",pv,1700000000\nu2,"say ""hi""",buy,1700000001\n')
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    events = read(write_spec(tmp_path, CSV_SPEC)).events
    assert list(events["item_id"]) == ["a,b", 'say "hi"']


def test_timestamps_with_different_utc_offsets(tmp_path):
    """Was a raw pandas ValueError: "Mixed timezones detected. Pass utc=True ..."."""
    (tmp_path / "events.csv").write_text("u1,a,pv,2023-11-15 10:00:00+0100\nu2,a,pv,2023-11-15 10:00:00+0200\n"
                                         "u3,a,pv,2023-11-15 10:00:00\n")
    spec = write_spec(tmp_path, CSV_SPEC.split("items:")[0].replace(
        "timestamp_format: unix", 'timestamp_format: "%Y-%m-%d %H:%M:%S%z"'))
    with pytest.raises(DataError, match=r"events.csv:3: timestamp does not parse as %Y-%m-%d %H:%M:%S%z"):
        read(spec)
    events = read(spec, on_bad_rows="skip").events
    assert list(events["timestamp"].dt.strftime("%H:%M")) == ["08:00", "09:00"]


def test_huge_number_in_an_int_column_is_a_bad_row(tmp_path):
    """Was a raw TypeError: cannot safely cast non-equivalent float64 to int64."""
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    (tmp_path / "users.csv").write_text("user_id,age\nu1,1e300\nu2,31\n")
    spec = write_spec(tmp_path, CSV_SPEC + "users:\n  paths: [users.csv]\n  types: {age: int}\n")
    with pytest.raises(DataError, match=r"users.csv:2: age is too large for an integer: '1e300'"):
        read(spec)
    users = read(spec, on_bad_rows="skip").users
    assert users.to_dict("records") == [{"user_id": "u2", "age": 31}]


@pytest.mark.parametrize("content, message", [
    (b"user_id,item_id,behavior,timestamp\nu1,a,pv,1\n", "cannot be read: zlib inflate failed"),
    (gzip.compress(b"user_id,item_id,behavior,timestamp\n" + b"u1,a,pv,1\n" * 100)[:40], "cannot be read"),
], ids=["not gzip", "cut short"])
def test_unreadable_gzip_with_header(tmp_path, content, message):
    """Was a raw gzip.BadGzipFile / EOFError from reading the header."""
    (tmp_path / "events.csv.gz").write_bytes(content)
    with pytest.raises(DataError, match=rf"events.csv.gz: {message}"):
        read(write_spec(tmp_path, HEADER_SPEC.replace("events.csv", "events.csv.gz")))


@pytest.mark.parametrize("path, message", [
    ("logs/*", "no file matches"),  # was IsADirectoryError: the glob matched a folder
    ("~nobody_here_zz/events.csv", "cannot open ~nobody_here_zz/events.csv"),  # was RuntimeError
    ("x" * 300 + ".csv", "cannot open xxx"),  # was OSError: File name too long
])
def test_bad_paths_are_data_errors(tmp_path, path, message):
    (tmp_path / "logs" / "2023").mkdir(parents=True)
    with pytest.raises(DataError, match=message):
        read(write_spec(tmp_path, HEADER_SPEC.replace("[events.csv]", f"['{path}']")))


def test_cli_reports_bad_input_without_traceback(tmp_path):
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()) + "u1,x,like,1\n")
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    spec = write_spec(tmp_path, CSV_SPEC)
    failed = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(tmp_path / "run"), "-q")
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert "events.csv:12: unknown behaviour value (known: pv, fav, cart, buy): 'like'" in failed.stderr

    # The rows are read, skipped and counted in the data stage; the baselines then score lists
    # on what was kept (the models' stages add nothing about bad rows, only a minute).
    # Another configuration: another run folder (a folder holds one configuration's run).
    skipped = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(tmp_path / "skip"), "-q",
                      "--on-bad-rows", "skip", "--stages", "data,baselines",
                      "--set", "evaluation.bootstrap_resamples=10")
    assert skipped.returncode == 0, skipped.stderr
    import json

    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert metrics["data/bad_rows/events/unknown_behavior"] == 1.0
    bad = pd.read_csv(tmp_path / "skip" / "bad_rows.csv")
    assert bad.to_dict("records")[0]["line"] == 12


@pytest.mark.parametrize("args, message", [
    (["--dataset", "nope"], "error: unknown dataset 'nope'"),
    (["--set", "evaluation.kss=[1]"], "unknown config key 'evaluation.kss' (did you mean 'evaluation.ks'?)"),
    (["--set", "data.max_events=-5"], "data.max_events must be positive"),
    (["--stages", "data,tuning"], "stages has unknown stage 'tuning'"),
    (["--stages", "data,ranking"], "stage 'ranking' needs stage 'retrieval'"),
    (["--data-root", "/nonexistent/folder"], "file not found: /nonexistent/folder/ecomm_edge_train.txt.gz"),
])
def test_cli_config_errors(tmp_path, args, message):
    failed = run_cli("train.py", "--run-dir", str(tmp_path / "run"), "-q", *args)
    assert failed.returncode == 2, failed.stderr
    assert message in failed.stderr
    assert "Traceback" not in failed.stderr


def test_event_ids_share_one_str_per_distinct_value():
    values = pd.Series(["u1", "u2", "u1", None, "u2", "u1"], dtype="string", index=[5, 4, 3, 2, 1, 0], name="user_id")
    shared = shared_strings(values)
    assert shared.dtype == object and shared.name == "user_id" and list(shared.index) == [5, 4, 3, 2, 1, 0]
    assert list(shared.iloc[[0, 1, 2, 4, 5]]) == ["u1", "u2", "u1", "u2", "u1"]
    assert pd.isna(shared.iloc[3])
    assert shared.iloc[0] is shared.iloc[2] is shared.iloc[5] and shared.iloc[1] is shared.iloc[4]


def test_read_events_hold_one_str_per_distinct_id(tmp_path):
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,1\n")
    events = read(write_spec(tmp_path, CSV_SPEC)).events
    assert len(events) == len(tiny_rows())
    for column in ("user_id", "item_id", "event"):
        assert events[column].dtype == object
        first = {}
        for value in events[column]:
            assert first.setdefault(value, value) is value  # every equal value the same object
