"""The stages of a run, in order: data -> baselines (-> retrieval -> ranking -> export, later).

`run(config)` reads the dataset, splits it by the protocol, scores the baselines on the test
users, and leaves in the run folder: `config.yaml` (the resolved configuration), `metrics.json`
(one flat object of figures), `run_info.json` (dataset, split boundaries, timings),
`baselines/<name>.parquet`, and `bad_rows.csv` when rows were skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from shopping_mtl import distribute
from shopping_mtl.baselines import run_baseline
from shopping_mtl.config import DEFAULT_STAGES, Config  # noqa: F401  (tuning reads it here)
from shopping_mtl.data.readers import Dataset, read_dataset, spec_files
from shopping_mtl.data.spec import load_spec
from shopping_mtl.data.split import GroundTruth, Split, cold_item_shares, ground_truth, split_events
from shopping_mtl.evaluation import score_lists

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log the start and end of a stage and record its wall time."""
    log.info("stage %s: start", name)
    started = time.perf_counter()
    yield
    # Keras fits and traced functions leave reference cycles that hold their tensors (a trace
    # captures the catalogue's vectors); the collector would free them only when the count of
    # new objects next says so, however large the tensors.
    gc.collect()
    timings[name] = time.perf_counter() - started
    log.info("stage %s: done in %.1fs", name, timings[name])


