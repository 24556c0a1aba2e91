"""MLflow tracking: one run per training, child runs for tuner trials, plots, and the registry.

The flow a training process follows:

1. `Tracker.start(project_root, experiment=...)` resolves the store (`MLFLOW_TRACKING_URI`, else
   `sqlite:///<project_root>/mlflow.db`), fails fast with a `ShoppingMtlError` when a tracking
   server does not answer (MLflow's own client would retry for minutes), creates the experiment
   on first use with its artifacts under `<project_root>/mlruns/<experiment>` (STACK.md pitfall 7:
   otherwise they land relative to the current directory), and opens a run tagged with
   `run_tags(...)` (git commit, dirty flag, data fingerprint, package versions).
2. `log_params(flatten(config))` logs the whole configuration as dotted keys;
   `log_epoch(prefix, logs, epoch)` / `log_metrics(...)` log figures. Keys MLflow rejects
   (`recall@100`: `@` is not allowed) are rewritten deterministically by `metric_key`
   (`recall_at_100`); non-finite values are skipped and counted in `tracking/skipped_non_finite`.
3. `plot_calibration` / `plot_recall_curves` write PNGs that `log_artifact` attaches to the run.
4. `log_exports(tracker, exports, objective_name, objective)` logs each exported SavedModel as
   plain artifacts and as an MLflow pyfunc model (`SavedModelPyfunc`, STACK.md pitfall 8: the
   Keras/TensorFlow flavors break on dict inputs with strings), registers it as
   `shopping-<name>` and moves the `champion` alias only when the objective beats the champion's.
5. Leaving the `with Tracker.start(...)` block ends the run FINISHED, FAILED on an exception
   (KILLED on Ctrl-C).

Every call goes through the tracker's own `MlflowClient(tracking_uri)`, never MLflow's global
"active run", so a search's parent run and its trials' child runs (`tracker.child(...)`) can be
open in one process at once. A search is one parent run and each trial a child run
(STYLE.md habit 12); children carry the `mlflow.parentRunId` tag that MLflow's UI nests by.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils import validation

from shopping_mtl.errors import ShoppingMtlError

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "shopping_mtl"
CHAMPION = "champion"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
SKIPPED_METRIC = "tracking/skipped_non_finite"
PARENT_RUN_TAG = "mlflow.parentRunId"
# The packages whose versions decide whether a run can be reproduced (STACK.md's pins).
VERSIONED_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "keras-tuner", "mlflow",
                      "pandas", "numpy")
# What the pyfunc model needs to load; pinned to this environment's versions when logged.
PYFUNC_REQUIREMENTS = ("mlflow", "tensorflow", "pandas", "numpy", "cloudpickle")

# MLflow 3.17's limits (6000 characters per param value, not the 500 of MLflow 1.x).
MAX_PARAM_VALUE = validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = validation.MAX_TAG_VAL_LENGTH
PARAMS_PER_BATCH = validation.MAX_PARAMS_TAGS_PER_BATCH  # 100
METRICS_PER_BATCH = validation.MAX_METRICS_PER_BATCH  # 1000


# ---------------------------------------------------------------------------------------------
# Where runs go


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
    """The id of experiment `name`, created on first use.

    With a local store (sqlite or file) a new experiment's artifact location is set explicitly to
    `<project_root>/mlruns/<name>` (a file URI; for a sqlite database named by
    MLFLOW_TRACKING_URI, `mlruns/<name>` beside that database); MLflow's default would be `./mlruns/<id>`
    relative to whatever the current directory is (STACK.md pitfall 7). A tracking server
    chooses its own location (`--default-artifact-root` / `--artifacts-destination`).

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
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            # Another process created it between our lookup and create: use theirs.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise ShoppingMtlError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) in {client.tracking_uri} "
            f"is deleted: restore it (`mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}`) or choose another experiment name")
    return experiment.experiment_id


# ---------------------------------------------------------------------------------------------
# What a run records about itself


def _plain(config: Any) -> Any:
    """Dataclass instances become dicts (a `Config` can be flattened as it is)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return config


def flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, string values.

    `{"ranking": {"loss_weights": {"click": 1.0}}, "evaluation": {"ks": [10, 50, 100]}}` ->
    `{"ranking.loss_weights.click": "1.0", "evaluation.ks": "[10, 50, 100]"}`. Values are
    `str(value)` cut to MLflow's param length limit (`MAX_PARAM_VALUE`, 6000 in MLflow 3.17); an
    empty mapping is kept as `"{}"` so the key is not lost. Dataclass instances flatten like dicts.

    Args:
        config: a nested mapping (e.g. `Config.to_dict()`).
        prefix: prepended to every key (used by the recursion).
    """
    flat: dict[str, str] = {}
    for key, value in _plain(config).items():
        name = f"{prefix}{key}"
        value = _plain(value)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_VALUE]
    return flat


