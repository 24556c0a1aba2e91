"""The export contract with TF Serving: version numbers, retention, atomic writes under SIGKILL,
models.config, warmup requests, `check-export`, and the stock-op scan."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from conftest import ROOT, run_cli
from shopping_mtl.export import publishing as export_lib


class Doubler(tf.Module):
    """A minimal servable: x -> {"y": 2 x + w}."""

    def __init__(self, size: int = 4):
        super().__init__()
        self.w = tf.Variable(tf.ones([size]))
        self.serve = tf.function(lambda request: {"y": tf.identity(2.0 * request["x"] + self.w[:1], name="y")},
                                 input_signature=[{"x": tf.TensorSpec([None], tf.float32, name="x")}])


def test_versions_only_grow_old_ones_are_pruned_and_none_is_overwritten(tmp_path):
    request = {"x": np.array([1.0, 2.0, 3.0], np.float32)}
    paths = [export_lib.publish(Doubler(), tmp_path, "retrieval", request, n_warmup=2, keep=2) for _ in range(4)]
    assert [p.name for p in paths] == ["1", "2", "3", "4"]
    assert export_lib.versions(tmp_path / "retrieval") == [3, 4]
    assert not [p for p in (tmp_path / "retrieval").iterdir() if p.name.startswith(".")]
    with pytest.raises(FileExistsError):
        export_lib.save_atomic(Doubler(), {"serving_default": Doubler().serve.get_concrete_function()},
                               tmp_path / "retrieval" / "4")
    # A leftover hidden folder (a killed export) is no version and does not stop the next one.
    (tmp_path / "retrieval" / ".5.tmp-dead").mkdir()
    assert export_lib.publish(Doubler(), tmp_path, "retrieval", request, keep=2).name == "5"
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((tmp_path / "models.config").read_text(), config)
    assert [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config] == [
        ("retrieval", str((tmp_path / "retrieval").resolve()), "tensorflow")]
    # The base as a server in a container sees it.
    export_lib.publish(Doubler(), tmp_path, "recommend", request, server_base="/models/")
    text_format.Parse((tmp_path / "models.config").read_text(), config := model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path) for c in config.model_config_list.config] == [
        ("retrieval", "/models/retrieval"), ("recommend", "/models/recommend")]


def test_warmup_records_parse_and_replay(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    path = export_lib.publish(Doubler(), tmp_path, "ranker", {"x": np.array([1.0, 5.0], np.float32)})
    records = list(tf.data.TFRecordDataset(str(path / export_lib.WARMUP_FILE)))
    assert len(records) == 2
    first = prediction_log_pb2.PredictionLog.FromString(records[0].numpy()).predict_log.request
    assert first.model_spec.name == "ranker" and first.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(first.inputs["x"]).tolist() == [1.0]
    with np.load(path / export_lib.EXPECTED_FILE) as expected:
        assert expected["1/y"].tolist() == [11.0]  # 2 * 5 + 1


KILLED_EXPORT = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, {root!r})
    from shopping_mtl.export import publishing as export_lib

    class Big(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.uniform([64_000_000]))  # 256 MB: saving takes a while
            self.serve = tf.function(lambda request: {{"y": request["x"] + self.w[0]}},
                                     input_signature=[{{"x": tf.TensorSpec([None], tf.float32, name="x")}}])

    module = Big()
    print("saving", flush=True)
    while True:
        export_lib.publish(module, {base!r}, "recommend", None, keep=100)
""")


def test_sigkill_during_export_leaves_no_visible_partial_version(tmp_path):
    base = tmp_path / "export"
    script = KILLED_EXPORT.format(root=str(ROOT), base=str(base))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        assert process.stdout.readline().strip() == b"saving"
        deadline = time.time() + 120
        model_dir = base / "recommend"
        # Kill while a version is being written: a hidden folder exists with files in it.
        while time.time() < deadline:
            hidden = [p for p in model_dir.glob(".*") if p.is_dir() and any(p.rglob("*"))] if model_dir.is_dir() else []
            if hidden and export_lib.versions(model_dir):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the export never got under way")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert [p for p in model_dir.glob(".*") if p.is_dir()], "killed mid-export: the partial folder is hidden"
    for version in export_lib.versions(model_dir):  # every visible version is complete and loads
        folder = model_dir / str(version)
        assert (folder / "saved_model.pb").is_file() and (folder / "variables" / "variables.index").is_file()
        served = tf.saved_model.load(str(folder)).signatures["serving_default"]
        assert served(x=tf.constant([1.0]))["y"].shape == (1,)


def test_check_export_passes_a_good_export_and_fails_a_tampered_one(tmp_path):
    request = {"x": np.array([1.0, 2.0], np.float32)}
    export_lib.publish(Doubler(), tmp_path / "base", "ranker", request)
    done = run_cli("-m", "shopping_mtl", "check-export", str(tmp_path / "base"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout and "warmup requests replayed: 2" in done.stdout and "saved_model_cli: ok" in done.stdout
    # The training process "answered" something else: check-export must say so and fail.
    tampered = tmp_path / "base" / "ranker" / "1" / export_lib.EXPECTED_FILE
    with np.load(tampered) as expected:
        values = {k: expected[k] for k in expected.files}
    values["1/y"] = values["1/y"] + 0.5
    np.savez(tampered, **values)
    done = run_cli("-m", "shopping_mtl", "check-export", str(tmp_path / "base" / "ranker"))
    assert done.returncode == 1 and "record 1: output 'y': max difference 0.5" in done.stdout
    missing = run_cli("-m", "shopping_mtl", "check-export", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


def test_op_scan_flags_an_op_stock_tensorflow_lacks(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    from shopping_mtl.export.replay_warmup import unregistered_ops

    path = export_lib.publish(Doubler(), tmp_path, "retrieval", None)
    assert unregistered_ops(path) == []
    copy = tmp_path / "custom"
    shutil.copytree(path, copy)
    model = saved_model_pb2.SavedModel.FromString((copy / "saved_model.pb").read_bytes())
    model.meta_graphs[0].graph_def.library.function[0].node_def.add(name="scann", op="ScannSearchBatched")
    (copy / "saved_model.pb").write_bytes(model.SerializeToString())
    assert unregistered_ops(copy) == ["ScannSearchBatched"]
