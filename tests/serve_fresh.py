"""Answer requests with a SavedModel in a process that imports only TensorFlow and numpy.

    python tests/serve_fresh.py EXPORT_DIR REQUESTS.npz OUTPUTS.npz

Calls the `serving_default` signature once with every array of REQUESTS.npz as a named input
and writes every named output to OUTPUTS.npz. What TF Serving does with a request, minus the
server: the tests use it to check that an export answers outside the training process.
"""

import sys

import numpy as np
import tensorflow as tf

if __name__ == "__main__":
    export_dir, requests_path, outputs_path = sys.argv[1:4]
    assert "shopping_mtl" not in sys.modules and "tensorflow_recommenders" not in sys.modules
    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    with np.load(requests_path) as requests:
        outputs = signature(**{name: tf.constant(requests[name]) for name in requests.files})
    assert "tensorflow_recommenders" not in sys.modules
    arrays = {name: value.numpy() for name, value in outputs.items()}
    np.savez(outputs_path, **{k: v.astype(bytes) if v.dtype == object else v for k, v in arrays.items()})