def _git(project_root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=project_root, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_tags(project_root: Path, info: Mapping | None = None) -> dict[str, str]:
    """Tags that say what code, data and packages produced a run.

    `git.commit` (HEAD, or "unknown" outside a repository) and `mlflow.source.git.commit` (the
    same; MLflow's UI links it), `git.dirty` ("true" when tracked files differ from HEAD;
    untracked files are ignored; "unknown" without git), `data.fingerprint` and `data.dataset`
    from `info` when present, and `versions.<package>` for the packages of STACK.md (read from
    the installed metadata: nothing is imported).

    Args:
        project_root: the repository folder.
        info: the pipeline's run info (`data_fingerprint`, `dataset`).
    """
    info = info or {}
    head = _git(project_root, "rev-parse", "HEAD")
    commit = head.strip() if head and head.strip() else "unknown"
    status = _git(project_root, "status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else ("true" if status.strip() else "false")
    tags = {"git.commit": commit, "mlflow.source.git.commit": commit, "git.dirty": dirty}
    if "data_fingerprint" in info:
        tags["data.fingerprint"] = str(info["data_fingerprint"])
    if "dataset" in info:
        tags["data.dataset"] = str(info["dataset"])
    tags.update({f"versions.{p}": _version(p) for p in VERSIONED_PACKAGES})
    return tags


_BAD_KEY_CHARACTERS = re.compile(r"[^/\w.\- ]")


def metric_key(key: str) -> str:
    """`key` rewritten so that MLflow accepts it as a metric, param or tag name.

    MLflow allows letters, digits, `_ - . / :` and spaces, and no path tricks. `@` becomes `_at_`
    (`pipeline/recall@100` -> `pipeline/recall_at_100`), any other rejected character `_`
    (`:` too: Windows stores reject it); empty, `.` and `..` path segments are dropped
    (`a//b/` -> `a/b`). The rewrite is deterministic, so a key maps to the same name in every
    run; keys MLflow accepts, apart from `:`, are unchanged.
    """
    text = _BAD_KEY_CHARACTERS.sub("_", str(key).replace("@", "_at_"))
    if validation.path_not_unique(text):
        text = "/".join(s for s in text.split("/") if s not in ("", ".", ".."))
    return text or "_"


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------------------------
# One run


class Tracker:
    """One MLflow run, written through its own client; a context manager.

    Use `Tracker.start(...)` (or `parent.child(...)` for a tuner trial), not the constructor.
    `with Tracker.start(root) as run:` ends the run FINISHED, or FAILED when the block raises
    (KILLED on KeyboardInterrupt). The tracker never touches MLflow's global active run, so any
    number can be open at once in one process; it is not meant to be shared between threads.
    """

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, project_root: Path):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.project_root = Path(project_root)
        self.status: str | None = None  # set by end()
        # Per namespace ("param", "metric"): MLflow key -> the key the caller gave.
        self._keys: dict[str, dict[str, str]] = {"param": {}, "metric": {}}
        self._skipped = 0

    @classmethod
    def start(cls, project_root: Path, experiment: str = DEFAULT_EXPERIMENT,
              run_name: str | None = None, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None) -> "Tracker":
        """Open a run in `experiment` (created on first use) of the project's store.

        Args:
            project_root: the repository folder; decides the default store and artifact folder.
            experiment: the experiment name.
            run_name: shown in the UI; MLflow makes one up when None.
            tags: extra tags (e.g. `run_tags(...)`), keys rewritten by `metric_key`.
            parent_run_id: make this a child run of that run (a tuner trial under its search).

        Raises:
            ShoppingMtlError: the store is unreachable or not writable (see `check_reachable`).
        """
        uri = default_tracking_uri(project_root)
        check_reachable(uri)
        client = MlflowClient(uri)
        experiment_id = get_or_create_experiment(experiment, project_root, client=client)
        return cls._create(client, experiment_id, project_root, run_name, tags, parent_run_id)

    def child(self, run_name: str | None = None,
              tags: Mapping[str, Any] | None = None) -> "Tracker":
        """A child run of this one in the same store and experiment (a tuner trial)."""
        return Tracker._create(self.client, self.experiment_id, self.project_root, run_name, tags,
                               parent_run_id=self.run_id)

    @classmethod
    def attach(cls, project_root: Path, run_id: str) -> "Tracker":
        """A tracker for a run another process opened (a distributed search's workers add their
        trials under the chief's run); ending it is that process's job."""
        uri = default_tracking_uri(project_root)
        check_reachable(uri)
        client = MlflowClient(uri)
        return cls(client, run_id, client.get_run(run_id).info.experiment_id, project_root)

    @classmethod
    def _create(cls, client: MlflowClient, experiment_id: str, project_root: Path,
                run_name: str | None, tags: Mapping[str, Any] | None,
                parent_run_id: str | None) -> "Tracker":
        all_tags = _context_tags()
        all_tags.update({metric_key(k): str(v)[:MAX_TAG_VALUE] for k, v in (tags or {}).items()})
        if parent_run_id:
            # What `mlflow.start_run(nested=True)` sets; the UI nests runs by it.
            all_tags[PARENT_RUN_TAG] = parent_run_id
        run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
        log.info("MLflow run %s (%s) in %s", run.info.run_id, run.info.run_name,
                 client.tracking_uri)
        return cls(client, run.info.run_id, experiment_id, project_root)

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    def _key(self, key: str, namespace: str) -> str:
        """`metric_key(key)`, refusing two different caller keys that land on one MLflow key
        (`recall@10` and `recall_at_10`) in one run: their figures would mix silently."""
        name = metric_key(key)
        earlier = self._keys[namespace].setdefault(name, str(key))
        if earlier != str(key):
            raise ValueError(f"{namespace} keys {earlier!r} and {key!r} both become MLflow key "
                             f"{name!r}; rename one")
        return name

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (a nested mapping is flattened), 100 per request.

        MLflow refuses to change a param once logged: log each key once per run.
        """
        flat = flatten(params)
        entries = [Param(self._key(k, "param"), v) for k, v in flat.items()]
        for chunk in _chunks(entries, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log figures at `step` (0 when None), batched.

        Non-finite values (NaN, inf: a diverged epoch, an AUC over one class) are not logged;
        the run's running count of them is logged as `tracking/skipped_non_finite` at the same
        step, and a warning names the skipped keys.

        Raises:
            TypeError: a value is not a number (the key is named). Numpy scalars, 0-d arrays
                and eager tensors count as numbers; strings and booleans do not.
        """
        step = 0 if step is None else int(step)
        stamp = _now_ms()
        entries, skipped = [], []
        for key, value in metrics.items():
            if isinstance(value, (str, bytes, bool, np.bool_)):
                raise TypeError(f"metric {key!r} is {value!r}, not a number")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"metric {key!r} is {value!r}, not a number") from None
            if math.isfinite(value):
                entries.append(Metric(self._key(key, "metric"), value, stamp, step))
            else:
                skipped.append(key)
        if skipped:
            self._skipped += len(skipped)
            entries.append(Metric(SKIPPED_METRIC, float(self._skipped), stamp, step))
            log.warning("not logging non-finite metrics at step %d: %s", step, ", ".join(skipped))
        for chunk in _chunks(entries, METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_epoch(self, prefix: str, logs: Mapping[str, float], epoch: int) -> None:
        """Log a Keras epoch's `logs` as `<prefix>/<name>` at step `epoch`.

        Use this from one callback only: autolog plus a callback logs everything twice (STACK.md
        pitfall 9).
        """
        head = prefix.rstrip("/") + "/" if prefix else ""
        self.log_metrics({f"{head}{name}": value for name, value in logs.items()}, step=epoch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as strings, cut to MLflow's tag length limit), 100 per request."""
        entries = [RunTag(metric_key(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        for chunk in _chunks(entries, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy one file into the run's artifacts (under `artifact_path` when given)."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        """Copy a folder's contents into the run's artifacts (under `artifact_path` when given)."""
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Write `text` as the artifact `artifact_file` (e.g. `config.yaml`, `best_trial.json`)."""
        self.client.log_text(self.run_id, text, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        """End the run with `status` (FINISHED, FAILED or KILLED); later calls do nothing."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        if self.status is not None:
            return
        self.client.set_terminated(self.run_id, status=status)
        self.status = status

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
            return
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            self.end(status)
        except Exception:  # noqa: BLE001 - the caller's exception is the one that matters
            log.warning("could not mark MLflow run %s %s", self.run_id, status, exc_info=True)


def _context_tags() -> dict[str, str]:
    """MLflow's usual source/user tags (what `mlflow.start_run` adds), best effort."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        return dict(resolve_tags({}))
    except Exception:  # noqa: BLE001 - an internal API: the run matters more than these tags
        return {}


# ---------------------------------------------------------------------------------------------
# Plots


def _figure(width: float, height: float):
    """A matplotlib Figure drawn by the Agg canvas: no pyplot, no global backend switch, so it
    works headless and beside any backend the caller's process chose."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def calibration_bins(predicted: np.ndarray, labels: np.ndarray,
                     n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability-diagram points: per equal-width bin of [0, 1], the mean predicted probability,
    the observed positive rate and the count (NaN means for an empty bin). A prediction of
    exactly 1.0 falls in the last bin.

    Args:
        predicted: (n,) probabilities in [0, 1].
        labels: (n,) 0/1 outcomes.
        n_bins: number of equal-width bins.
    """
    predicted, labels = np.ravel(predicted), np.ravel(labels)
    if predicted.shape != labels.shape:
        raise ValueError(f"{predicted.size} predictions but {labels.size} labels")
    counts, predicted_sum, label_sum = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    # A slice at a time: the float64 copies of ~20M test rows at 10^7 events were ~0.8 GB.
    for start in range(0, len(predicted), 1 << 20):
        p = np.asarray(predicted[start:start + (1 << 20)], dtype=np.float64)
        index = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
        counts += np.bincount(index, minlength=n_bins)
        predicted_sum += np.bincount(index, weights=p, minlength=n_bins)
        label_sum += np.bincount(index, weights=np.asarray(labels[start:start + (1 << 20)], np.float64),
                                 minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return predicted_sum / counts, label_sum / counts, counts


def plot_calibration(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """A reliability diagram per head, side by side in one PNG.

    Each panel: mean predicted probability against observed rate in 10 equal-width bins, the
    diagonal of perfect calibration, and the expected calibration error (count-weighted mean
    gap) in the title.

    Args:
        curves: head name ("click", "save", "purchase") -> (predicted probabilities, 0/1 labels).
        path: the PNG to write (parent folders are created).

    Returns:
        `path`.
    """
    if not curves:
        raise ValueError("plot_calibration needs at least one head")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(4.0 * len(curves), 4.2)
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (head, (predicted, labels)) in zip(axes, curves.items()):
        try:
            mean_pred, rate, counts = calibration_bins(predicted, labels)
        except ValueError as exc:
            raise ValueError(f"head {head!r}: {exc}") from None
        filled = counts > 0
        ece = float(np.sum(counts[filled] * np.abs(mean_pred[filled] - rate[filled]))
                    / max(counts.sum(), 1))
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
        ax.plot(mean_pred[filled], rate[filled], marker="o", label=head)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability",
               ylabel="observed rate", title=f"{head} (n={int(counts.sum())}, ECE={ece:.3f})")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_recall_curves(metrics: Mapping[str, float], lists: Sequence[str], ks: Sequence[int],
                       path: Path) -> Path:
    """Recall@K against K, one line per list, in one PNG.

    A list is drawn from the keys `f"{name}/recall@{k}"` present in `metrics`; lists with no
    such key are left out.

    Args:
        metrics: flat figures as in `metrics.json` (`pipeline/recall@100`, ...).
        lists: list names, e.g. "pipeline", "retrieval", "baseline/user_history".
        ks: the cut-offs, e.g. (10, 50, 100).
        path: the PNG to write (parent folders are created).

    Returns:
        `path`.

    Raises:
        ValueError: none of the lists has a recall figure (nothing to draw).
    """
    fig = _figure(6.0, 4.2)
    ax = fig.subplots()
    drawn = 0
    for name in lists:
        points = [(k, metrics[f"{name}/recall@{k}"]) for k in sorted(ks)
                  if f"{name}/recall@{k}" in metrics]
        if points:
            x, y = zip(*points)
            ax.plot(x, y, marker="o", label=name)
            drawn += 1
    if not drawn:
        raise ValueError(f"no '<list>/recall@<k>' figures for lists {list(lists)} at k={list(ks)}")
    ax.set(xlabel="K", ylabel="recall@K", title="Recall@K")
    ax.set_xticks(sorted(ks))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ---------------------------------------------------------------------------------------------
# Models: pyfunc wrapper and registry


class SavedModelPyfunc(mlflow.pyfunc.PythonModel):
    """An exported SavedModel as an MLflow pyfunc model (STACK.md pitfall 8).

    `predict` takes a DataFrame with one column per input of the `serving_default` signature.
    Cells of a column that are lists or arrays make a 2-D input, padded on the right with ""
    or 0 when rows differ in length (the exports' padding convention); each column is cast to
    the dtype the signature declares. It returns the signature's outputs as a dict of numpy
    arrays, bytes decoded to str (JSON-friendly for `mlflow models serve`).

    The class is pickled by value when logged (see `_save_pyfunc`), so loading the model needs
    mlflow, tensorflow, pandas and numpy, but not this project.
    """

    def load_context(self, context) -> None:
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts["saved_model"])
        self._fn = self._model.signatures["serving_default"]
        _, specs = self._fn.structured_input_signature  # ((), {name: TensorSpec})
        self._specs = dict(specs)

    # The pd.DataFrame hint tells MLflow 3 that no schema can be inferred from it; without a hint
    # it warns on every import of this module. The schema comes from `_signature` instead.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> dict[str, np.ndarray]:
        import tensorflow as tf

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
    import tensorflow as tf
    from mlflow.models.signature import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema
    from tensorflow.core.protobuf import saved_model_pb2

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
    import cloudpickle
    from mlflow.models import Model

    requirements = [f"{p}=={_version(p)}" for p in PYFUNC_REQUIREMENTS]
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