def write_atomic(path: Path, text: str) -> None:
    """Write text to a sibling temp file and rename it into place: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def limit_events(events: pd.DataFrame, max_events: int, seed: int) -> pd.DataFrame:
    """Keep whole users, in a fixed pseudo-random order, until `max_events` events are kept.

    Whole users keep histories and every day intact, so a smoke run still has a real split.
    """
    users = pd.Index(events["user_id"].unique())
    order = np.argsort(pd.util.hash_array(users.to_numpy(dtype=object), hash_key=f"{seed:016d}"[:16]),
                       kind="stable")
    counts = events["user_id"].value_counts().reindex(users[order]).to_numpy()
    keep_n = max(1, int(np.searchsorted(np.cumsum(counts), max_events, side="right")))
    kept = set(users[order][:keep_n])
    return events[events["user_id"].isin(kept)].reset_index(drop=True)


def data_fingerprint(spec_path: Path, files: list[Path]) -> str:
    """SHA-256 over the spec and the bytes of every input file: which data a figure came from."""
    digest = hashlib.sha256(spec_path.read_bytes())
    for path in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class RunState:
    """What the stages hand each other."""

    config: Config
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    dataset: Dataset | None = None
    split: Split | None = None
    truth: GroundTruth | None = None
    retrieval: dict | None = None  # the fitted two-tower model, its data and validation lists
    candidate_set: pd.DataFrame | None = None  # the merged candidates for test users
    histories: dict[str, dict] = field(default_factory=dict)  # model -> Keras History.history
    tracking_error: str | None = None  # set when recording the finished run in MLflow failed

    def backup_dir(self, name: str) -> Path:
        """Where the fit of model `name` keeps what a rerun into this run folder resumes from."""
        return self.run_dir / ".backup" / name

    def examples_dir(self, name: str) -> Path | None:
        """Where model `name`'s training examples are written as Parquet shards and streamed
        from (`data.stream_above_events`), or None: they are held in memory."""
        threshold = self.config.data.stream_above_events
        if threshold is None or len(self.dataset.events) <= threshold:
            return None
        return self.run_dir / ".examples" / name

    def write_list(self, frame: pd.DataFrame, name: str) -> Path:
        """Write a list file into the run folder atomically."""
        path = self.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(frame, path)
        return path


def default_run_dir(dataset: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return PROJECT_ROOT / "runs" / f"{Path(dataset).stem}-{stamp}"


def run_data(state: RunState) -> None:
    """Read, validate, limit and split the dataset; compute the ground truth."""
    config = state.config
    spec = load_spec(config.data.dataset, config.data.root)
    dataset = read_dataset(spec, config.data.on_bad_rows)
    report = dataset.report
    if report.n_bad:
        path = state.run_dir / "bad_rows.csv"
        report.bad_rows_frame().to_csv(path, index=False)
        log.warning("%d skipped rows are listed in %s", report.n_bad, path)
    state.metrics.update(report.metrics())
    events = dataset.events
    if config.data.max_events is not None and len(events) > config.data.max_events:
        events = limit_events(events, config.data.max_events, config.seed)
        log.info("--max-events %d: kept %d events of %d users", config.data.max_events,
                 len(events), events["user_id"].nunique())
        dataset.events = events
    split = split_events(events, config.split.min_days, config.split.quantile)
    truth = ground_truth(split)
    state.dataset, state.split, state.truth = dataset, split, truth
    state.metrics.update({
        "data/events_used": float(len(events)),
        "data/distinct_users": float(events["user_id"].nunique()),
        "data/distinct_items": float(events["item_id"].nunique()),
        "split/train_events": float(len(split.train)),
        "split/validation_events": float(len(split.validation)),
        "split/test_events": float(len(split.test)),
        "eval/test_users": float(len(truth.users)),
        **cold_item_shares(split, truth),
    })
    input_files = spec_files(spec)
    state.info.update({
        "dataset": spec.name,
        "spec": str(spec.path),
        "data_root": str(spec.root),
        "synthetic": spec.synthetic,
        "data_fingerprint": data_fingerprint(spec.path, input_files),
        "input_files": [str(p) for p in input_files],
        "split": split.describe(),
    })
    log.info("split (%s): train %d, validation %d, test %d events; test from %s; %d test users",
             split.method, len(split.train), len(split.validation), len(split.test),
             split.test_start.date(), len(truth.users))
    if not truth.users:
        log.warning("no test users: no user has events both in train and on the test day")


def run_baselines(state: RunState) -> None:
    """Score each baseline on the test users from train + validation events only."""
    config = state.config
    out_dir = state.run_dir / "baselines"
    out_dir.mkdir(parents=True, exist_ok=True)
    history = state.split.history
    for name in config.baselines.names:
        started = time.perf_counter()
        lists = run_baseline(name, history, state.truth.users, config.evaluation.list_size,
                             config.baselines, now=state.split.test_start)
        write_parquet_atomic(lists, out_dir / f"{name}.parquet")
        state.metrics.update(score_lists(
            lists, state.truth, f"baseline/{name}", config.evaluation.ks,
            config.evaluation.bootstrap_resamples, config.evaluation.bootstrap_seed))
        log.info("baseline %s: %d rows for %d users, scored in %.1fs", name, len(lists),
                 lists["user_id"].nunique(), time.perf_counter() - started)


def run_retrieval(state: RunState) -> None:
    """Train the two-tower model, retrieve for validation and test users, merge the sources."""
    from shopping_mtl.retrieval.stage import run_retrieval_stage

    run_retrieval_stage(state)


def run_ranking(state: RunState) -> None:
    """Train the multi-task ranker and write the final list."""
    from shopping_mtl.ranking.stage import run_ranking_stage

    run_ranking_stage(state)


STAGE_FUNCTIONS = {"data": run_data, "baselines": run_baselines, "retrieval": run_retrieval,
                   "ranking": run_ranking}


def summary_lists(config: Config) -> list[str]:
    """The lists the summary table compares: the final list, retrieval order, retrieval alone and
    each baseline."""
    return ["pipeline", "retrieval_order", "retrieval"] + [f"baseline/{n}" for n in config.baselines.names]


def summary_table(metrics: dict[str, float], names: list[str]) -> str:
    """Headline figures side by side, each with its 95% interval."""
    columns = ["recall@10", "recall@100", "ndcg@10", "purchase/ndcg@10", "new_gt/recall@100"]
    names = [name for name in names if f"{name}/recall@100" in metrics]
    header = f"{'list':<26}" + "".join(f"{c:>26}" for c in columns)
    rows = [header, "-" * len(header)]
    for name in names:
        cells = []
        for column in columns:
            key = f"{name}/{column}"
            if key in metrics:
                low, high = metrics.get(f"{key}/ci95_low"), metrics.get(f"{key}/ci95_high")
                interval = f" [{low:.3f},{high:.3f}]" if low is not None else ""
                cells.append(f"{metrics[key]:.4f}{interval}")
            else:
                cells.append("-")
        rows.append(f"{name:<26}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(rows)


def prepare_state(config: Config) -> RunState:
    """The run folder (created) with the resolved config.yaml, and an empty RunState."""
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.data.dataset)
    place = distribute.cluster()
    if not place.is_chief:
        # A worker of several trains in step with the chief; its own outputs stay apart.
        run_dir = run_dir / "workers" / str(place.index)
        config = dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, enabled=False))
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, run_dir=str(run_dir))
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    log.info("run folder: %s", run_dir)
    return RunState(config=config, run_dir=run_dir)


def run(config: Config, parent_run_id: str | None = None) -> RunState:
    """Run the configured stages and write the run folder (`parent_run_id`: track the run as a
    child of that MLflow run, as a search's final run is)."""
    if distribute.cluster().multi_worker:
        # Before any other TensorFlow work, as TensorFlow requires.
        strategy = distribute.strategy()
        log.info("training on %d workers (TF_CONFIG), this is worker %d",
                 strategy.num_replicas_in_sync, distribute.cluster().index)
    state = prepare_state(config)
    config, run_dir = state.config, state.run_dir
    if config.deterministic:
        from shopping_mtl import training
        training.enable_determinism(config.seed)
    if (run_dir / ".backup").is_dir():
        log.info("%s holds an interrupted run's backup: its fits resume where they stopped",
                 run_dir / ".backup")
    stages = list(config.stages)
    if "data" not in stages:
        # Every later stage needs the data; it is cheap next to them.
        stages.insert(0, "data")
    # Tracking starts before any work, so an unreachable tracking server stops the run at once.
    tracker = start_tracking(state, parent_run_id=parent_run_id) if config.tracking.enabled else None
    started = time.perf_counter()
    try:
        for name in stages:
            with stage(name, state.timings):
                STAGE_FUNCTIONS[name](state)
    except Exception:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    except BaseException:  # Ctrl-C, SystemExit
        if tracker is not None:
            tracker.end("KILLED")
        raise
    shutil.rmtree(run_dir / ".examples", ignore_errors=True)  # rebuilt by any later run
    with contextlib.suppress(OSError):  # each fit removed its own backup; an empty folder goes too
        (run_dir / ".backup").rmdir()
    state.info["timings_s"] = {k: round(v, 3) for k, v in state.timings.items()}
    state.info["wall_s"] = round(time.perf_counter() - started, 3)
    write_atomic(run_dir / "metrics.json", json.dumps(state.metrics, indent=1, sort_keys=True))
    write_atomic(run_dir / "run_info.json", json.dumps(state.info, indent=1, sort_keys=True))
    if tracker is not None:
        record_run(state, tracker)
    return state


def start_tracking(state: RunState, run_name: str | None = None, tags: dict | None = None,
                   parent_run_id: str | None = None):
    """Open the run's MLflow run and log the resolved configuration as its parameters."""
    from shopping_mtl import tracking

    config = state.config
    tracker = tracking.Tracker.start(PROJECT_ROOT, config.tracking.experiment, run_name=run_name or state.run_dir.name,
                                     tags={"run_dir": str(state.run_dir.resolve()), **(tags or {})},
                                     parent_run_id=parent_run_id)
    tracker.log_params(tracking.flatten(config.to_dict()))
    state.info["mlflow"] = {"tracking_uri": tracker.client.tracking_uri, "run_id": tracker.run_id,
                            "experiment": config.tracking.experiment}
    log.info("MLflow run %s in %s (experiment %s)", tracker.run_id, tracker.client.tracking_uri,
             config.tracking.experiment)
    return tracker


def validation_objective(metrics: dict[str, float]) -> tuple[str, float] | None:
    """The run's validation objective: the final list's held-out NDCG@10 when the ranker ran,
    else the two-tower model's validation recall@100."""
    for name in ("ranker/holdout_ndcg@10", "retrieval/validation/recall@100"):
        if name in metrics:
            return name, float(metrics[name])
    return None


def record_run(state: RunState, tracker) -> None:
    """Per-epoch and final metrics, tags, the run folder's files and plots, and the exports
    (registered, the champion alias moved if this run beats it). If the tracking store fails
    here, the run folder and the exports stay on disk and the failure is reported."""
    from shopping_mtl import tracking

    config, run_dir = state.config, state.run_dir
    try:
        tracker.set_tags(tracking.run_tags(PROJECT_ROOT, state.info))
        for model, history in state.histories.items():
            for epoch, values in enumerate(zip(*history.values())):
                tracker.log_epoch(f"{model}/epoch", dict(zip(history, values)), epoch)
        tracker.log_metrics(state.metrics)
        names = summary_lists(config)
        tracker.log_text(summary_table(state.metrics, names), "summary.txt")
        listed = [n for n in names if any(f"{n}/recall@{k}" in state.metrics for k in config.evaluation.ks)]
        if listed:
            tracker.log_artifact(tracking.plot_recall_curves(state.metrics, listed, config.evaluation.ks,
                                                             run_dir / "recall_curves.png"))
        for name in ("config.yaml", "metrics.json", "run_info.json", "bad_rows.csv", "calibration.png",
                     "model_summary.txt"):
            if (run_dir / name).is_file():
                tracker.log_artifact(run_dir / name)
        objective = validation_objective(state.metrics)
        exports = {name: Path(path) for name, path in state.info.get("exports", {}).items()}
        if exports and objective:
            # Objectives compare only on the same dataset: a version trained on another dataset
            # is judged by another objective and never takes the champion alias from this one.
            name, value = objective
            decisions = tracking.log_exports(tracker, exports, f"{name} on {state.info.get('dataset')}", value,
                                             register=config.tracking.register)
            for name, decision in decisions.items():
                log.info("registry: shopping-%s %s", name, decision)
        tracker.end("FINISHED")
    except Exception as err:  # noqa: BLE001 - the run's results are safe on disk; say so
        log.error("MLflow tracking failed at the end of the run (%s: %s); the run folder %s and its "
                  "exports are complete on disk", type(err).__name__, err, run_dir)
        state.tracking_error = f"{type(err).__name__}: {err}"
        try:
            tracker.end("FAILED")
        except Exception:  # noqa: BLE001
            pass
