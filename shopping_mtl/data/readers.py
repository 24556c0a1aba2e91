"""Readers: raw CSV / Parquet tables -> canonical events and side tables, validated row by row.

Every physical line of a CSV is accounted for: it becomes a canonical event, an exact duplicate
(dropped and counted), a truncated last line (dropped and counted, as in the Taobao sample), or a
bad row reported with its file, line number and offending value (a line that is not UTF-8 too).
By default bad rows fail the run; with `on_bad_rows="skip"` they are skipped, counted in the run's
metrics, and written in full to the run's `bad_rows.csv`, so nothing disappears silently. A row
is one line: a quoted field that runs over a line break (an unclosed quote, usually) would merge
the lines after it into one value, so it fails the read with the line where it starts.

Canonical events (EVALUATION.md): `user_id` (str), `item_id` (str), `event` in
{click, save, purchase}, `timestamp` (UTC), plus any item attribute columns the events carry.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shopping_mtl.data.spec import DatasetSpec, EventsSpec, SideTableSpec, TableSpec
from shopping_mtl.errors import DataError

log = logging.getLogger(__name__)

ON_BAD_ROWS = ("fail", "skip")
# How many bad rows a failing run prints; the full list goes to bad_rows.csv when skipping.
SHOWN_BAD_ROWS = 5


@dataclass
class ReadReport:
    """What reading did: counts for the run's metrics and every bad row, with where it was."""

    counts: Counter = field(default_factory=Counter)
    bad_rows: list[dict] = field(default_factory=list)

    def add_bad(self, table: str, reason: str, path: str, lines, values, details) -> None:
        for line, value, detail in zip(lines, values, details):
            self.bad_rows.append(
                dict(table=table, reason=reason, file=path, line=int(line), value=value, detail=detail)
            )
        self.counts[f"data/bad_rows/{table}/{reason}"] += len(lines)

    @property
    def n_bad(self) -> int:
        return len(self.bad_rows)

    def bad_rows_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.bad_rows, columns=["table", "reason", "file", "line", "value", "detail"])

    def metrics(self) -> dict[str, float]:
        out = {key: float(value) for key, value in sorted(self.counts.items())}
        out["data/bad_rows/total"] = float(self.n_bad)
        return out

    def describe_bad(self, limit: int = SHOWN_BAD_ROWS) -> str:
        by_reason = Counter(row["reason"] for row in self.bad_rows)
        summary = ", ".join(f"{reason} {count}" for reason, count in by_reason.most_common())
        lines = [f"{self.n_bad} malformed rows ({summary}); the first {min(limit, self.n_bad)}:"]
        for row in self.bad_rows[:limit]:
            lines.append(f"  {row['file']}:{row['line']}: {row['detail']}: {row['value']!r}")
        return "\n".join(lines)


@dataclass
class RawTable:
    """A table's cells as strings, one row per kept line, with the file and line each came from."""

    frame: pd.DataFrame
    files: np.ndarray  # (rows,) file name of each row
    lines: np.ndarray  # (rows,) 1-based physical line (CSV) or row number (Parquet)


def resolve_paths(table: TableSpec, root: Path, where: str) -> list[Path]:
    paths: list[Path] = []
    for pattern in table.paths:
        try:
            full = Path(pattern).expanduser()
            if not full.is_absolute():
                full = root / full
            if any(ch in pattern for ch in "*?["):
                matches = sorted(p for p in map(Path, glob.glob(str(full))) if p.is_file())
                if not matches:
                    raise DataError(f"{where}: no file matches {full}")
                paths.extend(matches)
            elif not full.is_file():
                raise DataError(f"{where}: file not found: {full} (data root {root}; set --data-root)")
            else:
                paths.append(full)
        except (OSError, RuntimeError) as err:  # a name too long for the system, an unknown ~user
            raise DataError(f"{where}: cannot open {pattern}: {err}") from None
    return paths


# pyarrow ends a CSV line on any of these; so does every line count here.
LINE_END = re.compile(rb"\r\n|\r|\n")


def _open_bytes(path: Path) -> pa.NativeFile:
    """The file's bytes, decompressed by extension (.gz, .bz2, ...) as pyarrow's CSV reader does."""
    return pa.input_stream(str(path), compression="detect")


