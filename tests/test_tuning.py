"""The Keras Tuner search: studies, the mapping from hyperparameters to config, a distributed
search (a chief and two workers) tracked through a real MLflow server (trials as child runs, the
final run's registered exports and the champion alias), Hyperband's promoted trials, failures
reported, resume after SIGKILL.

Cost: every search starts TensorFlow and prepares its data, so the module runs few, small
searches: one `mlflow server` for the module (each search logs to its own experiment); one
distributed search with the module's only final run, read by several tests and started in the
background as the module begins, so the other searches run while it trains; two-tower studies
where the model does not matter (failures, resume: no retrieval stage to prepare).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from conftest import ROOT
from mlflow_server import MlflowServer, free_port, mlflow_db_template  # noqa: F401  (fixture)
from shopping_mtl import tuning
from shopping_mtl.config import Config
from shopping_mtl.errors import ConfigError
from shopping_mtl.tuning.study import search_space
from shopping_mtl.tuning.tuner import ShoppingTuner

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
# A two-tower study: its search prepares only the data stage (a ranker study also runs the
# retrieval stage first), so tests about the search machinery rather than the ranker use it.
TINY_RETRIEVAL = """\
name: tiny_retrieval
model: retrieval
objective: {metric: retrieval/validation/recall@100, direction: max}
oracle: {type: random, seed: 0}
budget: {max_trials: 2}
space:
  retrieval.embedding_dim: {values: [8, 16]}
  retrieval.learning_rate: {min: 0.002, max: 0.02, sampling: log}
fixed:
  retrieval.epochs: 1
  retrieval.early_stopping: val_loss
"""
FLAGS = ("--no-final-run", "--set", "retrieval.epochs=1", "--set", "retrieval.early_stopping=val_loss",
         "--set", "evaluation.bootstrap_resamples=0")
ARCHITECTURES = ("shared_bottom", "mmoe", "esmm")


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    from tools import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("tune") / "data", 6_000, seed=2)


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_db_template):
    """One real `mlflow server` for the module; each search logs to its own experiment."""
    with pytest.MonkeyPatch.context() as patch:
        # MLflow's job runner (eight more processes, seconds of start-up) serves nothing here.
        patch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        running = MlflowServer(tmp_path_factory.mktemp("tuning_mlflow"), seed_db=mlflow_db_template).start()
    try:
        yield running
    finally:
        running.stop()


def study_file(folder, oracle="{type: random, seed: 0}", text=TINY):
    path = folder / "study.yaml"
    path.write_text(text.replace("ORACLE", oracle))
    return path


def train(*args: str, tracking_uri: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in a fresh interpreter (tracking to `tracking_uri` if given)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def table_rows(stdout: str) -> list[list[str]]:
    """The rows (trial, status, objective, settings...) of the trial table a search prints."""
    table = stdout.split("\ntrial   status", 1)[1].split("\n\n", 1)[0]
    return [line.split() for line in table.splitlines()[1:] if line[:1].isdigit()]


def tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics(run: dict) -> dict:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def params(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def experiment_runs(server: MlflowServer, experiment: str) -> list[dict]:
    """Every run of an experiment, read over the server's REST API."""
    found = server.api(f"experiments/get-by-name?experiment_name={experiment}")["experiment"]["experiment_id"]
    return server.api("runs/search", {"experiment_ids": [found], "max_results": 1000}).get("runs", [])


def search_runs(server: MlflowServer, experiment: str) -> SimpleNamespace:
    """A search's runs: the one parent, its trial child runs, its other child runs (the final run)."""
    runs = experiment_runs(server, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in tags(r)]
    assert len(parents) == 1, [tags(r).get("mlflow.runName") for r in parents]
    children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parents[0]["info"]["run_id"]]
    assert len(children) == len(runs) - 1  # nothing outside the search's tree
    return SimpleNamespace(parent=parents[0], trials=[r for r in children if "trial_id" in tags(r)],
                           others=[r for r in children if "trial_id" not in tags(r)])


# --------------------------------------------------------------------------------------------
# Studies and the mapping from hyperparameters to config (no search)


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
    from shopping_mtl.config import Config, config_from_dict, merge

    for name in ("ranker", "retrieval"):
        study = tuning.load_study(ROOT / "tuning" / f"{name}.yaml")
        assert study.scientific, name
        values = {p.name: (p.values[-1] if p.values else p.max) for p in study.space}
        config_from_dict(merge(Config().to_dict(), tuning.build(study, values))).validate()
        # As Keras Tuner samples them (its Choice once turned true/false into 1/0, refused).
        space = search_space(study).space
        for seed in range(4):
            sampled = {hp.name: hp.random_sample(seed + i) for i, hp in enumerate(space)}
            assert all(type(sampled[p.name]) is bool for p in study.space if p.values == (False, True))
            config_from_dict(merge(Config().to_dict(), tuning.build(study, sampled))).validate()


