"""Runs that cannot mix: a run folder holds one configuration's run (another is refused, or
replaced with --overwrite), one run publishes one export version for all its models, a backup
resumes only its own configuration, a folder is marked complete only at its end, killed
exports' temporaries are cleaned, and killed runs do not stay RUNNING in MLflow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from conftest import run_cli
from shopping_mtl import distribute, pipeline, run_folder
from shopping_mtl.config import load_config
from shopping_mtl.errors import RunFolderConflict
from shopping_mtl.export import publishing
from shopping_mtl.tracking import default_tracking_uri, get_or_create_experiment
from tools import synthetic

QUICK = ("--stages", "data,baselines", "--set", "evaluation.bootstrap_resamples=0", "--set", "tracking.enabled=false")


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    return synthetic.generate(tmp_path_factory.mktemp("run_folders") / "data", 3_000, seed=1)


def config(spec: Path, run_dir: Path | str, **overrides):
    """The quick run (data and baselines) of `spec` into `run_dir`, untracked."""
    values = {"run_dir": str(run_dir), "data": {"dataset": str(spec)}, "stages": ["data", "baselines"],
              "evaluation": {"bootstrap_resamples": 0}, "tracking": {"enabled": False}}
    for key, value in overrides.items():
        group, _, name = key.partition("__")
        values[group] = {**values.get(group, {}), name: value} if name else value
    return load_config(overrides=values)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_another_seed_is_refused_and_overwrite_publishes_one_version_for_every_model(spec, tmp_path):
    folder = tmp_path / "run"
    first = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(folder), "--seed", "1", *QUICK)
    assert first.returncode == 0, first.stderr[-3000:]
    assert run_folder.is_complete(folder)
    # Exports left drifted apart by earlier runs (what reruns used to leave): retrieval/5, ranker/3.
    for version in ("retrieval/5", "ranker/3"):
        (folder / "export" / version).mkdir(parents=True)
    config_before, metrics_before = (folder / "config.yaml").read_bytes(), (folder / "metrics.json").read_bytes()

    refused = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(folder), "--seed", "2", *QUICK)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert (f"error: run folder {folder} holds a run of another configuration (its config.yaml differs in "
            "seed: 1 -> 2)") in refused.stderr
    assert "use a new --run-dir, or pass --overwrite" in refused.stderr and "Traceback" not in refused.stderr
    assert (folder / "config.yaml").read_bytes() == config_before
    assert (folder / "metrics.json").read_bytes() == metrics_before and run_folder.is_complete(folder)

    replaced = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(folder), "--seed", "2", "--overwrite",
                       "--set", "evaluation.bootstrap_resamples=0", "--set", "tracking.enabled=false",
                       "--set", "retrieval.epochs=1", "--set", "ranking.epochs=1",
                       "--set", "ranking.compare_single_task=false")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert "seed: 2\n" in (folder / "config.yaml").read_text()
    assert (folder / "metrics.json").read_bytes() != metrics_before
    # One number for the run's three models, past every model's highest; the old versions stay.
    for model in publishing.MODELS:
        assert (folder / "export" / model / "6" / "saved_model.pb").is_file(), model
    assert publishing.versions(folder / "export" / "retrieval") == [5, 6]
    assert publishing.versions(folder / "export" / "ranker") == [3, 6]
    assert json.loads((folder / "run_info.json").read_text())["export_version"] == 6
    assert json.loads((folder / "COMPLETE").read_text())["export_version"] == 6


def test_a_backup_of_another_configuration_is_refused_and_not_resumed(spec, tmp_path):
    folder = tmp_path / "run"
    pipeline.run(config(spec, folder, seed=1))
    # What a run killed during the ranker's fit leaves: its config.yaml, a backup, no figures.
    (folder / "metrics.json").unlink()
    (folder / "COMPLETE").unlink(missing_ok=True)
    checkpoint = folder / ".backup" / "ranker" / "keras" / "checkpoint"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text("weights of the seed-1 ranker")
    config_before = (folder / "config.yaml").read_bytes()
    with pytest.raises(RunFolderConflict) as refused:
        pipeline.run(config(spec, folder, seed=2, retrieval__epochs=3))
    message = str(refused.value)
    assert f"run folder {folder} holds a run of another configuration (its config.yaml differs in seed: 1 -> 2; " \
           "retrieval.epochs: " in message
    assert "interrupted run's backup (.backup/ranker), which resumes only under the configuration" in message
    assert "pass --overwrite" in message
    assert (folder / "config.yaml").read_bytes() == config_before and checkpoint.is_file()
    # Starting afresh: --overwrite removes the backup with the rest of the old run.
    pipeline.run(config(spec, folder, seed=2, retrieval__epochs=3), overwrite=True)
    assert not (folder / ".backup").exists() and run_folder.is_complete(folder)


def test_resuming_is_announced_only_when_a_backup_holds_something(spec, tmp_path, caplog):
    folder = tmp_path / "run"
    pipeline.run(config(spec, folder))
    (folder / ".backup" / "ranker").mkdir(parents=True)  # a fit's folder, empty: nothing to resume
    caplog.set_level(logging.INFO, logger="shopping_mtl.pipeline")
    pipeline.run(config(spec, folder))
    assert not [r for r in caplog.records if "resume" in r.getMessage()]
    # A fold's backup that holds a checkpoint is announced, under the same configuration.
    checkpoint = folder / "folds" / "2019-10-05" / ".backup" / "ranker" / "keras" / "checkpoint"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text("x")
    caplog.clear()
    pipeline.run(config(spec, folder))
    said = [r.getMessage() for r in caplog.records if "resume" in r.getMessage()]
    assert said and "folds/2019-10-05/.backup/ranker" in said[0], said


def test_the_same_configuration_reruns_and_a_folder_is_complete_only_at_its_end(spec, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    pipeline.run(config(spec, folder))
    metrics = (folder / "metrics.json").read_bytes()
    assert run_folder.is_complete(folder)
    # The same configuration, the folder spelled otherwise and tracked otherwise: taken again,
    # and the same figures.
    pipeline.run(config(spec, tmp_path / "." / "other" / ".." / "run", tracking__experiment="elsewhere"))
    assert (folder / "metrics.json").read_bytes() == metrics and run_folder.is_complete(folder)

    def broken_baselines(state):
        raise RuntimeError("a stage failed mid-way")

    monkeypatch.setitem(pipeline.STAGE_FUNCTIONS, "baselines", (broken_baselines, None))
    with pytest.raises(RuntimeError, match="mid-way"):
        pipeline.run(config(spec, folder))
    # Nothing left that passes for the failed run's results.
    assert not run_folder.is_complete(folder)
    assert not (folder / "metrics.json").exists() and not (folder / "run_info.json").exists()


def test_workers_keep_their_folders_when_the_chief_overwrites(spec, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    pipeline.prepare_state(config(spec, folder, seed=1))
    monkeypatch.setattr(distribute, "cluster", lambda: distribute.Cluster(workers=2, index=1))
    worker = pipeline.prepare_state(config(spec, folder, seed=1))
    assert worker.run_dir == folder / "workers" / "1" and (worker.run_dir / "config.yaml").is_file()
    pipeline.prepare_state(config(spec, folder, seed=1))  # the worker's rerun: its own folder, same config
    with pytest.raises(RunFolderConflict, match="workers/1 holds a run of another configuration"):
        pipeline.prepare_state(config(spec, folder, seed=2))
    monkeypatch.setattr(distribute, "cluster", lambda: distribute.Cluster(workers=2, index=0))
    pipeline.prepare_state(config(spec, folder, seed=2), overwrite=True)
    assert (worker.run_dir / "config.yaml").is_file()  # the worker claims its own folder


class Doubler(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.ones([1]))
        self.serve = tf.function(lambda request: {"y": 2.0 * request["x"] + self.w},
                                 input_signature=[{"x": tf.TensorSpec([None], tf.float32, name="x")}])


def test_temporaries_of_killed_exports_are_cleaned_at_the_next_publish(tmp_path):
    model_dir = tmp_path / "ranker"
    gone, host = dead_pid(), run_folder.HOST
    left = {
        f".3.tmp-{host}-{gone}-abcdef12": True,        # its writer ended: removed
        ".4.tmp-0123abcd": True,                       # no writer named, older than this process: removed
        f".5.deleting-{host}-{gone}-abcdef12": True,   # a prune killed mid-delete: removed
        f".6.tmp-{host}-{os.getpid()}-abcdef12": False,  # its writer runs: kept
        f".7.tmp-another-host-{gone}-abcdef12": False,   # another machine's: kept
    }
    for name in left:
        (model_dir / name / "variables").mkdir(parents=True)
        (model_dir / name / "variables" / "data").write_text("x")
    os.utime(model_dir / ".4.tmp-0123abcd", (1_000_000, 1_000_000))
    (tmp_path / f".models.config.tmp-{host}-{gone}-abcdef12").write_text("partial")
    assert publishing.publish(Doubler(), tmp_path, "ranker", {"x": np.array([1.0], np.float32)}) == model_dir / "1"
    hidden = {p.name for p in model_dir.iterdir() if p.name.startswith(".")}
    assert hidden == {name for name, removed in left.items() if not removed}
    assert not list(tmp_path.glob(".models.config.tmp-*"))
    # A run's own number (`next_run_version`), never taken twice.
    assert publishing.publish(Doubler(), tmp_path, "ranker", None, version=9) == model_dir / "9"
    with pytest.raises(FileExistsError):
        publishing.publish(Doubler(), tmp_path, "ranker", None, version=9)
    assert publishing.next_run_version(tmp_path) == 10


def test_a_killed_run_left_running_in_mlflow_is_marked_killed_by_the_next_run(spec, tmp_path):
    folder = tmp_path / "run"
    client = MlflowClient(default_tracking_uri(Path(pipeline.PROJECT_ROOT)))
    experiment = get_or_create_experiment("run_folders", pipeline.PROJECT_ROOT, client=client)
    host, gone = run_folder.HOST, dead_pid()
    tags = {"run_dir": str(folder.resolve()), "process.host": host}
    killed = client.create_run(experiment, tags={**tags, "process.pid": str(gone)}).info.run_id
    trial = client.create_run(experiment, tags={"mlflow.parentRunId": killed, "process.host": host,
                                                "process.pid": str(gone)}).info.run_id
    alive = client.create_run(experiment, tags={**tags, "process.pid": str(os.getppid())}).info.run_id
    other = client.create_run(experiment, tags={"run_dir": str(tmp_path / "elsewhere"), "process.host": host,
                                                "process.pid": str(gone)}).info.run_id
    state = pipeline.run(config(spec, folder, tracking__enabled=True, tracking__experiment="run_folders",
                                tracking__register=False))
    status = {run_id: client.get_run(run_id).info.status for run_id in (killed, trial, alive, other)}
    assert status == {killed: "KILLED", trial: "KILLED", alive: "RUNNING", other: "RUNNING"}
    assert "had gone without ending it" in client.get_run(killed).data.tags["ended_by"]
    new = client.get_run(state.info["mlflow"]["run_id"])
    assert new.info.status == "FINISHED" and new.data.tags["process.pid"] == str(os.getpid())
    assert new.data.tags["process.host"] == host
