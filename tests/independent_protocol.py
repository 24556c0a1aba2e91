"""An independent implementation of the evaluation protocol (docs/EVALUATION.md).

It exists to cross-check the project. It does not import ``shopping_mtl``, pandas or numpy; besides
the Python standard library it uses only ``pyarrow`` (to read Parquet: the list files a run leaves,
and Parquet event logs) and PyYAML (``import yaml``, to read the dataset spec and the run's
config.yaml). From any dataset spec the project accepts for events it reads the raw log with its
own reader, builds the canonical events, splits them, builds the ground truth, scores the lists a
run left and compares every figure with the run's metrics.json.

Usage::

    python tests/independent_protocol.py --spec path/to/spec.yaml [--data-dir DIR] [--run-dir RUN]
    python tests/independent_protocol.py --dataset ecomm [--data-dir DIR] [--run-dir RUN]

``--dataset NAME`` is a shortcut for ``--spec features/NAME.yaml``. ``--data-dir`` (or
``--data-root``) replaces the spec's ``root``, which is otherwise resolved against the spec file's
folder. Exit status: 0 when every compared figure agrees, 1 when any differs, 2 when the check
refuses (a spec, a log or a run it cannot check; the message says why).

What it reads (the spec format of README.md, "Dataset specs"): the ``events`` table only, CSV
(``delimiter``, ``header`` or ``columns``, plain, ``.gz`` or ``.bz2``) or Parquet; ``paths`` with
glob patterns (sorted); the columns ``user_id``, ``item_id``, ``behavior``, ``timestamp``;
``behaviors``; ``timestamp_format`` ``unix`` (``timestamp_unit`` s, ms, us or ns) or a strftime
pattern, naive times in ``timezone`` (an IANA name, via ``zoneinfo``); ``item_columns`` (checked
as the project checks them, since a bad number makes a bad row); the ``session`` column of the
spec's top-level ``roles`` (a session written as a missing value is a malformed row, and the
column counts in telling duplicates). Item and user tables only enter the data fingerprint: they
do not change the events, the split or the ground truth.

From the run folder it reads config.yaml (``split.min_days``, ``split.quantile``,
``evaluation.ks``, ``evaluation.test_days``, ``data.until``, ``data.on_bad_rows``; the protocol's
defaults when there is none), metrics.json, run_info.json and the list files.

Refused (exit 2, with a message): an ``events`` key it does not know; a compression other than
gzip and bzip2; a ``timestamp_format`` with ``%Z`` (zone names: ``datetime.strptime`` reads only
UTC/GMT, the project reads any zone name); a Parquet column of a date or time type; a CSV line
whose quoting it cannot read as one row (the project refuses a row over several lines too); a run
made with ``data.max_events`` (the project picks users by its own hash); a log with malformed rows
unless the run skipped malformed rows (see below); a log the protocol cannot split.

Judgement calls (where the protocol text leaves room):

* Malformed rows (README, "Bad input"): the check finds them itself, by the README's rules: wrong
  column count, not UTF-8, an empty id or one written as a missing value (NaN, NULL, None, ...), an
  unknown behaviour value, a time that does not parse (or is ambiguous or skipped in its zone), a
  time before 1970 or more than a day after now, a bad number in an ``item_columns`` number
  column. With no run to compare, or a run that did not skip malformed rows, any such row is
  refused with its file, line, reason and value. A run that skipped them (``--on-bad-rows skip``)
  is checked on the rows the check keeps, and the number it skipped is compared with the run's
  ``data/bad_rows/events/*`` counts. "Now" is the check's clock, not the run's.
* A truncated last line (no line break at the end of the file, too few fields) is dropped and
  counted, not malformed, as README.md says.
* Duplicates are "exact": two rows are duplicates when the raw text of every column the spec
  uses for events (user, item, behaviour, time, session and ``item_columns``) is the same; the
  first is kept, in file order over all files. Columns the spec does not use do not make rows
  different. So an EComm "collect" and an "add-to-cart" of the same item on the same day stay two
  ``save`` events.
* Times are kept as integer nanoseconds since 1970 UTC, computed exactly (``decimal``); days are
  UTC calendar days. With at least ``split.min_days`` (3) distinct days: test = the last day
  present, validation = the calendar day before it (it may hold no events), train = every earlier
  day. With fewer: validation starts at the time of the event at position floor(n x 0.6) of the
  time-sorted events (0-based) and test at floor(n x 0.8), every event at or after a start time in
  the later period (ties are never split). The fractions are exact (``fractions.Fraction`` of the
  configured quantile as written).
* Rolling-origin folds (``folds/<name>/``): with at least three days, fold ``YYYY-MM-DD`` is the log
  cut at the end of that day, one for each of the last ``test_days`` days present; on a shorter log
  fold ``k`` of N (numbered from the oldest) drops the events at or after the time of the event at
  position floor(n x (1 - (N - k) x 0.2)) of the whole log, then is split as a short log is. The
  folder names must be these folds.
* Seen items = the user's items in train + validation (any event type).
* Hits are counted over distinct items, so a list that repeats an item cannot score it twice.
* Popularity counts every deduplicated train + validation event with weight click 1, save 2,
  purchase 4; ties go to the smaller item_id compared as strings.
* Parquet cells are turned into text with pyarrow's cast to string, as the project does: list
  files name items by that text, so ids must be spelled the same way.

Compared with the run: every list figure of ``baselines/<name>.parquet`` (``baseline/<name>/...``),
``candidates.parquet`` (``retrieval/...``) and ``recommendations.parquet`` (``pipeline/...``); the
read counts (``data/events``, ``data/events/rows_read``, ``data/events/duplicate_rows``,
``data/events/truncated_last_line``, the skipped malformed event rows, ``data/events_used``,
``data/distinct_users``, ``data/distinct_items``); the split (``split/*_events``, the method and
both start times in run_info.json); ``eval/test_users`` and the cold-item shares; the data
fingerprint of run_info.json (SHA-256 of the spec and every input file); with folds, every fold
and the pooled figures. Not compared: intervals, ``candidate_set``/``retrieval_order``, the head
metrics and ``vs_best_baseline``.
"""

import argparse
import bz2
import csv
import glob
import gzip
import hashlib
import json
import math
import os
import re
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from fractions import Fraction
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