def _scan_lines(path: Path) -> tuple[int, bool, bool]:
    """One pass over the bytes: the number of physical lines, whether the last one ends in a line
    break, and whether the file is all UTF-8.

    The line count is what pyarrow's rows are checked against: a quoted field over a line break
    makes one row of several lines, which would shift every later line number.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    breaks, last, utf8 = 0, b"", True
    with _open_bytes(path) as handle:
        while chunk := handle.read(1 << 22):
            breaks += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            breaks -= last == b"\r" and chunk[:1] == b"\n"  # a \r\n split between chunks
            last = chunk[-1:]
            if utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    ends_with_newline = last in (b"\n", b"\r")
    return breaks + (1 if last and not ends_with_newline else 0), ends_with_newline, utf8


def _utf8_copy(path: Path) -> tuple[pa.Buffer, dict[int, str]]:
    """The file with every line that is not UTF-8 made readable (bad bytes written as \\xNN), and
    those lines by number, to report as bad rows. Only for files that hold such lines: pyarrow
    would fail the whole read on the first one, without its line number."""
    with _open_bytes(path) as handle:
        lines = handle.read().splitlines(keepends=True)  # bytes split on \n, \r\n and \r only
    bad: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("utf-8", "backslashreplace")
            lines[number - 1] = text.encode("utf-8")
            bad[number] = text.rstrip("\r\n")
    return pa.py_buffer(b"".join(lines)), bad


def _csv_header(path: Path, delimiter: str) -> list[str]:
    head = b""
    with _open_bytes(path) as handle:
        while not LINE_END.search(head) and (chunk := handle.read(1 << 16)):
            head += chunk
    first = LINE_END.split(head, maxsplit=1)[0]
    try:
        text = first.decode("utf-8-sig")  # pyarrow skips a byte-order mark too
    except UnicodeDecodeError:
        raise DataError(f"{path}:1: the header is not UTF-8 text: {first!r}") from None
    return [name.strip() for name in text.split(delimiter)]


def _quoted_line_break(path: Path, delimiter: str, data: bytes, n_rows: int, n_lines: int) -> DataError:
    """The error for a row over several lines: where it starts, found with Python's csv module
    (which splits rows as pyarrow does). Such a row is an unclosed quote far more often than a
    field with a line break, and it would swallow the lines after it into one value."""
    text = data.decode("utf-8", "replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    limit = csv.field_size_limit(1 << 30)
    start = end = 0
    try:
        for _ in reader:
            if reader.line_num > start + 1:
                end = reader.line_num
                break
            start = reader.line_num
    except csv.Error:  # an unclosed quote at the end of the file, read strictly
        end = -1
    finally:
        csv.field_size_limit(limit)
    if not end:
        return DataError(f"{path}: {n_rows} CSV rows in {n_lines} lines: a quoted field runs over a "
                         "line break somewhere, but each row must be one line")
    line = LINE_END.split(data, maxsplit=start + 1)[start].decode("utf-8", "replace")
    span = f"lines {start + 1}-{end}" if end > 0 else "to the end of the file"
    return DataError(f"{path}:{start + 1}: a quoted field runs over a line break ({span}; an "
                     f"unclosed quote?), but each row must be one line: {line[:200]!r}")


def _read_csv(path: Path, table: TableSpec, needed: tuple[str, ...], name: str, report: ReadReport) -> RawTable:
    try:
        n_lines, ends_with_newline, utf8 = _scan_lines(path)
        if n_lines == 0:
            raise DataError(f"{path}: the file is empty")
        if table.header:
            header = _csv_header(path, table.delimiter)
        source, not_utf8 = (path, {}) if utf8 else _utf8_copy(path)
    except (OSError, EOFError, pa.ArrowException) as err:  # e.g. a .gz file that is not gzip
        raise DataError(f"{path}: cannot be read: {err}") from None
    if table.header:
        if header == [""]:
            raise DataError(f"{path}: the file is empty")
        names = list(table.columns) if table.columns else header
        if not table.columns:
            missing = [c for c in needed if c not in header]
            if missing:
                raise DataError(
                    f"{path}: header has no column {', '.join(repr(m) for m in missing)}; "
                    f"it has {', '.join(header)}"
                )
    else:
        names = list(table.columns)
    invalid: list[tuple[int, int, str]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        arrow = pacsv.read_csv(
            source if utf8 else pa.BufferReader(source),
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1 if table.header else 0, use_threads=False,
                block_size=8 << 20,
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=table.delimiter, invalid_row_handler=on_invalid, ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                strings_can_be_null=False, quoted_strings_can_be_null=False,
                include_columns=list(needed),
            ),
        )
    except pa.ArrowInvalid as err:
        if "Empty CSV file" in str(err):
            raise DataError(f"{path}: the file is empty") from None
        raise DataError(f"{path}: cannot be parsed as CSV: {err}") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read: {err}") from None

    offset = 1 if table.header else 0
    n_rows = arrow.num_rows + len(invalid) + offset
    if n_rows != n_lines:  # one row took several lines: every later line number would be off
        if utf8:
            with _open_bytes(path) as handle:
                data = handle.read()
        else:
            data = source.to_pybytes()
        raise _quoted_line_break(path, table.delimiter, data, n_rows, n_lines)
    if arrow.num_rows == 0 and not invalid:
        what = "has a header but no rows" if table.header else "is empty"
        raise DataError(f"{path}: the file {what}")
    bad_numbers = {number for number, _, _ in invalid}
    if None in bad_numbers:  # pyarrow only omits numbers when reading with threads
        raise DataError(f"{path}: could not locate malformed rows by line")
    # Every physical line is a valid row or an invalid one, so the valid rows' line numbers are
    # the remaining numbers in order.
    all_lines = np.arange(offset + 1, n_lines + 1)
    lines = all_lines[~np.isin(all_lines, np.fromiter(bad_numbers, dtype=np.int64, count=len(bad_numbers)))]
    expected = len(names)
    wrong = []
    for number, actual, text in invalid:
        if number in not_utf8:
            continue  # reported below, with the other lines that are not UTF-8
        if number == n_lines and actual < expected and not ends_with_newline:
            report.counts[f"data/{name}/truncated_last_line"] += 1
            log.warning("%s:%d: dropped truncated last line %r", path, number, text)
            continue
        wrong.append((number, text, f"wrong column count: expected {expected} fields, got {actual}"))
    if wrong:
        numbers, texts, details = zip(*wrong)
        report.add_bad(name, "wrong_column_count", str(path), numbers, texts, details)
    frame = arrow.to_pandas(types_mapper=lambda t: pd.StringDtype() if t == pa.string() else None)
    if not_utf8:
        numbers = sorted(not_utf8)
        report.add_bad(name, "bad_encoding", str(path), numbers, [not_utf8[n] for n in numbers],
                       ["not UTF-8 text (bad bytes shown as \\xNN)"] * len(numbers))
        valid = ~np.isin(lines, numbers)
        frame, lines = frame[valid].reset_index(drop=True), lines[valid]
    return RawTable(frame, np.full(len(frame), path.name, dtype=object), lines)


def _read_parquet(path: Path, needed: tuple[str, ...]) -> RawTable:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: cannot be read as Parquet: {err}") from None
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(repr(m) for m in missing)}; it has {', '.join(schema.names)}"
        )
    arrow = pq.read_table(path, columns=list(needed))
    if arrow.num_rows == 0:
        raise DataError(f"{path}: the file has no rows")
    frame = pd.DataFrame(
        {name: arrow.column(name).cast(pa.string()).to_pandas().astype("string") for name in needed}
    )
    return RawTable(frame, np.full(len(frame), path.name, dtype=object), np.arange(1, len(frame) + 1))


def read_raw(table: TableSpec, root: Path, needed: tuple[str, ...], name: str, report: ReadReport) -> RawTable:
    """Read every file of a table as strings, keeping each row's file and line."""
    parts = []
    for path in resolve_paths(table, root, name):
        started = time.perf_counter()
        if table.format == "csv":
            part = _read_csv(path, table, needed, name, report)
        else:
            part = _read_parquet(path, needed)
        log.info("read %s: %d rows in %.1fs", path, len(part.frame), time.perf_counter() - started)
        parts.append(part)
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    files = np.concatenate([p.files for p in parts])
    lines = np.concatenate([p.lines for p in parts])
    return RawTable(frame, files, lines)


