"""Property tests: malformed CSV rows and dataset specs thrown at the readers.

Whatever the input, reading ends in one of two ways: a DataError / ConfigError whose message names
the file (and for a row, its line and value), or, with on_bad_rows="skip", a counted skip in which
every physical line is a kept event, a bad row, an exact duplicate or a truncated last line. Never
a raw traceback, never a silent drop. Each test models what the reader must make of every line it
generated, so a wrong line number, reason or value fails as surely as a crash does.
"""

from __future__ import annotations

import gzip
import re
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from conftest import CSV_SPEC, event_lines, tiny_rows, write_spec
from shopping_mtl.data.readers import MISSING_ID_TEXT, read_dataset
from shopping_mtl.data.spec import DatasetSpec, EventsSpec, SideTableSpec, load_spec
from shopping_mtl.errors import ConfigError, DataError, ShoppingMtlError

# Few examples, a fixed seed (CI sees the same inputs every run), no example database in the repo.
PROPERTY = settings(
    max_examples=50, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

BEHAVIORS = {"pv": "click", "fav": "save", "cart": "save", "buy": "purchase"}
COLUMNS = ["user_id", "item_id", "behavior", "timestamp"]
LINE_BREAK = re.compile(rb"\r\n|\r|\n")  # what pyarrow ends a line on
# One line of a failing run's message: "  <file>:<line>: <detail>: <repr of value>".
MESSAGE_LINE = re.compile(r"^  (?P<file>.+?):(?P<line>\d+): (?P<rest>.*)$")


@dataclass(frozen=True)
class Line:
    """One generated CSV line and what the reader must make of it."""

    text: bytes
    kind: str
    reason: str | None = None  # the bad-row reason; None for a kept event or a duplicate
    value: str | None = None  # the value the bad row must report
    row: tuple | None = None  # the canonical row it becomes when kept


def physical_lines(data: bytes) -> list[bytes]:
    """The file's lines as pyarrow splits them (\\n, \\r\\n or \\r), without their breaks."""
    parts = LINE_BREAK.split(data)
    return parts[:-1] if parts and parts[-1] == b"" else parts


def events_spec(header: bool, name: str = "events.csv", extra: str = "") -> str:
    layout = "  header: true\n" if header else f"  header: false\n  columns: [{', '.join(COLUMNS)}]\n"
    return (f"name: prop\nevents:\n  paths: [{name}]\n{layout}"
            f"  behaviors: {{pv: click, fav: save, cart: save, buy: purchase}}\n{extra}")


def write_table(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)


def read_both(spec: Path):
    """Read a spec failing on bad rows and skipping them: each outcome is a Dataset or our error.

    Any other exception propagates, and fails the property with its traceback.
    """
    outcomes = []
    for mode in ("fail", "skip"):
        try:
            outcomes.append(read_dataset(load_spec(str(spec)), mode))
        except ShoppingMtlError as err:
            outcomes.append(err)
    return outcomes


def event_rows(events: pd.DataFrame) -> list[tuple]:
    return sorted(zip(events["user_id"], events["item_id"], events["event"],
                      events["timestamp"].astype("int64")))


def check_failure_message(err: Exception, file_name: str, bad: dict[int, str]) -> None:
    """A failing run names how many rows are bad and shows the first ones as file:line: value."""
    assert isinstance(err, DataError), repr(err)
    message = str(err)
    assert message.startswith(f"{len(bad)} malformed rows ("), message
    shown = [MESSAGE_LINE.match(line) for line in message.splitlines()[1:min(len(bad), 5) + 1]]
    assert all(shown), message
    for match in shown:
        assert match["file"].endswith(file_name), message
        line = int(match["line"])
        assert line in bad, (line, message)
        assert match["rest"].endswith(repr(bad[line])), (bad[line], message)


# --------------------------------------------------------------------------------------------
# Event rows: each line is good or broken in exactly one way, so its fate is known
# --------------------------------------------------------------------------------------------

# Never an id written as a missing value ("nan", "null"): those have their own kind below.
PLAIN = st.from_regex(r"[a-z0-9_\-]{1,8}", fullmatch=True).filter(lambda s: s not in MISSING_ID_TEXT)
# (text in the file, value the reader must read), quoting and odd bytes included.
ITEMS = st.one_of(
    PLAIN.map(lambda s: (s, s)),
    PLAIN.map(lambda s: (f" {s} ", s)),
    PLAIN.map(lambda s: (f'"{s},{s}"', f"{s},{s}")),  # a delimiter inside quotes
    PLAIN.map(lambda s: (f'"{s}""x"', f'{s}"x')),  # an escaped quote
    PLAIN.map(lambda s: (f'{s}"x', f'{s}"x')),  # a stray quote inside a field is a character
    PLAIN.map(lambda s: (f"{s}\x00x", f"{s}\x00x")),  # NUL
    st.sampled_from(["café", "商品", "🛒"]).map(lambda s: (s, s)),
    st.integers(300, 20_000).map(lambda n: ("x" * n, "x" * n)),  # a very long field
)
# Printable junk with no quote, delimiter or line break (those have their own kinds below).
JUNK = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Zl", "Zp", "Cc"),
                             exclude_characters='",'), max_size=12)
