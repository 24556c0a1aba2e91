"""Exports as a contract with TensorFlow Serving.

Layout: `<base>/<model>/<version>/{saved_model.pb, variables/, assets.extra/}` for the models
`retrieval`, `ranker` and `recommend`, and `<base>/models.config` for the server's
`--model_config_file`. Rules:

- a version is an integer that only grows; an existing version is never overwritten;
- a version is written into a hidden sibling folder (`.<n>.tmp-<host>-<pid>-<id>`) and renamed
  into place when complete, so a polling server never sees a partial version, even if the
  process is killed mid-export (the server ignores the hidden folder); the next publish removes
  the hidden folders whose writer is gone (`clean_stale`: its pid no longer runs on this host,
  or, named without a pid, older than this process);
- one run publishes one version number for all its models (`next_run_version`: one more than
  the highest of any model), so `retrieval/6`, `ranker/6` and `recommend/6` belong together;
- the newest `keep` versions stay; older ones are renamed to a hidden folder, then deleted;
- `assets.extra/tf_serving_warmup_requests` holds `PredictionLog` records (one request per
  record) built from real validation rows, which the server replays before it serves, and
  `assets.extra/expected_outputs.npz` what the training process answered to each of them, so
  `python -m shopping_mtl check-export` can prove a fresh process answers the same.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from shopping_mtl.run_folder import HOST, PROCESS_START, process_gone

log = logging.getLogger(__name__)

MODELS = ("retrieval", "ranker", "recommend")
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
EXPECTED_FILE = "assets.extra/expected_outputs.npz"
SIGNATURE = "serving_default"


def versions(model_dir: Path) -> list[int]:
    """The integer versions present under `model_dir`, oldest first (hidden folders ignored)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> Path:
    """`<model_dir>/<n + 1>` where n is the highest version there (0 when none)."""
    return Path(model_dir) / str(max(versions(model_dir), default=0) + 1)


def next_run_version(base: Path, models: tuple[str, ...] = MODELS) -> int:
    """The version a run publishes every one of its models as: one more than the highest
    version of any of `models` under `base` (1 when none), so no model's number lags."""
    return max((max(versions(Path(base) / name), default=0) for name in models), default=0) + 1


def _writer_tag() -> str:
    """`<host>-<pid>-<random>`: names a hidden folder by its writer, for `clean_stale`."""
    return f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# A hidden folder or file an export writes or prunes through: `.<n>.tmp-...`,
# `.<n>.deleting-...`, `.models.config.tmp-...`; the writer in its name when it has one.
_HIDDEN = re.compile(r"\.(?:\d+|models\.config)\.(?:tmp|deleting)-(?P<rest>.+)")
_WRITER = re.compile(r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}")


def clean_stale(folder: Path) -> list[str]:
    """Remove the hidden temporaries in `folder` (a model folder or the export base) whose
    writer is gone: one named by a process of this host that no longer runs, or one named
    without a writer (older code) and last changed before this process started. A live
    writer's, another host's, and anything else are left alone. Returns the names removed."""
    folder = Path(folder)
    removed = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        hidden = _HIDDEN.fullmatch(entry.name)
        if hidden is None:
            continue
        writer = _WRITER.fullmatch(hidden["rest"])
        try:
            stale = (process_gone(writer["host"], writer["pid"]) if writer is not None
                     else entry.stat().st_mtime < PROCESS_START)
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        if not stale:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    if removed:
        log.info("export: removed %s in %s, left by exports that were killed", ", ".join(removed), folder)
    return removed