def _flag(report: ReadReport, raw: RawTable, keep: np.ndarray, mask: np.ndarray, table: str,
          reason: str, column: str, detail: str) -> None:
    """Record rows where `mask` holds (and that are still kept) as bad, and drop them."""
    mask = mask & keep
    if not mask.any():
        return
    idx = np.flatnonzero(mask)
    for file in np.unique(raw.files[idx]):
        in_file = idx[raw.files[idx] == file]
        values = raw.frame[column].to_numpy(dtype=object)[in_file]
        report.add_bad(table, reason, file, raw.lines[in_file], [str(v) for v in values],
                       [detail] * len(in_file))
    keep &= ~mask


def _parse_number(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")


def _parse_typed(raw: RawTable, keep: np.ndarray, report: ReadReport, table: str,
                 types: dict[str, str], missing_values=None) -> dict[str, pd.Series]:
    """Parse typed side columns; NaN, unparseable or negative numbers are bad rows.

    A value listed in `missing_values[column]` is an explicit "unknown": missing, not bad.
    """
    out = {}
    missing_values = missing_values or {}
    for column, kind in types.items():
        values = raw.frame[column]
        if kind == "string":
            out[column] = values.str.strip()
            continue
        declared_missing = values.str.strip().isin(missing_values.get(column, ())).to_numpy()
        number = _parse_number(values).mask(declared_missing)
        _flag(report, raw, keep, ~np.isfinite(number.to_numpy()) & ~declared_missing, table,
              "bad_number", column, f"{column} is not a finite number")
        _flag(report, raw, keep, number.to_numpy() < 0, table, "bad_number", column,
              f"{column} is negative")
        if kind == "int":
            too_large = number.to_numpy() >= 2.0**63
            _flag(report, raw, keep, too_large, table, "bad_number", column,
                  f"{column} is too large for an integer")
            # Rows flagged above are dropped; blank their numbers so the cast cannot overflow.
            number = number.where(np.isfinite(number.to_numpy()) & ~too_large)
        out[column] = number if kind == "float" else number.round().astype("Int64")
    return out


def _parse_timestamps(values: pd.Series, spec: EventsSpec) -> pd.Series:
    """Raw timestamps -> UTC datetimes; NaT where a value does not parse."""
    if spec.timestamp_format == "unix":
        number = _parse_number(values)
        scale = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}[spec.timestamp_unit]
        nanos = number * scale
        # Beyond pandas' datetime range counts as unparseable, not as an overflow traceback.
        nanos = nanos.where(nanos.abs() < 9.2e18)
        # Unix times count from 1970-01-01 UTC: absolute, whatever the spec's `timezone`.
        parsed = pd.to_datetime(nanos.round(), unit="ns", errors="coerce", utc=True)
    else:
        # With an offset (%z) or zone (%Z) in the pattern, rows may differ in offset: parse to UTC.
        aware = any(d in spec.timestamp_format for d in ("%z", "%Z"))
        parsed = pd.to_datetime(values.str.strip(), format=spec.timestamp_format, errors="coerce",
                                utc=aware)
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT")
    return parsed.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _drop_duplicates(raw: RawTable, keep: np.ndarray, report: ReadReport, name: str) -> None:
    """Exact duplicate rows (every read column equal) are dropped and counted (EVALUATION.md)."""
    duplicated = raw.frame.duplicated(keep="first").to_numpy() & keep
    report.counts[f"data/{name}/duplicate_rows"] += int(duplicated.sum())
    keep &= ~duplicated


