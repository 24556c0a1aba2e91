"""The model registry: exported SavedModels as MLflow pyfunc models, versions, the champion.

`log_exports(tracker, exports, objective_name, objective)` logs each exported SavedModel as an
MLflow pyfunc model (`SavedModelPyfunc`: MLflow's Keras/TensorFlow flavors break on dict inputs
with strings) with a signature (inputs and outputs) and a one-row input example, registers it as
a new version of `shopping-<name>` with a description, and moves the `champion` alias only when
the objective beats the champion's. The SavedModel is stored once, inside the logged model; a
plain copy under the run's artifacts (`exports/<name>`) only on request (`export_artifacts`).
Everything goes through the tracker's own client, so the registry is the tracker's store.

A version's link to its logged model: MLflow 3.17's SQL and REST registries do not keep a
version's `model_id` (the table has no column for it, `ModelVersion.model_id` comes back None
whatever `create_model_version` was given), so the link is written where MLflow's own
`register_model` writes it and where the UI reads it: the logged model's `mlflow.modelVersions`
tag, and also the version's `model_id` tag (`version_model_id` reads either).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
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
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
from tensorflow.core.protobuf import saved_model_pb2

from shopping_mtl.export.publishing import read_warmup
from shopping_mtl.tracking.client import Tracker, package_version

log = logging.getLogger(__name__)

CHAMPION = "champion"
MODEL_ID_TAG = "model_id"  # on a registered version: its logged model (see the module docstring)
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


def _serving_signature(saved_model: Path):
    """The `serving_default` SignatureDef of a SavedModel, read from `saved_model.pb` without
    loading the graph."""
    proto = saved_model_pb2.SavedModel.FromString(
        (Path(saved_model) / "saved_model.pb").read_bytes())
    return proto.meta_graphs[0].signature_def["serving_default"]


def _kind(dtype: tf.DType, lenient: bool) -> DataType:
    """MLflow's type for a tensor dtype; `lenient` widens floats to double and ints to long."""
    if dtype == tf.string:
        return DataType.string
    if dtype == tf.bool:
        return DataType.boolean
    if dtype.is_floating:
        return DataType.double if lenient or dtype == tf.float64 else DataType.float
    if lenient or dtype in (tf.int64, tf.uint32, tf.uint64):
        return DataType.long
    return DataType.integer


def _columns(tensors, lenient: bool) -> Schema:
    columns = []
    for name in sorted(tensors):
        kind = _kind(tf.dtypes.as_dtype(tensors[name].dtype), lenient)
        rank = len(tensors[name].tensor_shape.dim)
        for _ in range(max(rank - 1, 0)):
            kind = Array(kind)
        columns.append(ColSpec(kind, name))
    return Schema(columns)


def _signature(saved_model: Path) -> ModelSignature:
    """The pyfunc signature of a SavedModel's `serving_default` signature: one column per input
    and per output, rank-2 tensors as arrays (the batch dimension is the rows).

    Input floats are declared `double` and ints `long` so that a plain pandas column (float64,
    int64) passes MLflow's schema check; `predict` casts to the exact dtype. Outputs keep their
    own width (`float` for float32). Read from `saved_model.pb` without loading the graph."""
    signature = _serving_signature(saved_model)
    return ModelSignature(inputs=_columns(signature.inputs, lenient=True),
                          outputs=_columns(signature.outputs, lenient=False))


def _cell(value: np.ndarray):
    """One row's value of a request tensor as a DataFrame cell: a scalar, or a list for a
    rank-2 tensor; bytes decoded, numpy scalars as Python values."""
    value = np.asarray(value)  # iterating a string tensor gives bare bytes
    if value.ndim == 0:
        item = value.item()
        return item.decode() if isinstance(item, bytes) else item
    return [_cell(v) for v in value]


def _input_example(saved_model: Path) -> pd.DataFrame:
    """A one-row input example for the pyfunc model: the first warmup request of the export
    (`assets.extra/tf_serving_warmup_requests`, real validation rows) when it has one, else a
    row of "" / 0 / False per input (one element per rank-2 input). The model is not loaded."""
    signature = _serving_signature(saved_model)
    for _, inputs in read_warmup(saved_model, 1):
        if set(inputs) == set(signature.inputs):
            return pd.DataFrame({name: [_cell(inputs[name][0])] for name in sorted(inputs)})
    row = {}
    for name in sorted(signature.inputs):
        dtype = tf.dtypes.as_dtype(signature.inputs[name].dtype)
        value = "" if dtype == tf.string else (False if dtype == tf.bool else
                                              (0.0 if dtype.is_floating else 0))
        dims = [d.size for d in signature.inputs[name].tensor_shape.dim][1:]
        for size in reversed(dims):
            value = [value] * (size if size and size > 0 else 1)
        row[name] = [value]
    return pd.DataFrame(row)


