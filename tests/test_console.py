"""The console: TensorFlow's start-up chatter held back, fits labelled, identical rows explained."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from shopping_mtl import training
from shopping_mtl.config import Config
from shopping_mtl.pipeline import summary_table
from shopping_mtl.run_state import RunState


def _stderr_of(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_native_start_up_lines_are_held_back_and_the_rest_written_back():
    err = _stderr_of("""
        import os
        from shopping_mtl import console
        with console.quiet_native_stderr():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\\n")
            os.write(2, b"a real problem\\n")
        os.write(2, b"after the block\\n")
    """)
    assert err == "a real problem\nafter the block\n"


def test_tensorflow_warnings_hidden_by_default_and_shown_when_verbose():
    code = """
        from shopping_mtl import console
        console.configure_logging(console.{level})
        with console.quiet_native_stderr(enabled={held}):
            import tensorflow as tf
        tf.get_logger().warning("Gradients do not exist for variables ['x']")
        import logging
        logging.getLogger("shopping_mtl.training").info("ranker epoch 1 of 2")
    """
    normal = _stderr_of(code.format(level="NORMAL", held=True))
    assert "ranker epoch 1 of 2" in normal
    assert "Gradients do not exist" not in normal and "absl::InitializeLog" not in normal
    verbose = _stderr_of(code.format(level="VERBOSE", held=False))
    assert "Gradients do not exist" in verbose


def test_each_epoch_line_names_the_fit_and_counts_epochs(caplog):
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 2), "float32"), np.ones((8, 1), "float32"))).batch(4)
    stopper = training.EarlyStopping(patience=5, monitor="loss", mode="min")
    with caplog.at_level(logging.INFO, logger="shopping_mtl.training"):
        training.fit(model, data, epochs=2, stopper=stopper, label="ranker mmoe, fold 2019-06-18 (2 of 3)",
                     shown={"loss": "mean training loss"})
    lines = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert lines[0].startswith("ranker mmoe, fold 2019-06-18 (2 of 3) epoch 1 of 2: mean training loss ")
    assert lines[0].endswith("(best so far)") and lines[1].startswith("ranker mmoe, fold 2019-06-18 (2 of 3) epoch 2 of 2")


def test_fit_label_names_the_fold_only_when_there_are_folds(tmp_path):
    state = RunState(config=Config(), run_dir=tmp_path)
    assert state.fit_label("two-tower") == "two-tower"
    state.info["fold"] = {"name": "2019-06-18", "number": 2, "of": 3, "end": None}
    assert state.fit_label("two-tower") == "two-tower, fold 2019-06-18 (2 of 3)"


def test_summary_table_says_why_two_rows_are_the_same():
    metrics = {"retrieval_order/ndcg@10": 0.1, "retrieval/ndcg@10": 0.1, "pipeline/ndcg@10": 0.3}
    table = summary_table(metrics, ["pipeline", "retrieval_order", "retrieval"], columns=("ndcg@10",))
    assert "(retrieval_order and retrieval have the same figures: retrieval_order is the candidate set" in table
    metrics["retrieval/ndcg@10"] = 0.2
    assert "same figures" not in summary_table(metrics, ["pipeline", "retrieval_order", "retrieval"],
                                               columns=("ndcg@10",))
