"""Where runs go: the tracking store's URI, its artifact folder, a fail-fast reachability check,
and the experiment (created on first use with its artifacts beside the store).

`Tracker.start` and `Tracker.attach` (in `client`) call these; the public ones are also exported
as `tracking.<name>`, for callers that need the store without opening a run.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from shopping_mtl.errors import ShoppingMtlError

# The experiment tag the MLflow UI (3.17) reads to open an experiment as model training rather
# than as GenAI (with its assistant panel); it infers GenAI when the tag is absent and no run
# has metrics yet. The UI sets the same tag when a person picks the kind.
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def default_tracking_uri(project_root: Path) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the project's SQLite store.

    Args:
        project_root: the repository folder; the store is `<project_root>/mlflow.db` whatever the
            current directory is (MLflow's own default, `sqlite:///mlflow.db`, follows the cwd).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return f"sqlite:///{Path(project_root).resolve().as_posix()}/mlflow.db"


def artifact_root(project_root: Path) -> Path:
    """`<project_root>/mlruns`: where a local store's experiments keep their artifacts."""
    return Path(project_root).resolve() / "mlruns"


def _is_server(uri: str) -> bool:
    return uri.lower().startswith(("http://", "https://"))


def _local_store_path(uri: str) -> Path | None:
    """The file a sqlite URI names, or the folder a file-store URI names; None for anything else
    (a server, another database, `sqlite://` in memory)."""
    lowered = uri.lower()
    if lowered.startswith("sqlite:"):
        # SQLAlchemy: sqlite:///relative.db and sqlite:////absolute.db; drop any ?query.
        rest = uri[len("sqlite:"):].split("?", 1)[0]
        if not rest.startswith("///") or rest[3:] in ("", ":memory:"):
            return None
        return Path(rest[3:])
    if lowered.startswith("file:"):
        parsed = urllib.parse.urlparse(uri)
        return Path(urllib.request.url2pathname(parsed.path))
    if "://" not in uri and ":" not in uri.split("/", 1)[0]:
        return Path(uri)  # a plain path is a file store
    return None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a message a user can act on, when runs cannot be written to `uri`.

    A tracking server must answer `GET <uri>/health` within `timeout_s`; any HTTP answer below
    500 counts (a server behind authentication answers 401, and MLflow's client deals with that).
    A sqlite or file store needs a writable parent folder. Other stores are not checked.

    Raises:
        ShoppingMtlError: one line naming the URI and the fix.
    """
    if _is_server(uri):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            reason = f"it answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, timeout
            reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
        raise ShoppingMtlError(
            f"MLflow tracking server {uri} is unreachable ({reason}): start it (e.g. "
            f"`mlflow server --host 127.0.0.1 --port <port>`) or unset MLFLOW_TRACKING_URI to log "
            f"to the local store (mlflow.db in the project folder)")
    path = _local_store_path(uri)
    if path is None:
        return
    folder = path.parent.resolve()
    problem = None
    if not folder.is_dir():
        problem = f"folder {folder} does not exist"
    elif not os.access(folder, os.W_OK | os.X_OK):
        problem = f"folder {folder} is not writable"
    elif path.exists() and not os.access(path, os.W_OK):
        problem = f"{path} is not writable"
    if problem:
        raise ShoppingMtlError(
            f"MLflow tracking store {uri} cannot be written: {problem}; fix the permissions or set "
            f"MLFLOW_TRACKING_URI to a writable store")


def get_or_create_experiment(name: str, project_root: Path,
                             client: MlflowClient | None = None) -> str:
    """The id of experiment `name`, created on first use, tagged as a model-training
    experiment (`EXPERIMENT_KIND_TAG`) unless a kind is already set.

    With a local store (sqlite or file) a new experiment's artifact location is set explicitly to
    `<project_root>/mlruns/<name>` (a file URI; for a sqlite database named by
    MLFLOW_TRACKING_URI, `mlruns/<name>` beside that database); MLflow's default would be
    `./mlruns/<id>` relative to whatever the current directory is. A tracking server chooses its
    own location (`--default-artifact-root` / `--artifacts-destination`).

    Args:
        name: the experiment name.
        project_root: the repository folder.
        client: a client for the store; by default one for `default_tracking_uri(project_root)`.

    Raises:
        ShoppingMtlError: the experiment exists but was deleted (runs cannot be created in it).
    """
    client = client or MlflowClient(default_tracking_uri(project_root))
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if not _is_server(client.tracking_uri):
            # Artifacts beside the database: `<root>/mlruns` for the project's own store, the
            # database's folder for a sqlite store named in MLFLOW_TRACKING_URI.
            store = _local_store_path(client.tracking_uri)
            root = (store.resolve().parent / "mlruns" if store is not None and store.suffix == ".db"
                    else artifact_root(project_root))
            location = (root / name).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location,
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException as exc:
            # Another process created it between our lookup and create: use theirs.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage != "deleted" and EXPERIMENT_KIND_TAG not in experiment.tags:
        # An experiment made before the tag was set, or by another tool: a kind a person chose
        # in the UI is kept, an absent one set.
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    if experiment.lifecycle_stage == "deleted":
        raise ShoppingMtlError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) in {client.tracking_uri} "
            f"is deleted: restore it (`mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}`) or choose another experiment name")
    return experiment.experiment_id