def read_events(spec: EventsSpec, root: Path, report: ReadReport) -> pd.DataFrame:
    """Read, validate and canonicalise the event log of a spec."""
    needed = tuple(dict.fromkeys(spec.used_columns))
    raw = read_raw(spec, root, needed, "events", report)
    report.counts["data/events/rows_read"] += len(raw.frame)
    keep = np.ones(len(raw.frame), dtype=bool)
    frame = raw.frame
    for role in ("user_id", "item_id"):
        column = getattr(spec, role)
        empty = frame[column].str.strip().fillna("").eq("").to_numpy()
        _flag(report, raw, keep, empty, "events", "empty_id", column, f"{role} is empty")
    behavior = frame[spec.behavior].str.strip()
    event = behavior.map(spec.behaviors)
    known = ", ".join(spec.behaviors)
    _flag(report, raw, keep, event.isna().to_numpy(), "events", "unknown_behavior", spec.behavior,
          f"unknown behaviour value (known: {known})")
    timestamp = _parse_timestamps(frame[spec.timestamp], spec)
    _flag(report, raw, keep, timestamp.isna().to_numpy(), "events", "bad_timestamp", spec.timestamp,
          f"timestamp does not parse as {spec.timestamp_format}"
          + (f" ({spec.timestamp_unit})" if spec.timestamp_format == "unix" else ""))
    attributes = _parse_typed(raw, keep, report, "events", dict(spec.item_columns))
    _drop_duplicates(raw, keep, report, "events")
    events = pd.DataFrame(
        {
            "user_id": frame[spec.user_id].str.strip(),
            "item_id": frame[spec.item_id].str.strip(),
            "event": event.astype("string"),
            "timestamp": timestamp,
            **attributes,
        }
    )[keep]
    # Stable sort: events of equal time (day-granular logs) keep their file order.
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    for column in ("user_id", "item_id", "event"):
        events[column] = shared_strings(events[column])
    report.counts["data/events"] = len(events)
    return events


