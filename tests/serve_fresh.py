"""Answer requests with a SavedModel in a process that imports only TensorFlow and numpy.

    python tests/serve_fresh.py EXPORT_DIR REQUESTS.npz OUTPUTS.npz
    python tests/serve_fresh.py --serve      # the same, for each "EXPORT_DIR<TAB>REQUESTS<TAB>OUTPUTS" line of stdin

Calls the `serving_default` signature once with every array of REQUESTS.npz as a named input
and writes every named output to OUTPUTS.npz. What TF Serving does with a request, minus the
server: the tests use it to check that an export answers outside the training process.

`--serve` is the tests' way to pay for importing TensorFlow once per session rather than once
per request (conftest.serve_fresh): like a model server, one process loads each export it is
asked about and answers; it never imports the project. Each stdin line gets one stdout line,
`ok` or `error <the traceback, as JSON>`.
"""

import json
import sys
import traceback

import numpy as np
import tensorflow as tf


def answer(export_dir: str, requests_path: str, outputs_path: str) -> None:
    assert "shopping_mtl" not in sys.modules and "tensorflow_recommenders" not in sys.modules
    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    with np.load(requests_path) as requests:
        outputs = signature(**{name: tf.constant(requests[name]) for name in requests.files})
    assert "shopping_mtl" not in sys.modules and "tensorflow_recommenders" not in sys.modules
    arrays = {name: value.numpy() for name, value in outputs.items()}
    np.savez(outputs_path, **{k: v.astype(bytes) if v.dtype == object else v for k, v in arrays.items()})


def serve() -> None:
    for line in sys.stdin:
        try:
            answer(*line.rstrip("\n").split("\t"))
            reply = "ok"
        except Exception:  # reported to the test; the next request is answered as usual
            reply = "error " + json.dumps(traceback.format_exc())
        print(reply, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        answer(*sys.argv[1:4])
