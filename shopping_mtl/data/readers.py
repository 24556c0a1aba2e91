"""Readers: raw CSV / Parquet tables -> canonical events and side tables, validated row by row.

Every physical line of a CSV is accounted for: it becomes a canonical event, an exact duplicate
(dropped and counted), a truncated last line (dropped and counted, as in the Taobao sample), or a
bad row reported with its file, line number and offending value (a line that is not UTF-8 too).
An id written as a missing value (`MISSING_ID_TEXT`: empty, NaN, NULL, None, ...) and a time
before 1970-01-01 UTC or more than a day past the reading time (`FUTURE_SLACK`) are bad rows too.
By default bad rows fail the run; with `on_bad_rows="skip"` they are skipped, counted in the run's
metrics, and written in full to the run's `bad_rows.csv`, so nothing disappears silently. A row
is one line: a quoted field that runs over a line break (an unclosed quote, usually) would merge
the lines after it into one value, so it fails the read with the line where it starts.

Canonical events (EVALUATION.md): `user_id` (str), `item_id` (str), `event` in
{click, save, purchase}, `timestamp` (UTC), `session_id` (str) when the spec names a session
column (its `session` role), plus any item attribute columns the events carry. A role's column
is named by its role in the canonical events and item table (`category_code` under
`roles: {category: category_code}` becomes `category`: `shopping_mtl.data.spec`); a session
written as a missing value is a bad row, as an id is.

Reading the files into string rows is `shopping_mtl.data.rows`, the report of bad rows
`shopping_mtl.data.report`; this module validates and canonicalises the rows. Their names are
re-exported here (`ReadReport`, `RawTable`, `read_raw`, ...), so older imports keep working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from shopping_mtl.data.report import SHOWN_BAD_ROWS, ReadReport
from shopping_mtl.data.rows import LINE_END, RawTable, read_raw, resolve_paths
from shopping_mtl.data.spec import SESSION_ID, DatasetSpec, EventsSpec, SideTableSpec
from shopping_mtl.errors import DataError

__all__ = [
    "EARLIEST_TIME",
    "FUTURE_SLACK",
    "LINE_END",
    "MISSING_ID_TEXT",
    "ON_BAD_ROWS",
    "SHOWN_BAD_ROWS",
    "Dataset",
    "RawTable",
    "ReadReport",
    "read_dataset",
    "read_events",
    "read_raw",
    "read_side_table",
    "resolve_paths",
    "shared_strings",
    "spec_files",
]

log = logging.getLogger(__name__)

ON_BAD_ROWS = ("fail", "skip")

# What tools write for a missing value: pandas' default NA strings (`read_csv`'s `na_values`),
# which cover `to_csv` of a missing value (empty), str(float("nan")), str(None), str(pd.NA), SQL's
# NULL and spreadsheets' #N/A. An id written so is a missing id, not a user or item called "nan".
# Matched exactly, after stripping spaces, as pandas matches them.
MISSING_ID_TEXT = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                   "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
# Event times outside [EARLIEST_TIME, reading time + FUTURE_SLACK] are bad rows: a negative Unix
# time or one far in the future is a broken clock or a placeholder, and one stray event in 2100
# would make the last calendar day, the test day, hold that event alone. The slack lets a log
# written in a zone ahead of UTC (or by a slightly fast clock) end on its "today".
EARLIEST_TIME = pd.Timestamp("1970-01-01", tz="UTC")
FUTURE_SLACK = pd.Timedelta(days=1)


def _flag(report: ReadReport, raw: RawTable, keep: np.ndarray, mask: np.ndarray, table: str,
          reason: str, column: str, detail: str | Callable[[np.ndarray], list[str]]) -> None:
    """Record rows where `mask` holds (and that are still kept) as bad, and drop them.

    `detail` is one text for every such row, or a function of their positions giving each its own.
    """
    mask = mask & keep
    if not mask.any():
        return
    idx = np.flatnonzero(mask)
    for file in np.unique(raw.files[idx]):
        in_file = idx[raw.files[idx] == file]
        values = raw.frame[column].to_numpy(dtype=object)[in_file]
        details = [detail] * len(in_file) if isinstance(detail, str) else detail(in_file)
        report.add_bad(table, reason, file, raw.lines[in_file], [str(v) for v in values], details)
    keep &= ~mask


def _flag_ids(report: ReadReport, raw: RawTable, keep: np.ndarray, table: str, column: str,
              role: str) -> None:
    """An empty id is an `empty_id` bad row, one written as a missing value (`MISSING_ID_TEXT`)
    a `missing_id` one."""
    text = raw.frame[column].str.strip().fillna("")  # a Parquet null reads as <NA>: empty
    _flag(report, raw, keep, text.eq("").to_numpy(), table, "empty_id", column, f"{role} is empty")
    _flag(report, raw, keep, text.isin(MISSING_ID_TEXT).to_numpy(), table, "missing_id", column,
          f"{role} is a missing value written as text (NaN, NULL, None, N/A, ...), not an id")


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


def _flag_time_range(report: ReadReport, raw: RawTable, keep: np.ndarray, timestamp: pd.Series,
                     column: str, now: pd.Timestamp) -> None:
    """Times before `EARLIEST_TIME` or after `now + FUTURE_SLACK` are `timestamp_out_of_range`
    bad rows; each one's detail shows the time it was read as."""
    latest = now + FUTURE_SLACK

    def read_as(bound: str):
        return lambda rows: [f"timestamp reads as {timestamp.iloc[i].isoformat()}, {bound}" for i in rows]

    # NaT (a time that did not parse, flagged already) compares False both ways.
    _flag(report, raw, keep, (timestamp < EARLIEST_TIME).to_numpy(), "events", "timestamp_out_of_range",
          column, read_as(f"before {EARLIEST_TIME.isoformat()}"))
    _flag(report, raw, keep, (timestamp > latest).to_numpy(), "events", "timestamp_out_of_range", column,
          read_as(f"after {latest.isoformat(timespec='seconds')} (the reading time plus one day)"))