BAD_TIMESTAMPS = st.one_of(
    st.sampled_from(["", " ", "yesterday", "nan", "NaN", "inf", "-inf", "1e400", "0x10", "17e8e8",
                     "2023-11-15", "1700000000s", "--5", "1.2.3"]),
    st.integers(10**10, 10**40).map(str),  # past the year 2262
    st.integers(-(10**40), -(10**10)).map(str),  # before 1677
    JUNK.filter(lambda s: pd.isna(pd.to_numeric(s.strip(), errors="coerce"))),
)
# Unix times that parse but lie outside [1970-01-01, the reading time + 1 day]: two days past the
# clock at import, up to pandas' last time (2262), or before 1970 down to pandas' first (1677).
LATER = int(datetime.now(timezone.utc).timestamp()) + 2 * 86400
OUT_OF_RANGE_TIMES = st.one_of(st.integers(-9 * 10**9, -1), st.integers(LATER, 9 * 10**9)).map(str)
MISSING_IDS = st.sampled_from([text for text in MISSING_ID_TEXT if text])
KINDS = ("good",) * 5 + ("few_fields", "many_fields", "empty_user", "empty_item", "bad_behavior",
                         "bad_timestamp", "non_utf8", "blank", "duplicate", "missing_user", "missing_item",
                         "time_out_of_range")


def join(fields: list[str]) -> bytes:
    return ",".join(fields).encode("utf-8", "surrogateescape")


@st.composite
def event_line(draw, number: int, earlier: list[Line], kinds: tuple[str, ...] = KINDS) -> Line:
    """A line whose user id is unique to it, so good lines never collide by chance."""
    user = f"u{number}"
    item_text, item = draw(ITEMS)
    behavior = draw(st.sampled_from(sorted(BEHAVIORS)))
    seconds = draw(st.integers(0, 1_700_000_000))  # 1970-01-01 .. 2023-11-14: always a valid time
    pad = draw(st.sampled_from(["", " ", "\t"]))
    fields = [pad + user, item_text, behavior + pad, f"{pad}{seconds}"]
    good = Line(join(fields), "good", row=(user, item, BEHAVIORS[behavior], seconds * 10**9))
    kind = draw(st.sampled_from(kinds))
    if kind == "good":
        return good
    if kind == "duplicate":
        originals = [line for line in earlier if line.kind == "good"]
        return replace(draw(st.sampled_from(originals)), kind="duplicate") if originals else good
    if kind == "blank":
        return Line(b"", kind, "empty_id", "")
    if kind == "few_fields":
        text = join(fields[:draw(st.integers(1, 3))])
        return Line(text, kind, "wrong_column_count", text.decode())
    if kind == "many_fields":
        text = join(fields + draw(st.lists(JUNK, min_size=1, max_size=3)))
        return Line(text, kind, "wrong_column_count", text.decode())
    if kind == "non_utf8":
        column = draw(st.integers(0, 3))
        fields[column] += chr(0xDC00 + draw(st.integers(0x80, 0xFF)))  # one byte that is not UTF-8
        text = join(fields)
        return Line(text, kind, "bad_encoding", text.decode("utf-8", "backslashreplace"))
    column, reason, bad = {
        "empty_user": (0, "empty_id", st.sampled_from(["", " ", "\t", '""'])),
        "empty_item": (1, "empty_id", st.sampled_from(["", "  ", '""', '" "'])),
        "bad_behavior": (2, "unknown_behavior", JUNK.filter(lambda s: s.strip() not in BEHAVIORS)),
        "bad_timestamp": (3, "bad_timestamp", BAD_TIMESTAMPS),
        "missing_user": (0, "missing_id", MISSING_IDS),
        "missing_item": (1, "missing_id", MISSING_IDS),
        "time_out_of_range": (3, "timestamp_out_of_range", OUT_OF_RANGE_TIMES),
    }[kind]
    fields[column] = draw(bad)
    value = fields[column][1:-1] if fields[column].startswith('"') else fields[column]
    return Line(join(fields), kind, reason, value)


