"""The model registry: exported SavedModels as MLflow pyfunc models, versions, the champion.

`log_exports(tracker, exports, objective_name, objective)` logs each exported SavedModel as plain
run artifacts and as an MLflow pyfunc model (`SavedModelPyfunc`: MLflow's Keras/TensorFlow
flavors break on dict inputs with strings), registers it as a new version of `shopping-<name>`
and moves the `champion` alias only when the objective beats the champion's. Everything goes
through the tracker's own client, so the registry is the tracker's store.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Mapping

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.types import DataType
from mlflow.types.schema import Array, ColSpec, Schema
from tensorflow.core.protobuf import saved_model_pb2

from shopping_mtl.tracking.client import Tracker, package_version

log = logging.getLogger(__name__)

CHAMPION = "champion"
# What the pyfunc model needs to load; pinned to this environment's versions when logged.
PYFUNC_REQUIREMENTS = ("mlflow", "tensorflow", "pandas", "numpy", "cloudpickle")


class SavedModelPyfunc(mlflow.pyfunc.PythonModel):
    """An exported SavedModel as an MLflow pyfunc model.

    `predict` takes a DataFrame with one column per input of the `serving_default` signature.
    Cells of a column that are lists or arrays make a 2-D input, padded on the right with ""
    or 0 when rows differ in length (the exports' padding convention); each column is cast to
    the dtype the signature declares. It returns the signature's outputs as a dict of numpy
    arrays, bytes decoded to str (JSON-friendly for `mlflow models serve`).

    The class is pickled by value when logged (see `_save_pyfunc`), so loading the model needs
    mlflow, tensorflow, pandas and numpy, but not this project.
    """

    def load_context(self, context) -> None:
        self._model = tf.saved_model.load(context.artifacts["saved_model"])
        self._fn = self._model.signatures["serving_default"]
        _, specs = self._fn.structured_input_signature  # ((), {name: TensorSpec})
        self._specs = dict(specs)

    # The pd.DataFrame hint tells MLflow 3 that no schema can be inferred from it; without a hint
    # it warns on every import of this module. The schema comes from `_signature` instead.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> dict[str, np.ndarray]:
        missing = sorted(set(self._specs) - set(model_input.columns))
        if missing:
            raise ValueError(f"input lacks columns {missing}; the signature takes "
                             f"{sorted(self._specs)}")
        feeds = {}
        for name, spec in self._specs.items():
            values = list(model_input[name])
            dtype = spec.dtype.as_numpy_dtype
            is_text = spec.dtype == tf.string
            if spec.shape.rank is not None and spec.shape.rank >= 2:
                width = max([len(v) for v in values] + [spec.shape[1] or 0])
                fill = "" if is_text else 0
                values = [list(v) + [fill] * (width - len(v)) for v in values]
            array = np.array(values, dtype=object if is_text else dtype)
            feeds[name] = tf.constant(array, dtype=spec.dtype)
        outputs = self._fn(**feeds)
        result = {}
        for name, tensor in outputs.items():
            array = tensor.numpy()
            if array.dtype == object:
                array = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b,
                                     otypes=[object])(array)
            result[name] = array
        return result


def _signature(saved_model: Path):
    """The pyfunc input schema of a SavedModel's `serving_default` signature: one column per
    input, rank-2 inputs as arrays. Floats are declared `double` and ints `long` so that a plain
    pandas column (float64, int64) passes MLflow's schema check; `predict` casts to the exact
    dtype. Read from `saved_model.pb` without loading the graph."""
    proto = saved_model_pb2.SavedModel.FromString(
        (Path(saved_model) / "saved_model.pb").read_bytes())
    inputs = proto.meta_graphs[0].signature_def["serving_default"].inputs
    columns = []
    for name in sorted(inputs):
        dtype = tf.dtypes.as_dtype(inputs[name].dtype)
        if dtype == tf.string:
            kind = DataType.string
        elif dtype == tf.bool:
            kind = DataType.boolean
        elif dtype.is_floating:
            kind = DataType.double
        else:
            kind = DataType.long
        rank = len(inputs[name].tensor_shape.dim)
        for _ in range(max(rank - 1, 0)):
            kind = Array(kind)
        columns.append(ColSpec(kind, name))
    return ModelSignature(inputs=Schema(columns))


class _DropRecord(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _save_pyfunc(saved_model: Path, target: Path, model, run_id: str) -> None:
    """Write the pyfunc model for `saved_model` into the local folder `target`; `model` is the
    LoggedModel it will be uploaded to (its id and run go into the MLmodel file, as
    `mlflow.pyfunc.log_model` would write them)."""
    requirements = [f"{p}=={package_version(p)}" for p in PYFUNC_REQUIREMENTS]
    module = sys.modules[__name__]
    # MLflow 3 warns on every pickled python_model that unpickling runs code; the pickle is ours,
    # so that one warning is dropped (three exports would print it three times).
    quiet = _DropRecord("serialized using CloudPickle")
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    # By value: the pickle carries SavedModelPyfunc's code, so a server loading the model does not
    # need shopping_mtl installed. Unregistered again so nothing else is pickled by value.
    cloudpickle.register_pickle_by_value(module)
    pyfunc_log.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            # No input example on purpose: validating one would load the model again.
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            mlflow.pyfunc.save_model(
                path=str(target), python_model=SavedModelPyfunc(),
                artifacts={"saved_model": str(saved_model)}, signature=_signature(saved_model),
                mlflow_model=Model(artifact_path=model.artifact_location, run_id=run_id,
                                   model_id=model.model_id, model_uuid=model.model_id),
                # Explicit requirements: inferring them loads the model in a subprocess (seconds).
                pip_requirements=requirements)
    finally:
        pyfunc_log.removeFilter(quiet)
        cloudpickle.unregister_pickle_by_value(module)


def _log_pyfunc(tracker: Tracker, name: str, saved_model: Path):
    """Log the pyfunc model as an MLflow 3 LoggedModel linked to the tracker's run.

    Done with the tracker's client instead of `mlflow.pyfunc.log_model`, which writes through
    the global tracking URI and active run.

    Returns:
        the LoggedModel (its `model_id` and `artifact_location`).
    """
    client = tracker.client
    model = client.create_logged_model(tracker.experiment_id, name=name,
                                       source_run_id=tracker.run_id)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            _save_pyfunc(saved_model, local, model, tracker.run_id)
            client.log_model_artifacts(model.model_id, str(local))
        client.log_outputs(tracker.run_id, [LoggedModelOutput(model.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


def _champion_decision(client: MlflowClient, registered: str, objective_name: str,
                       objective: float, higher_is_better: bool) -> str | None:
    """None when the new version should take the alias, else the "not champion (...)" text."""
    if not math.isfinite(objective):
        return f"not champion (objective {objective} is not finite)"
    # Read the aliases rather than catching get_model_version_by_alias's error: a missing alias
    # is INVALID_PARAMETER_VALUE in the SQL store, too broad to tell from a real failure.
    aliases = client.get_registered_model(registered).aliases
    if CHAMPION not in aliases:
        return None
    current = client.get_model_version(registered, str(aliases[CHAMPION]))
    if current.tags.get("objective_name") != objective_name:
        # Different yardsticks cannot be compared; keep the champion until a person decides.
        return (f"not champion (objective {objective_name!r} cannot be compared with champion "
                f"version {current.version}'s {current.tags.get('objective_name')!r})")
    try:
        best = float(current.tags["objective"])
    except (KeyError, ValueError):
        return f"not champion (champion version {current.version} has no numeric objective tag)"
    better = objective > best if higher_is_better else objective < best
    return None if better else f"not champion ({objective:.6g} vs champion {best:.6g})"


def log_exports(tracker: Tracker, exports: Mapping[str, Path], objective_name: str,
                objective: float, higher_is_better: bool = True,
                register: bool = True) -> dict[str, str]:
    """Log exported SavedModels to the run and the model registry.

    For each model: the SavedModel folder as run artifacts under `exports/<name>`; then, with
    `register`, a pyfunc model (`SavedModelPyfunc`) registered as a new version of
    `shopping-<name>`, tagged with `objective_name` and `objective`. The alias `champion` moves
    to the new version only when there is no champion yet or the objective strictly beats the
    champion's (read from its version tags); a champion judged by another objective is kept.
    Two processes registering at the same moment may both read the old champion: serialise
    registrations when that matters.

    Args:
        tracker: the run to log to; the registry is the tracker's store.
        exports: model name ("retrieval", "ranker", "recommend") -> SavedModel version folder.
        objective_name: the figure the models are judged by, e.g. "pipeline/ndcg@10".
        objective: its value for this run.
        higher_is_better: False for a loss.
        register: False logs the artifacts only.

    Returns:
        {name: "champion" | "not champion (X vs champion Y)"}; empty when `register` is False.
    """
    outcome: dict[str, str] = {}
    for name, folder in exports.items():
        folder = Path(folder)
        if not (folder / "saved_model.pb").is_file():
            raise ValueError(f"export {name!r}: {folder} holds no saved_model.pb")
        tracker.log_artifacts(folder, f"exports/{name}")
        if not register:
            continue
        model = _log_pyfunc(tracker, name, folder)
        client = tracker.client
        registered = f"shopping-{name}"
        try:
            client.create_registered_model(registered)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        # The source is the model's artifact location, not `models:/<model_id>`: MLflow 3.17's
        # SQL registry resolves a `models:/` source through the *global* tracking URI (a
        # `MlflowClient()` inside the store), i.e. `./mlflow.db` in the current directory.
        version = client.create_model_version(
            registered, source=model.artifact_location, run_id=tracker.run_id,
            model_id=model.model_id,
            tags={"objective_name": objective_name, "objective": repr(float(objective)),
                  "higher_is_better": str(higher_is_better).lower()})
        refusal = _champion_decision(client, registered, objective_name, float(objective),
                                     higher_is_better)
        if refusal is None:
            client.set_registered_model_alias(registered, CHAMPION, version.version)
            outcome[name] = CHAMPION
        else:
            outcome[name] = refusal
        log.info("registered %s version %s: %s", registered, version.version, outcome[name])
    return outcome
