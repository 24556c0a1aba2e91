"""REST request bodies from an export's first warmup request, with the model's answers
(`python -m shopping_mtl rest-example`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from shopping_mtl.export.publishing import WARMUP_FILE, read_warmup


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
    found = read_warmup(version, 1)
    if not found:
        print(f"error: {version / WARMUP_FILE} does not exist", file=sys.stderr)
        return 2
    [(model_name, inputs)] = found
    if columns:  # a shorter example: the first `columns` history events and candidates
        inputs = {k: v[:, :columns] if v.ndim == 2 else v for k, v in inputs.items()}
    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    outputs = {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    rows = len(next(iter(inputs.values())))
    instances = [{k: plain(np.asarray(v[i])) for k, v in sorted(inputs.items())} for i in range(rows)]
    predictions = [{k: plain(np.asarray(v[i])) for k, v in sorted(outputs.items())} for i in range(rows)]
    url = f"http://localhost:8501/v1/models/{model_name}:predict"
    for title, body, answer in (
            ("row form", {"signature_name": "serving_default", "instances": instances}, {"predictions": predictions}),
            ("columnar form", {"signature_name": "serving_default", "inputs": {k: plain(v) for k, v in sorted(inputs.items())}},
             {"outputs": {k: plain(v) for k, v in sorted(outputs.items())}})):
        print(f"# {title}\ncurl -s -X POST {url} -d '{json.dumps(body)}'\n# answer:\n{json.dumps(answer)}\n")
    return 0
