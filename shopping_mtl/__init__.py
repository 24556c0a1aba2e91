"""shopping_mtl: multi-task shopping recommender (retrieval, ranking, tuning, serving).

The data flows one way: raw events -> canonical events -> features -> retrieval -> ranking ->
tuning -> tracking -> export. ``shopping_mtl.data`` reads and splits logs,
``shopping_mtl.features`` turns them into model inputs, ``shopping_mtl.evaluation`` scores lists.
"""

import os

# TFRS runs only on Keras 2 (tf-keras). This must be set before anything imports TensorFlow,
# so users never have to export it themselves.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
