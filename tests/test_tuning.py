"""The Keras Tuner search: studies, the mapping from hyperparameters to config, a search tracked
through a real MLflow server, Hyperband's promoted trials, failures reported, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, run_cli
from mlflow_server import mlflow_db_template, mlflow_server  # noqa: F401  (fixtures)
from shopping_mtl import tuning
from shopping_mtl.errors import ConfigError

TINY = """\
name: tiny
model: ranking
objective: {metric: ranker/holdout_ndcg@10, direction: max}
oracle: ORACLE
budget: {max_trials: 3}
space:
  ranking.architecture: {values: [shared_bottom, mmoe, esmm], role: scientific}
  ranking.learning_rate: {min: 0.001, max: 0.01, sampling: log}
  ranking.bottom_width: {values: [16, 32]}
fixed:
  ranking.epochs: 1
  ranking.extra_days: 1
  ranking.compare_single_task: false
  ranking.tower_layers: [8]
"""
FLAGS = ("--no-final-run", "--set", "retrieval.epochs=1", "--set", "retrieval.early_stopping=val_loss",
         "--set", "evaluation.bootstrap_resamples=0")


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    from shopping_mtl.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("tune") / "data", 12_000, seed=2)


def study_file(folder, oracle="{type: random, seed: 0}", text=TINY):
    path = folder / "study.yaml"
    path.write_text(text.replace("ORACLE", oracle))
    return path


def test_study_errors_name_the_bad_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'spaces'"):
        tuning.load_study(study_file(tmp_path, text=TINY.replace("space:", "spaces:")))
    with pytest.raises(ConfigError, match="role is 'fixed'"):
        tuning.load_study(study_file(tmp_path, text=TINY.replace("{values: [16, 32]}", "{values: [16], role: fixed}")))
    with pytest.raises(ConfigError, match="oracle.type is 'grid'"):
        tuning.load_study(study_file(tmp_path, oracle="{type: grid}"))
    with pytest.raises(ConfigError, match="space.retrieval.temperature is not a ranking"):
        tuning.load_study(study_file(tmp_path, text=TINY.replace("ranking.bottom_width", "retrieval.temperature")))


def test_the_shipped_studies_load_and_build_valid_configs():
    from shopping_mtl.config import Config, _build, merge

    for name in ("ranker", "retrieval"):
        study = tuning.load_study(ROOT / "tuning" / f"{name}.yaml")
        assert study.scientific, name
        values = {p.name: (p.values[-1] if p.values else p.max) for p in study.space}
        _build(Config, merge(Config().to_dict(), tuning.build(study, values))).validate()


def test_build_maps_shorthands_and_keeps_fixed_values(tmp_path):
    study = tuning.load_study(study_file(tmp_path))
    overrides = tuning.build(study, {"ranking.architecture": "mmoe", "ranking.bottom_width": 32,
                                     "ranking.bottom_depth": 3, "tuner/epochs": 2})
    assert overrides["ranking"]["architecture"] == "mmoe"
    assert overrides["ranking"]["bottom_layers"] == [32, 16, 8]
    assert overrides["ranking"]["tower_layers"] == [8] and overrides["ranking"]["epochs"] == 1
    assert "tuner" not in overrides


def test_three_trial_search_tracked_in_a_real_mlflow_server(tiny_log, tmp_path, mlflow_server):
    env_before = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url
    try:
        # With the final run: the best config trained with every stage, its exports registered.
        done = run_cli("train.py", "--dataset", str(tiny_log), "--run-dir", str(tmp_path / "run"),
                       "--tune", str(study_file(tmp_path)), *FLAGS[1:], timeout=900)
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = env_before
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best: trial" in done.stdout and (tmp_path / "run" / "best_config.yaml").is_file()
    runs = mlflow_server.api("runs/search", {"experiment_ids": [
        mlflow_server.api("experiments/get-by-name?experiment_name=shopping_mtl")["experiment"]["experiment_id"]]})["runs"]
    tags = lambda run: {t["key"]: t["value"] for t in run["data"].get("tags", [])}  # noqa: E731
    parents = [r for r in runs if "mlflow.parentRunId" not in tags(r)]
    children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parents[0]["info"]["run_id"]]
    assert len(parents) == 1 and tags(parents[0])["search"] == "tiny"
    final = [r for r in children if "trial_id" not in tags(r)]
    children = [r for r in children if "trial_id" in tags(r)]
    assert len(children) == 3 and len(final) == 1
    assert final[0]["info"]["status"] == "FINISHED" and "the best config, every stage" in done.stdout
    for name in ("retrieval", "ranker", "recommend"):
        model = mlflow_server.api(f"registered-models/get?name=shopping-{name}")["registered_model"]
        assert [a["alias"] for a in model.get("aliases", [])] == ["champion"]
        assert model["latest_versions"][0]["run_id"] == final[0]["info"]["run_id"]
    for child in children:
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert 0 < metrics["ranker/holdout_ndcg_at_10"] <= 1
        assert params["ranking.architecture"] in ("shared_bottom", "mmoe", "esmm")
        assert "ranking.learning_rate" in params and child["info"]["status"] == "FINISHED"
    parent_metrics = {m["key"]: m["value"] for m in parents[0]["data"]["metrics"]}
    assert parent_metrics["search/trials"] == 3 and parent_metrics["search/failed_trials"] == 0
    assert parent_metrics["search/best/ranker/holdout_ndcg_at_10"] == max(
        next(m["value"] for m in c["data"]["metrics"] if m["key"] == "ranker/holdout_ndcg_at_10") for c in children)


def test_hyperband_continues_promoted_trials_from_their_weights(tiny_log, tmp_path):
    from shopping_mtl.config import load_config

    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "data": {"dataset": str(tiny_log)},
                                    "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
                                    "tracking": {"enabled": False}})
    result = tuning.run_search(config, study_file(tmp_path, "{type: hyperband, max_epochs: 3, factor: 3, seed: 0}"),
                               final_run=False)
    assert all(t["status"] == "COMPLETED" for t in result.trials)
    promoted = [t for t in result.trials if t["values"].get("tuner/trial_id")]
    assert promoted and all(t["values"]["tuner/epochs"] == 3 for t in promoted)
    for t in promoted:  # its round started from the saved weights of the trial it continues
        assert (tmp_path / "run" / "tuning" / "tiny" / f"trial_{t['values']['tuner/trial_id']}" / "ranker_weights.npz").is_file()
    import yaml

    best = yaml.safe_load((tmp_path / "run" / "best_config.yaml").read_text())
    assert best["ranking"]["epochs"] == result.best["values"]["tuner/epochs"]


def test_failed_trials_are_reported_never_a_silent_none(tiny_log, tmp_path):
    bad = TINY.replace("ranking.epochs: 1", "ranking.epochs: 1\n  ranking.batch_size: 0")
    done = run_cli("train.py", "--dataset", str(tiny_log), "--run-dir", str(tmp_path / "run"),
                   "--tune", str(study_file(tmp_path, text=bad)), *FLAGS, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no trial completed" in done.stderr and "ranking.batch_size must be positive" in done.stderr


KILL_AFTER_FIRST_TRIAL = 'trial 0: ranker/holdout_ndcg@10'


def test_a_search_killed_mid_trial_resumes_keeping_finished_trials(tiny_log, tmp_path):
    args = [sys.executable, "train.py", "--dataset", str(tiny_log), "--run-dir", str(tmp_path / "run"),
            "--tune", str(study_file(tmp_path)), *FLAGS]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        for line in process.stderr:  # wait until trial 0 has finished and trial 1 is under way
            if KILL_AFTER_FIRST_TRIAL in line or time.time() > deadline:
                break
        time.sleep(2.0)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    trial_0 = json.loads((tmp_path / "run" / "tuning" / "tiny" / "trial_0" / "trial.json").read_text())
    assert trial_0["status"] == "COMPLETED"
    done = run_cli("train.py", "--dataset", str(tiny_log), "--run-dir", str(tmp_path / "run"),
                   "--tune", str(study_file(tmp_path)), *FLAGS, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Reloading Tuner" in done.stdout + done.stderr
    table = done.stdout.split("\ntrial   status", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in table.splitlines()[1:] if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"] and all(r[1] == "COMPLETED" for r in rows)
    # The finished trial kept its result; it was not trained again.
    assert float(rows[0][2]) == pytest.approx(
        trial_0["metrics"]["metrics"]["ranker/holdout_ndcg@10"]["observations"][0]["value"][0], abs=5e-5)


def test_distributed_search_chief_and_two_workers_share_one_search(tiny_log, tmp_path):
    """Keras Tuner's own chief/worker mode: the chief serves the oracle, two workers train
    the trials, and every trial lands under the chief's MLflow run."""
    from mlflow import MlflowClient

    from mlflow_server import free_port

    port = free_port()
    run_dir = tmp_path / "run"
    args = [sys.executable, "train.py", "--dataset", str(tiny_log), "--run-dir", str(run_dir),
            "--tune", str(study_file(tmp_path, text=TINY.replace("max_trials: 3", "max_trials: 4"))), *FLAGS]
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(os.environ, PYTHONPATH=str(ROOT), KERASTUNER_TUNER_ID=tuner_id,
                   KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
        processes[tuner_id] = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True)
    try:
        outputs = {name: p.communicate(timeout=900) for name, p in processes.items()}
    finally:
        for p in processes.values():
            if p.poll() is None:
                p.kill()
    for name, p in processes.items():
        assert p.returncode == 0, (name, outputs[name][1][-3000:])
    assert "best: trial" in outputs["chief"][0]
    table = outputs["chief"][0].split("\ntrial   status", 1)[1].split("\n\n", 1)[0]
    assert len([line for line in table.splitlines()[1:] if line[:1].isdigit()]) == 4
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent_id = (run_dir / "tuning" / "tiny.parent_run_id").read_text().strip()
    children = client.search_runs([client.get_run(parent_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["tuner_id"] for c in children} <= {"tuner0", "tuner1"}
    assert len({c.data.tags["tuner_id"] for c in children}) == 2  # both workers took trials