def save_atomic(module, signatures: Mapping, target: Path,
                extra: Callable[[Path], None] | None = None) -> Path:
    """Save a SavedModel (plus `extra(folder)` files) into a hidden sibling folder, then rename
    it to `target`. An interrupted save leaves only the hidden folder; `target` is never
    overwritten (FileExistsError)."""
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists; an export version is never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{_writer_tag()}"
    try:
        tf.saved_model.save(module, str(tmp), signatures=dict(signatures))
        if extra is not None:
            extra(tmp)
        if target.exists():
            raise FileExistsError(f"{target} appeared during the export; not overwriting it")
        try:
            os.rename(tmp, target)
        except OSError as err:  # another exporter took the number between the check and here
            raise FileExistsError(f"{target} appeared during the export: {err}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tensor_proto(value: np.ndarray):
    value = np.asarray(value)
    if value.dtype.kind in "USO":
        value = np.vectorize(lambda s: s if isinstance(s, bytes) else str(s).encode(), otypes=[object])(value) \
            if value.size else value.astype(object)
        return tf.make_tensor_proto(value, dtype=tf.string, shape=value.shape)
    return tf.make_tensor_proto(value)


def warmup_requests(request: Mapping[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    """Up to `n` single-row requests from a batch request (row i of every input)."""
    rows = len(next(iter(request.values())))
    return [{name: np.asarray(value[i:i + 1]) for name, value in request.items()} for i in range(min(n, rows))]


def read_warmup(folder: Path, n: int | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The first `n` (all when None) requests of a version's warmup file (`write_warmup`), each
    as (model name, {input: array}); [] when the version has no warmup file."""
    path = Path(folder) / WARMUP_FILE
    if not path.is_file():
        return []
    records = tf.data.TFRecordDataset(str(path))
    requests = []
    for raw in records if n is None else records.take(n):
        request = prediction_log_pb2.PredictionLog.FromString(raw.numpy()).predict_log.request
        requests.append((request.model_spec.name,
                         {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}))
    return requests


def write_warmup(folder: Path, model_name: str, requests: list[dict[str, np.ndarray]],
                 answers: list[dict[str, np.ndarray]]) -> None:
    """`assets.extra/tf_serving_warmup_requests` (TFRecord of PredictionLog) and the training
    process's answers to them, `assets.extra/expected_outputs.npz` (`<record>/<output>`)."""
    extra = Path(folder) / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(Path(folder) / WARMUP_FILE)) as writer:
        for request in requests:
            predict = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE))
            for name, value in request.items():
                predict.inputs[name].CopyFrom(_tensor_proto(value))
            log_record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict))
            writer.write(log_record.SerializeToString())
    expected = {}
    for i, answer in enumerate(answers):
        for name, value in answer.items():
            value = np.asarray(value)
            expected[f"{i}/{name}"] = value.astype(bytes) if value.dtype == object else value
    np.savez(Path(folder) / EXPECTED_FILE, **expected)


def answer(serve, request: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call a serving function on numpy inputs; outputs as numpy (strings as bytes)."""
    out = serve({name: tf.constant(value) for name, value in request.items()})
    return {name: value.numpy() for name, value in out.items()}


def prune(model_dir: Path, keep: int) -> list[int]:
    """Remove all but the newest `keep` versions (each renamed to a hidden folder first, so a
    server never loads a half-deleted one). Returns the versions removed."""
    removed = []
    for version in versions(model_dir)[:-keep] if keep > 0 else []:
        doomed = Path(model_dir) / f".{version}.deleting-{_writer_tag()}"
        os.rename(Path(model_dir) / str(version), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(version)
    return removed


def write_models_config(base: Path, server_base: str | None = None) -> Path:
    """`<base>/models.config` in TF Serving's text-proto format, listing every model folder
    under `base` (base_path `<server_base>/<model>`, by default the absolute local path;
    platform tensorflow); written atomically."""
    base = Path(base).resolve()
    config = model_server_config_pb2.ModelServerConfig()
    for name in MODELS:
        if versions(base / name):
            entry = config.model_config_list.config.add()
            where = f"{server_base.rstrip('/')}/{name}" if server_base else str(base / name)
            entry.name, entry.base_path, entry.model_platform = name, where, "tensorflow"
    path = base / "models.config"
    tmp = base / f".models.config.tmp-{_writer_tag()}"
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path


def publish(module, base: Path, name: str, request: Mapping[str, np.ndarray] | None = None,
            n_warmup: int = 10, keep: int = 5, server_base: str | None = None,
            version: int | None = None) -> Path:
    """Export `module.serve` as `<base>/<name>/<version>` with warmup requests and the
    training process's answers to them, prune old versions, rewrite `models.config`; first
    remove the temporaries of killed exports there (`clean_stale`).

    `version`: the number to publish as (a run's `next_run_version`, the same for all its
    models); None: the model's next version, the next free one if another exporter takes it.

    Raises:
        FileExistsError: `version` is given and `<base>/<name>/<version>` exists already.
    """
    model_dir = Path(base) / name
    clean_stale(model_dir)
    clean_stale(Path(base))
    requests = warmup_requests(request, n_warmup) if request is not None and n_warmup > 0 else []
    answers = [answer(module.serve, r) for r in requests]

    def extra(folder: Path) -> None:
        if requests:
            write_warmup(folder, name, requests, answers)

    signatures = {SIGNATURE: module.serve.get_concrete_function()}
    if version is not None:
        # The run's number for all its models: taking another would split the run's exports.
        target = save_atomic(module, signatures, model_dir / str(version), extra)
    else:
        for _ in range(3):  # another exporter may take the number first: take the next one
            target = next_version(model_dir)
            try:
                save_atomic(module, signatures, target, extra)
                break
            except FileExistsError:
                continue
        else:
            raise RuntimeError(f"could not claim a version under {model_dir}")
    removed = prune(model_dir, keep)
    if removed:
        log.info("export: removed old %s versions %s (keeping %d)", name, removed, keep)
    write_models_config(base, server_base)
    return target