@pytest.mark.parametrize("oracle", ["{type: random, seed: 0}", "{type: bayesian, seed: 0}",
                                    "{type: hyperband, max_epochs: 9, factor: 3, seed: 0}"])
def test_max_trials_caps_every_oracle(tmp_path, oracle):
    """Was: Hyperband ignored `--max-trials` (ten trials for a budget of three)."""
    study = tuning.load_study(study_file(tmp_path, oracle=oracle))
    made = tuning.make_oracle(study, max_trials=3)
    made._set_project_dir(str(tmp_path / "oracle"), "study")  # what a tuner does first; no public call
    made.hyperparameters = search_space(study)
    statuses = []
    for number in range(4):
        trial = made.create_trial(f"tuner{number}")
        statuses.append(trial.status)
        if trial.status == "RUNNING":
            made.update_trial(trial.trial_id, {study.objective: 0.1 * number})
            made.end_trial(trial)
    assert statuses == ["RUNNING"] * 3 + ["STOPPED"]


def test_build_maps_shorthands_and_keeps_fixed_values(tmp_path):
    study = tuning.load_study(study_file(tmp_path))
    overrides = tuning.build(study, {"ranking.architecture": "mmoe", "ranking.bottom_width": 32,
                                     "ranking.bottom_depth": 3, "tuner/epochs": 2})
    assert overrides["ranking"]["architecture"] == "mmoe"
    assert overrides["ranking"]["bottom_layers"] == [32, 16, 8]
    assert overrides["ranking"]["tower_layers"] == [8] and overrides["ranking"]["epochs"] == 1
    assert "tuner" not in overrides


def test_the_tuner_checks_each_trials_settings_against_the_run_config(tmp_path):
    """`ShoppingTuner` alone (no search, no training): the oracle it builds and the validated
    config of a trial, the study's fixed values included; rejected settings name the key."""
    from shopping_mtl.config import Config
    from shopping_mtl.errors import ShoppingMtlError
    from shopping_mtl.run_state import RunState

    study = tuning.load_study(study_file(tmp_path))
    tuner = tuning.ShoppingTuner(study, RunState(config=Config(), run_dir=tmp_path), tmp_path / "tuning",
                                 max_trials=2)
    assert tuner.oracle.max_trials == 2 and (tmp_path / "tuning" / "tiny").is_dir()
    config = tuner.trial_config({"ranking.architecture": "mmoe", "ranking.bottom_width": 32, "tuner/epochs": 2})
    assert config.ranking.architecture == "mmoe" and list(config.ranking.bottom_layers) == [32, 16]
    assert config.ranking.epochs == 1 and list(config.ranking.tower_layers) == [8]  # fixed values
    with pytest.raises(ShoppingMtlError, match="trial settings rejected: ranking.batch_size must be positive"):
        tuner.trial_config({"ranking.batch_size": 0})


# --------------------------------------------------------------------------------------------
# Hyperband, in this process (a search without Keras Tuner's chief), tracked through the server