def read_events(spec: EventsSpec, root: Path, report: ReadReport,
                now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Read, validate and canonicalise the event log of a spec.

    `now` is the reading time that the latest valid event time counts from (`FUTURE_SLACK`);
    default: the clock; a naive time is UTC.
    """
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now
    needed = tuple(dict.fromkeys(spec.used_columns))
    raw = read_raw(spec, root, needed, "events", report)
    report.counts["data/events/rows_read"] += raw.n_read
    keep = np.ones(len(raw.frame), dtype=bool)
    frame = raw.frame
    for role in ("user_id", "item_id"):
        _flag_ids(report, raw, keep, "events", getattr(spec, role), role)
    if spec.session is not None:
        _flag_ids(report, raw, keep, "events", spec.session, "session")
    behavior = frame[spec.behavior].str.strip()
    event = behavior.map(spec.behaviors)
    known = ", ".join(spec.behaviors)
    _flag(report, raw, keep, event.isna().to_numpy(), "events", "unknown_behavior", spec.behavior,
          f"unknown behaviour value (known: {known})")
    timestamp = _parse_timestamps(frame[spec.timestamp], spec)
    _flag(report, raw, keep, timestamp.isna().to_numpy(), "events", "bad_timestamp", spec.timestamp,
          f"timestamp does not parse as {spec.timestamp_format}"
          + (f" ({spec.timestamp_unit})" if spec.timestamp_format == "unix" else ""))
    _flag_time_range(report, raw, keep, timestamp, spec.timestamp, now)
    attributes = _parse_typed(raw, keep, report, "events", dict(spec.item_columns))
    _drop_duplicates(raw, keep, report, "events")
    session = {SESSION_ID: frame[spec.session].str.strip()} if spec.session is not None else {}
    events = pd.DataFrame(
        {
            "user_id": frame[spec.user_id].str.strip(),
            "item_id": frame[spec.item_id].str.strip(),
            "event": event.astype("string"),
            "timestamp": timestamp,
            **session,
            **{spec.canonical.get(name, name): values for name, values in attributes.items()},
        }
    )[keep]
    # Stable sort: events of equal time (day-granular logs) keep their file order.
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    for column in ("user_id", "item_id", "event", *session):
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
    """Read an item or user feature table: key plus typed columns (a role's column named by its
    role, `spec.canonical`), one row per key."""
    needed = tuple(dict.fromkeys((spec.key, *spec.types)))
    raw = read_raw(spec, root, needed, name, report)
    keep = np.ones(len(raw.frame), dtype=bool)
    _flag_ids(report, raw, keep, name, spec.key, spec.key)
    typed = _parse_typed(raw, keep, report, name, dict(spec.types), dict(spec.missing_values))
    typed = {spec.canonical.get(column, column): values for column, values in typed.items()}
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


def read_dataset(spec: DatasetSpec, on_bad_rows: str = "fail", now: pd.Timestamp | None = None) -> Dataset:
    """Read every table of a spec. Bad rows fail the read unless `on_bad_rows` is "skip".

    Each table's counts (rows read and kept, duplicates and repeated keys dropped) are logged;
    repeated keys as a warning, since one of their differing rows is left out. `now`: see
    `read_events`.
    """
    if on_bad_rows not in ON_BAD_ROWS:
        raise DataError(f"on_bad_rows is '{on_bad_rows}'; known: {', '.join(ON_BAD_ROWS)}")
    report = ReadReport()
    events = read_events(spec.events, spec.root, report, now)
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
    for name, table in (("events", events), ("items", items), ("users", users)):
        if table is not None:
            log.info("%s", report.describe_table(name))
            if report.counts[f"data/{name}/repeated_keys"]:
                log.warning("%s: %d repeated keys (a key on several rows with different values): the first "
                            "row of each is kept, the others left out (data/%s/repeated_keys)", name,
                            report.counts[f"data/{name}/repeated_keys"], name)
    return Dataset(spec, events, items, users, report)
