"""Training examples on disk: Parquet shards written chunk by chunk, read back a few at a time.

Above `data.stream_above_events` events a run does not hold its training examples (the
two-tower pairs, the ranker's rows) in memory: they are built one user chunk at a time and
written here, and `batches.make_dataset` / `make_list_dataset` stream them through `tf.data`
(`ExampleShards.epoch_batches`), `mix` shards at a time. Small data stays in numpy arrays.

A folder holds `part-<n>.parquet` files and `manifest.json` (columns, rows and lists per file).
Each file and the manifest are written under a temporary name and renamed into place; the
manifest is written last, so a folder without one is an unfinished write (`open` refuses it).
Columns: 1-D numbers or strings, or 2-D (rows, width) as fixed-size lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"


def _column(values: np.ndarray) -> tuple[pa.Array, dict]:
    kind = "string" if values.dtype == object or values.dtype.kind in "US" else values.dtype.name
    flat = values.reshape(-1)
    if kind == "string":
        flat = flat.astype(object)
    array = pa.array(flat, type=pa.string() if kind == "string" else None)
    if values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(array, values.shape[1]), {"dtype": kind, "width": values.shape[1]}
    if values.ndim != 1:
        raise ValueError(f"a shard column must be 1-D or 2-D, got shape {values.shape}")
    return array, {"dtype": kind, "width": None}


def _numpy(column: pa.ChunkedArray, info: dict) -> np.ndarray:
    column = column.combine_chunks()
    if info["width"] is not None:
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(-1, info["width"])
    return column.to_numpy(zero_copy_only=False)


class ShardWriter:
    """Appends chunks of example arrays (`write`) as Parquet files; `close` writes the manifest
    and returns the readable `ExampleShards`. Chunks larger than `max_rows` are split (at list
    boundaries when `list_column` is given, so a list never spans two files)."""

    def __init__(self, folder: Path, max_rows: int = 200_000, list_column: str | None = None):
        self.folder = Path(folder)
        if self.folder.exists():
            for old in self.folder.iterdir():  # a previous, unfinished or finished, write
                old.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_rows, self.list_column = max(1, int(max_rows)), list_column
        self.columns: dict[str, dict] | None = None
        self.files: list[dict] = []

    def write(self, arrays: Mapping[str, np.ndarray]) -> None:
        n = len(next(iter(arrays.values())))
        if n == 0:
            return
        for start, stop in self._pieces(arrays, n):
            self._write_file({k: v[start:stop] for k, v in arrays.items()}, stop - start)

    def _pieces(self, arrays, n):
        if self.list_column is None:
            return [(s, min(s + self.max_rows, n)) for s in range(0, n, self.max_rows)]
        lists = arrays[self.list_column]
        if np.any(lists[1:] < lists[:-1]):
            raise ValueError(f"rows must be sorted by {self.list_column!r} to be written as whole lists")
        starts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]])
        pieces, begin = [], 0
        for s in starts[1:]:
            if s - begin >= self.max_rows:
                pieces.append((begin, int(s)))
                begin = int(s)
        return pieces + [(begin, n)]

    def _write_file(self, arrays: Mapping[str, np.ndarray], n: int) -> None:
        columns, infos = {}, {}
        for name, values in arrays.items():
            columns[name], infos[name] = _column(np.asarray(values))
        if self.columns is None:
            self.columns = infos
        elif infos != self.columns:
            raise ValueError(f"chunk columns {infos} differ from the first chunk's {self.columns}")
        name = f"part-{len(self.files):05d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(pa.table(columns), tmp, compression="zstd")
        tmp.replace(self.folder / name)
        lists = len(np.unique(arrays[self.list_column])) if self.list_column else n
        self.files.append({"name": name, "rows": int(n), "lists": int(lists)})

    def close(self) -> "ExampleShards":
        if self.columns is None:
            raise ValueError(f"no examples were written to {self.folder}")
        manifest = {"columns": self.columns, "files": self.files, "list_column": self.list_column}
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(self.folder / MANIFEST)
        return ExampleShards(self.folder)


class ExampleShards(Mapping):
    """Example arrays stored as Parquet shards. A read-only mapping of column name -> the
    whole column (read from every file: meant for small columns such as weights or labels);
    the rows stream through `epoch_batches`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} holds no finished example shards ({MANIFEST} is missing)")
        manifest = json.loads(path.read_text())
        self.columns: dict[str, dict] = manifest["columns"]
        self.files: list[dict] = manifest["files"]
        self.list_column: str | None = manifest["list_column"]

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.files)

    @property
    def lists(self) -> int:
        return sum(f["lists"] for f in self.files)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise KeyError(name)
        parts = [_numpy(pq.read_table(self.folder / f["name"], columns=[name]).column(name), self.columns[name])
                 for f in self.files]
        return np.concatenate(parts)

    def __contains__(self, name) -> bool:
        return name in self.columns

    def __iter__(self):
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def read_file(self, number: int, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        names = list(columns or self.columns)
        table = pq.read_table(self.folder / self.files[number]["name"], columns=names)
        return {name: _numpy(table.column(name), self.columns[name]) for name in names}

    def read_table(self, number: int, columns: list[str] | None = None) -> pa.Table:
        """One file as an Arrow table (strings stay in Arrow buffers, no Python objects)."""
        return pq.read_table(self.folder / self.files[number]["name"], columns=list(columns or self.columns))

    def epoch_batches(self, epoch: int, seed: int, batch_size: int, shuffle: bool = True,
                      drop_remainder: bool = False, mix: int = 4, columns: list[str] | None = None,
                      whole_lists: bool = False, arrow: bool = False) -> Iterator[dict[str, np.ndarray] | pa.Table]:
        """One epoch's batches in an order fixed by (seed, epoch): the files in a shuffled order,
        `mix` of them read at a time, their rows (or, with `whole_lists`, their lists) shuffled
        together and cut into batches; what is left of a group goes ahead of the next group's rows.

        Rows: `batch_size` rows a batch (the last batch smaller, or dropped with
        `drop_remainder`). Whole lists: `batch_size` lists a batch, the last one smaller.
        A batch is a dict of numpy arrays, or with `arrow` an Arrow table (the same rows;
        `arrow_columns` turns it into buffers for TensorFlow without a Python string per value).
        """
        if arrow:
            read, join = self.read_table, lambda parts: pa.concat_tables(parts).combine_chunks()

            def take(rows, index):
                return rows.take(pa.array(index, type=pa.int64()))
        else:
            read = self.read_file

            def join(parts):
                return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

            def take(rows, index):
                return {k: v[index] for k, v in rows.items()}
        files = np.random.default_rng([seed, epoch]).permutation(len(self.files)) if shuffle else \
            np.arange(len(self.files))
        groups = [files[i:i + mix] for i in range(0, len(files), mix)]
        carry = None
        carried = 0  # units at the front of `carry`, kept first and in order
        for number, group in enumerate(groups):
            parts = [read(int(i), columns) for i in group]
            if carry is not None:
                parts.insert(0, carry)
            rows = join(parts)
            n = rows.num_rows if arrow else len(next(iter(rows.values())))
            lists = None
            if whole_lists:
                lists = rows.column(self.list_column).to_numpy() if arrow else rows[self.list_column]
            order, bounds = self._units(n, lists)  # unit u: rows order[bounds[u]:bounds[u+1]]
            n_units = len(bounds) - 1
            if shuffle:
                units = np.r_[np.arange(carried), carried + np.random.default_rng(
                    [seed, epoch, number + 1]).permutation(n_units - carried)]
                sizes = np.diff(bounds)[units]
                order = np.concatenate([order[bounds[u]:bounds[u + 1]] for u in units]) if whole_lists \
                    else order[units]
                bounds = np.r_[0, np.cumsum(sizes)]
            full = n_units // batch_size * batch_size
            for start in range(0, full, batch_size):
                yield take(rows, order[bounds[start]:bounds[start + batch_size]])
            rest = order[bounds[full]:]
            if number + 1 == len(groups):
                if len(rest) and not drop_remainder:
                    yield take(rows, rest)
                return
            carry, carried = take(rows, rest), n_units - full

    @staticmethod
    def _units(n: int, lists: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(row order, unit bounds): a unit is one row, or (given the rows' list ids) one list,
        its rows together, in order of first appearance so that carried units stay at the front."""
        if lists is None:
            return np.arange(n), np.arange(n + 1)
        _, first, inverse = np.unique(lists, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))  # list number by first appearance
        order = np.argsort(rank[inverse], kind="stable")
        sizes = np.bincount(rank[inverse], minlength=len(first))
        return order, np.r_[0, np.cumsum(sizes)]


def arrow_columns(batch: pa.Table, columns: Mapping[str, dict]) -> dict[str, np.ndarray | bytes]:
    """A batch table as numpy values for `tf.data`: numbers as arrays; a string column as its
    UTF-8 bytes run together (`name`) and the `n + 1` offsets into them (`name#offsets`,
    int64; `n` = rows x width), which `batches.strings_from_arrow` cuts into a tf.string
    tensor in one op. Building a Python str per value instead cost about half of a two-tower
    epoch read from shards."""
    out = {}
    for name, info in columns.items():
        column = batch.column(name).combine_chunks()
        if info["width"] is not None:
            column = column.flatten()
        if info["dtype"] != "string":
            values = column.to_numpy(zero_copy_only=False)
            out[name] = values if info["width"] is None else values.reshape(-1, info["width"])
            continue
        if column.null_count:
            raise ValueError(f"string column {name!r} of the example shards holds nulls")
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset:column.offset + len(column) + 1]
        data = column.buffers()[2]
        start = int(offsets[0])
        out[name] = b"" if data is None else data.slice(start, int(offsets[-1]) - start).to_pybytes()
        out[f"{name}#offsets"] = offsets.astype(np.int64) - start
    return out


def head(arrays, columns: list[str], n: int) -> dict[str, np.ndarray]:
    """The first `n` rows of `columns` of an example table, in memory (dict of arrays) or on
    disk (`ExampleShards`: read from the first files only, not the whole columns)."""
    if not isinstance(arrays, ExampleShards):
        return {name: np.asarray(arrays[name])[:n] for name in columns}
    parts, have = [], 0
    for number in range(len(arrays.files)):
        if have >= n:
            break
        part = arrays.read_file(number, columns)
        parts.append(part)
        have += len(part[columns[0]]) if columns else 0
    if not parts:
        return {name: np.asarray(arrays[name])[:0] for name in columns}
    return {name: np.concatenate([p[name] for p in parts])[:n] for name in columns}


class FrameOnDisk:
    """A list frame written to Parquet and dropped from memory, read back whole or for some
    users. A streaming run (`data.stream_above_events`) keeps its two largest frames this way
    between the stages that build and read them: the two-tower validation lists (~20M rows at
    10^7 events) and the merged test candidate set (~21M rows)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows = pq.ParquetFile(self.path).metadata.num_rows

    def __len__(self) -> int:
        return self.rows

    def read(self, columns: list[str] | None = None, users=None, coded: bool = False):
        """The frame (its rows in written order), or only the rows of `users`. `coded`: the id
        columns as pandas categoricals (an int32 code a row; as strings they are ~0.3 GB a
        column at 20M rows), for what only compares ids, such as the list metrics."""
        filters = None if users is None else [("user_id", "in", list(users))]
        dictionary = None
        if coded:
            names = pq.ParquetFile(self.path).schema_arrow.names if columns is None else columns
            dictionary = [c for c in ("user_id", "item_id") if c in names]
        return pq.read_table(self.path, columns=columns, filters=filters, read_dictionary=dictionary).to_pandas()


def held(frame, columns: list[str] | None = None, users=None, coded: bool = False):
    """A frame or a `FrameOnDisk` as a frame: `users`' rows only, when given (the row order
    and the index kept; a frame read from disk is indexed from 0). `coded`: a frame read from
    disk has its id columns as categoricals (`FrameOnDisk.read`); a frame in memory is as is."""
    if isinstance(frame, FrameOnDisk):
        return frame.read(columns, users, coded)
    frame = frame if users is None else frame[frame["user_id"].isin(set(users))]
    return frame if columns is None else frame[columns]