GOOD_LINE = event_line(0, [], ("good",))


def numbered(lines: list[Line]) -> list[Line]:
    """Give each good line of user u0 its own user, u<position>."""
    return [replace(line, text=line.text.replace(b"u0", f"u{i}".encode(), 1),
                    row=(f"u{i}",) + line.row[1:]) if line.kind == "good" else line
            for i, line in enumerate(lines, 1)]


@st.composite
def event_file(draw):
    lines: list[Line] = []
    for number in range(1, draw(st.integers(1, 25)) + 1):
        lines.append(draw(event_line(number, lines)))
    return lines


@st.composite
def layout(draw):
    """How the lines are written: header, line break, final newline, gzip."""
    return dict(header=draw(st.booleans()), eol=draw(st.sampled_from([b"\n", b"\r\n"])),
                final_newline=draw(st.booleans()), gz=draw(st.booleans()))


def write_lines(lines: list[Line], header: bool, eol: bytes, final_newline: bool) -> bytes:
    texts = ([b",".join(c.encode() for c in COLUMNS)] if header else []) + [line.text for line in lines]
    data = eol.join(texts)
    # A last blank line only exists if the line before it ends: keep that newline.
    return data + eol if final_newline or not texts[-1] else data


@PROPERTY
@given(lines=event_file(), how=layout())
@example(  # a gzipped log cut off mid-line, as the Taobao head file is: always tried
    lines=[Line(b"u1,a,pv,1700000000", "good", row=("u1", "a", "click", 1_700_000_000 * 10**9)),
           Line(b"u2,b", "few_fields", "wrong_column_count", "u2,b")],
    how=dict(header=False, eol=b"\n", final_newline=False, gz=True),
)
def test_every_event_line_is_kept_or_counted(lines, how):
    """Skipping: each line is an event, a bad row at its line (with its value), a duplicate or a
    truncated last line, and nothing else. Failing: the error shows those same lines and values."""
    name = "events.csv.gz" if how["gz"] else "events.csv"
    offset = 1 if how["header"] else 0
    truncated = (not how["final_newline"] and lines[-1].kind == "few_fields")
    bad = {number + offset: line.value for number, line in enumerate(lines, 1)
           if line.reason and not (truncated and number == len(lines))}
    reasons = {number + offset: line.reason for number, line in enumerate(lines, 1)
               if number + offset in bad}
    kept = sorted(line.row for line in lines if line.kind == "good")
    duplicates = sum(line.kind == "duplicate" for line in lines)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = write_lines(lines, how["header"], how["eol"], how["final_newline"])
        write_table(folder, name, data)
        spec = write_spec(folder, events_spec(how["header"], name))
        failed, skipped = read_both(spec)

    if not kept:
        assert isinstance(skipped, DataError), repr(skipped)
        assert "spec.yaml: no valid events are left" in str(skipped)
    else:
        assert not isinstance(skipped, Exception), repr(skipped)
        assert event_rows(skipped.events) == kept
        frame = skipped.report.bad_rows_frame()
        assert all(frame["file"].str.endswith(name))
        assert dict(zip(frame["line"], frame["reason"])) == reasons
        assert dict(zip(frame["line"], frame["value"])) == bad
        metrics = skipped.report.metrics()
        assert metrics["data/events/duplicate_rows"] == duplicates
        assert metrics.get("data/events/truncated_last_line", 0) == truncated
        # Every physical line is accounted for, once.
        assert len(physical_lines(data)) - offset == len(kept) + len(frame) + duplicates + truncated
    if bad:
        check_failure_message(failed, name, bad)
    elif kept:
        assert event_rows(failed.events) == kept
    else:
        assert "spec.yaml: no valid events are left" in str(failed)


# --------------------------------------------------------------------------------------------
# Quotes that run over a line break, and byte-level junk
# --------------------------------------------------------------------------------------------

UNCLOSED = [b'u0,"open,pv,1700000000', b'"u0,ab,pv,1700000000']  # a quote never closed
QUOTED_BREAKS = [b'u0,"two\nlines",pv,1700000000', b'u0,"two\r\nlines",pv,1700000000']


