"""Training on more than one machine: two workers on this machine, configured by TF_CONFIG, run
the same train.py command under MultiWorkerMirroredStrategy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from shopping_mtl import distribute
from tools import synthetic
from shopping_mtl.errors import ConfigError


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_cluster_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.cluster() == distribute.Cluster(1, 0)
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2, 3], 2))
    place = distribute.cluster()
    assert place.workers == 3 and place.index == 2 and place.multi_worker and not place.is_chief
    # A separate chief is worker 0; the workers follow it.
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert distribute.cluster() == distribute.Cluster(2, 1)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not a cluster description"):
        distribute.cluster()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ConfigError, match="task type 'ps'"):
        distribute.cluster()


def test_two_workers_train_in_step(tmp_path):
    spec = synthetic.generate(tmp_path / "data", 5_000, seed=2)
    run_dir = tmp_path / "run"
    ports = _free_ports(2)
    args = [sys.executable, "train.py", "--dataset", str(spec), "--run-dir", str(run_dir),
            "--set", "tracking.enabled=false", "--set", "evaluation.bootstrap_resamples=20",
            "--set", "ranking.compare_single_task=false", "--set", "retrieval.epochs=2",
            "--set", "ranking.epochs=2", "--stages", "data,retrieval,candidates,ranking,export"]
    workers = [subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CONFIG=_tf_config(ports, i)))
               for i in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert "training on 2 workers (TF_CONFIG), this is worker 0" in outputs[0][1]
    # The chief writes the run folder; the other worker its own, inside it.
    chief, other = run_dir / "metrics.json", run_dir / "workers" / "1" / "metrics.json"
    assert chief.is_file() and other.is_file()
    assert (run_dir / "export" / "recommend" / "1" / "saved_model.pb").is_file()
    # Synchronous data-parallel training: the same variables on both workers, so the same lists
    # and figures, and sane ones (a summed-over-workers AUC would pass 1).
    metrics = json.loads(chief.read_text())
    assert metrics == json.loads(other.read_text())
    assert 0.5 < metrics["ranker/holdout_mean_auc"] <= 1.0
    assert metrics["retrieval/epochs"] == 2 and metrics["ranker/epochs"] == 2
    assert metrics["pipeline/recall@100"] > 0