def test_hyperband_continues_promoted_trials_from_their_weights(tiny_log, tmp_path, server, monkeypatch):
    from shopping_mtl.config import load_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "data": {"dataset": str(tiny_log)},
                                    "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
                                    "evaluation": {"bootstrap_resamples": 0},
                                    "tracking": {"experiment": "hyperband"}})
    # max_epochs 2, factor 2: a bracket of two 1-epoch trials whose better one is promoted to
    # 2 epochs, then a bracket of fresh 2-epoch trials, which finds no setting left in this
    # two-point space: the search ends after the three trials of the first bracket.
    study = TINY.replace("  ranking.architecture: {values: [shared_bottom, mmoe, esmm], role: scientific}\n", "")
    study = study.replace("  ranking.learning_rate: {min: 0.001, max: 0.01, sampling: log}\n", "")
    result = tuning.run_search(config, study_file(tmp_path, "{type: hyperband, max_epochs: 2, factor: 2, seed: 0}",
                                                  text=study), final_run=False)
    assert [t["values"]["tuner/epochs"] for t in result.trials] == [1, 1, 2]
    assert result.final_metrics is None and not (tmp_path / "run" / "best").exists()
    assert all(t["status"] == "COMPLETED" for t in result.trials)
    promoted = [t for t in result.trials if t["values"].get("tuner/trial_id")]
    assert promoted and all(t["values"]["tuner/epochs"] == 2 and t["values"]["tuner/initial_epoch"] == 1
                            for t in promoted)
    for t in promoted:  # its round started from the saved weights of the trial it continues
        assert (tmp_path / "run" / "tuning" / "tiny" / f"trial_{t['values']['tuner/trial_id']}" / "ranker_weights.npz").is_file()
    best = yaml.safe_load((tmp_path / "run" / "best_config.yaml").read_text())
    assert best["ranking"]["epochs"] == result.best["values"]["tuner/epochs"]
    # Every trial is a child run of the search's run, with its objective and hyperparameters
    # (Hyperband's own included); no other child run (no final run).
    runs = search_runs(server, "hyperband")
    assert runs.parent["info"]["status"] == "FINISHED" and not runs.others
    assert sorted(tags(c)["trial_id"] for c in runs.trials) == sorted(t["trial_id"] for t in result.trials)
    for child in runs.trials:
        trial = next(t for t in result.trials if t["trial_id"] == tags(child)["trial_id"])
        assert child["info"]["status"] == "FINISHED"
        assert metrics(child)["ranker/holdout_ndcg_at_10"] == pytest.approx(trial["objective"], rel=1e-6)
        assert params(child)["ranking.bottom_width"] == str(trial["values"]["ranking.bottom_width"])
        assert params(child)["tuner.epochs"] == str(trial["values"]["tuner/epochs"])
        # Named by its settings and objective; its whole config; the full runs' epoch names.
        assert tags(child)["mlflow.runName"] == (f"bottom_width={trial['values']['ranking.bottom_width']} "
                                                 f"({trial['values']['tuner/epochs']} ep) -> {trial['objective']:.4f}")
        assert params(child)["ranking.architecture"] == "shared_bottom" and "ranking.learning_rate" in params(child)
        assert "ranker/epoch/loss" in metrics(child)
    # The search's run logs its study and the best config; the winner is marked and linked.
    assert params(runs.parent)["study.name"] == "tiny" and params(runs.parent)["oracle.type"] == "hyperband"
    assert params(runs.parent)["space.ranking.bottom_width"] == "[16, 32] nuisance"
    assert "ranking.architecture" not in params(runs.parent)  # no base value a trial overrode
    assert params(runs.parent)["best.ranking.bottom_layers"].startswith("[")
    winners = [c for c in runs.trials if tags(c).get("best_trial") == "true"]
    assert len(winners) == 1 and tags(winners[0])["trial_id"] == result.best["trial_id"]
    assert tags(runs.parent)["best_trial_run_id"] == winners[0]["info"]["run_id"]


# --------------------------------------------------------------------------------------------
# Failures and resume


def test_failed_trials_are_reported_never_a_silent_none(tiny_log, tmp_path, server):
    # A figure that no trial produces (the study's settings are checked before the search, so
    # only what a trial finds out can fail it).
    bad = TINY_RETRIEVAL.replace("max_trials: 2", "max_trials: 3").replace(
        "retrieval/validation/recall@100", "retrieval/validation/recall@7")
    done = train("--dataset", str(tiny_log), "--run-dir", str(tmp_path / "run"),
                 "--tune", str(study_file(tmp_path, text=bad)), *FLAGS, "--set", "tracking.experiment=failing",
                 tracking_uri=server.url)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no trial completed" in done.stderr and "recall@7' is not a retrieval validation figure" in done.stderr
    # In MLflow too: the search failed, every trial is a failed child run carrying its error,
    # and there is no best value at all (never a best score of None).
    runs = search_runs(server, "failing")
    assert runs.parent["info"]["status"] == "FAILED" and not runs.others
    summary = metrics(runs.parent)
    assert summary["search/trials"] == 3 and summary["search/failed_trials"] == 3
    assert not [k for k in summary if k.startswith("search/best/")]
    assert len(runs.trials) == 3
    for child in runs.trials:
        assert child["info"]["status"] == "FAILED"
        assert "recall@7' is not a retrieval validation figure" in tags(child)["error"]


