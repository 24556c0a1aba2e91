"""MLflow tracking: config flattening, run tags, runs in a local SQLite store and on a real
tracking server, plots, and registry versions with the champion alias.

Every store, artifact and model lives under tmp_path; each test runs from an empty `cwd/` folder
there, so anything MLflow would write relative to the current directory shows up (and fails the
test) instead of landing in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow import MlflowClient

from conftest import ROOT
from mlflow_server import free_port
from mlflow_server import mlflow_db_template, mlflow_server  # noqa: F401  (fixtures)
from shopping_mtl import tracking
from shopping_mtl.errors import ShoppingMtlError
from shopping_mtl.export import publishing
from shopping_mtl.tracking import Tracker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_db_template):
    """A project root under tmp_path with the default (SQLite) store, run from an empty cwd.
    The store starts as a copy of a migrated empty one (creating tables costs seconds)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    root = tmp_path / "project"
    root.mkdir()
    shutil.copyfile(mlflow_db_template, root / "mlflow.db")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield root
    assert not any(cwd.iterdir()), f"something was written relative to cwd: {list(cwd.iterdir())}"


def client_for(root: Path) -> MlflowClient:
    return MlflowClient(tracking.default_tracking_uri(root))


# ---------------------------------------------------------------------------------------------
# Pure functions


def test_flatten_golden():
    @dataclass(frozen=True)
    class Split:
        min_days: int = 3

    config = {
        "ranking": {"architecture": "shared_bottom",
                    "loss_weights": {"click": 1.0, "save": 2.0, "purchase": 4.0},
                    "tower_layers": []},
        "evaluation": {"ks": [10, 50, 100], "bootstrap_resamples": 1000},
        "split": Split(),
        "export": {},
        "data": {"root": None, "note": "x" * 7000},
    }
    assert tracking.flatten(config) == {
        "ranking.architecture": "shared_bottom",
        "ranking.loss_weights.click": "1.0",
        "ranking.loss_weights.save": "2.0",
        "ranking.loss_weights.purchase": "4.0",
        "ranking.tower_layers": "[]",
        "evaluation.ks": "[10, 50, 100]",
        "evaluation.bootstrap_resamples": "1000",
        "split.min_days": "3",
        "export": "{}",
        "data.root": "None",
        "data.note": "x" * tracking.MAX_PARAM_VALUE,  # cut to MLflow's limit
    }
    # MLflow 3.17's limit is 6000 characters (the 500 of old MLflow would cut configs short).
    assert tracking.MAX_PARAM_VALUE == mlflow.utils.validation.MAX_PARAM_VAL_LENGTH == 6000


def test_metric_key_rewrites_only_what_mlflow_rejects():
    assert tracking.metric_key("pipeline/recall@100") == "pipeline/recall_at_100"
    assert tracking.metric_key("baseline/user_history/new_gt/recall@10/ci95_low") == \
        "baseline/user_history/new_gt/recall_at_10/ci95_low"
    assert tracking.metric_key("ranker/val_purchase_auc") == "ranker/val_purchase_auc"
    assert tracking.metric_key("a b-c.d") == "a b-c.d"
    assert tracking.metric_key("odd#key(1)") == "odd_key_1_"
    assert tracking.metric_key("/a//b/./c/") == "a/b/c"
    for key in ("pipeline/ndcg@10", "x:y", "/a//b/", "é@ü"):
        # Whatever comes out, MLflow's own validator accepts it.
        mlflow.utils.validation._validate_metric_name(tracking.metric_key(key))


def test_run_tags_name_code_data_and_versions():
    tags = tracking.run_tags(ROOT, {"data_fingerprint": "abc123", "dataset": "ecomm", "other": 1})
    assert set(tags) == {
        "git.commit", "git.dirty", "mlflow.source.git.commit", "data.fingerprint", "data.dataset",
        *(f"versions.{p}" for p in ("tensorflow", "tf-keras", "tensorflow-recommenders",
                                    "keras-tuner", "mlflow", "pandas", "numpy"))}
    assert tags["git.dirty"] in {"true", "false"}
    assert len(tags["git.commit"]) == 40 and tags["mlflow.source.git.commit"] == tags["git.commit"]
    assert tags["data.fingerprint"] == "abc123" and tags["data.dataset"] == "ecomm"
    assert tags["versions.mlflow"] == mlflow.__version__
    assert tags["versions.tensorflow"] == tf.__version__


