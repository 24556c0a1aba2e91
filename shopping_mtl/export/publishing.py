"""Exports as a contract with TensorFlow Serving.

Layout: `<base>/<model>/<version>/{saved_model.pb, variables/, assets.extra/}` for the models
`retrieval`, `ranker` and `recommend`, and `<base>/models.config` for the server's
`--model_config_file`. Rules:

- a version is an integer that only grows; an existing version is never overwritten;
- a version is written into a hidden sibling folder (`.<n>.tmp-<id>`) and renamed into place
  when complete, so a polling server never sees a partial version, even if the process is
  killed mid-export (the server ignores the hidden folder; the next export ignores it too);
- the newest `keep` versions stay; older ones are renamed to a hidden folder, then deleted;
- `assets.extra/tf_serving_warmup_requests` holds `PredictionLog` records (one request per
  record) built from real validation rows, which the server replays before it serves, and
  `assets.extra/expected_outputs.npz` what the training process answered to each of them, so
  `python -m shopping_mtl check-export` can prove a fresh process answers the same.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

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


def save_atomic(module, signatures: Mapping, target: Path,
                extra: Callable[[Path], None] | None = None) -> Path:
    """Save a SavedModel (plus `extra(folder)` files) into a hidden sibling folder, then rename
    it to `target`. An interrupted save leaves only the hidden folder; `target` is never
    overwritten (FileExistsError)."""
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists; an export version is never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
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
        doomed = Path(model_dir) / f".{version}.deleting-{uuid.uuid4().hex[:8]}"
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
    tmp = base / f".models.config.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path


def publish(module, base: Path, name: str, request: Mapping[str, np.ndarray] | None = None,
            n_warmup: int = 10, keep: int = 5, server_base: str | None = None) -> Path:
    """Export `module.serve` as `<base>/<name>/<next version>` with warmup requests and the
    training process's answers to them, prune old versions, rewrite `models.config`."""
    model_dir = Path(base) / name
    requests = warmup_requests(request, n_warmup) if request is not None and n_warmup > 0 else []
    answers = [answer(module.serve, r) for r in requests]

    def extra(folder: Path) -> None:
        if requests:
            write_warmup(folder, name, requests, answers)

    signatures = {SIGNATURE: module.serve.get_concrete_function()}
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