def shared_strings(values: pd.Series) -> pd.Series:
    """An object column in which equal values are one Python str: a user's or an item's id
    repeats in every event, and one str per row (~60 bytes each) made the 10^7-event log's
    three id columns about 1.9 GB; pointers to one str per distinct value are 8 bytes a row."""
    codes, uniques = pd.factorize(values)
    table = np.append(np.asarray(uniques, dtype=object), np.nan)  # code -1 (missing) -> NaN
    return pd.Series(table[codes], index=values.index, name=values.name, dtype=object)


def read_side_table(spec: SideTableSpec, root: Path, name: str, report: ReadReport) -> pd.DataFrame:
    """Read an item or user feature table: key plus typed columns, one row per key."""
    needed = tuple(dict.fromkeys((spec.key, *spec.types)))
    raw = read_raw(spec, root, needed, name, report)
    keep = np.ones(len(raw.frame), dtype=bool)
    empty = raw.frame[spec.key].str.strip().fillna("").eq("").to_numpy()
    _flag(report, raw, keep, empty, name, "empty_id", spec.key, f"{spec.key} is empty")
    typed = _parse_typed(raw, keep, report, name, dict(spec.types), dict(spec.missing_values))
    _drop_duplicates(raw, keep, report, name)
    table = pd.DataFrame({spec.key: raw.frame[spec.key].str.strip(), **typed})[keep]
    # The same key twice with different values: keep the first, count the rest.
    repeated = table.duplicated(spec.key, keep="first")
    report.counts[f"data/{name}/repeated_keys"] += int(repeated.sum())
    table = table[~repeated].reset_index(drop=True)
    table[spec.key] = table[spec.key].astype(object)
    if spec.key != ("item_id" if name == "items" else "user_id"):
        table = table.rename(columns={spec.key: "item_id" if name == "items" else "user_id"})
    report.counts[f"data/{name}/rows"] = len(table)
    return table


def spec_files(spec: DatasetSpec) -> list[Path]:
    """Every input file a spec names, resolved (for the data fingerprint)."""
    tables = (("events", spec.events), ("items", spec.items), ("users", spec.users))
    return [p for name, table in tables if table is not None for p in resolve_paths(table, spec.root, name)]


@dataclass
class Dataset:
    """Canonical events plus optional item and user tables, and how reading them went."""

    spec: DatasetSpec
    events: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None
    report: ReadReport


def read_dataset(spec: DatasetSpec, on_bad_rows: str = "fail") -> Dataset:
    """Read every table of a spec. Bad rows fail the read unless `on_bad_rows` is "skip"."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise DataError(f"on_bad_rows is '{on_bad_rows}'; known: {', '.join(ON_BAD_ROWS)}")
    report = ReadReport()
    events = read_events(spec.events, spec.root, report)
    items = read_side_table(spec.items, spec.root, "items", report) if spec.items else None
    users = read_side_table(spec.users, spec.root, "users", report) if spec.users else None
    if report.n_bad and on_bad_rows == "fail":
        raise DataError(
            report.describe_bad()
            + "\nFix these rows, or run with --on-bad-rows skip to skip them; skipped rows are "
            "counted in metrics.json and listed in the run's bad_rows.csv."
        )
    if report.n_bad:
        log.warning("skipped %s", report.describe_bad())
    if events.empty:
        raise DataError(f"{spec.path}: no valid events are left after validation")
    return Dataset(spec, events, items, users, report)