def version_model_id(version) -> str | None:
    """The logged model a registered version was made from: `version.model_id` where the
    registry keeps it, else the version's `model_id` tag (MLflow 3.17's SQL and REST registries
    drop `model_id`: see the module docstring)."""
    return version.model_id or version.tags.get(MODEL_ID_TAG)


def _description(name: str, tracker: Tracker, objective_name: str, objective: float,
                 higher_is_better: bool, dataset: str | None, model_id: str) -> str:
    """What a registered version is, for the registry UI: model, dataset, objective, run."""
    run = tracker.client.get_run(tracker.run_id)
    parts = [f"The `{name}` export (TensorFlow SavedModel, served as an MLflow pyfunc model) of "
             f"run {run.info.run_name} ({tracker.run_id}), logged model {model_id}."]
    if dataset:
        parts.append(f"Trained on dataset `{dataset}`"
                     + (f" (data fingerprint {run.data.tags['data.fingerprint'][:12]})."
                        if "data.fingerprint" in run.data.tags else "."))
    parts.append(f"Objective {objective_name} = {float(objective):.6g} "
                 f"({'higher' if higher_is_better else 'lower'} is better).")
    return " ".join(parts)


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
        # With a signature given, MLflow checks the input example against it without loading
        # the model (`save_model`; only `log_model` would load it to validate a serving input).
        mlflow.pyfunc.save_model(
            path=str(target), python_model=SavedModelPyfunc(),
            artifacts={"saved_model": str(saved_model)}, signature=_signature(saved_model),
            input_example=_input_example(saved_model),
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
                register: bool = True, export_artifacts: bool = False,
                dataset: str | None = None) -> dict[str, str]:
    """Log exported SavedModels to the run and the model registry.

    For each model, with `register`: a pyfunc model (`SavedModelPyfunc`, signature with inputs
    and outputs, a one-row input example) logged as an MLflow LoggedModel of the run and
    registered as a new version of `shopping-<name>`, with a description (model, dataset,
    objective, run), tagged with `objective_name`, `objective`, `higher_is_better` and
    `model_id`, and listed in the logged model's `mlflow.modelVersions` tag. The alias
    `champion` moves to the new version only when there is no champion yet or the objective
    strictly beats the champion's (read from its version tags); a champion judged by another
    objective is kept. Two processes registering at the same moment may both read the old
    champion: serialise registrations when that matters.

    The SavedModel folder is also copied as plain run artifacts under `exports/<name>` when
    `export_artifacts` is on, or when `register` is off (then it is the run's only copy); by
    default a registered model's files are stored once (tens of MB per run).

    Args:
        tracker: the run to log to; the registry is the tracker's store.
        exports: model name ("retrieval", "ranker", "recommend") -> SavedModel version folder.
        objective_name: the figure the models are judged by, e.g. "pipeline/ndcg@10".
        objective: its value for this run.
        higher_is_better: False for a loss.
        register: False logs the plain artifacts only.
        export_artifacts: also log the plain copy of a registered model.
        dataset: the dataset's name, for the versions' descriptions.

    Returns:
        {name: "champion" | "not champion (X vs champion Y)"}; empty when `register` is False.

    Raises:
        ValueError: a folder holds no `saved_model.pb` (checked before anything is logged).
    """
    outcome: dict[str, str] = {}
    for name, folder in exports.items():
        if not (Path(folder) / "saved_model.pb").is_file():
            raise ValueError(f"export {name!r}: {folder} holds no saved_model.pb")
    for name, folder in exports.items():
        folder = Path(folder)
        if export_artifacts or not register:
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
            description=_description(name, tracker, objective_name, objective, higher_is_better,
                                     dataset, model.model_id),
            tags={"objective_name": objective_name, "objective": repr(float(objective)),
                  "higher_is_better": str(higher_is_better).lower(),
                  MODEL_ID_TAG: model.model_id})
        # The logged model -> its versions, as `mlflow.register_model` records it (the UI's
        # "registered models" of a logged model read this tag).
        listed = json.loads(client.get_logged_model(model.model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
        listed.append({"name": registered, "version": str(version.version)})
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(listed)})
        refusal = _champion_decision(client, registered, objective_name, float(objective),
                                     higher_is_better)
        if refusal is None:
            client.set_registered_model_alias(registered, CHAMPION, version.version)
            outcome[name] = CHAMPION
        else:
            outcome[name] = refusal
        log.info("registered %s version %s: %s", registered, version.version, outcome[name])
    return outcome
