"""Faults survived: a run killed during training resumes from its last checkpoint to the figures
the uninterrupted run has, and the same seed gives the same metrics.json."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from conftest import ROOT, run_cli, tiny_log
from shopping_mtl import training
from shopping_mtl.scale.batches import make_dataset, make_list_dataset
from mlflow_server import mlflow_db_template, mlflow_server  # noqa: F401  (fixtures)
from tools import synthetic

TRAIN_ARGS = ("--set", "evaluation.bootstrap_resamples=50",
              "--set", "ranking.compare_single_task=false", "--set", "retrieval.epochs=2",
              # Killed after its second epoch, the ranker resumes into its third and last.
              "--set", "ranking.epochs=3", "--set", "ranking.patience=3",
              "--stages", "data,baselines,retrieval,candidates,ranking,export",
              # Examples streamed from Parquet shards, as above a million events: the resume and
              # the byte-identical figures hold for the streamed input too.
              "--set", "data.stream_above_events=0", "--set", "data.shard_rows=1500")
KILL_HOOK = Path(__file__).parent / "kill_hook"  # its sitecustomize SIGKILLs at an exact epoch


def _order(dataset) -> list[list[int]]:
    return [batch["row"].numpy().tolist() for batch in dataset]


def test_epoch_order_depends_on_the_epoch_number_not_on_how_often_it_was_read():
    clock = training.EpochClock()
    rows = {"row": np.arange(40)}
    dataset = make_dataset(rows, 8, shuffle=True, seed=3, clock=clock)
    by_epoch = {}
    for epoch in (0, 1, 2):
        clock.on_epoch_begin(epoch)
        by_epoch[epoch] = _order(dataset)
    assert by_epoch[0] != by_epoch[1] != by_epoch[2]
    assert sorted(sum(by_epoch[1], [])) == list(range(40))  # a permutation, nothing lost
    # A fresh pipeline (a resumed process) asked for epoch 2 first draws epoch 2's batches.
    fresh_clock = training.EpochClock()
    fresh = make_dataset(rows, 8, shuffle=True, seed=3, clock=fresh_clock)
    fresh_clock.on_epoch_begin(2)
    assert _order(fresh) == by_epoch[2]
    assert fresh.cardinality().numpy() == 5


def test_list_batches_keep_lists_whole_and_every_epoch_has_the_same_number_of_batches():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 30, 50)
    list_ids = np.repeat(np.arange(50), sizes)
    rows = {"row": np.arange(len(list_ids)), "list_id": list_ids}
    clock = training.EpochClock()
    dataset = make_list_dataset(rows, list_ids, 64, seed=1, clock=clock)
    counts = []
    for epoch in range(4):
        clock.on_epoch_begin(epoch)
        batches = [(b["row"].numpy(), b["list_id"].numpy()) for b in dataset]
        counts.append(len(batches))
        seen = np.concatenate([r for r, _ in batches])
        assert sorted(seen.tolist()) == list(range(len(list_ids)))
        for _, ids in batches:  # a list is never split across batches
            for i in np.unique(ids):
                assert (ids == i).sum() == sizes[i]
    assert len(set(counts)) == 1 and counts[0] == dataset.cardinality().numpy()


def test_stateless_dropout_masks_follow_the_step_counter():
    layer = training.StatelessDropout(0.5, seed=7)
    x = tf.ones((4, 16))
    first = layer(x, training=True).numpy()
    second = layer(x, training=True).numpy()
    assert not np.array_equal(first, second)
    assert set(np.unique(first)) <= {0.0, 2.0}
    assert np.array_equal(layer(x, training=False).numpy(), x.numpy())
    restored = training.StatelessDropout(0.5, seed=7)
    restored(x, training=False)  # build
    restored.step.assign(1)  # as a checkpoint restore would
    assert np.array_equal(restored(x, training=True).numpy(), second)


class _Kill(Exception):
    pass


def _ranker_fit(backup_dir: Path, kill_after_epoch: int | None = None):
    """A ranker fit on the tiny log; `kill_after_epoch` raises at that epoch's end, before its
    backup is written (as a kill would leave it)."""
    from shopping_mtl.features import FeatureSet, FeatureSpec
    from shopping_mtl.ranking import model as model_lib
    from shopping_mtl.ranking.config import RankingConfig
    from shopping_mtl.ranking.cross import CROSS_FEATURES

    events, items = tiny_log()
    spec = FeatureSpec.from_dict({"user": {"user_id": {"type": "id"}},
                                  "item": {"item_id": {"type": "id"}, "category": {"type": "categorical"}}})
    features = FeatureSet.adapt(spec, events, items=items)
    rng = np.random.default_rng(1)
    n = 600
    arrays = {"user_id": np.array([f"u{i}" for i in rng.integers(0, 40, n)], dtype=object),
              "item_id": np.array([f"i{i}" for i in rng.integers(0, 60, n)], dtype=object),
              "two_tower_score": rng.random(n).astype(np.float32),
              "item_popularity": rng.random(n).astype(np.float32),
              "cross": rng.random((n, len(CROSS_FEATURES))).astype(np.float32),
              "list_id": np.repeat(np.arange(60), 10)}
    arrays["category"] = np.array([f"c{int(i[1:]) % 6}" for i in arrays["item_id"]], dtype=object)
    for task, rate in (("click", 0.4), ("save", 0.2), ("purchase", 0.1)):
        arrays[f"label_{task}"] = (rng.random(n) < rate).astype(np.float32)
    config = RankingConfig(epochs=4, patience=4, batch_size=64, dropout=0.2, activity_features=False)
    original_fit = training.fit

    class KillAt(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == kill_after_epoch:
                raise _Kill()

    def fit_with_kill(*args, callbacks=None, **kwargs):
        return original_fit(*args, callbacks=list(callbacks or []) + [KillAt()], **kwargs)

    training.fit = fit_with_kill
    try:
        model, fitted = model_lib.train_ranker(features, arrays, arrays, config, seed=5, backup_dir=backup_dir)
    finally:
        training.fit = original_fit
    return [w.copy() for w in model.scorer.get_weights()], fitted["history"]


def test_ranker_fit_resumes_to_the_same_weights_and_history(tmp_path):
    reference_weights, reference_history = _ranker_fit(tmp_path / "reference")
    assert not (tmp_path / "reference").exists()  # the backup goes once the fit ends
    with pytest.raises(_Kill):
        _ranker_fit(tmp_path / "killed", kill_after_epoch=2)
    assert (tmp_path / "killed" / "state" / "state-1.json").is_file()
    weights, history = _ranker_fit(tmp_path / "killed")
    assert history == reference_history and len(history["loss"]) == 4
    assert all(np.array_equal(a, b) for a, b in zip(weights, reference_weights))


def _train(spec: Path, run_dir: Path, env: dict | None = None, extra=(), log=None) -> subprocess.Popen:
    """`train.py` in the background; its output to pipes, or to the open file `log` (a run
    nobody reads from while it runs must not block on a full pipe)."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(KILL_HOOK), str(ROOT)] if "SHOPPING_MTL_KILL_AFTER" in env else [str(ROOT)])
    out = subprocess.PIPE if log is None else log
    return subprocess.Popen([sys.executable, "train.py", "--dataset", str(spec), "--run-dir", str(run_dir),
                             *TRAIN_ARGS, *extra], cwd=ROOT, env=env, stdout=out, stderr=out, text=True)


