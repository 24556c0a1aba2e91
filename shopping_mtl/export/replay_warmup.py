"""Check one exported version as TF Serving would load it, in a process that imports only
TensorFlow (and tensorflow-serving-api's protos to read the warmup file).

    python shopping_mtl/export/replay_warmup.py VERSION_DIR

Run as a file, not as a module, so the project's package is never imported. Prints one JSON
object: the signature's inputs and outputs, the ops the graph uses that stock TensorFlow does
not register, and for each warmup record whether the answer equals the training process's
(`assets.extra/expected_outputs.npz`). Exit status 0 only when everything matches.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
EXPECTED_FILE = "assets.extra/expected_outputs.npz"
TOLERANCE = 1e-5


def unregistered_ops(version_dir: Path) -> list[str]:
    """Op types in the SavedModel's graph and function library that this TensorFlow lacks."""
    model = saved_model_pb2.SavedModel()
    model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    ops = set()
    for graph in model.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    functions = {f.signature.name for g in model.meta_graphs for f in g.graph_def.library.function}
    return sorted(op for op in ops if op not in functions and op_def_registry.get(op) is None)


def compare(got: np.ndarray, want: np.ndarray) -> str | None:
    """None when equal (strings exactly, numbers within TOLERANCE, NaN and inf in place)."""
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    if want.dtype.kind in "SO":
        return None if np.array_equal(got.astype(bytes), want.astype(bytes)) else "different strings"
    got, want = got.astype(np.float64), want.astype(np.float64)
    if np.allclose(got, want, rtol=0.0, atol=TOLERANCE, equal_nan=True):
        return None
    finite = np.isfinite(got) & np.isfinite(want)
    return f"max difference {np.max(np.abs(got[finite] - want[finite]), initial=0.0):.3g}"


def main(version_dir: Path) -> int:
    report = {"version_dir": str(version_dir)}
    assert "shopping_mtl" not in sys.modules
    loaded = tf.saved_model.load(str(version_dir))
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    report["inputs"] = {k: [str(v.dtype.name), v.shape.as_list()] for k, v in sorted(inputs.items())}
    report["outputs"] = sorted(signature.structured_outputs)
    report["unnamed_outputs"] = [n for n in report["outputs"] if re.fullmatch(r"output_\d+", n)]
    report["unregistered_ops"] = unregistered_ops(version_dir)
    problems = []
    warmup = version_dir / WARMUP_FILE
    records = []
    if warmup.is_file():
        for raw in tf.data.TFRecordDataset(str(warmup)):
            record = prediction_log_pb2.PredictionLog()
            record.ParseFromString(raw.numpy())
            records.append(record.predict_log.request)
    report["warmup_records"] = len(records)
    expected = np.load(version_dir / EXPECTED_FILE) if (version_dir / EXPECTED_FILE).is_file() else None
    for i, request in enumerate(records):
        feed = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
        try:
            out = signature(**feed)
        except Exception as err:  # noqa: BLE001 - reported, not raised: the report is the product
            problems.append(f"record {i}: {type(err).__name__}: {str(err)[:300]}")
            continue
        if expected is None:
            continue
        for name, value in out.items():
            key = f"{i}/{name}"
            if key not in expected.files:
                problems.append(f"record {i}: output {name!r} has no expected value")
                continue
            issue = compare(value.numpy(), expected[key])
            if issue:
                problems.append(f"record {i}: output {name!r}: {issue}")
    if not records:
        problems.append(f"no warmup requests in {WARMUP_FILE}")
    if expected is None:
        problems.append(f"no {EXPECTED_FILE} to compare with")
    if report["unnamed_outputs"]:
        problems.append(f"outputs without explicit names: {report['unnamed_outputs']}")
    if report["unregistered_ops"]:
        problems.append(f"ops stock TensorFlow does not have: {report['unregistered_ops']}")
    report["problems"] = problems
    print(json.dumps(report))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