@PROPERTY
@given(lines=st.lists(GOOD_LINE, min_size=1, max_size=12),
       breaker=st.sampled_from(UNCLOSED + QUOTED_BREAKS), at=st.integers(0, 12),
       final_newline=st.booleans())
def test_a_quote_running_over_a_line_break_is_an_error_at_its_line(lines, breaker, at, final_newline):
    """A row over several lines breaks one row per line: an error naming the line it starts on,
    in both modes, instead of lines silently merged into one row."""
    at = min(at, len(lines))
    texts = [line.text for line in numbered(lines)]
    texts.insert(at, breaker)
    data = b"\n".join(texts) + (b"\n" if final_newline else b"")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "events.csv").write_bytes(data)
        spec = write_spec(folder, events_spec(header=False))
        failed, skipped = read_both(spec)
    if breaker in QUOTED_BREAKS or at < len(lines):
        for err in (failed, skipped):
            assert isinstance(err, DataError), repr(err)
            assert f"events.csv:{at + 1}: a quoted field runs over" in str(err), str(err)
    elif final_newline:  # an unclosed quote on the last line only takes its own line break
        check_failure_message(failed, "events.csv", {at + 1: breaker.decode()})
        assert list(skipped.report.bad_rows_frame()["line"]) == [at + 1]
    else:  # ... or none: a truncated last line
        assert failed.report.metrics()["data/events/truncated_last_line"] == 1
        assert len(skipped.events) == len(lines)


CHUNKS = st.sampled_from([b'"', b",", b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3\xa9", b"\xe9",
                          b"\xef\xbb\xbf", b"a", b"pv", b" ", b"1700000000", b'""'])
JUNK_LINES = st.one_of(st.lists(CHUNKS, max_size=12).map(b"".join), st.binary(max_size=24))


@PROPERTY
@given(lines=st.lists(st.one_of(GOOD_LINE, JUNK_LINES.map(lambda text: Line(text, "junk"))),
                      min_size=1, max_size=16),
       how=layout())
def test_junk_bytes_end_in_our_error_or_a_full_count(lines, how):
    """Arbitrary bytes, quotes and line breaks: a DataError naming the file (and the line, for
    rows), or every physical line counted, with every good line among the events."""
    lines = numbered(lines)
    name = "events.csv.gz" if how["gz"] else "events.csv"
    data = write_lines(lines, how["header"], how["eol"], how["final_newline"])
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_table(folder, name, data)
        spec = write_spec(folder, events_spec(how["header"], name))
        failed, skipped = read_both(spec)
    for outcome in (failed, skipped):
        if isinstance(outcome, Exception):
            assert isinstance(outcome, DataError), repr(outcome)
            message = str(outcome)
            assert name in message or "spec.yaml" in message, message
            if "quoted field" in message or "malformed rows" in message:
                assert re.search(rf"{re.escape(name)}:\d+: ", message), message
    if not isinstance(skipped, Exception):
        metrics = skipped.report.metrics()
        counted = (len(skipped.events) + skipped.report.n_bad + metrics["data/events/duplicate_rows"]
                   + metrics.get("data/events/truncated_last_line", 0))
        assert len(physical_lines(data)) - how["header"] == counted
        rows = set(event_rows(skipped.events))
        assert all(line.row in rows for line in lines if line.kind == "good")


# --------------------------------------------------------------------------------------------
# Timestamps as text: a strftime pattern, with offsets or in a zone with daylight saving
# --------------------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
MOMENTS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2023, 12, 31))
# Two days or more past the clock: after the latest valid time (the reading time plus one day).
FUTURE_MOMENTS = st.datetimes(min_value=datetime.now() + timedelta(days=3), max_value=datetime(2100, 1, 1))


@st.composite
def text_timestamp(draw, with_offset: bool, zone: str):
    """(text, UTC nanoseconds or None when the reader must call it a bad timestamp)."""
    if draw(st.integers(0, 4)) == 0:
        text = draw(st.one_of(st.sampled_from(["", "2023-02-30 10:00:00", "2023-13-01 00:00:00",
                                               "2023-11-15", "1700000000", "2023-11-15 25:00:00"]),
                              JUNK))
        return text + ("+0100" if with_offset and text else ""), None
    future = draw(st.integers(0, 5)) == 0
    moment = draw(FUTURE_MOMENTS if future else MOMENTS).replace(microsecond=0)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if with_offset:
        minutes = draw(st.integers(-14 * 60, 14 * 60))
        sign, size = ("-" if minutes < 0 else "+"), abs(minutes)
        text += f"{sign}{size // 60:02d}{size % 60:02d}"
        utc = moment - timedelta(minutes=minutes)
    else:
        local = [moment.replace(tzinfo=ZoneInfo(zone), fold=fold) for fold in (0, 1)]
        if local[0].utcoffset() != local[1].utcoffset():  # a time that is ambiguous or never was
            return text, None
        utc = local[0].astimezone(timezone.utc).replace(tzinfo=None)
    return text, None if future else int(pd.Timestamp(utc).value)