def test_run_tags_outside_a_repository(tmp_path):
    tags = tracking.run_tags(tmp_path, {})
    assert tags["git.commit"] == "unknown" and tags["git.dirty"] == "unknown"
    assert "data.fingerprint" not in tags


def test_default_uri_and_experiment_artifact_location(project, monkeypatch):
    assert tracking.default_tracking_uri(project) == f"sqlite:///{project}/mlflow.db"
    assert tracking.artifact_root(project) == project / "mlruns"
    experiment_id = tracking.get_or_create_experiment("exp-a", project)
    # Created once, found afterwards.
    assert tracking.get_or_create_experiment("exp-a", project) == experiment_id
    experiment = client_for(project).get_experiment(experiment_id)
    assert experiment.artifact_location == (project / "mlruns" / "exp-a").as_uri()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.default_tracking_uri(project) == "http://tracking.example:5000"


def test_experiments_open_as_model_training_in_the_ui(project):
    """Was: no kind, so the MLflow UI (3.17) opened the experiment in GenAI mode."""
    client = client_for(project)
    created = client.get_experiment(tracking.get_or_create_experiment("kind-new", project))
    assert created.tags["mlflow.experimentKind"] == "custom_model_development"
    older = client.create_experiment("kind-old")  # made before the tag, or by another tool
    tracking.get_or_create_experiment("kind-old", project)
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    chosen = client.create_experiment("kind-chosen", tags={"mlflow.experimentKind": "genai_development"})
    tracking.get_or_create_experiment("kind-chosen", project)  # a person's choice is kept
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_deleted_experiment_is_an_actionable_error(project):
    client = client_for(project)
    client.delete_experiment(tracking.get_or_create_experiment("gone", project))
    with pytest.raises(ShoppingMtlError, match="'gone'.*deleted.*restore"):
        Tracker.start(project, experiment="gone")


# ---------------------------------------------------------------------------------------------
# Runs in the local SQLite store


def test_tracker_run_in_local_store(project, tmp_path):
    params = {"ranking": {"architecture": "mmoe", "loss_weights": {"click": 1.0}},
              **{f"grid.p{i:03d}": i for i in range(230)}}  # 232 params: three log_batch requests
    with Tracker.start(project, run_name="smoke", tags={"stage": "test"}) as run:
        run.log_params(params)
        for epoch, (loss, auc) in enumerate([(0.9, 0.6), (0.7, 0.7), (0.6, float("nan"))]):
            run.log_epoch("ranker", {"loss": loss, "val_auc": auc}, epoch)
        run.log_metrics({"pipeline/recall@100": 0.25, "eval/test_users": 321,
                         "pipeline/ndcg@10": float("inf")})
        run.set_tags({"data.dataset": "tiny"})
        report = tmp_path / "report.txt"
        report.write_text("hello")
        run.log_artifact(report, "reports")
        run.log_text("a: 1\n", "config.yaml")
    assert run.status == "FINISHED"

    client = client_for(project)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "smoke"
    assert len(got.data.params) == 232
    assert got.data.params["ranking.architecture"] == "mmoe"
    assert got.data.params["ranking.loss_weights.click"] == "1.0"
    assert got.data.params["grid.p229"] == "229"
    assert got.data.tags["stage"] == "test" and got.data.tags["data.dataset"] == "tiny"
    assert got.data.tags["mlflow.runName"] == "smoke"
    history = sorted((m.step, m.value)
                     for m in client.get_metric_history(run.run_id, "ranker/loss"))
    assert history == [(0, 0.9), (1, 0.7), (2, 0.6)]
    # The NaN AUC of epoch 2 and the inf NDCG are skipped, and counted (running total).
    auc = sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "ranker/val_auc"))
    assert auc == [(0, 0.6), (1, 0.7)]
    skipped = sorted((m.step, m.value)
                     for m in client.get_metric_history(run.run_id, tracking.SKIPPED_METRIC))
    assert skipped == [(0, 2.0), (2, 1.0)]
    assert got.data.metrics["pipeline/recall_at_100"] == 0.25  # `@` rewritten
    assert got.data.metrics["eval/test_users"] == 321
    assert "pipeline/ndcg_at_10" not in got.data.metrics

    # Artifacts under <project>/mlruns/<experiment>/<run id>/artifacts, not under the cwd.
    artifacts = project / "mlruns" / "shopping_mtl" / run.run_id / "artifacts"
    assert (artifacts / "reports" / "report.txt").read_text() == "hello"
    assert (artifacts / "config.yaml").read_text() == "a: 1\n"


