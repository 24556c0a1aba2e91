"""MLflow client side: what a run records, and `Tracker`, one run (where runs go: `store`).

The flow a training process follows:

1. `Tracker.start(project_root, experiment=...)`, through `shopping_mtl.tracking.store`,
   resolves the store (`MLFLOW_TRACKING_URI`, else `sqlite:///<project_root>/mlflow.db`), fails
   fast with a `ShoppingMtlError` when a tracking server does not answer (MLflow's own client
   would retry for minutes) and creates the experiment on first use with its artifacts under
   `<project_root>/mlruns/<experiment>` (MLflow's default would put them relative to the current
   directory); it then opens a run tagged with
   `run_tags(...)` (git commit, dirty flag, data fingerprint, package versions).
2. `log_params(flatten(config))` logs the whole configuration as dotted keys;
   `log_epoch(prefix, logs, epoch)` / `log_metrics(...)` log figures; once the data is read,
   `log_run_metadata(info, metrics)` tags the run (`run_tags`) and logs the dataset as an MLflow
   dataset input (`dataset_input`: name, digest = the data fingerprint, source = the spec, a
   profile of counts); a search's trials call it on their child runs too. Keys MLflow rejects
   (`recall@100`: `@` is not allowed) are rewritten deterministically by `metric_key`
   (`recall_at_100`); non-finite values are skipped and counted in `tracking/skipped_non_finite`.
   With `system_metrics` (`Tracker.start(..., system_metrics=True)`; children inherit it),
   MLflow's `SystemMetricsMonitor` samples CPU, memory, disk, network (and GPU) into
   `system/...` metrics every `SYSTEM_METRICS_INTERVAL_S` seconds until the run ends.
3. Leaving the `with Tracker.start(...)` block ends the run FINISHED, FAILED on an exception
   (KILLED on Ctrl-C). A process killed outright (SIGKILL) cannot end its run: every run is
   tagged with its process (`process.host`, `process.pid`), and `end_abandoned_runs` marks a
   RUNNING run of a run folder KILLED once its process is gone (a later run of the same folder
   calls it when it starts).

Every call goes through the tracker's own `MlflowClient(tracking_uri)`, never MLflow's global
"active run", so a search's parent run and its trials' child runs (`tracker.child(...)`) can be
open in one process at once. A search is one parent run and each trial a child run; children
carry the `mlflow.parentRunId` tag that MLflow's UI nests by.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.utils import validation

from shopping_mtl.run_folder import HOST, process_gone
from shopping_mtl.tracking.dataset import dataset_input
from shopping_mtl.tracking.store import (check_reachable, default_tracking_uri,
                                         get_or_create_experiment)

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "shopping_mtl"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
SKIPPED_METRIC = "tracking/skipped_non_finite"
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_DIR_TAG = "run_dir"  # the run folder (resolved) a training or search run writes
# The process that opened a run, so a later process can tell whether it is gone.
HOST_TAG, PID_TAG = "process.host", "process.pid"
ABANDONED_TAG = "ended_by"
# The packages whose versions decide whether a run can be reproduced (pinned in pyproject.toml).
VERSIONED_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "keras-tuner", "mlflow",
                      "pandas", "numpy")

# MLflow 3.17's limits (6000 characters per param value, not the 500 of MLflow 1.x).
MAX_PARAM_VALUE = validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = validation.MAX_TAG_VAL_LENGTH
PARAMS_PER_BATCH = validation.MAX_PARAMS_TAGS_PER_BATCH  # 100
METRICS_PER_BATCH = validation.MAX_METRICS_PER_BATCH  # 1000
# MLflow's own default: one sample every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides).
SYSTEM_METRICS_INTERVAL_S = 10.0


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


def package_version(package: str) -> str:
    """The installed version of `package` (from its metadata), or "not installed"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_tags(project_root: Path, info: Mapping | None = None) -> dict[str, str]:
    """Tags that say what code, data and packages produced a run.

    `git.commit` (HEAD, or "unknown" outside a repository) and `mlflow.source.git.commit` (the
    same; MLflow's UI links it), `git.dirty` ("true" when tracked files differ from HEAD;
    untracked files are ignored; "unknown" without git), `data.fingerprint` and `data.dataset`
    from `info` when present, and `versions.<package>` for `VERSIONED_PACKAGES` (read from
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
    tags.update({f"versions.{p}": package_version(p) for p in VERSIONED_PACKAGES})
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


# MLflow's monitor announces every start and stop (and a missing GPU) at INFO: a search would
# print three lines per trial. Its warnings and errors still show.
_MONITOR_LOG = logging.getLogger("mlflow.system_metrics.system_metrics_monitor")


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """`logger` at WARNING or above for the block (its level restored after)."""
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def children_filter(run_id: str) -> str:
    """The MLflow search filter of the child runs of `run_id` (a search's trials, its final run)."""
    return f"tags.`{PARENT_RUN_TAG}` = '{run_id}'"


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

    `system_metrics`: whether this run's own process samples system metrics into it (started by
    `start`/`child`, stopped by `end`) and whether its children do.
    """

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str, project_root: Path,
                 system_metrics: bool = False):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.project_root = Path(project_root)
        self.system_metrics = system_metrics
        self.status: str | None = None  # set by end()
        self._monitor: SystemMetricsMonitor | None = None
        # Per namespace ("param", "metric"): MLflow key -> the key the caller gave.
        self._keys: dict[str, dict[str, str]] = {"param": {}, "metric": {}}
        self._skipped = 0

    @classmethod
    def start(cls, project_root: Path, experiment: str = DEFAULT_EXPERIMENT,
              run_name: str | None = None, tags: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None, system_metrics: bool = False) -> "Tracker":
        """Open a run in `experiment` (created on first use) of the project's store.

        Args:
            project_root: the repository folder; decides the default store and artifact folder.
            experiment: the experiment name.
            run_name: shown in the UI; MLflow makes one up when None.
            tags: extra tags (e.g. `run_tags(...)`), keys rewritten by `metric_key`.
            parent_run_id: make this a child run of that run (a tuner trial under its search).
            system_metrics: sample system metrics into the run (a background thread, one sample
                every `SYSTEM_METRICS_INTERVAL_S`) until it ends; its children do too.

        Raises:
            ShoppingMtlError: the store is unreachable or not writable (see `check_reachable`).
        """
        uri = default_tracking_uri(project_root)
        check_reachable(uri)
        client = MlflowClient(uri)
        experiment_id = get_or_create_experiment(experiment, project_root, client=client)
        return cls._create(client, experiment_id, project_root, run_name, tags, parent_run_id,
                           system_metrics)

    def child(self, run_name: str | None = None,
              tags: Mapping[str, Any] | None = None) -> "Tracker":
        """A child run of this one in the same store and experiment (a tuner trial), sampling
        system metrics when this tracker's `system_metrics` is on. It carries no git or data
        tags until `log_run_metadata` is called on it."""
        return Tracker._create(self.client, self.experiment_id, self.project_root, run_name, tags,
                               parent_run_id=self.run_id, system_metrics=self.system_metrics)

    @classmethod
    def attach(cls, project_root: Path, run_id: str, system_metrics: bool = False) -> "Tracker":
        """A tracker for a run another process opened (a distributed search's workers add their
        trials under the chief's run); ending it, and sampling its system metrics, is that
        process's job. `system_metrics`: whether this tracker's children sample theirs."""
        uri = default_tracking_uri(project_root)
        check_reachable(uri)
        client = MlflowClient(uri)
        return cls(client, run_id, client.get_run(run_id).info.experiment_id, project_root,
                   system_metrics=system_metrics)

    @classmethod
    def _create(cls, client: MlflowClient, experiment_id: str, project_root: Path,
                run_name: str | None, tags: Mapping[str, Any] | None,
                parent_run_id: str | None, system_metrics: bool = False) -> "Tracker":
        all_tags = _context_tags()
        all_tags.update({HOST_TAG: HOST, PID_TAG: str(os.getpid())})
        all_tags.update({metric_key(k): str(v)[:MAX_TAG_VALUE] for k, v in (tags or {}).items()})
        if parent_run_id:
            # What `mlflow.start_run(nested=True)` sets; the UI nests runs by it.
            all_tags[PARENT_RUN_TAG] = parent_run_id
        run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
        log.info("MLflow run %s (%s) in %s", run.info.run_id, run.info.run_name,
                 client.tracking_uri)
        tracker = cls(client, run.info.run_id, experiment_id, project_root,
                      system_metrics=system_metrics)
        if system_metrics:
            tracker._start_system_metrics()
        return tracker

    def _start_system_metrics(self) -> None:
        """MLflow's monitor for this run, through this tracker's store (not the global URI).
        It stops by itself once the run is no longer RUNNING; `end` stops it first."""
        with _quiet(_MONITOR_LOG):
            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                           tracking_uri=self.client.tracking_uri)
            monitor.start()
        self._monitor = monitor

    def _stop_system_metrics(self) -> None:
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            with _quiet(_MONITOR_LOG):
                monitor.finish()  # wakes the sampling thread, joins it and logs what it holds

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    def rename(self, run_name: str) -> None:
        """Give the run another name (a trial's, once its objective is known)."""
        self.client.update_run(self.run_id, name=run_name)

    def find_child(self, tags: Mapping[str, str]) -> str | None:
        """The id of this run's newest child run carrying every one of `tags`, or None."""
        condition = " and ".join([children_filter(self.run_id)]
                                 + [f"tags.`{metric_key(k)}` = '{v}'" for k, v in tags.items()])
        found = self.client.search_runs([self.experiment_id], condition, max_results=1,
                                        order_by=["attributes.start_time DESC"])
        return found[0].info.run_id if found else None

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

        Use this from one callback only: autolog plus a callback logs everything twice.
        """
        head = prefix.rstrip("/") + "/" if prefix else ""
        self.log_metrics({f"{head}{name}": value for name, value in logs.items()}, step=epoch)

    def log_run_metadata(self, info: Mapping, metrics: Mapping | None = None) -> None:
        """Record what produced the run: `run_tags(project_root, info)` (git commit and dirty
        flag, data fingerprint, package versions) as tags, and the data as an MLflow dataset
        input (`dataset_input`) once `info` describes it. Call it on every run that trains,
        a tuner trial's child run included (`child.log_run_metadata(state.info, state.metrics)`);
        calling it again re-sets the tags and adds nothing new (MLflow keeps one input per
        dataset and digest).

        Args:
            info: the pipeline's run info (`state.info`); before the data stage only the git
                and version tags are set.
            metrics: the run's figures after the data stage (`state.metrics`), for the
                dataset's profile of counts.
        """
        self.set_tags(run_tags(self.project_root, info))
        found = dataset_input(info, metrics)
        if found is not None:
            self.client.log_inputs(self.run_id, datasets=[found])

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
        # Before the run ends: the monitor's last samples go into a RUNNING run.
        self._stop_system_metrics()
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


def _abandoned(run) -> bool:
    tags = run.data.tags
    return process_gone(tags.get(HOST_TAG), tags.get(PID_TAG))


def end_abandoned_runs(client: MlflowClient, experiment_id: str, run_dir: str) -> list[str]:
    """Mark KILLED the RUNNING runs of `experiment_id` tagged `run_dir` (`RUN_DIR_TAG`) whose
    process is gone (`process.host` is this machine and `process.pid` no longer runs), with
    their RUNNING child runs whose process is gone too (a killed search's trials). Runs of a
    live process, of another host or without those tags (older code) are left alone; a store
    that cannot be searched is logged and left alone. Returns the run ids marked."""
    try:
        running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                     max_results=10_000)
    except Exception as err:  # noqa: BLE001 - housekeeping: the new run matters more
        log.warning("could not look for abandoned MLflow runs of %s: %s", run_dir, err)
        return []
    ended = [r for r in running if r.data.tags.get(RUN_DIR_TAG) == run_dir and _abandoned(r)]
    parents = {r.info.run_id for r in ended}
    ended += [r for r in running if r.data.tags.get(PARENT_RUN_TAG) in parents and r.info.run_id not in parents
              and _abandoned(r)]
    for found in ended:
        tags = found.data.tags
        note = (f"marked KILLED by a later run of {run_dir}: process {tags.get(PID_TAG)} on "
                f"{tags.get(HOST_TAG)} had gone without ending it")
        client.set_tag(found.info.run_id, ABANDONED_TAG, note)
        client.set_terminated(found.info.run_id, status="KILLED")
        log.warning("MLflow run %s (%s) was left RUNNING by process %s, which is gone: marked KILLED",
                    found.info.run_id, found.info.run_name, tags.get(PID_TAG))
    return [r.info.run_id for r in ended]


def _context_tags() -> dict[str, str]:
    """MLflow's usual source/user tags (what `mlflow.start_run` adds), best effort."""
    try:
        # Imported here, inside the try: an internal module that may move between releases.
        from mlflow.tracking.context.registry import resolve_tags

        return dict(resolve_tags({}))
    except Exception:  # noqa: BLE001 - an internal API: the run matters more than these tags
        return {}