@PROPERTY
@given(data=st.data(), with_offset=st.booleans(), zone=st.sampled_from(ZONES))
def test_text_timestamps_are_utc_instants_or_bad_rows(data, with_offset, zone):
    """Mixed UTC offsets, daylight-saving gaps and folds, impossible dates: each row an exact UTC
    instant or a bad_timestamp row, never a pandas error."""
    stamps = data.draw(st.lists(text_timestamp(with_offset, zone), min_size=1, max_size=15))
    pattern = "%Y-%m-%d %H:%M:%S" + ("%z" if with_offset else "")
    rows = [(f"u{i}", "a", "pv", text) for i, (text, _) in enumerate(stamps, 1)]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "events.csv").write_text(event_lines(rows))
        spec = write_spec(folder, events_spec(False, extra=f'  timestamp_format: "{pattern}"\n'
                                                           f"  timezone: {zone}\n"))
        failed, skipped = read_both(spec)
    kept = sorted((f"u{i}", "a", "click", nanos) for i, (_, nanos) in enumerate(stamps, 1) if nanos is not None)
    bad = {i: text for i, (text, nanos) in enumerate(stamps, 1) if nanos is None}
    if kept:
        assert event_rows(skipped.events) == kept
        frame = skipped.report.bad_rows_frame()
        assert dict(zip(frame["line"], frame["value"])) == bad
        assert set(frame["reason"]) <= {"bad_timestamp", "timestamp_out_of_range"}
    else:
        assert isinstance(skipped, DataError) and "no valid events" in str(skipped)
    if bad:
        check_failure_message(failed, "events.csv", bad)


# --------------------------------------------------------------------------------------------
# Side tables: bad numbers, declared missing values, empty, repeated and duplicate keys
# --------------------------------------------------------------------------------------------

TABLES = {  # name: (key, number column, its type)
    "items": ("item_id", "price", "float"),
    "users": ("user_id", "age", "int"),
}
BAD_NUMBERS = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "cheap", "-0.5", "-3",
                               "−3", "1.2.3", "0x1A", "3 4"])


@st.composite
def side_line(draw, number: int, earlier: list[Line], kind_of_number: str) -> Line:
    key = f"k{number}"
    group = draw(PLAIN)
    if kind_of_number == "float":
        amount = draw(st.one_of(st.integers(0, 10**6), st.floats(0, 1e300, allow_infinity=False)))
        text, value = repr(amount), float(amount)
    else:
        amount = draw(st.integers(0, 10**6))
        text, value = str(amount), amount
    good = Line(f"{key},{group},{text}".encode(), "good", row=(key, group, value))
    kind = draw(st.sampled_from(("good",) * 4 + ("missing", "bad_number", "empty_key", "few_fields",
                                                "many_fields", "non_utf8", "blank", "duplicate",
                                                "repeated_key")))
    kept = [line for line in earlier if line.kind in ("good", "missing")]
    if kind == "good" or (kind in ("duplicate", "repeated_key") and not kept):
        return good
    if kind == "duplicate":
        return replace(draw(st.sampled_from(kept)), kind="duplicate")
    if kind == "repeated_key":  # same key as a kept row, other values: the first one wins
        first = draw(st.sampled_from(kept))
        return Line(f"{first.row[0]},{group}-other{number},{text}".encode(), kind)
    if kind == "missing":
        return Line(f"{key},{group},-1".encode(), kind, row=(key, group, None))
    if kind == "bad_number":
        number_text = draw(BAD_NUMBERS if kind_of_number == "float" else st.one_of(
            BAD_NUMBERS, st.sampled_from(["1e300", "9223372036854775808", "1e19"])))  # past int64
        return Line(f"{key},{group},{number_text}".encode(), kind, "bad_number", number_text)
    if kind == "empty_key":
        key_text = draw(st.sampled_from(["", " ", '""']))
        return Line(f"{key_text},{group},{text}".encode(), kind, "empty_id", key_text.strip('"'))
    if kind == "few_fields":
        return Line(f"{key},{group}".encode(), kind, "wrong_column_count", f"{key},{group}")
    if kind == "many_fields":
        return Line(f"{key},{group},{text},x".encode(), kind, "wrong_column_count", f"{key},{group},{text},x")
    if kind == "non_utf8":
        data = f"{key},{group}".encode() + b"\xff," + text.encode()
        return Line(data, kind, "bad_encoding", data.decode("utf-8", "backslashreplace"))
    return Line(b"", "blank", "empty_id", "")