def test_a_search_killed_mid_trial_resumes_keeping_finished_trials(tiny_log, tmp_path):
    study = study_file(tmp_path, text=TINY_RETRIEVAL)
    args = [sys.executable, "train.py", "--dataset", str(tiny_log), "--run-dir", str(tmp_path / "run"),
            "--tune", str(study), *FLAGS]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        for line in process.stderr:  # trial 0 has finished and trial 1 has started
            if "trial 1: started" in line or time.time() > deadline:
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    trials = tmp_path / "run" / "tuning" / "tiny_retrieval"
    trial_0 = json.loads((trials / "trial_0" / "trial.json").read_text())
    assert trial_0["status"] == "COMPLETED"
    # Killed mid-trial: trial 1 had started and not finished.
    assert json.loads((trials / "trial_1" / "trial.json").read_text())["status"] == "RUNNING"
    done = train("--dataset", str(tiny_log), "--run-dir", str(tmp_path / "run"), "--tune", str(study), *FLAGS)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Reloading Tuner" in done.stdout + done.stderr
    rows = table_rows(done.stdout)
    assert [r[0] for r in rows] == ["0", "1"] and all(r[1] == "COMPLETED" for r in rows)
    # The finished trial kept its result and was not trained again; the interrupted one was.
    assert float(rows[0][2]) == pytest.approx(
        trial_0["metrics"]["metrics"]["retrieval/validation/recall@100"]["observations"][0]["value"][0], abs=5e-5)
    assert "trial 0: started" not in done.stderr and "trial 0: retrieval" not in done.stderr
    assert "trial 1: started" in done.stderr and "trial 1: retrieval/validation/recall@100 = " in done.stderr


# --------------------------------------------------------------------------------------------
# One three-trial ranker search in Keras Tuner's distributed mode (a chief serving the oracle,
# two workers training the trials), tracked through the real server, with the module's only
# final run (the chief's, after the trials). Before it, the registry already holds a champion
# ranker the final run cannot beat (objective 1.0) and a champion recommend model it does beat
# (0.0); there is no retrieval model yet. It is the module's longest search, so it starts in the
# background as the module begins (when one of its tests is selected) and the other searches
# run meanwhile; its tests come last.

TUNERS = ("chief", "tuner0", "tuner1")