def test_exception_inside_with_ends_the_run_failed(project):
    with pytest.raises(RuntimeError, match="boom"):
        with Tracker.start(project) as run:
            run.log_metrics({"loss": 1.0})
            raise RuntimeError("boom")
    assert client_for(project).get_run(run.run_id).info.status == "FAILED"
    run.end("FINISHED")  # already ended: a second end changes nothing
    assert client_for(project).get_run(run.run_id).info.status == "FAILED"
    with pytest.raises(ValueError, match="status 'DONE'"):
        run.end("DONE")


def test_parent_with_two_child_runs(project):
    with Tracker.start(project, run_name="search") as parent:
        with parent.child(run_name="trial-0") as first:
            first.log_metrics({"val/ndcg@10": 0.2})
        with Tracker.start(project, run_name="trial-1", parent_run_id=parent.run_id) as second:
            second.log_metrics({"val/ndcg@10": 0.3})
        parent.log_metrics({"best/ndcg@10": 0.3})
    client = client_for(project)
    children = client.search_runs([parent.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["trial-0", "trial-1"]
    assert {r.info.run_id for r in children} == {first.run_id, second.run_id}
    assert all(r.info.status == "FINISHED" for r in children)
    assert client.get_run(parent.run_id).data.metrics == {"best/ndcg_at_10": 0.3}


def test_colliding_keys_are_refused(project):
    with Tracker.start(project) as run:
        run.log_metrics({"recall@10": 0.1})
        with pytest.raises(ValueError, match="metric keys 'recall@10' and 'recall_at_10'"):
            run.log_metrics({"recall_at_10": 0.1})
        run.log_params({"recall_at_10": "a param"})  # params are another namespace
        with pytest.raises(TypeError, match="'name' is 'x'"):
            run.log_metrics({"name": "x"})
        # numpy scalars, 0-d arrays and eager tensors are numbers
        run.log_metrics({"np": np.float32(0.5), "arr": np.array(2), "tensor": tf.constant(1.5)})
    got = client_for(project).get_run(run.run_id).data
    assert got.metrics == {"recall_at_10": 0.1, "np": 0.5, "arr": 2.0, "tensor": 1.5}
    assert got.params == {"recall_at_10": "a param"}


# ---------------------------------------------------------------------------------------------
# Reachability


def test_check_reachable_fails_fast_on_a_dead_server(monkeypatch, project):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ShoppingMtlError) as caught:
        tracking.check_reachable(uri, timeout_s=2.0)
    assert time.monotonic() - started < 3.0
    message = str(caught.value)
    assert uri in message and "unreachable" in message and "MLFLOW_TRACKING_URI" in message
    assert "\n" not in message

    # Tracker.start checks first, instead of MLflow's client retrying for minutes.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(ShoppingMtlError, match="unreachable"):
        Tracker.start(project)
    assert time.monotonic() - started < 3.0


def test_check_reachable_local_stores(tmp_path):
    tracking.check_reachable(f"sqlite:///{tmp_path}/ok.db")  # writable folder: passes
    tracking.check_reachable(tmp_path.as_uri())
    with pytest.raises(ShoppingMtlError, match=r"sqlite:///.*/missing/x\.db.*does not exist"):
        tracking.check_reachable(f"sqlite:///{tmp_path}/missing/x.db")
    tracking.check_reachable("postgresql://user@db/mlflow")  # not checked


# ---------------------------------------------------------------------------------------------
# A real tracking server (the slowest test here: starting `mlflow server` takes 5-15 s)


def test_real_mlflow_server_receives_the_run(mlflow_server, monkeypatch, tmp_path, saved_ranker):
    """REAL SERVER: `mlflow server` in a subprocess; the run is read back over its REST API."""
    tracking.check_reachable(mlflow_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository, even by accident
    project = tmp_path / "project"
    project.mkdir()
    note = tmp_path / "note.txt"
    note.write_text("served")
    with Tracker.start(project, experiment="served", run_name="remote") as run:
        run.log_params({"ranking": {"architecture": "ple"}})
        run.log_epoch("ranker", {"loss": 0.5}, 0)
        run.log_epoch("ranker", {"loss": 0.4}, 1)
        run.log_artifact(note)
        assert tracking.log_exports(run, {"ranker": saved_ranker}, "pipeline/ndcg@10", 0.3) == \
            {"ranker": "champion"}

    got = mlflow_server.api(f"runs/get?run_id={run.run_id}")["run"]
    assert got["info"]["status"] == "FINISHED"
    assert {"key": "ranking.architecture", "value": "ple"} in got["data"]["params"]
    assert [(m["key"], m["value"], m["step"]) for m in got["data"]["metrics"]] == \
        [("ranker/loss", 0.4, 1)]  # the latest value
    found = mlflow_server.api("runs/search", {"experiment_ids": [run.experiment_id],
                                              "filter": "attributes.run_name = 'remote'"})
    assert [r["info"]["run_id"] for r in found["runs"]] == [run.run_id]
    # The server chose the artifact location (proxied), and the file went through it.
    experiment = mlflow_server.api(f"experiments/get?experiment_id={run.experiment_id}")
    assert experiment["experiment"]["artifact_location"].startswith("mlflow-artifacts:")
    uploaded = list((mlflow_server.folder / "artifacts").rglob("note.txt"))
    assert [p.read_text() for p in uploaded] == ["served"]
    assert not (project / "mlruns").exists()
    # The registry is the server's too; the model's files were uploaded through it.
    champion = mlflow_server.api("registered-models/alias?name=shopping-ranker&alias=champion")
    assert champion["model_version"]["version"] == "1"
    assert {"key": "objective", "value": "0.3"} in champion["model_version"]["tags"]
    assert list((mlflow_server.folder / "artifacts").rglob("python_model.pkl"))


# ---------------------------------------------------------------------------------------------
# Plots


def test_calibration_bins_golden():
    predicted = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    labels = np.array([0, 1, 0, 1, 1])
    mean_pred, rate, counts = tracking.calibration_bins(predicted, labels)
    assert counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 joins the last bin
    np.testing.assert_allclose(mean_pred[[0, 1, 9]], [0.05, 0.15, 0.975])
    np.testing.assert_allclose(rate[[0, 1, 9]], [0.0, 0.5, 1.0])
    assert np.isnan(rate[2])


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    curves = {}
    for head in ("click", "save", "purchase"):
        p = rng.uniform(size=2000)
        curves[head] = (p, (rng.uniform(size=2000) < p).astype(int))
    calibration = tracking.plot_calibration(curves, tmp_path / "plots" / "calibration.png")
    lists = {"pipeline": 0.4, "retrieval": 0.3, "baseline/user_history": 0.35}
    metrics = {f"{name}/recall@{k}": value * k / 100 for name, value in lists.items()
               for k in (10, 50, 100)}
    recall = tracking.plot_recall_curves(
        metrics, ["pipeline", "retrieval", "baseline/user_history", "absent"], [10, 50, 100],
        tmp_path / "recall.png")
    for path in (calibration, recall):
        data = Path(path).read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    with pytest.raises(ValueError, match="no '<list>/recall@<k>' figures"):
        tracking.plot_recall_curves(metrics, ["absent"], [10], tmp_path / "none.png")
    with pytest.raises(ValueError, match="head 'click': 3 predictions but 2 labels"):
        tracking.plot_calibration({"click": (np.ones(3), np.ones(2))}, tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------
# Exports: pyfunc models, registry versions, the champion alias

REQUEST_SIGNATURE = {
    "user_id": tf.TensorSpec([None], tf.string, name="user_id"),
    "history_item_ids": tf.TensorSpec([None, None], tf.string, name="history_item_ids"),
    "price": tf.TensorSpec([None], tf.float32, name="price"),
}


class TinyRanker(tf.Module):
    """scores = 2 * price + (non-padding history items) + len(user_id); top = first history item."""

    @tf.function(input_signature=[REQUEST_SIGNATURE])
    def serve(self, request):
        filled = tf.cast(tf.not_equal(request["history_item_ids"], ""), tf.float32)  # (batch, n)
        length = tf.cast(tf.strings.length(request["user_id"]), tf.float32)  # (batch,)
        scores = 2.0 * request["price"] + tf.reduce_sum(filled, axis=1) + length
        return {"scores": scores, "top": request["history_item_ids"][:, 0]}


@pytest.fixture
def saved_ranker(tmp_path) -> Path:
    module = TinyRanker()
    path = tmp_path / "export" / "ranker" / "1"
    tf.saved_model.save(module, str(path),
                        signatures={"serving_default": module.serve.get_concrete_function()})
    return path


REQUEST = pd.DataFrame({
    "user_id": ["u1", "user22"],
    "history_item_ids": [["a", "b", "c"], ["d"]],  # ragged: padded with "" to (2, 3)
    "price": [1.5, 0.25],
})


def test_log_exports_registers_and_moves_champion_only_on_improvement(project, saved_ranker,
                                                                     monkeypatch):
    client = client_for(project)
    outcomes = []
    for objective, plain_copy in ((0.30, False), (0.20, True), (0.40, False)):
        with Tracker.start(project) as run:
            outcomes.append(tracking.log_exports(run, {"ranker": saved_ranker},
                                                 "pipeline/ndcg@10", objective,
                                                 export_artifacts=plain_copy))
        # The SavedModel is stored once, in the logged model; a plain copy only on request.
        artifacts = project / "mlruns" / "shopping_mtl" / run.run_id / "artifacts"
        assert (artifacts / "exports" / "ranker" / "saved_model.pb").is_file() == plain_copy
        assert (artifacts / "exports" / "ranker" / "variables").is_dir() == plain_copy
    assert outcomes == [{"ranker": "champion"},
                        {"ranker": "not champion (0.2 vs champion 0.3)"},
                        {"ranker": "champion"}]
    # MLflow 3.17 returns versions as int from the SQL store (str in older releases).
    versions = {str(v.version): v for v in client.search_model_versions("name = 'shopping-ranker'")}
    assert sorted(versions, key=int) == ["1", "2", "3"]
    assert versions["2"].tags == {"objective_name": "pipeline/ndcg@10", "objective": "0.2",
                                  "higher_is_better": "true",
                                  "model_id": tracking.version_model_id(versions["2"])}
    assert str(client.get_model_version_by_alias("shopping-ranker", "champion").version) == "3"

    # A loss: lower is better; 0.35 does not beat 0.4 when higher is better, but a different
    # objective name is never compared with the champion's.
    with Tracker.start(project) as run:
        assert tracking.log_exports(run, {"ranker": saved_ranker}, "pipeline/ndcg@10", 0.35) == \
            {"ranker": "not champion (0.35 vs champion 0.4)"}
        other = tracking.log_exports(run, {"ranker": saved_ranker}, "val/loss", 0.1,
                                     higher_is_better=False)
        assert other["ranker"].startswith("not champion (objective 'val/loss' cannot be compared")
        assert tracking.log_exports(run, {"ranker": saved_ranker}, "x", 1.0, register=False) == {}
    # Unregistered, the plain copy is the run's only copy of the model: it is always logged.
    artifacts = project / "mlruns" / "shopping_mtl" / run.run_id / "artifacts"
    assert (artifacts / "exports" / "ranker" / "saved_model.pb").is_file()
    assert str(client.get_model_version_by_alias("shopping-ranker", "champion").version) == "3"
    assert len(client.search_model_versions("name = 'shopping-ranker'")) == 5

    # The champion as a pyfunc model answers what the signature answers.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.default_tracking_uri(project))
    model = mlflow.pyfunc.load_model("models:/shopping-ranker@champion")
    predicted = model.predict(REQUEST)
    direct = tf.saved_model.load(str(saved_ranker)).signatures["serving_default"](
        user_id=tf.constant(["u1", "user22"]),
        history_item_ids=tf.constant([["a", "b", "c"], ["d", "", ""]]),
        price=tf.constant([1.5, 0.25]))
    np.testing.assert_array_equal(predicted["scores"], direct["scores"].numpy())
    # 2 * 1.5 + 3 + 2 = 8; 2 * 0.25 + 1 + 6 = 7.5
    np.testing.assert_array_equal(predicted["scores"], np.array([8.0, 7.5], np.float32))
    assert predicted["top"].tolist() == ["a", "d"]  # bytes decoded
    assert model.metadata.get_input_schema().input_names() == \
        ["history_item_ids", "price", "user_id"]
    with pytest.raises(Exception, match="price"):
        model.predict(REQUEST.drop(columns=["price"]))


def test_pyfunc_loads_without_the_project(project, saved_ranker, tmp_path):
    """The logged model carries its code (pickled by value): a process where `shopping_mtl`
    cannot be imported still loads and answers."""
    with Tracker.start(project) as run:
        tracking.log_exports(run, {"ranker": saved_ranker}, "pipeline/ndcg@10", 0.3)
    source = client_for(project).get_model_version("shopping-ranker", "1").source
    script = textwrap.dedent(f"""
        import sys
        sys.modules["shopping_mtl"] = None  # any import of the project fails
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({source!r})
        out = model.predict(pd.DataFrame({{"user_id": ["u1"], "history_item_ids": [["a", "b"]],
                                           "price": [1.0]}}))
        print("SCORES", out["scores"].tolist())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SCORES [6.0]" in done.stdout  # 2 * 1.0 + 2 + 2


def test_signature_has_outputs_and_the_input_example_matches_it(saved_ranker):
    signature = tracking.registry._signature(saved_ranker)
    assert signature.inputs.to_dict() == [
        {"type": "array", "items": {"type": "string"}, "name": "history_item_ids", "required": True},
        {"type": "double", "name": "price", "required": True},
        {"type": "string", "name": "user_id", "required": True}]
    # Outputs keep their width: float32 scores are `float`, not widened to `double`.
    assert signature.outputs.to_dict() == [
        {"type": "float", "name": "scores", "required": True},
        {"type": "string", "name": "top", "required": True}]
    # Without warmup requests: one row of defaults, a one-element list for the rank-2 input.
    example = tracking.registry._input_example(saved_ranker)
    assert example.to_dict("list") == {"history_item_ids": [[""]], "price": [0.0], "user_id": [""]}


def test_input_example_is_the_first_warmup_request(saved_ranker):
    request = {"user_id": np.array([b"u7", b"u8"]), "history_item_ids": np.array([[b"a", b"b"], [b"c", b""]]),
               "price": np.array([2.5, 1.0], np.float32)}
    publishing.write_warmup(saved_ranker, "ranker", publishing.warmup_requests(request, 2), [])
    example = tracking.registry._input_example(saved_ranker)
    assert example.to_dict("list") == {"history_item_ids": [["a", "b"]], "price": [2.5], "user_id": ["u7"]}


def test_dataset_input_names_the_data_and_its_subset():
    info = {"dataset": "ecomm", "spec": "/data/ecomm.yaml", "data_fingerprint": "f" * 64,
            "synthetic": False}
    metrics = {"data/events": 1000.0, "data/events_used": 1000.0, "data/distinct_users": 40.0,
               "data/distinct_items": 60.0, "split/train_events": 800.0, "eval/test_users": 9.0}
    found = tracking.dataset_input(info, metrics)
    dataset = found.dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("ecomm", "f" * 36, "local")
    assert json.loads(dataset.source) == {"uri": "/data/ecomm.yaml"}
    assert json.loads(dataset.profile) == {"events": 1000, "events_in_log": 1000, "users": 40, "items": 60,
                                           "train_events": 800, "test_users": 9, "fingerprint": "f" * 64,
                                           "synthetic": False}
    assert [(t.key, t.value) for t in found.tags] == [("mlflow.data.context", "training")]
    # Part of the log (--max-events): its own dataset, MLflow keeping one per name and digest.
    part = tracking.dataset_input(info, {**metrics, "data/events_used": 400.0}).dataset
    assert part.name == "ecomm (400 of 1000 events)" and part.digest == dataset.digest
    assert tracking.dataset_input({"dataset": "ecomm"}, metrics) is None  # before the data stage


def test_run_metadata_and_system_metrics_on_a_run_and_its_trials(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    info = {"dataset": "tiny", "spec": "/data/tiny.yaml", "data_fingerprint": "ab" * 32}
    metrics = {"data/events_used": 11.0, "data/distinct_users": 3.0, "data/distinct_items": 4.0}
    with Tracker.start(project, system_metrics=True) as run:
        run.log_run_metadata(info, metrics)
        with run.child(run_name="trial") as trial:
            trial.log_run_metadata(info, metrics)
            time.sleep(1.0)
        time.sleep(0.5)
        run.log_run_metadata(info, metrics)  # again: the same input, not a second one
    client = client_for(project)
    for run_id in (run.run_id, trial.run_id):
        got = client.get_run(run_id)
        assert got.data.tags["data.fingerprint"] == "ab" * 32 and got.data.tags["git.dirty"] == "unknown"
        assert [(d.dataset.name, d.dataset.digest) for d in got.inputs.dataset_inputs] == [("tiny", "ab" * 18)]
        assert json.loads(got.inputs.dataset_inputs[0].dataset.profile)["events"] == 11
        assert "system/cpu_utilization_percentage" in got.data.metrics, sorted(got.data.metrics)
    # A tracker without system metrics, and its children, log none.
    with Tracker.start(project) as quiet:
        with quiet.child() as child:
            time.sleep(0.5)
    for run_id in (quiet.run_id, child.run_id):
        assert not [k for k in client.get_run(run_id).data.metrics if k.startswith("system/")]