@PROPERTY
@given(data=st.data(), table=st.sampled_from(sorted(TABLES)), final_newline=st.booleans())
def test_every_side_table_line_is_kept_or_counted(data, table, final_newline):
    """Each item / user line is one kept row, a bad row at its line, an exact duplicate or a
    repeated key (first kept), and the table holds exactly the kept values."""
    key, column, kind = TABLES[table]
    lines: list[Line] = []
    for number in range(1, data.draw(st.integers(1, 20)) + 1):
        lines.append(data.draw(side_line(number, lines, kind)))
    truncated = not final_newline and lines[-1].kind == "few_fields"
    bad = {number + 1: line.value for number, line in enumerate(lines, 1)
           if line.reason and not (truncated and number == len(lines))}
    kept = sorted(line.row for line in lines if line.kind in ("good", "missing"))
    duplicates = sum(line.kind == "duplicate" for line in lines)
    repeated = sum(line.kind == "repeated_key" for line in lines)
    spec_text = CSV_SPEC if table == "items" else CSV_SPEC + (
        "users:\n  paths: [users.csv]\n  key: user_id\n  types: {group: string, age: int}\n")
    spec_text += f"  missing_values: {{{column}: ['-1']}}\n"
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "events.csv").write_text(event_lines(tiny_rows()))
        if table == "users":
            (folder / "items.csv").write_text("item_id,category,price\na,c1,1\n")
        header = f"{key},{'category' if table == 'items' else 'group'},{column}".encode()
        (folder / f"{table}.csv").write_bytes(header + b"\n" + write_lines(lines, False, b"\n", final_newline))
        failed, skipped = read_both(write_spec(folder, spec_text))

    assert not isinstance(skipped, Exception), repr(skipped)
    frame = getattr(skipped, table)
    got = sorted((k, g, None if pd.isna(v) else (float(v) if kind == "float" else int(v)))
                 for k, g, v in zip(frame[key], frame.iloc[:, 1], frame[column]))
    assert got == kept
    bad_rows = skipped.report.bad_rows_frame()
    assert set(bad_rows["table"]) <= {table}
    assert dict(zip(bad_rows["line"], bad_rows["value"])) == bad
    metrics = skipped.report.metrics()
    assert metrics[f"data/{table}/duplicate_rows"] == duplicates
    assert metrics[f"data/{table}/repeated_keys"] == repeated
    assert len(lines) == len(kept) + len(bad_rows) + duplicates + repeated + truncated
    if bad:
        check_failure_message(failed, f"{table}.csv", bad)
    else:
        assert len(getattr(failed, table)) == len(kept)


# --------------------------------------------------------------------------------------------
# Paths and files that cannot be read
# --------------------------------------------------------------------------------------------

BAD_PATHS = st.one_of(
    st.sampled_from([  # (path in the spec, what to put there, words the DataError must hold)
        ("missing.csv", None, "file not found"),
        ("nothing*.csv", None, "no file matches"),
        ("folder", "folder", "file not found"),
        ("fold*", "folder", "no file matches"),  # a glob that matches only a folder
        ("x" * 300 + ".csv", None, "cannot open"),  # a name too long for the file system
        ("~nobody_here_zz/e.csv", None, "cannot open"),  # an unknown user's home
        ("a\x00b.csv", None, "file not found"),
        ("plain.csv.gz", b"u1,a,pv,1700000000\n", "cannot be read"),  # not gzip
        ("cut.csv.gz", gzip.compress(b"u1,a,pv,1700000000\n" * 50)[:30], "cannot be read"),
        ("empty.csv", b"", "the file is empty"),
        ("empty.csv.gz", gzip.compress(b""), "the file is empty"),
    ]),
    st.text("abc*?[]-_. ", min_size=1, max_size=8).map(lambda s: ("d_" + s, None, None)),
)