@pytest.fixture(scope="module")
def search_started(tiny_log, server, tmp_path_factory):
    """Seeds the registry, starts the chief and the two workers; kills what still runs at the end."""
    folder = tmp_path_factory.mktemp("search")
    dataset = yaml.safe_load(tiny_log.read_text())["name"]
    objective_name = f"ranker/holdout_ndcg@10 on {dataset}"  # what a run's exports are judged by
    earlier = {}
    for name, objective in (("ranker", 1.0), ("recommend", 0.0)):
        registered = f"shopping-{name}"
        server.api("registered-models/create", {"name": registered})
        version = server.api("model-versions/create", {
            "name": registered, "source": f"s3://an-earlier-run/{name}",
            "tags": [{"key": "objective_name", "value": objective_name},
                     {"key": "objective", "value": repr(objective)},
                     {"key": "higher_is_better", "value": "true"}]})["model_version"]["version"]
        server.api("registered-models/alias", {"name": registered, "alias": "champion", "version": version})
        earlier[name] = version
    run_dir = folder / "run"
    args = [sys.executable, "train.py", "--dataset", str(tiny_log), "--run-dir", str(run_dir),
            "--tune", str(study_file(folder)), *FLAGS[1:]]  # FLAGS[1:]: with the final run
    port = free_port()
    processes = {}
    for tuner_id in TUNERS:
        env = dict(os.environ, PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=server.url, KERASTUNER_TUNER_ID=tuner_id,
                   KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
        with open(folder / f"{tuner_id}.out", "w") as out, open(folder / f"{tuner_id}.err", "w") as err:
            processes[tuner_id] = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
    try:
        yield SimpleNamespace(processes=processes, folder=folder, run_dir=run_dir, objective_name=objective_name,
                              earlier=earlier)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def start_the_search_early(request):
    """Starts the search as the module begins, only when a selected test reads it."""
    if any("search" in item.fixturenames for item in request.session.items if item.module is request.module):
        request.getfixturevalue("search_started")


@pytest.fixture(scope="module")
def search(search_started, server):
    """Waits for the search; its outputs and its runs as the server holds them."""
    started = search_started
    try:
        # The workers first: Keras Tuner's chief waits forever for a worker that died mid-trial.
        for name in TUNERS[1:]:
            started.processes[name].wait(timeout=600)
        if all(started.processes[name].returncode == 0 for name in TUNERS[1:]):
            started.processes["chief"].wait(timeout=600)
    finally:
        for process in started.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    done = {name: subprocess.CompletedProcess(p.args, p.returncode, (started.folder / f"{name}.out").read_text(),
                                              (started.folder / f"{name}.err").read_text())
            for name, p in started.processes.items()}
    for name, output in done.items():
        assert output.returncode == 0, (name, output.stderr[-3000:])
    return SimpleNamespace(done=done["chief"], workers={n: done[n] for n in TUNERS[1:]}, run_dir=started.run_dir,
                           runs=search_runs(server, "shopping_mtl"), objective_name=started.objective_name,
                           earlier=started.earlier)


def test_search_prints_its_trials_and_writes_the_best_config(search):
    out = search.done.stdout
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["0", "1", "2"] and all(r[1] == "COMPLETED" for r in rows)
    assert "best: trial" in out and (search.run_dir / "search.txt").is_file()
    best_id = out.split("best: trial ", 1)[1].split(",", 1)[0]
    best = yaml.safe_load((search.run_dir / "best_config.yaml").read_text())
    # best_config.yaml is the best trial's settings on top of the study's fixed values.
    assert f"architecture={best['ranking']['architecture']}," in " ".join(rows[int(best_id)])
    assert best["ranking"]["epochs"] == 1 and best["ranking"]["extra_days"] == 1
    assert float(rows[int(best_id)][2]) == max(float(r[2]) for r in rows)


def ranking_days(log: str) -> list[str]:
    return [line.split("ranking: ", 1)[1].split(",", 1)[0] for line in log.splitlines()
            if "shopping_mtl.ranking.stage: ranking: " in line and " training rows" in line]


def test_the_study_fixed_values_shape_the_data_prepared_once(search):
    # Each worker prepares the trials' ranking data once; it must follow the study's
    # `ranking.extra_days: 1` (the validation day and the day before), as the final run does.
    for worker in search.workers.values():
        assert ranking_days(worker.stderr) == ["2 days"]
    assert ranking_days(search.done.stderr) == ["2 days"]  # the chief: only its final run


def test_the_workers_share_one_search(search):
    """Keras Tuner's own chief/worker mode: the chief serves the oracle, both workers train
    trials, each prepared the stages in a folder of its own, the trials are in one folder."""
    assert search.runs.parent["info"]["run_id"] == (search.run_dir / "tuning" / "tiny.parent_run_id").read_text().strip()
    assert {tags(c)["tuner_id"] for c in search.runs.trials} == {"tuner0", "tuner1"}  # both took trials
    for worker in search.workers:
        assert (search.run_dir / "workers" / worker / "candidates.parquet").is_file()
    assert sorted(p.name for p in (search.run_dir / "tuning" / "tiny").glob("trial_*")) == [
        "trial_0", "trial_1", "trial_2"]


def test_each_trial_is_a_child_run_with_its_objective_and_hyperparameters(search, server):
    runs = search.runs
    assert tags(runs.parent)["search"] == "tiny" and len(runs.trials) == 3
    assert sorted(tags(t)["trial_id"] for t in runs.trials) == ["0", "1", "2"]
    printed = {r[0]: float(r[2]) for r in table_rows(search.done.stdout)}
    for child in runs.trials:
        values, settings = metrics(child), params(child)
        assert child["info"]["status"] == "FINISHED"
        assert 0 < values["ranker/holdout_ndcg_at_10"] <= 1
        assert values["ranker/holdout_ndcg_at_10"] == pytest.approx(printed[tags(child)["trial_id"]], abs=5e-5)
        assert settings["ranking.architecture"] in ARCHITECTURES
        assert 0.001 <= float(settings["ranking.learning_rate"]) <= 0.01
        assert settings["ranking.bottom_width"] in ("16", "32")
        # The metadata of every run: code, data, and the data as a dataset input.
        # (Trials of this distributed search are trained by the workers, each on its own copy of
        # the data; the chief serves the oracle and reads none.)
        assert tags(child)["git.commit"] and tags(child)["data.fingerprint"] == tags(runs.trials[0])["data.fingerprint"]
        inputs = child.get("inputs", {}).get("dataset_inputs", [])
        assert inputs and inputs[0]["dataset"]["digest"] == tags(child)["data.fingerprint"][:36]
        # The objective sits at the step of the epoch whose weights the trial kept.
        run_id, restored = child["info"]["run_id"], int(tags(child)["restored_epoch"])
        objective = server.api(f"metrics/get-history?run_id={run_id}&metric_key=ranker/holdout_ndcg_at_10")["metrics"]
        curve = server.api(f"metrics/get-history?run_id={run_id}&metric_key=ranker/epoch/val_objective")["metrics"]
        assert [m["step"] for m in objective] == [restored - 1]
        assert max(curve, key=lambda m: (m["value"], -m["step"]))["step"] == restored - 1


def test_the_search_leaves_a_view_of_its_runs_for_the_ui(search, server):
    """The address the search prints opens a shared view (an experiment tag the UI reads):
    the search's children, best objective first, the objective and the winner's tag shown."""
    parent_id = search.runs.parent["info"]["run_id"]
    address = search.done.stdout.split("MLflow: the search's runs, best first: ", 1)[1].split()[0]
    assert address.endswith(f"/runs?workflowType=machine_learning&viewStateShareKey={parent_id}")
    experiment = server.api(f"experiments/get?experiment_id={search.runs.parent['info']['experiment_id']}")
    tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
    view = json.loads(tags[f"mlflow.sharedViewState.{parent_id}"])
    assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent_id}'"
    assert view["orderByKey"] == "metrics.`ranker/holdout_ndcg_at_10`" and view["orderByAsc"] is False
    assert view["selectedColumns"][:2] == ["metrics.`ranker/holdout_ndcg_at_10`", "tags.`best_trial`"]
    assert "params.`ranking.architecture`" in view["selectedColumns"]
    # The filter is one MLflow's search accepts: it finds exactly the search's children.
    found = server.api("runs/search", {"experiment_ids": [search.runs.parent["info"]["experiment_id"]],
                                       "filter": view["searchFilter"], "max_results": 100})["runs"]
    assert len(found) == len(search.runs.trials) + len(search.runs.others)