SPEC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "features")
EVENT_KINDS = ("click", "save", "purchase")
EVENT_WEIGHT = {"click": 1, "save": 2, "purchase": 4}
GT_TYPES = ("any", "save", "purchase")
VARIANTS = ("all", "excl_seen", "new_gt")
ROLES = ("user_id", "item_id", "behavior", "timestamp")
EVENTS_KEYS = ("paths", "format", "delimiter", "header", "columns", "behaviors", "timestamp_format",
               "timestamp_unit", "timezone", "item_columns") + ROLES
NS_PER_SECOND = 10**9
NS_PER_DAY = 86400 * NS_PER_SECOND
UNIT_NS = {"s": NS_PER_SECOND, "ms": 10**6, "us": 10**3, "ns": 1}
# Beyond this many nanoseconds from 1970 a time does not parse (the project's datetime range).
LARGEST_NS = Decimal("9.2e18")
FUTURE_SLACK_NS = NS_PER_DAY
# An id written as a missing value (README, "Bad input"), matched after stripping spaces.
MISSING_ID_TEXT = frozenset(("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                             "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"))
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
LINE_END = re.compile(rb"\r\n|\r|\n")
REFUSED_COMPRESSION = (".lz4", ".zst", ".zstd", ".br", ".xz", ".lzma", ".zip", ".snappy")
DEFAULT_SETTINGS = {"min_days": 3, "quantile": Fraction(1, 5), "ks": (10, 50, 100), "test_days": 1,
                    "until": None, "on_bad_rows": "fail"}


class Refused(Exception):
    """The check cannot check this spec, log or run; the message says why (exit status 2)."""


# ---------------------------------------------------------------------------------------------
# The spec


def spec_path(dataset):
    """A bundled dataset's name (``ecomm``: features/ecomm.yaml) or a spec's path, as a path."""
    if dataset.endswith((".yaml", ".yml")) or os.path.sep in dataset or os.path.isfile(dataset):
        path = os.path.expanduser(dataset)
    else:
        path = os.path.join(SPEC_DIR, dataset + ".yaml")
    if not os.path.isfile(path):
        raise Refused("no dataset spec at %s" % path)
    return os.path.abspath(path)


def _paths(table, where):
    """A table's ``paths`` as a list of patterns."""
    paths = table.get("paths")
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise Refused("%s.paths must be a file name or a list of them, got %r" % (where, paths))
    return paths


def read_spec(dataset, data_dir=None):
    """Read a dataset spec (a name under features/ or a path) into a plain dict.

    Keys: ``path`` (the spec file), ``name``, ``root`` (``data_dir`` when given, else the spec's
    ``root`` resolved against the spec file's folder), ``events`` (every events setting, defaults
    filled in), ``side_paths`` (the item and user tables' path patterns, for the fingerprint).
    Raises Refused for what the check cannot read the way the project does.
    """
    path = spec_path(dataset)
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict) or not isinstance(raw.get("events"), dict):
        raise Refused("%s: a dataset spec is a mapping with an 'events' mapping" % path)
    events_raw = raw["events"]
    unknown = [key for key in events_raw if key not in EVENTS_KEYS]
    if unknown:
        raise Refused("%s: events key %r is unknown to the independent check (known: %s)"
                      % (path, unknown[0], ", ".join(EVENTS_KEYS)))
    paths = _paths(events_raw, "events")
    fmt = events_raw.get("format") or ("parquet" if paths[0].lower().endswith((".parquet", ".pq")) else "csv")
    if fmt not in ("csv", "parquet"):
        raise Refused("%s: events.format %r: the check reads csv and parquet" % (path, fmt))
    events = {
        "paths": paths,
        "format": fmt,
        "delimiter": events_raw.get("delimiter", ","),
        "header": events_raw.get("header", True),
        "columns": events_raw.get("columns"),
        "timestamp_format": events_raw.get("timestamp_format", "unix"),
        "timestamp_unit": events_raw.get("timestamp_unit", "s"),
        "timezone": events_raw.get("timezone", "UTC"),
        "item_columns": dict(events_raw.get("item_columns") or {}),
    }
    for role in ROLES:
        events[role] = events_raw.get(role, role)
    behaviours = events_raw.get("behaviors")
    if not isinstance(behaviours, dict) or not behaviours:
        raise Refused("%s: events.behaviors must map raw values to click/save/purchase" % path)
    events["behaviors"] = {}
    for value, kind in behaviours.items():
        if kind not in EVENT_KINDS or isinstance(value, bool) or value is None:
            raise Refused("%s: events.behaviors maps %r to %r" % (path, value, kind))
        events["behaviors"][str(value)] = kind
    if events["timestamp_unit"] not in UNIT_NS:
        raise Refused("%s: events.timestamp_unit %r; known: %s" % (path, events["timestamp_unit"], ", ".join(UNIT_NS)))
    if "%Z" in events["timestamp_format"]:
        raise Refused("%s: timestamp_format %r holds %%Z (a zone name): the independent check reads "
                      "offsets (%%z) and the spec's timezone, not zone names" % (path, events["timestamp_format"]))
    try:
        events["zone"] = ZoneInfo(events["timezone"])
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise Refused("%s: timezone %r is not a zone: %s" % (path, events["timezone"], err)) from None
    if fmt == "csv" and not events["header"] and not events["columns"]:
        raise Refused("%s: a CSV without header needs events.columns" % path)
    roles = raw.get("roles") if isinstance(raw.get("roles"), dict) else {}
    events["session"] = roles.get("session")
    session = [events["session"]] if events["session"] else []
    events["needed"] = tuple(dict.fromkeys([events[role] for role in ROLES] + session + list(events["item_columns"])))
    if data_dir is not None:
        root = data_dir
    else:
        root = os.path.join(os.path.dirname(path), str(raw.get("root", ".")))
    side_paths = [_paths(raw[name], name) for name in ("items", "users") if isinstance(raw.get(name), dict)]
    return {"path": path, "name": str(raw.get("name", os.path.splitext(os.path.basename(path))[0])),
            "root": os.path.abspath(os.path.expanduser(root)), "events": events, "side_paths": side_paths}


def resolve_paths(patterns, root):
    """Files of a table: each pattern relative to ``root`` unless absolute; glob patterns sorted."""
    files = []
    for pattern in patterns:
        full = os.path.expanduser(pattern)
        if not os.path.isabs(full):
            full = os.path.join(root, full)
        if any(ch in pattern for ch in "*?["):
            matches = sorted(p for p in glob.glob(full) if os.path.isfile(p))
            if not matches:
                raise Refused("no file matches %s" % full)
            files.extend(matches)
        elif not os.path.isfile(full):
            raise Refused("file not found: %s (data root %s; pass --data-dir)" % (full, root))
        else:
            files.append(full)
    return files


def data_fingerprint(spec):
    """SHA-256 over the spec file and every input file (events, then items, then users)."""
    digest = hashlib.sha256()
    with open(spec["path"], "rb") as handle:
        digest.update(handle.read())
    for patterns in [spec["events"]["paths"]] + spec["side_paths"]:
        for path in resolve_paths(patterns, spec["root"]):
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading the event log


def _file_bytes(path):
    """A file's bytes, decompressed by its extension (.gz, .bz2)."""
    lower = path.lower()
    if lower.endswith(REFUSED_COMPRESSION):
        raise Refused("%s: compressed as %s; the independent check reads plain, .gz and .bz2 files"
                      % (path, os.path.splitext(lower)[1]))
    opener = gzip.open if lower.endswith(".gz") else bz2.open if lower.endswith(".bz2") else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as err:
        raise Refused("%s: cannot be read: %s" % (path, err)) from None


def _parse_line(text, delimiter, path, number):
    """One physical line as CSV fields (an empty line is one empty field)."""
    try:
        fields = next(csv.reader([text], delimiter=delimiter, strict=True), [])
    except csv.Error as err:
        raise Refused("%s:%d: the check cannot read this line as one CSV row (%s); the project "
                      "refuses a quoted field over a line break too: %r" % (path, number, err, text[:200])) from None
    return fields or [""]


def csv_rows(path, events):
    """Yield what each data line of a CSV event file is, in order.

    Each item is ``(line number, kind, value)``: kind ``row`` with the needed columns' raw texts as
    a tuple, ``bad`` with ``(reason, text)``, or ``truncated`` (the last line, without a line
    break, with too few fields). The header line is not yielded. Raises Refused for an empty
    file, a header lacking a needed column, or a line the check cannot read as one row.
    """
    data = _file_bytes(path)
    if not data:
        raise Refused("%s: the file is empty" % path)
    ends_with_newline = data.endswith((b"\n", b"\r"))
    lines = LINE_END.split(data)
    if ends_with_newline:
        lines.pop()
    if lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    delimiter = events["delimiter"]
    first = 1
    if events["header"]:
        if len(lines) < 2:
            raise Refused("%s: the file has a header but no rows" % path)
        try:
            header = [name.strip() for name in _parse_line(lines[0].decode("utf-8"), delimiter, path, 1)]
        except UnicodeDecodeError:
            raise Refused("%s:1: the header is not UTF-8" % path) from None
        names = list(events["columns"]) if events["columns"] else header
        first = 2
    else:
        names = list(events["columns"])
    missing = [name for name in events["needed"] if name not in names]
    if missing:
        raise Refused("%s: no column %s among %s" % (path, ", ".join(missing), names))
    positions = [names.index(name) for name in events["needed"]]
    for number in range(first, len(lines) + 1):
        raw = lines[number - 1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield number, "bad", ("bad_encoding", raw.decode("utf-8", "backslashreplace"))
            continue
        fields = _parse_line(text, delimiter, path, number)
        if len(fields) != len(names):
            if number == len(lines) and not ends_with_newline and len(fields) < len(names):
                yield number, "truncated", text
            else:
                yield number, "bad", ("wrong_column_count", text)
            continue
        yield number, "row", tuple(fields[p] for p in positions)


def parquet_rows(path, events):
    """Yield ``(row number, "row", texts)`` for each row of a Parquet event file; a null is None.

    Cells become text by pyarrow's cast to string (as the project reads them). Raises Refused for
    a file that cannot be read, lacks a needed column, has no rows, or holds a date or time column.
    """
    try:
        schema = pq.read_schema(path)
        missing = [name for name in events["needed"] if name not in schema.names]
        if missing:
            raise Refused("%s: no column %s; it has %s" % (path, ", ".join(missing), ", ".join(schema.names)))
        table = pq.read_table(path, columns=list(events["needed"]))
    except (pa.ArrowInvalid, OSError) as err:
        raise Refused("%s: cannot be read as Parquet: %s" % (path, err)) from None
    if table.num_rows == 0:
        raise Refused("%s: the file has no rows" % path)
    columns = []
    for name in events["needed"]:
        column = table.column(name)
        kind = column.type
        if pa.types.is_temporal(kind):
            raise Refused("%s: column %s is of type %s; the independent check reads numbers and text"
                          % (path, name, kind))
        columns.append(column.cast(pa.string()).to_pylist())
    for number, texts in enumerate(zip(*columns), start=1):
        yield number, "row", texts


def _unix_ns(text, unit):
    """Nanoseconds since 1970 of a number of ``unit``s, rounded half to even; None if it is no
    number or lies outside the representable range."""
    if not NUMBER.match(text):
        return None
    try:
        value = Decimal(text) * UNIT_NS[unit]
    except InvalidOperation:
        return None
    if abs(value) >= LARGEST_NS:
        return None
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def _pattern_ns(text, pattern, zone):
    """Nanoseconds since 1970 UTC of a time written by a strftime pattern; a time without an
    offset is in ``zone``. None if it does not parse, or names a local time the zone skips or
    repeats (a daylight-saving change)."""
    try:
        moment = datetime.strptime(text, pattern)
    except ValueError:
        return None
    if moment.tzinfo is None:
        earlier, later = moment.replace(tzinfo=zone, fold=0), moment.replace(tzinfo=zone, fold=1)
        if earlier.utcoffset() != later.utcoffset():
            return None
        moment = earlier
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000


def _bad_number(text, kind):
    """Why an ``item_columns`` value of type float or int is a bad row, or None."""
    text = (text or "").strip()
    if not NUMBER.match(text):
        return "not a finite number"
    value = float(text)
    if not math.isfinite(value):
        return "not a finite number"
    if value < 0:
        return "negative"
    if kind == "int" and value >= 2.0**63:
        return "too large for an integer"
    return None


def load_events(spec, skip_bad_rows=False, now_ns=None):
    """Read the spec's event files into canonical events ``(user, item, event, ns)``, file order.

    Returns ``(events, stats)``; stats: ``rows_read`` (every data line, or Parquet row),
    ``duplicates``, ``truncated``, ``bad`` (malformed rows, by reason) and ``bad_rows`` (the first
    five, as ``file:line: reason: value``). Malformed rows raise Refused unless ``skip_bad_rows``.
    """
    events_spec = spec["events"]
    now_ns = time.time_ns() if now_ns is None else now_ns
    needed = events_spec["needed"]
    index = {role: needed.index(events_spec[role]) for role in ROLES}
    session = needed.index(events_spec["session"]) if events_spec["session"] else None
    typed = [(needed.index(name), kind) for name, kind in events_spec["item_columns"].items()
             if kind in ("float", "int")]
    behaviours = events_spec["behaviors"]
    parsed_times = {}
    events, seen_rows = [], set()
    stats = {"rows_read": 0, "duplicates": 0, "truncated": 0, "bad": defaultdict(int), "bad_rows": []}

    def bad(path, number, reason, value):
        stats["bad"][reason] += 1
        if len(stats["bad_rows"]) < 5:
            stats["bad_rows"].append("%s:%d: %s: %r" % (path, number, reason, value))

    for path in resolve_paths(events_spec["paths"], spec["root"]):
        rows = csv_rows(path, events_spec) if events_spec["format"] == "csv" else parquet_rows(path, events_spec)
        for number, kind, value in rows:
            stats["rows_read"] += 1
            if kind == "truncated":
                stats["truncated"] += 1
                continue
            if kind == "bad":
                bad(path, number, *value)
                continue
            texts = [text if text is not None else "" for text in value]
            user, item = texts[index["user_id"]].strip(), texts[index["item_id"]].strip()
            if user in MISSING_ID_TEXT or item in MISSING_ID_TEXT:
                bad(path, number, "missing_id", user if user in MISSING_ID_TEXT else item)
                continue
            if session is not None and texts[session].strip() in MISSING_ID_TEXT:
                bad(path, number, "missing_id", texts[session])
                continue
            event = behaviours.get(texts[index["behavior"]].strip())
            if event is None:
                bad(path, number, "unknown_behavior", texts[index["behavior"]])
                continue
            stamp = texts[index["timestamp"]].strip()
            if stamp not in parsed_times:
                if events_spec["timestamp_format"] == "unix":
                    parsed_times[stamp] = _unix_ns(stamp, events_spec["timestamp_unit"])
                else:
                    parsed_times[stamp] = _pattern_ns(stamp, events_spec["timestamp_format"], events_spec["zone"])
            ns = parsed_times[stamp]
            if ns is None:
                bad(path, number, "bad_timestamp", stamp)
                continue
            if ns < 0 or ns > now_ns + FUTURE_SLACK_NS:
                bad(path, number, "timestamp_out_of_range", stamp)
                continue
            reasons = [_bad_number(texts[position], kind) for position, kind in typed]
            if any(reasons):
                bad(path, number, "bad_number", [texts[p] for p, _ in typed])
                continue
            if value in seen_rows:
                stats["duplicates"] += 1
                continue
            seen_rows.add(value)
            events.append((user, item, event, ns))
    n_bad = sum(stats["bad"].values())
    if n_bad and not skip_bad_rows:
        raise Refused("%d malformed rows in the event log (%s); the first: %s. The check refuses a log with "
                      "malformed rows unless the run it checks skipped them (--on-bad-rows skip)"
                      % (n_bad, ", ".join("%s %d" % pair for pair in sorted(stats["bad"].items())),
                         "; ".join(stats["bad_rows"])))
    if not events:
        raise Refused("no valid events in %s" % spec["path"])
    return events, stats


# ---------------------------------------------------------------------------------------------
# The split, the folds and the ground truth


def _day_name(day_number):
    """The ISO date of a UTC day number (days since 1970-01-01)."""
    return datetime.fromtimestamp(day_number * 86400, tz=timezone.utc).strftime("%Y-%m-%d")


def _time_name(ns):
    """An ISO time of nanoseconds since 1970, UTC."""
    seconds, rest = divmod(ns, NS_PER_SECOND)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (".%09d" % rest).rstrip("0") if rest else text


def parse_iso_ns(text):
    """Nanoseconds since 1970 UTC of an ISO time such as ``2024-03-04T00:00:00+00:00`` or
    ``2024-03-04 01:02:03.123456789+00:00`` (a time without offset is UTC)."""
    match = re.match(r"(.*?T?\d\d:\d\d:\d\d|\d{4}-\d\d-\d\d)(\.\d+)?(.*)\Z", text.strip().replace(" ", "T", 1))
    if not match:
        raise ValueError("not an ISO time: %r" % text)
    moment = datetime.fromisoformat(match.group(1) + match.group(3))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    fraction = match.group(2) or ".0"
    return (delta.days * 86400 + delta.seconds) * NS_PER_SECOND + int(fraction[1:].ljust(9, "0")[:9])


def split(events, min_days=3, quantile=Fraction(1, 5)):
    """Split events into train, validation and test; return a dict describing the split.

    With at least ``min_days`` distinct UTC days: test = the last day present, validation = the
    calendar day before it (possibly empty), train = every earlier day. With fewer, the sorted
    event times give the cuts: validation from the time at position floor(n (1 - 2q)), test from
    the one at floor(n (1 - q)), every event at or after a cut in the later period.

    Returned keys: ``train``, ``validation``, ``test`` (lists of events), ``mode`` ('day' or
    'quantile'), ``days`` (sorted distinct day numbers), ``validation_start`` and ``test_start``
    (ns), ``test_day`` and ``validation_day`` (day numbers, None for 'quantile').
    Raises Refused where the protocol stops the run (empty periods, no train events).
    """
    days = sorted({ns // NS_PER_DAY for _, _, _, ns in events})
    if len(days) >= min_days:
        test_start = days[-1] * NS_PER_DAY
        validation_start = test_start - NS_PER_DAY
        mode = "day"
    else:
        times = sorted(ns for _, _, _, ns in events)
        n = len(times)
        validation_start = times[math.floor(n * (1 - 2 * quantile))]
        test_start = times[math.floor(n * (1 - quantile))]
        mode = "quantile"
        if not validation_start < test_start:
            raise Refused("the log cannot be split: its validation and test periods would be empty "
                          "(%d events over %d distinct times)" % (n, len(set(times))))
    result = {"days": days, "mode": mode, "validation_start": validation_start, "test_start": test_start,
              "train": [], "validation": [], "test": [],
              "test_day": days[-1] if mode == "day" else None,
              "validation_day": days[-1] - 1 if mode == "day" else None}
    for event in events:
        part = "train" if event[3] < validation_start else "validation" if event[3] < test_start else "test"
        result[part].append(event)
    if not result["train"]:
        raise Refused("the log cannot be split: no train events before %s" % _time_name(validation_start))
    return result


def folds(events, n, min_days=3, quantile=Fraction(1, 5)):
    """The rolling-origin folds of the last ``n`` test periods, oldest first, as ``(name, end)``:
    the fold's log is the events before ``end`` (ns; None: the whole log).

    At least ``min_days`` days: the last ``n`` days present, named YYYY-MM-DD, each cut at the end
    of its day (each needs ``min_days`` days up to it). Fewer: folds ``1``..``n``; fold k drops the
    events at or after the time at position floor(len (1 - (n - k) q)) of the time-sorted log.
    """
    days = sorted({ns // NS_PER_DAY for _, _, _, ns in events})
    if len(days) >= min_days:
        if len(days) - n + 1 < min_days:
            raise Refused("test_days=%d needs %d days of events; the log has %d" % (n, n + min_days - 1, len(days)))
        tests = days[-n:]
        return [(_day_name(day), (day + 1) * NS_PER_DAY if i < n - 1 else None) for i, day in enumerate(tests)]
    times = sorted(ns for _, _, _, ns in events)
    result = []
    for back in range(n - 1, -1, -1):
        end = None
        if back:
            position = math.floor(len(times) * (1 - back * quantile))
            if position <= 0:
                raise Refused("test_days=%d: fold %d would hold no events" % (n, n - back))
            end = times[position]
        result.append((str(n - back), end))
    return result


def before(events, end):
    """The events before ``end`` (ns; None: all of them)."""
    return events if end is None else [event for event in events if event[3] < end]


def ground_truth(train, validation, test):
    """Build the test users' ground truth and seen items.

    Test users have at least one test event and at least one train event. Returns
    ``(gt, seen)``: ``gt[type][user]`` is the set of distinct items of that user on the test
    day with any event (type 'any'), a save ('save') or a purchase ('purchase'); every test
    user has an entry for every type, possibly empty. ``seen[user]`` is the set of items the
    user had any event with in train or validation.
    """
    train_users = {user for user, _, _, _ in train}
    test_users = {user for user, _, _, _ in test if user in train_users}
    gt = {gt_type: {user: set() for user in test_users} for gt_type in GT_TYPES}
    for user, item, event, _ in test:
        if user not in test_users:
            continue
        gt["any"][user].add(item)
        if event in ("save", "purchase"):
            gt[event][user].add(item)
    seen = {user: set() for user in test_users}
    for user, item, _, _ in train + validation:
        if user in seen:
            seen[user].add(item)
    return gt, seen


# ---------------------------------------------------------------------------------------------
# Scoring lists


def lists_by_user(list_rows):
    """Turn rows with user_id, rank, item_id (dicts) into ``{user: [item, ...]}`` by rank.

    Ids are compared as strings, whatever type the parquet file stores them in.
    """
    ranked = defaultdict(list)
    for row in list_rows:
        ranked[str(row["user_id"])].append((int(row["rank"]), str(row["item_id"])))
    return {user: [item for _, item in sorted(pairs)] for user, pairs in ranked.items()}


def read_list_file(path):
    """Read a ranked list parquet file into a list of row dicts."""
    table = pq.read_table(path, columns=["user_id", "rank", "item_id", "score"])
    return table.to_pylist()


def _dcg_at(items, truth, k):
    """Discounted cumulative gain of the first k items with binary relevance."""
    total = 0.0
    counted = set()
    for position, item in enumerate(items[:k], start=1):
        if item in truth and item not in counted:
            counted.add(item)
            total += 1.0 / math.log2(position + 1)
    return total


def _ideal_dcg(truth_size, k):
    """Best possible DCG of a list of k items when truth_size items are relevant."""
    return sum(1.0 / math.log2(position + 1) for position in range(1, min(truth_size, k) + 1))


def _metric_prefix(variant, gt_type):
    """Key prefix in the project's naming: variant unless 'all', then type unless 'any'."""
    parts = []
    if variant != "all":
        parts.append(variant)
    if gt_type != "any":
        parts.append(gt_type)
    return "".join(part + "/" for part in parts)


def score_lists(list_rows, gt, seen, ks=(10, 50, 100)):
    """Score ranked lists against the ground truth; return a flat dict of metrics.

    ``list_rows`` are dicts with user_id, rank, item_id (score is ignored); or a ready
    ``{user: [items by rank]}`` dict. For each ground-truth type and variant ('all': the list
    as is; 'excl_seen': the user's seen items removed from the list, then cut at K;
    'new_gt': seen items removed from the list and from the ground truth) the metrics
    Recall@K, HitRate@K and NDCG@10 are averaged over users whose ground truth (for that
    variant) is not empty; users without a list score zero. Hits count distinct items.
    A group with no eligible user is reported as NaN.
    """
    ranked = list_rows if isinstance(list_rows, dict) else lists_by_user(list_rows)
    metrics = {}
    for variant in VARIANTS:
        for gt_type in GT_TYPES:
            sums = defaultdict(float)
            users = 0
            for user, truth in gt[gt_type].items():
                items = ranked.get(user, [])
                user_seen = seen.get(user, set())
                if variant != "all":
                    items = [item for item in items if item not in user_seen]
                if variant == "new_gt":
                    truth = {item for item in truth if item not in user_seen}
                if not truth:
                    continue
                users += 1
                for k in ks:
                    hits = len(set(items[:k]) & truth)
                    sums["recall@%d" % k] += hits / len(truth)
                    sums["hitrate@%d" % k] += 1.0 if hits > 0 else 0.0
                sums["ndcg@10"] += _dcg_at(items, truth, 10) / _ideal_dcg(len(truth), 10)
            prefix = _metric_prefix(variant, gt_type)
            names = ["recall@%d" % k for k in ks] + ["hitrate@%d" % k for k in ks] + ["ndcg@10"]
            for name in names:
                metrics[prefix + name] = sums[name] / users if users else float("nan")
            metrics[prefix + "users"] = float(users)
    return metrics


def eligible_user_counts(gt, seen):
    """Number of users with a non-empty ground truth, per (variant, type) prefix."""
    counts = {}
    for variant in ("all", "new_gt"):
        for gt_type in GT_TYPES:
            count = 0
            for user, truth in gt[gt_type].items():
                if variant == "new_gt":
                    truth = truth - seen.get(user, set())
                if truth:
                    count += 1
            counts[variant + "/" + gt_type] = count
    return counts


def cold_item_share(train, gt_any, validation=()):
    """Share of test ground-truth items (type 'any') that never occur in train.

    Returns ``(pair_share, item_share, unseen_share)``: over all (user, item) ground-truth pairs,
    over the distinct ground-truth items, and over pairs whose item occurs in neither train nor
    ``validation``. NaN without ground truth.
    """
    train_items = {item for _, item, _, _ in train}
    before_test = train_items | {item for _, item, _, _ in validation}
    pairs = [item for items in gt_any.values() for item in items]
    distinct = set(pairs)
    if not pairs:
        return float("nan"), float("nan"), float("nan")
    return (sum(item not in train_items for item in pairs) / len(pairs),
            sum(item not in train_items for item in distinct) / len(distinct),
            sum(item not in before_test for item in pairs) / len(pairs))


def popularity_list(history, n=100):
    """Top-n items by weighted engagement count (click 1, save 2, purchase 4).

    ``history`` is the train + validation events. Ties go to the smaller item_id as a string.
    Returns a list of ``(item_id, score)``.
    """
    weight = defaultdict(int)
    for _, item, event, _ in history:
        weight[item] += EVENT_WEIGHT[event]
    ordered = sorted(weight.items(), key=lambda pair: (-pair[1], pair[0]))
    return ordered[:n]


def popularity_rows(top_items, users):
    """The same popularity list as row dicts for every user, ranks starting at 1."""
    rows = []
    for user in sorted(users):
        for rank, (item, score) in enumerate(top_items, start=1):
            rows.append({"user_id": user, "rank": rank, "item_id": item, "score": float(score)})
    return rows


# ---------------------------------------------------------------------------------------------
# Whole evaluations


def load(dataset, data_dir=None, skip_bad_rows=False):
    """The canonical events of a dataset (a bundled name or a spec path), and the read counts."""
    return load_events(read_spec(dataset, data_dir), skip_bad_rows)


def fold_name(run_dir):
    """The name of a fold folder ``.../folds/<name>``, else None."""
    path = os.path.normpath(run_dir)
    return os.path.basename(path) if os.path.basename(os.path.dirname(path)) == "folds" else None


def fold_test_day(run_dir):
    """The test day of a fold folder ``.../folds/YYYY-MM-DD``, else None."""
    name = fold_name(run_dir)
    return name if name and len(name) == 10 and name[4] == name[7] == "-" else None


def up_to_day(events, test_day):
    """The events up to the end of ``test_day`` ('YYYY-MM-DD'): the log as it stood when a
    rolling-origin fold with that test day was run (later days unseen)."""
    day = datetime.strptime(test_day, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return before(events, (int(day.timestamp()) + 86400) * NS_PER_SECOND)


def evaluate(dataset, data_dir=None, test_day=None, loaded=None, settings=None, end=None):
    """Load (or take ``loaded``: events and counts), cut after ``test_day`` ('YYYY-MM-DD') or
    before ``end`` (ns) if given, split and build the ground truth; return everything in one dict
    (``events``, ``stats``, ``split``, ``gt``, ``seen``). ``settings``: min_days and quantile."""
    settings = settings or DEFAULT_SETTINGS
    events, stats = loaded if loaded is not None else load(dataset, data_dir)
    if test_day is not None:
        events = up_to_day(events, test_day)
    events = before(events, end)
    parts = split(events, settings["min_days"], settings["quantile"])
    gt, seen = ground_truth(parts["train"], parts["validation"], parts["test"])
    return {"events": events, "stats": stats, "split": parts, "gt": gt, "seen": seen}


# ---------------------------------------------------------------------------------------------
# Comparing with a run


def _format(value):
    """Print a metric value with enough digits to compare."""
    return "nan" if value != value else "%.10f" % value


def _read_json(path):
    """A JSON file's content, or {} when there is no such file."""
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def _compare(key, mine, theirs, tolerance):
    """Print one figure next to the run's; return 1 if they differ, else 0. A figure absent from
    the run counts as agreeing only when mine is NaN (no users to average over)."""
    if theirs is None:
        note = "absent (no users)" if mine != mine else "MISSING"
        print("  %-45s mine %s   metrics.json: %s" % (key, _format(mine), note))
        return 0
    theirs = float(theirs)
    both_nan = mine != mine and theirs != theirs
    differs = not both_nan and not abs(mine - theirs) <= tolerance
    print("  %-45s mine %s   theirs %s%s" % (key, _format(mine), _format(theirs), "  <-- DIFFERS" if differs else ""))
    return 1 if differs else 0


def compare_run(run_dir, gt, seen, tolerance=1e-9, scores=None, ks=(10, 50, 100)):
    """Score every list file of a run and compare with its metrics.json; return #mismatches.

    Scores ``baselines/<name>.parquet`` under the key prefix ``baseline/<name>/`` and, when
    present, ``candidates.parquet`` under ``retrieval/`` and ``recommendations.parquet`` under
    ``pipeline/``. A key missing from metrics.json is reported (as MISSING, or "absent (no
    users)" where mine is NaN), not counted as a mismatch. Every figure scored here goes to the
    dict ``scores`` when one is given.
    """
    reported = _read_json(os.path.join(run_dir, "metrics.json"))
    files = []
    baseline_dir = os.path.join(run_dir, "baselines")
    if os.path.isdir(baseline_dir):
        for name in sorted(os.listdir(baseline_dir)):
            if name.endswith(".parquet"):
                files.append(("baseline/" + name[: -len(".parquet")] + "/",
                              os.path.join(baseline_dir, name)))
    for name, prefix in (("candidates.parquet", "retrieval/"),
                         ("recommendations.parquet", "pipeline/")):
        if os.path.exists(os.path.join(run_dir, name)):
            files.append((prefix, os.path.join(run_dir, name)))
    mismatches = 0
    for prefix, path in files:
        print("\n== %s  (%s)" % (prefix, os.path.relpath(path, run_dir)))
        mine = score_lists(read_list_file(path), gt, seen, ks)
        if scores is not None:
            scores.update({prefix + key: value for key, value in mine.items()})
        for key in sorted(mine):
            mismatches += _compare(prefix + key, mine[key], reported.get(prefix + key), tolerance)
    print("\n%d of the compared list figures differ by more than %g" % (mismatches, tolerance))
    return mismatches


def run_settings(run_dir):
    """The protocol's settings of a run, from its config.yaml (a fold folder's: the run's): split
    ``min_days`` and ``quantile`` (a Fraction of the number as written), ``ks``, ``test_days``,
    ``until`` (ns or None) and ``on_bad_rows``; the defaults where there is no config.yaml.
    Raises Refused for a run limited by ``data.max_events``."""
    settings = dict(DEFAULT_SETTINGS)
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path) and fold_name(run_dir):
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.normpath(run_dir))), "config.yaml")
    if not os.path.isfile(path):
        return settings
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    data, split_config, evaluation = (config.get(key) or {} for key in ("data", "split", "evaluation"))
    if data.get("max_events") is not None:
        raise Refused("the run kept users up to data.max_events=%s by the project's own hash; the "
                      "independent check cannot pick the same users: check a run on the whole log"
                      % data["max_events"])
    settings["min_days"] = int(split_config.get("min_days", settings["min_days"]))
    settings["quantile"] = Fraction(str(split_config.get("quantile", "0.2")))
    settings["ks"] = tuple(int(k) for k in evaluation.get("ks", settings["ks"]))
    settings["test_days"] = int(evaluation.get("test_days", 1))
    settings["on_bad_rows"] = data.get("on_bad_rows", "fail")
    if data.get("until") is not None:
        settings["until"] = parse_iso_ns(str(data["until"]))
    return settings


def _bad_event_rows(reported):
    """The malformed event rows the run skipped, by its metrics."""
    return sum(value for key, value in reported.items() if key.startswith("data/bad_rows/events/"))


def compare_data(spec, events, stats, used, reported, info, tolerance):
    """Compare the read counts and the data fingerprint with the run's; return #mismatches."""
    print("\n== data")
    mismatches = 0
    mine = {"data/events": len(events), "data/events/rows_read": stats["rows_read"],
            "data/events/duplicate_rows": stats["duplicates"],
            "data/events/truncated_last_line": stats["truncated"],
            "data/events_used": len(used), "data/distinct_users": len({e[0] for e in used}),
            "data/distinct_items": len({e[1] for e in used})}
    for key, value in mine.items():
        default = 0 if key == "data/events/truncated_last_line" else None
        mismatches += _compare(key, float(value), reported.get(key, default), tolerance)
    mismatches += _compare("data/bad_rows/events (skipped)", float(sum(stats["bad"].values())),
                           _bad_event_rows(reported), tolerance)
    if "data_fingerprint" in info:
        same = data_fingerprint(spec) == info["data_fingerprint"]
        print("  %-45s %s" % ("data fingerprint (run_info.json)",
                               "the same" if same else "DIFFERS: the run read another spec or other files"))
        mismatches += 0 if same else 1
    return mismatches


def compare_split(run_dir, result, tolerance):
    """Compare one split (a run's or a fold's) with its metrics.json and run_info.json: the
    period sizes, method and start times, the test users and the cold-item shares."""
    reported = _read_json(os.path.join(run_dir, "metrics.json"))
    info = _read_json(os.path.join(run_dir, "run_info.json")).get("split", {})
    parts = result["split"]
    pair_share, item_share, unseen_share = cold_item_share(parts["train"], result["gt"]["any"], parts["validation"])
    print("\n== split (%s)" % ("calendar days" if parts["mode"] == "day" else "event-time quantiles"))
    mismatches = 0
    for key, value in (("split/train_events", len(parts["train"])),
                       ("split/validation_events", len(parts["validation"])),
                       ("split/test_events", len(parts["test"])),
                       ("eval/test_users", len(result["gt"]["any"])),
                       ("eval/cold_item_share", pair_share), ("eval/cold_item_share_distinct", item_share),
                       ("eval/unseen_before_test_share", unseen_share)):
        mismatches += _compare(key, float(value), reported.get(key), tolerance)
    method = "calendar_day" if parts["mode"] == "day" else "quantile"
    for key, mine in (("method", method), ("validation_start", parts["validation_start"]),
                      ("test_start", parts["test_start"])):
        theirs = info.get(key)
        if theirs is not None and key != "method":
            theirs = parse_iso_ns(theirs)
        differs = theirs is not None and theirs != mine
        shown = (lambda v: v) if key == "method" else _time_name
        print("  %-45s mine %s   run_info %s%s" % ("split " + key, shown(mine),
                                                   "absent" if theirs is None else shown(theirs),
                                                   "  <-- DIFFERS" if differs else ""))
        mismatches += 1 if differs else 0
    return mismatches


def check_part(part_dir, events, settings, tolerance, scores=None):
    """Split ``events`` (a run's log, or a fold's), compare the split and every list of
    ``part_dir`` with its metrics.json; return ``(mismatches, result)``."""
    result = evaluate(None, loaded=(events, {}), settings=settings)
    mismatches = compare_split(part_dir, result, tolerance)
    mismatches += compare_run(part_dir, result["gt"], result["seen"], tolerance, scores, settings["ks"])
    return mismatches, result


def _pool(fold_scores, reported, tolerance):
    """Pool each list figure over the folds (each fold's mean weighted by its users) and compare
    with the run's metrics.json; the user counts are summed. Returns #mismatches."""
    sums, users = defaultdict(float), defaultdict(float)
    for scores in fold_scores:
        for key, value in scores.items():
            if key.endswith("/users"):
                users[key] += value
                continue
            count = scores[key.rsplit("/", 1)[0] + "/users"]
            if count:
                sums[key] += value * count
                users[key] += count
    mismatches = 0
    for key in sorted(users):
        mine = users[key] if key.endswith("/users") else sums[key] / users[key]
        if key.endswith("/users") and not mine:
            continue
        theirs = reported.get(key)
        if theirs is None:
            print("  %-45s mine %s   metrics.json: MISSING  <-- DIFFERS" % (key, _format(mine)))
            mismatches += 1
            continue
        mismatches += _compare(key, mine, theirs, tolerance)
    return mismatches


def check_run(dataset, run_dir, data_dir=None, tolerance=1e-9):
    """Check a run folder against the log of ``dataset`` (a bundled name or a spec path); return
    the number of figures that differ (every one is printed).

    A run folder with ``folds/``: every fold (its folder names must be the protocol's folds),
    then the pooled figures and ``fold/<name>/eval/test_users`` of the run's metrics.json. A fold
    folder ``folds/<name>`` alone: that fold. Otherwise the run on the whole log. Raises Refused
    when the run, the spec or the log cannot be checked.
    """
    spec = read_spec(dataset, data_dir)
    settings = run_settings(run_dir)
    reported = _read_json(os.path.join(run_dir, "metrics.json"))
    if not reported:
        raise Refused("no metrics.json in %s" % run_dir)
    info = _read_json(os.path.join(run_dir, "run_info.json"))
    skip = settings["on_bad_rows"] == "skip" or _bad_event_rows(reported) > 0
    events, stats = load_events(spec, skip_bad_rows=skip)
    used = before(events, settings["until"])
    print("spec: %s   data root: %s" % (spec["path"], spec["root"]))
    mismatches = compare_data(spec, events, stats, used, reported, info, tolerance)
    folds_dir = os.path.join(run_dir, "folds")
    name = fold_name(run_dir)
    if not os.path.isdir(folds_dir) and name is None:
        return mismatches + check_part(run_dir, used, settings, tolerance)[0]
    if name is not None:
        siblings = os.listdir(os.path.dirname(os.path.normpath(run_dir)))
        n_folds = settings["test_days"] if settings["test_days"] > 1 else len(siblings)
        cuts = dict(folds(used, n_folds, settings["min_days"], settings["quantile"]))
        if name not in cuts:
            raise Refused("%s is not one of this log's folds (%s)" % (run_dir, ", ".join(cuts)))
        print("\n==== fold %s" % name)
        return mismatches + check_part(run_dir, before(used, cuts[name]), settings, tolerance)[0]
    present = sorted(os.listdir(folds_dir), key=lambda n: (len(n), n))
    n_folds = settings["test_days"] if settings["test_days"] > 1 else len(present)
    cuts = folds(used, n_folds, settings["min_days"], settings["quantile"])
    names = [fold for fold, _ in cuts]
    if sorted(names) != sorted(present):
        print("\nfold folders %s, but the protocol's folds are %s  <-- DIFFERS"
              % (", ".join(present), ", ".join(names)))
        mismatches += 1
    fold_scores = []
    for fold, end in cuts:
        if fold not in present:
            continue
        scores = {}
        print("\n==== fold %s" % fold)
        count, result = check_part(os.path.join(folds_dir, fold), before(used, end), settings, tolerance, scores)
        mismatches += count
        mismatches += _compare("fold/%s/eval/test_users" % fold, float(len(result["gt"]["any"])),
                               reported.get("fold/%s/eval/test_users" % fold), tolerance)
        fold_scores.append(scores)
    print("\n==== pooled over folds %s" % ", ".join(names))
    mismatches += _pool(fold_scores, reported, tolerance)
    print("\n%d figures differ over the folds and pooled" % mismatches)
    return mismatches


def compare_folds(run_dir, dataset, data_dir=None, tolerance=1e-9):
    """A rolling-origin run (a folder with ``folds/``): ``check_run``. Kept for older callers."""
    return check_run(dataset, run_dir, data_dir, tolerance)


# ---------------------------------------------------------------------------------------------
# Command line


def describe(dataset, data_dir, test_day):
    """Print the split, the test users, the cold-item share and an independent popularity
    baseline of a dataset's log (no run to compare)."""
    spec = read_spec(dataset, data_dir)
    result = evaluate(None, loaded=load_events(spec), test_day=test_day)
    stats, parts, gt, seen = result["stats"], result["split"], result["gt"], result["seen"]
    print("dataset: %s (%s)   data root: %s" % (spec["name"], spec["path"], spec["root"]))
    print("rows read: %d   truncated last lines dropped: %d   duplicates dropped: %d   events: %d"
          % (stats["rows_read"], stats["truncated"], stats["duplicates"], len(result["events"])))
    print("days: %d (%s .. %s)" % (len(parts["days"]), _day_name(parts["days"][0]), _day_name(parts["days"][-1])))
    if parts["mode"] == "day":
        print("test day: %s   validation day: %s" % (_day_name(parts["test_day"]), _day_name(parts["validation_day"])))
    else:
        print("split: event-time quantiles (fewer than three days): validation from %s, test from %s"
              % (_time_name(parts["validation_start"]), _time_name(parts["test_start"])))
    print("events train / validation / test: %d / %d / %d"
          % (len(parts["train"]), len(parts["validation"]), len(parts["test"])))
    counts = eligible_user_counts(gt, seen)
    print("test users: %d" % len(gt["any"]))
    print("users with non-empty GT  any / save / purchase: %d / %d / %d"
          % (counts["all/any"], counts["all/save"], counts["all/purchase"]))
    print("users with non-empty new_gt  any / save / purchase: %d / %d / %d"
          % (counts["new_gt/any"], counts["new_gt/save"], counts["new_gt/purchase"]))
    pair_share, item_share, _ = cold_item_share(parts["train"], gt["any"], parts["validation"])
    print("cold-item share (not in train): pairs %.4f   distinct items %.4f" % (pair_share, item_share))
    top = popularity_list(parts["train"] + parts["validation"])
    popularity = score_lists({user: [item for item, _ in top] for user in gt["any"]}, gt, seen)
    print("independent popularity baseline: recall@100 %.6f   ndcg@10 %.6f   "
          "(new_gt recall@100 %.6f, purchase recall@100 %.6f)"
          % (popularity["recall@100"], popularity["ndcg@10"],
             popularity["new_gt/recall@100"], popularity["purchase/recall@100"]))


def main(argv=None):
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--spec", help="a dataset spec (YAML), as train.py --dataset takes it")
    which.add_argument("--dataset", help="a bundled dataset: features/<NAME>.yaml (ecomm, taobao, ...)")
    parser.add_argument("--data-dir", "--data-root", dest="data_dir",
                        help="the folder the spec's data paths start from (default: the spec's root)")
    parser.add_argument("--run-dir", help="a run folder; with folds/ (several test days) each fold is checked "
                        "and the pooled figures too; a fold folder folds/<name> is checked on its own")
    parser.add_argument("--test-day", help="YYYY-MM-DD, without --run-dir: cut the log after this day first")
    parser.add_argument("--tolerance", type=float, default=1e-9, help="largest difference that agrees")
    args = parser.parse_args(argv)
    if args.run_dir and args.test_day:
        parser.error("--test-day is for a log without --run-dir: a fold folder's name gives its cut")
    dataset = args.spec or args.dataset
    try:
        if not args.run_dir:
            describe(dataset, args.data_dir, args.test_day)
            return 0
        return 1 if check_run(dataset, args.run_dir, args.data_dir, args.tolerance) else 0
    except Refused as err:
        print("independent check refused: %s" % err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