@PROPERTY
@given(case=BAD_PATHS, header=st.booleans())
def test_bad_path_or_unreadable_file_is_a_data_error_naming_it(case, header):
    path, content, words = case
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if content == "folder":
            (folder / path).mkdir()
        elif content is not None:
            (folder / path).write_bytes(content)
        spec = write_spec(folder, events_spec(header).replace(
            "[events.csv]", yaml.safe_dump([path], default_flow_style=True, width=10**6).strip()))
        for mode in ("fail", "skip"):
            with pytest.raises(DataError) as err:
                read_dataset(load_spec(str(spec)), mode)
            message = str(err.value)
            assert path in message, message
            assert words is None or words in message, message


# --------------------------------------------------------------------------------------------
# Specs: every malformed key is a ConfigError that names the spec file and the key
# --------------------------------------------------------------------------------------------

BASE_SPEC = {
    "name": "prop",
    "events": {"paths": ["events.csv"], "header": False, "columns": COLUMNS,
               "behaviors": dict(BEHAVIORS), "timestamp_format": "unix", "timestamp_unit": "s",
               "timezone": "UTC", "delimiter": ","},
    "items": {"paths": ["items.csv"], "key": "item_id", "types": {"category": "string", "price": "float"}},
    "users": {"paths": ["users.csv"], "key": "user_id", "types": {"age": "int"},
              "missing_values": {"age": ["-1"]}},
}
DELETE = object()
NOT_TEXT = st.one_of(st.integers(), st.booleans(), st.lists(PLAIN, min_size=1, max_size=2),
                     st.dictionaries(PLAIN, PLAIN, min_size=1, max_size=2))
NOT_MAPPING = st.one_of(st.integers(), st.booleans(), PLAIN, st.lists(PLAIN, min_size=1, max_size=2))
# (where in the spec, the key the message must name, bad values)
BAD_VALUES = [
    (("events",), "events", st.one_of(st.just(DELETE), NOT_MAPPING)),
    (("events", "paths"), "paths", st.one_of(
        st.just(DELETE), st.integers(), st.booleans(), st.just([["events.csv"]]), st.just([""]),
        st.dictionaries(PLAIN, PLAIN, min_size=1, max_size=2), st.lists(st.integers(), min_size=1))),
    (("events", "columns"), "columns", st.one_of(
        st.just(DELETE), st.integers(), PLAIN, st.just(["user_id", "user_id", "b", "c"]),
        st.just([1, 2, 3, 4]), st.dictionaries(PLAIN, PLAIN, min_size=1))),
    (("events", "behaviors"), "behaviors", st.one_of(
        st.just(DELETE), NOT_MAPPING, st.just({}), st.just({"pv": "clicks"}), st.just({"pv": None}),
        st.just({"pv": ["click"]}), st.just({True: "click"}), st.just({None: "click"}),
        st.just({1: "click", "1": "save"}))),
    (("events", "item_columns"), "item_columns", st.one_of(
        NOT_MAPPING, st.just({"category": "text"}), st.just({"timestamp": "int"}),
        st.just({5: "string"}), st.just({"category": ["string"]}), st.just({"category": "string"}))),
    (("events", "timestamp_format"), "timestamp_format", st.one_of(
        st.sampled_from(["%Q", "yyyy-mm-dd", "", "%", "%Y%", "%s"]), st.integers(), st.just([]))),
    (("events", "timestamp_unit"), "timestamp_unit", st.one_of(st.sampled_from(["hours", "", "S"]),
                                                                NOT_TEXT)),
    (("events", "timezone"), "timezone", st.one_of(
        st.sampled_from(["Mars/Olympus", "", "UTC+1", "../etc", "Europe/Pariss"]), NOT_TEXT)),
    (("events", "delimiter"), "delimiter", st.one_of(
        st.sampled_from(["", ",,", '"', "\n", "\r", "\x00", "é"]), NOT_TEXT)),
    (("events", "header"), "header", st.one_of(st.sampled_from(["yes", "no", 1, 0]), st.none())),
    (("events", "format"), "format", st.one_of(st.sampled_from(["xlsx", "CSV"]), NOT_TEXT)),
    (("events", "user_id"), "user_id", st.one_of(st.just("customer"), NOT_TEXT, st.none())),
    (("events", "timestamp"), "timestamp", st.one_of(st.just("ts"), NOT_TEXT)),
    (("items",), "items", st.one_of(NOT_MAPPING, st.just({}))),
    (("items", "types"), "types", st.one_of(
        NOT_MAPPING, st.just({"price": "double"}), st.just({"item_id": "string"}),
        st.just({7: "float"}))),
    (("items", "key"), "key", NOT_TEXT),
    (("items", "columns"), "columns", st.one_of(st.just(["a", "a"]), st.just(["category", "price"]),
                                                st.integers())),
    (("users", "missing_values"), "missing_values", st.one_of(NOT_MAPPING, st.just({"income": ["-1"]}))),
    (("defaults",), "defaults", NOT_MAPPING),
    (("features",), "features", NOT_MAPPING),
    (("synthetic",), "synthetic", st.one_of(st.sampled_from(["no", "yes", 1]), st.lists(PLAIN, min_size=1))),
    (("root",), "root", NOT_TEXT),
]