def test_the_parent_run_sums_up_the_search(search, server):
    parent, trials = search.runs.parent, search.runs.trials
    assert parent["info"]["status"] == "FINISHED"
    summary = metrics(parent)
    assert summary["search/trials"] == 3 and summary["search/failed_trials"] == 0
    assert summary["search/best/ranker/holdout_ndcg_at_10"] == max(
        metrics(t)["ranker/holdout_ndcg_at_10"] for t in trials)
    files = server.api(f"artifacts/list?run_id={parent['info']['run_id']}").get("files", [])
    assert {"best_config.yaml", "search.txt"} <= {f["path"] for f in files}


def test_the_final_run_registers_its_exports_and_champion_moves_only_on_a_better_objective(search, server):
    final = search.runs.others
    assert len(final) == 1 and final[0]["info"]["status"] == "FINISHED"
    assert "the best config, every stage" in search.done.stdout
    final_id = final[0]["info"]["run_id"]
    objective = metrics(final[0])["ranker/holdout_ndcg_at_10"]  # the validation objective
    assert 0 < objective < 1
    champions = {}
    for name in ("retrieval", "ranker", "recommend"):
        model = server.api(f"registered-models/get?name=shopping-{name}")["registered_model"]
        version = model["latest_versions"][0]
        assert version["run_id"] == final_id  # each export registered
        version_tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        assert version_tags["objective_name"] == search.objective_name
        assert float(version_tags["objective"]) == pytest.approx(objective, rel=1e-6)
        aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
        assert list(aliases) == ["champion"]
        champions[name] = "final run" if aliases["champion"] == version["version"] else aliases["champion"]
    # No champion yet -> the final run's; a champion it beats -> moved; one it does not -> kept.
    assert champions == {"retrieval": "final run", "recommend": "final run", "ranker": search.earlier["ranker"]}
    assert f"not champion ({objective:.6g} vs champion 1)" in search.done.stderr


def test_rows_for_a_search_carry_every_input_a_trial_may_turn_on():
    """A trial of tuning/ranker.yaml that turned ranking.source_features on found no provenance
    inputs in the rows prepared once with the run's settings (KeyError: 'provenance')."""
    study = tuning.load_study(ROOT / "tuning" / "ranker.yaml")
    fake = SimpleNamespace(state=SimpleNamespace(config=Config()), study=study)
    prepared = ShoppingTuner.prepared_ranking_config(fake)
    assert not Config().ranking.source_features
    assert prepared.source_features and prepared.list_features and prepared.engagement_features
    assert prepared.target_attention
    assert prepared.architecture == Config().ranking.architecture  # nothing else changes