def _wait_for(path: Path, process: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 600
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"{what} never happened"
        time.sleep(0.05)


def test_runs_survive_a_lost_tracking_server_and_a_sigkill(tmp_path, mlflow_server):
    """Two faults on one small synthetic log, and one claim about both.

    1. The tracking server answers at the start and goes away during training: the run folder
       and its exports are complete on disk, the log and the exit code (3) say that recording
       the run failed.
    2. A run SIGKILLed (by itself, through tests/kill_hook, so at an exact point on any machine)
       right after the ranker has backed up its second epoch, then started again into the same
       folder: the rerun computes the earlier stages again (the same seed gives the
       same figures), resumes the ranker from its backup, and writes a metrics.json identical,
       byte for byte, to the first run's (tracking changes no figure).
    """
    spec = synthetic.generate(tmp_path / "data", 6_000, seed=1)
    first, killed = tmp_path / "first", tmp_path / "killed"
    # The run to be killed shares nothing with the first (its own folder, no tracking): it
    # runs meanwhile, so the two cores do both.
    with open(tmp_path / "killed.log", "w+") as killed_log:
        to_kill = _train(spec, killed, {"SHOPPING_MTL_KILL_AFTER": "ranker:2"},
                         extra=("--set", "tracking.enabled=false"), log=killed_log)
        try:
            process = _train(spec, first, {"MLFLOW_TRACKING_URI": mlflow_server.url,
                                           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
            _wait_for(first / ".backup", process, "training")  # training has begun: the run is open
            experiments = mlflow_server.api("experiments/search", {"max_results": 100})["experiments"]
            ids = [e["experiment_id"] for e in experiments if e["name"] == "shopping_mtl"]
            runs = mlflow_server.api("runs/search", {"experiment_ids": ids})["runs"]
            assert [r["info"]["status"] for r in runs] == ["RUNNING"]
            mlflow_server.stop()
            _, err = process.communicate(timeout=600)
            assert process.returncode == 3, err[-3000:]
            assert "MLflow tracking failed at the end of the run" in err and "complete on disk" in err
            for model in ("retrieval", "ranker", "recommend"):
                assert (first / "export" / model / "1" / "saved_model.pb").is_file()

            to_kill.wait(timeout=600)
        finally:
            if to_kill.poll() is None:
                to_kill.kill()
                to_kill.wait(timeout=30)
        killed_log.seek(0)
        assert to_kill.returncode == -signal.SIGKILL, killed_log.read()[-3000:]
    assert not (killed / "metrics.json").exists()
    left = sorted(str(p.relative_to(killed)) for p in (killed / ".backup").rglob("*"))
    assert any("ranker" in p for p in left), left
    rerun = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(killed), *TRAIN_ARGS,
                    "--set", "tracking.enabled=false", timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from the backup" in rerun.stderr and "ranker at epoch 3" in rerun.stderr
    # The console of a normal run: each fit's epochs labelled, none of TensorFlow's start-up lines.
    assert "ranker shared_bottom epoch 3 of 3: mean training loss" in rerun.stderr
    assert "absl::InitializeLog" not in rerun.stderr and "oneDNN" not in rerun.stderr
    assert (killed / "metrics.json").read_bytes() == (first / "metrics.json").read_bytes()
    assert not (killed / ".backup").exists() and not (killed / ".examples").exists()
    for name in ("candidates.parquet", "recommendations.parquet"):  # the lists behind the figures
        pd.testing.assert_frame_equal(pd.read_parquet(killed / name), pd.read_parquet(first / name))