def mutate(spec: dict, where: tuple[str, ...], value) -> dict:
    out = yaml.safe_load(yaml.safe_dump(spec))  # a deep copy
    holder = out
    for key in where[:-1]:
        holder = holder[key]
    if value is DELETE:
        holder.pop(where[-1], None)
    else:
        holder[where[-1]] = value
    return out


@settings(PROPERTY, max_examples=100)  # no data is read: cheap
@given(data=st.data(), case=st.sampled_from(BAD_VALUES))
def test_malformed_spec_key_is_a_config_error_naming_it(data, case):
    where, key, values = case
    spec = mutate(BASE_SPEC, where, data.draw(values))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(ConfigError) as err:
            load_spec(str(path))
    message = str(err.value)
    assert "spec.yaml" in message, message
    assert key in message, message


@PROPERTY
@given(section=st.sampled_from([(), ("events",), ("items",), ("users",)]),
       key=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))
def test_unknown_spec_key_is_named(section, key):
    known = {(): DatasetSpec.KNOWN, ("events",): EventsSpec.KNOWN}.get(section, SideTableSpec.KNOWN)
    assume(key not in known)
    spec = mutate(BASE_SPEC, section + (key,), "x")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(ConfigError, match=f"unknown key '{re.escape(key)}'") as err:
            load_spec(str(path))
    assert "spec.yaml" in str(err.value)


SPEC_TEXTS = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"", b"- a\n- b\n", b"42\n", b"events:\n\tpaths: [e.csv]\n", b"events: {paths: [e.csv\n",
                     b"name: caf\xe9\nevents: {}\n", b"\xff\xfe\x00e\x00", b"events: !!python/object:os.system x\n",
                     b"? [a, b]\n: c\n", b"events: {? [a]: b}\n"]),
)


@PROPERTY
@given(text=SPEC_TEXTS)
def test_unreadable_spec_file_is_a_config_error_naming_it(text):
    """Not YAML, not UTF-8, not a mapping, no events: a ConfigError with the spec's path."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_bytes(text)
        with pytest.raises(ConfigError) as err:
            load_spec(str(path))
    assert "spec.yaml" in str(err.value), str(err.value)


YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
              st.text(max_size=8), st.sampled_from(["pv", "click", "string", "float", "UTC", "%Y",
                                                    "events.csv", "*.csv", "~nobody_here/x", "x" * 300])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
KEY_PATHS = ([(key,) for key in DatasetSpec.KNOWN] + [("events", key) for key in EventsSpec.KNOWN]
             + [(table, key) for table in ("items", "users") for key in SideTableSpec.KNOWN])


@settings(PROPERTY, max_examples=80)
@given(where=st.sampled_from(KEY_PATHS), value=YAML_VALUES)
def test_any_spec_value_ends_in_our_error_or_a_read(where, value):
    """Any YAML value at any known key: loading and reading a small valid dataset through the spec
    ends in a ConfigError / DataError or a Dataset, never a raw exception."""
    spec = mutate(BASE_SPEC, where, value)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "events.csv").write_text(event_lines(tiny_rows()))
        (folder / "items.csv").write_text("item_id,category,price\na,c1,1\nb,c2,2.5\n")
        (folder / "users.csv").write_text("user_id,age\nu1,30\nu2,-1\n")
        path = folder / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        try:
            dataset = read_dataset(load_spec(str(path)), "skip")
        except ConfigError as err:
            assert "spec.yaml" in str(err), str(err)
            return
        except DataError:
            return
    assert len(dataset.events) > 0
