"""Checking exports as TF Serving would load them, and REST examples from their warmup
requests (`python -m shopping_mtl check-export` and `rest-example`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from shopping_mtl.export.publishing import WARMUP_FILE

REPLAY = Path(__file__).with_name("replay_warmup.py")  # run as a file: the package is never imported


def version_dirs(path: Path, every: bool) -> list[Path]:
    """The version folders DIR names: itself, its newest (or every) version, or those of each
    model folder under it. Hidden folders (exports in progress) are never picked."""
    def numbered(folder: Path) -> list[Path]:
        found = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        return found if every else found[-1:]

    if (path / "saved_model.pb").is_file():
        return [path]
    if numbered(path):
        return numbered(path)
    out = []
    for model in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.extend(numbered(model))
    return out


def saved_model_cli() -> list[str]:
    beside = Path(sys.executable).with_name("saved_model_cli")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("saved_model_cli")
    return [found] if found else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def check(version: Path, timeout: int) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    done = subprocess.run([sys.executable, str(REPLAY), str(version)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return False, f"  could not load: {done.stderr.strip().splitlines()[-1:] or ['no output']}"
    report = json.loads(lines[-1])
    show = subprocess.run([*saved_model_cli(), "show", "--all", "--dir", str(version)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    problems = list(report["problems"])
    if show.returncode != 0:
        problems.append(f"saved_model_cli show --all failed: {show.stderr.strip()[-300:]}")
    elif "serving_default" not in show.stdout:
        problems.append("saved_model_cli shows no serving_default signature")
    text = [f"  inputs:  {', '.join(f'{k} {v[0]}{v[1]}' for k, v in report['inputs'].items())}",
            f"  outputs: {', '.join(report['outputs'])}",
            f"  warmup requests replayed: {report['warmup_records']}, stock ops only: "
            f"{'yes' if not report['unregistered_ops'] else 'no'}, saved_model_cli: "
            f"{'ok' if show.returncode == 0 else 'FAILED'}"]
    text += [f"  PROBLEM: {p}" for p in problems]
    return not problems, "\n".join(text)


def plain(value):
    """A numpy value as JSON: bytes as text, arrays as nested lists, float32 in its shortest form."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value] if value.ndim else plain(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.floating):
        return float(str(value))  # the shortest text that reads back as the same float32
    if isinstance(value, np.generic):
        return value.item()
    return value


def rest_example(version: Path, columns: int | None = None) -> int:
    """Print both REST forms of the first warmup request and the model's answers to them."""
    warmup = version / WARMUP_FILE
    if not warmup.is_file():
        print(f"error: {warmup} does not exist", file=sys.stderr)
        return 2
    record = prediction_log_pb2.PredictionLog.FromString(next(iter(tf.data.TFRecordDataset(str(warmup)))).numpy())
    request = record.predict_log.request
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    if columns:  # a shorter example: the first `columns` history events and candidates
        inputs = {k: v[:, :columns] if v.ndim == 2 else v for k, v in inputs.items()}
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    outputs = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    rows = len(next(iter(inputs.values())))
    instances = [{k: plain(np.asarray(v[i])) for k, v in sorted(inputs.items())} for i in range(rows)]
    predictions = [{k: plain(np.asarray(v[i])) for k, v in sorted(outputs.items())} for i in range(rows)]
    url = f"http://localhost:8501/v1/models/{request.model_spec.name}:predict"
    for title, body, answer in (
            ("row form", {"signature_name": "serving_default", "instances": instances}, {"predictions": predictions}),
            ("columnar form", {"signature_name": "serving_default", "inputs": {k: plain(v) for k, v in sorted(inputs.items())}},
             {"outputs": {k: plain(v) for k, v in sorted(outputs.items())}})):
        print(f"# {title}\ncurl -s -X POST {url} -d '{json.dumps(body)}'\n# answer:\n{json.dumps(answer)}\n")
    return 0
