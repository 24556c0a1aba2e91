"""Done-when for the MLflow metadata of a run, read back through `MlflowClient` as a user of the
UI meets it: one small run of every stage (a synthetic log of 8,000 events, each fit one epoch)
in the session's store, then its tags, params, metric histories, dataset input, system metrics,
logged and registered models (signature with outputs, input example, the version <-> logged
model <-> run links) and what it did not store twice (the exports' plain copies).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.models import Model

from conftest import ROOT
from mlflow_server import create_store
from shopping_mtl import pipeline, tracking
from shopping_mtl.config import load_config
from tools import synthetic


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, mlflow_store):
    """The run's state and its MLflow run, tracked with system metrics sampled every second."""
    folder = tmp_path_factory.mktemp("metadata")
    create_store(mlflow_store / "mlflow.db")  # tables made once (a no-op when they exist)
    spec = synthetic.generate(folder / "data", 8_000, seed=2)
    config = load_config(overrides={
        "run_dir": str(folder / "run"), "data": {"dataset": str(spec)},
        "tracking": {"experiment": "metadata"}, "evaluation": {"bootstrap_resamples": 0},
        "retrieval": {"epochs": 1}, "ranking": {"epochs": 1, "extra_days": 0, "compare_single_task": False}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
        state = pipeline.run(config)
    assert state.tracking_error is None
    client = MlflowClient(tracking.default_tracking_uri(pipeline.PROJECT_ROOT))
    return state, client, client.get_run(state.info["mlflow"]["run_id"])


def test_tags_name_the_code_and_the_data(small_run):
    state, _, run = small_run
    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert tags["git.commit"] == head and re.fullmatch(r"[0-9a-f]{40}", head)
    assert tags["git.dirty"] in {"true", "false"}
    assert tags["data.fingerprint"] == state.info["data_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{64}", tags["data.fingerprint"])


def test_params_are_the_whole_config(small_run):
    state, _, run = small_run
    expected = {tracking.metric_key(k): v for k, v in tracking.flatten(state.config.to_dict()).items()}
    assert run.data.params == expected
    assert run.data.params["tracking.system_metrics"] == "True"
    assert run.data.params["tracking.export_artifacts"] == "False"


def test_epoch_histories_have_steps_and_the_objective_is_logged(small_run):
    state, client, run = small_run
    ranker = state.histories["ranker"]
    for name, values in ranker.items():
        history = client.get_metric_history(run.info.run_id, tracking.metric_key(f"ranker/epoch/{name}"))
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(len(values)))
    objective, value = pipeline.validation_objective(state.metrics)
    assert objective == "ranker/holdout_ndcg@10"
    assert run.data.metrics[tracking.metric_key(objective)] == pytest.approx(value)
    # System metrics were sampled into the run (every second here, by MLflow's monitor).
    assert run.data.metrics["system/cpu_utilization_percentage"] >= 0
    assert "system/system_memory_usage_megabytes" in run.data.metrics


def test_the_dataset_is_an_input_with_name_digest_source_and_counts(small_run):
    state, _, run = small_run
    [found] = run.inputs.dataset_inputs
    dataset = found.dataset
    assert dataset.name == state.info["dataset"]
    assert dataset.digest == state.info["data_fingerprint"][:36]
    assert json.loads(dataset.source) == {"uri": state.info["spec"]}
    profile = json.loads(dataset.profile)
    assert profile["events"] == state.metrics["data/events_used"] == 8_000
    assert profile["users"] == state.metrics["data/distinct_users"]
    assert profile["items"] == state.metrics["data/distinct_items"]
    assert profile["fingerprint"] == state.info["data_fingerprint"] and profile["synthetic"] is True
    assert {(t.key, t.value) for t in found.tags} == {("mlflow.data.context", "training")}


def test_registered_versions_link_to_logged_models_of_the_run(small_run):
    state, client, run = small_run
    run_id = run.info.run_id
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    assert sorted(v.name for v in versions) == ["shopping-ranker", "shopping-recommend", "shopping-retrieval"]
    output_models = {m.model_id for m in run.outputs.model_outputs}
    for version in versions:
        version = client.get_model_version(version.name, str(version.version))
        model_id = tracking.version_model_id(version)
        assert model_id is not None and model_id in output_models
        model = client.get_logged_model(model_id)
        assert model.source_run_id == run_id and model.status == "READY"
        # logged model -> its versions, as the UI reads it
        listed = json.loads(model.tags["mlflow.modelVersions"])
        assert {"name": version.name, "version": str(version.version)} in listed
        assert version.source == model.artifact_location
        for words in (run_id, state.info["dataset"], "ranker/holdout_ndcg@10", model_id):
            assert words in version.description, version.description
        mlmodel = Model.load(download_artifacts(artifact_uri=f"{model.artifact_location}/MLmodel"))
        assert mlmodel.signature.inputs.input_names() and mlmodel.signature.outputs.input_names()
        assert mlmodel.saved_input_example_info["type"] == "dataframe"
    # Each model's files are stored once: no plain copies under the run's artifacts.
    assert [a.path for a in client.list_artifacts(run_id) if a.path == "exports"] == []
