"""Raw rows: every file of a table (CSV or Parquet) read as strings, with each row's file and line.

Every physical line of a CSV is accounted for: it becomes a row, a truncated last line (dropped
and counted, as in the Taobao sample), or a bad row reported with its file, line number and
offending value (a line that is not UTF-8 too). A row is one line: a quoted field that runs over
a line break (an unclosed quote, usually) would merge the lines after it into one value, so it
fails the read with the line where it starts. `shopping_mtl.data.readers` validates the rows.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shopping_mtl.data.report import ReadReport
from shopping_mtl.data.spec import TableSpec
from shopping_mtl.errors import DataError

# The readers' logger, as before the split: log lines and their filters are unchanged.
log = logging.getLogger("shopping_mtl.data.readers")


@dataclass
class RawTable:
    """A table's cells as strings, one row per kept line, with the file and line each came from.

    `n_read` counts every data row of the files (a CSV's physical lines after the header):
    the kept rows plus those reported bad here and a truncated last line.
    """

    frame: pd.DataFrame
    files: np.ndarray  # (rows,) file name of each row
    lines: np.ndarray  # (rows,) 1-based physical line (CSV) or row number (Parquet)
    n_read: int


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


@dataclass
class _CsvFile:
    """What the passes over a CSV file's bytes found, before pyarrow parses it."""

    n_lines: int  # physical lines
    ends_with_newline: bool
    utf8: bool  # the whole file is UTF-8
    header: list[str] | None  # the header's names; None when the table has no header
    source: Path | pa.Buffer  # what pyarrow reads: the file, or its copy made UTF-8
    not_utf8: dict[int, str]  # the lines that are not UTF-8, by number


def _read_csv(path: Path, table: TableSpec, needed: tuple[str, ...], name: str,
              report: ReadReport) -> RawTable:
    """One CSV file as string columns `needed`, one row per valid line; its bad rows (wrong column
    count, not UTF-8) go to `report`, a truncated last line is counted and dropped. A file that is
    empty, unreadable, lacks a needed column or has a row over several lines raises DataError."""
    scan = _scan_csv(path, table)
    names = _column_names(path, table, scan.header, needed)
    arrow, invalid = _parse_csv(path, table, scan, names, needed)
    offset = 1 if table.header else 0
    n_rows = arrow.num_rows + len(invalid) + offset
    if n_rows != scan.n_lines:  # one row took several lines: every later line number would be off
        if scan.utf8:
            with _open_bytes(path) as handle:
                data = handle.read()
        else:
            data = scan.source.to_pybytes()
        raise _quoted_line_break(path, table.delimiter, data, n_rows, scan.n_lines)
    if arrow.num_rows == 0 and not invalid:
        what = "has a header but no rows" if table.header else "is empty"
        raise DataError(f"{path}: the file {what}")
    lines = _valid_lines(path, invalid, offset, scan.n_lines)
    _report_wrong_columns(path, name, report, scan, invalid, len(names))
    frame = arrow.to_pandas(types_mapper=lambda t: pd.StringDtype() if t == pa.string() else None)
    if scan.not_utf8:
        numbers = sorted(scan.not_utf8)
        report.add_bad(name, "bad_encoding", str(path), numbers, [scan.not_utf8[n] for n in numbers],
                       ["not UTF-8 text (bad bytes shown as \\xNN)"] * len(numbers))
        valid = ~np.isin(lines, numbers)
        frame, lines = frame[valid].reset_index(drop=True), lines[valid]
    return RawTable(frame, np.full(len(frame), path.name, dtype=object), lines, scan.n_lines - offset)


def _scan_csv(path: Path, table: TableSpec) -> _CsvFile:
    """Count the lines, check the encoding and read the header; an empty or unreadable file
    raises DataError."""
    header = None
    try:
        n_lines, ends_with_newline, utf8 = _scan_lines(path)
        if n_lines == 0:
            raise DataError(f"{path}: the file is empty")
        if table.header:
            header = _csv_header(path, table.delimiter)
        source, not_utf8 = (path, {}) if utf8 else _utf8_copy(path)
    except (OSError, EOFError, pa.ArrowException) as err:  # e.g. a .gz file that is not gzip
        raise DataError(f"{path}: cannot be read: {err}") from None
    return _CsvFile(n_lines, ends_with_newline, utf8, header, source, not_utf8)


def _column_names(path: Path, table: TableSpec, header: list[str] | None,
                  needed: tuple[str, ...]) -> list[str]:
    """The names of the file's columns: the spec's `columns`, else the header, which must then
    hold every needed column (DataError naming the missing ones)."""
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
    return names


def _parse_csv(path: Path, table: TableSpec, scan: _CsvFile, names: list[str],
               needed: tuple[str, ...]) -> tuple[pa.Table, list[tuple[int, int, str]]]:
    """pyarrow's parse of the file as strings: the rows with the right column count, and the
    others as (line number, column count, text). A parse or read error raises DataError."""
    invalid: list[tuple[int, int, str]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "skip"

    try:
        arrow = pacsv.read_csv(
            scan.source if scan.utf8 else pa.BufferReader(scan.source),
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
    return arrow, invalid


def _valid_lines(path: Path, invalid: list[tuple[int, int, str]], offset: int,
                 n_lines: int) -> np.ndarray:
    """The line numbers of pyarrow's valid rows, in order."""
    bad_numbers = {number for number, _, _ in invalid}
    if None in bad_numbers:  # pyarrow only omits numbers when reading with threads
        raise DataError(f"{path}: could not locate malformed rows by line")
    # Every physical line is a valid row or an invalid one, so the valid rows' line numbers are
    # the remaining numbers in order.
    all_lines = np.arange(offset + 1, n_lines + 1)
    bad = np.fromiter(bad_numbers, dtype=np.int64, count=len(bad_numbers))
    return all_lines[~np.isin(all_lines, bad)]


def _report_wrong_columns(path: Path, name: str, report: ReadReport, scan: _CsvFile,
                          invalid: list[tuple[int, int, str]], expected: int) -> None:
    """Report pyarrow's invalid rows as wrong_column_count, except lines that are not UTF-8 (the
    caller reports them) and a truncated last line (counted and logged, not bad)."""
    wrong = []
    for number, actual, text in invalid:
        if number in scan.not_utf8:
            continue  # reported by the caller, with the other lines that are not UTF-8
        if number == scan.n_lines and actual < expected and not scan.ends_with_newline:
            report.counts[f"data/{name}/truncated_last_line"] += 1
            log.warning("%s:%d: dropped truncated last line %r", path, number, text)
            continue
        wrong.append((number, text, f"wrong column count: expected {expected} fields, got {actual}"))
    if wrong:
        numbers, texts, details = zip(*wrong)
        report.add_bad(name, "wrong_column_count", str(path), numbers, texts, details)


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
    return RawTable(frame, np.full(len(frame), path.name, dtype=object), np.arange(1, len(frame) + 1), len(frame))


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
    return RawTable(frame, files, lines, sum(p.n_read for p in parts))
