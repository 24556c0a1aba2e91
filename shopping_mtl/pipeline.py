"""The stages of a run, in data-flow order, each handing its successors a typed output:

    data -> baselines -> retrieval -> candidates -> ranking -> export

`run(config)` claims the run folder (`run_folder.claim`: a folder holds one configuration's
run) and writes the resolved `config.yaml`, runs the configured stages (data always), and writes
`metrics.json` (one flat object of figures), `run_info.json` (dataset, split boundaries, timings,
exports) and, last, the `COMPLETE` marker; MLflow records the run when tracking is on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import yaml

from shopping_mtl import distribute, evaluation, run_folder, tracking, training
from shopping_mtl.baselines import run_baselines
from shopping_mtl.candidates import builtin, registry  # noqa: F401  (builtin: registers the built-in sources)
from shopping_mtl.candidates.stage import run_candidates
from shopping_mtl.config import DEFAULT_STAGES, STAGES, Config  # noqa: F401  (tuning reads them here)
from shopping_mtl.data.split import Fold, fold_cuts
from shopping_mtl.data.stage import fold_data, run_data
from shopping_mtl.export.stage import run_export
from shopping_mtl.ranking.stage import run_ranking_stage
from shopping_mtl.retrieval.stage import run_retrieval_stage
from shopping_mtl.run_state import RunState, write_atomic

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Each stage's function, and the RunState field its hand-off goes to (None: it hands on nothing).
STAGE_FUNCTIONS: dict[str, tuple[Callable[[RunState], object], str | None]] = {
    "data": (run_data, "data"),
    "baselines": (run_baselines, None),
    "retrieval": (run_retrieval_stage, "retrieval"),
    "candidates": (run_candidates, "candidates"),
    "ranking": (run_ranking_stage, "ranking"),
    "export": (run_export, None),
}


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


def run_stage(name: str, state: RunState) -> None:
    """Run one stage (timed) and keep its hand-off on `state`."""
    function, field = STAGE_FUNCTIONS[name]
    with stage(name, state.timings):
        output = function(state)
    if field is not None:
        setattr(state, field, output)


def stages_to_run(config: Config) -> list[str]:
    """The configured stages in data-flow order, data always first."""
    wanted = set(config.stages) | {"data"}
    return [name for name in STAGES if name in wanted]


def default_run_dir(dataset: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return PROJECT_ROOT / "runs" / f"{Path(dataset).stem}-{stamp}"


def summary_lists(config: Config) -> list[str]:
    """The lists the summary table compares: the final list, retrieval order, retrieval alone and
    each baseline."""
    return ["pipeline", "retrieval_order", "retrieval"] + [f"baseline/{n}" for n in config.baselines.names]


SUMMARY_COLUMNS = ("recall@10", "recall@100", "ndcg@10", "purchase/ndcg@10", "new_gt/recall@100")

# Why two rows of the summary can hold the same figures: what the first of them is.
LIST_NOTES = {
    "retrieval_order": "the candidate set in merge order, which starts with the two-tower list's items, "
                       "so at these K it is the retrieval list",
}


def summary_table(metrics: dict[str, float], names: list[str], columns=SUMMARY_COLUMNS) -> str:
    """Headline figures side by side, each with its 95% interval; lists without figures left out.
    Lists whose figures are all the same are named below the table, with why (`LIST_NOTES`)."""
    names = [name for name in names if any(f"{name}/{column}" in metrics for column in columns)]
    header = f"{'list':<26}" + "".join(f"{c:>26}" for c in columns)
    rows = [header, "-" * len(header)]
    figures = {name: [metrics.get(f"{name}/{column}") for column in columns] for name in names}
    notes = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if figures[first] == figures[second]:
                why = f": {first} is {LIST_NOTES[first]}" if first in LIST_NOTES else ""
                notes.append(f"({first} and {second} have the same figures{why})")
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
    return "\n".join(rows + notes)


def summary_ratios(metrics: dict[str, float], best: dict[str, str]) -> str:
    """The final list over the best baseline (per figure) for the headline figures, each with
    its paired 95% interval; "" when the run has no such figure."""
    lines = []
    for figure in ("ndcg@10", "purchase/ndcg@10", "recall@100"):
        key = f"vs_best_baseline/{figure}"
        if key in metrics:
            low, high = metrics.get(f"{key}/ci95_low"), metrics.get(f"{key}/ci95_high")
            interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
            lines.append(f"  {figure:<18} {metrics[key]:.3f}x{interval}  (best: {best.get(figure, '?')})")
    return "final list / best baseline (paired 95% interval over users):\n" + "\n".join(lines) if lines else ""


def prepare_state(config: Config, overwrite: bool = False) -> RunState:
    """The run folder (created, and claimed for this configuration: `run_folder.claim`) with the
    resolved config.yaml, and an empty RunState. A distributed worker's folder is
    `workers/<index>/` of the run folder, claimed by that worker.

    Raises:
        RunFolderConflict: the folder holds another configuration's run and `overwrite` is off;
            nothing in it was changed.
    """
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.data.dataset)
    place = distribute.cluster()
    if not place.is_chief:
        # A worker of several trains in step with the chief; its own outputs stay apart.
        run_dir = run_dir / "workers" / str(place.index)
        config = dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, enabled=False))
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, run_dir=str(run_dir))
    # Before config.yaml is written: a refused run leaves the folder as it found it.
    run_folder.claim(run_dir, config.to_dict(), overwrite)
    write_atomic(run_dir / run_folder.CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    log.info("run folder: %s", run_dir)
    return RunState(config=config, run_dir=run_dir)


def run(config: Config, parent_run_id: str | None = None, overwrite: bool = False) -> RunState:
    """Run the configured stages and write the run folder, its `COMPLETE` marker last
    (`parent_run_id`: track the run as a child of that MLflow run, as a search's final run is;
    `overwrite`: replace another configuration's run in the folder, `run_folder.claim`).

    Raises:
        RunFolderConflict: the folder holds another configuration's run and `overwrite` is off.
    """
    if distribute.cluster().multi_worker:
        # Before any other TensorFlow work, as TensorFlow requires.
        strategy = distribute.strategy()
        log.info("training on %d workers (TF_CONFIG), this is worker %d",
                 strategy.num_replicas_in_sync, distribute.cluster().index)
    # Source names are known once every source has registered: checked before any work.
    registry.check_names(config.candidates.quotas, config.baselines.names)
    state = prepare_state(config, overwrite)
    config, run_dir = state.config, state.run_dir
    if config.deterministic:
        training.enable_determinism(config.seed)
    resumable = run_folder.resumable_backups(run_dir)
    if resumable:  # claimed: the backups are this configuration's
        log.info("%s holds an interrupted run's backup (%s): its fits resume where they stopped",
                 run_dir, ", ".join(str(p.relative_to(run_dir)) for p in resumable))
    stages = stages_to_run(config)
    # Tracking starts before any work, so an unreachable tracking server stops the run at once.
    tracker = start_tracking(state, parent_run_id=parent_run_id) if config.tracking.enabled else None
    started = time.perf_counter()
    try:
        run_stage("data", state)
        folds = fold_cuts(state.dataset.events, config.evaluation.test_days, config.split.min_days,
                          config.split.quantile)
        if len(folds) == 1:
            for name in stages[1:]:
                run_stage(name, state)
            fold_values = [list_values(state)]
        else:
            state, fold_values = run_folds(state, folds, stages)
    except Exception:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    except BaseException:  # Ctrl-C, SystemExit
        if tracker is not None:
            tracker.end("KILLED")
        raise
    record_pooled(state, fold_values)
    clean_scratch(run_dir)
    state.info["timings_s"] = {k: round(v, 3) for k, v in state.timings.items()}
    state.info["wall_s"] = round(time.perf_counter() - started, 3)
    write_atomic(run_dir / "metrics.json", json.dumps(state.metrics, indent=1, sort_keys=True))
    write_atomic(run_dir / "run_info.json", json.dumps(state.info, indent=1, sort_keys=True))
    if tracker is not None:
        record_run(state, tracker)
    # Last: the folder holds every file of the run (a failure to record it in MLflow is reported
    # apart and leaves the folder complete).
    run_folder.mark_complete(run_dir, state.info)
    return state


def clean_scratch(run_dir: Path) -> None:
    """Remove what only a running fit needs: streamed examples and the fits' empty backup folder."""
    shutil.rmtree(run_dir / ".examples", ignore_errors=True)  # rebuilt by any later run
    with contextlib.suppress(OSError):  # each fit removed its own backup; an empty folder goes too
        (run_dir / ".backup").rmdir()


def fold_run_state(state: RunState, fold: Fold, folder: Path) -> RunState:
    """A fresh RunState for one fold in `folder` (created): the run's config and data figures,
    and the fold's data (`fold_data`: the log cut after its test day, split), timed as its
    data stage."""
    folder.mkdir(parents=True, exist_ok=True)
    fold_state = RunState(config=dataclasses.replace(state.config, run_dir=str(folder)), run_dir=folder,
                          metrics=dict(state.metrics), info=dict(state.info))
    with stage("data", fold_state.timings):
        fold_state.data = fold_data(fold_state, state.data, fold)
    return fold_state


def run_folds(state: RunState, folds: list[Fold], stages: list[str]) -> tuple[RunState, list[dict]]:
    """Rolling origin: the stages after data (export aside) once per fold, oldest first, each in
    `folds/<name>/` of the run folder with its own metrics.json and run_info.json; then the
    export from the last fold's models.

    Returns:
        the run's state, holding the last fold's hand-offs, metrics and info (what the exports
        are), and each fold's per-user list values for pooling.
    """
    config, run_dir = state.config, state.run_dir
    fold_values, headlines, last = [], {}, None
    for number, fold in enumerate(folds, 1):
        fold_state = fold_run_state(state, fold, run_dir / "folds" / fold.name)
        log.info("fold %d of %d: test %s (folds/%s)", number, len(folds),
                 "day " + fold.name if fold.end is None or len(fold.name) == 10 else "period " + fold.name,
                 fold.name)
        fold_state.info["fold"] = {"name": fold.name, "number": number, "of": len(folds),
                                   "end": fold.end.isoformat() if fold.end is not None else None}
        for name in stages[1:]:
            if name != "export":
                run_stage(name, fold_state)
        fold_values.append(list_values(fold_state))
        record_pooled(fold_state, fold_values[-1:])
        fold_dir = fold_state.run_dir
        clean_scratch(fold_dir)
        fold_state.info["timings_s"] = {k: round(v, 3) for k, v in fold_state.timings.items()}
        write_atomic(fold_dir / "metrics.json", json.dumps(fold_state.metrics, indent=1, sort_keys=True))
        write_atomic(fold_dir / "run_info.json", json.dumps(fold_state.info, indent=1, sort_keys=True))
        for name, seconds in fold_state.timings.items():
            state.timings[f"{name}/{fold.name}"] = seconds
        for name in FOLD_HEADLINES:
            if name in fold_state.metrics:
                headlines[f"fold/{fold.name}/{name}"] = fold_state.metrics[name]
        last = fold_state
        gc.collect()
    # The run is the last fold's as far as models go: its hand-offs, figures and curves, the
    # exports and the registry entries made from them.
    state = dataclasses.replace(last, config=config, run_dir=run_dir, timings=state.timings,
                                metrics={**last.metrics, **headlines}, info={**last.info, "folds": [f.name for f in folds]})
    state.metrics["eval/test_users"] = sum(v for k, v in headlines.items() if k.endswith("/eval/test_users"))
    state.metrics["eval/folds"] = float(len(folds))
    state.info.pop("fold", None)
    if "export" in stages:
        run_stage("export", state)
    return state, fold_values


# Each fold's figures that the run's metrics.json repeats as `fold/<name>/...`.
FOLD_HEADLINES = ("eval/test_users", "pipeline/ndcg@10", "pipeline/purchase/ndcg@10", "pipeline/recall@100",
                  "vs_best_baseline/ndcg@10", "vs_best_baseline/purchase/ndcg@10", "ranker/holdout_ndcg@10")


def run_lists(config: Config) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The lists a run scores: name -> (file in the run folder, cut-offs)."""
    ks = tuple(config.evaluation.ks)
    lists = {f"baseline/{name}": (f"baselines/{name}.parquet", ks) for name in config.baselines.names}
    lists.update({"retrieval": ("candidates.parquet", ks),
                  "candidate_set": ("candidate_set.parquet", (100, config.candidates.size)),
                  "retrieval_order": ("candidate_set.parquet", ks),
                  "pipeline": ("recommendations.parquet", ks)})
    return lists


def list_values(state: RunState) -> dict:
    """Per-user values of every list the run folder holds (`evaluation.user_values`), for
    pooling over folds and the paired ratio; {} when neither is asked for (one fold, no
    intervals: the scale benchmark), as the lists are read back for them."""
    config = state.config
    if config.evaluation.test_days == 1 and not config.evaluation.bootstrap_resamples:
        return {}
    values = {}
    names = list(run_lists(config).items())
    if config.evaluation.test_days == 1:  # only the paired ratio reads them
        names = [(n, v) for n, v in names if n == "pipeline" or n.startswith("baseline/")]
    for name, (file, ks) in names:
        path = state.run_dir / file
        if path.is_file():
            values.update(evaluation.user_values(pd.read_parquet(path, columns=["user_id", "rank", "item_id"]),
                                                 state.truth, name, ks))
    return values


def record_pooled(state: RunState, fold_values: list[dict]) -> None:
    """The run's list figures pooled over its folds' test users (several folds), and the final
    list over the best baseline per figure with a paired interval, into `state.metrics`; the
    best baseline of each figure into `state.info`."""
    ev = state.config.evaluation
    baselines = [f"baseline/{name}" for name in state.config.baselines.names]
    if len(fold_values) > 1:
        pooled = evaluation.pool(fold_values)
        state.metrics.update(evaluation.summarize(pooled, ev.bootstrap_resamples, ev.bootstrap_seed))
    else:
        pooled = fold_values[0]
    if pooled:
        ratios, best = evaluation.versus_best(pooled, "pipeline", baselines, ev.bootstrap_resamples, ev.bootstrap_seed)
    else:  # no per-user values: the ratio of the means, without an interval
        ratios, best = {}, {}
        for name, value in list(state.metrics.items()):
            if name.startswith("pipeline/") and not name.endswith(("ci95_low", "ci95_high", "/users")):
                rest = name[len("pipeline/"):]
                means = {b: state.metrics[f"{b}/{rest}"] for b in baselines if f"{b}/{rest}" in state.metrics}
                if means:
                    best[rest] = max(means, key=lambda b: (means[b], -baselines.index(b)))
                    if means[best[rest]] > 0:
                        ratios[f"vs_best_baseline/{rest}"] = value / means[best[rest]]
    state.metrics.update(ratios)
    if best:
        state.info["best_baseline"] = best


def start_tracking(state: RunState, run_name: str | None = None, tags: dict | None = None,
                   parent_run_id: str | None = None, params: dict | None = None):
    """Open the run's MLflow run, tagged with the code's git commit and dirty flag from the start
    (`tracking.run_tags`: a run that fails still says what code it ran; the data's tags and input
    come in `record_run`), sampling system metrics when `tracking.system_metrics` is on, and
    log its parameters: `params`, by default the resolved configuration (a search's run logs
    its study instead)."""
    config = state.config
    folder = str(state.run_dir.resolve())
    tracker = tracking.Tracker.start(PROJECT_ROOT, config.tracking.experiment, run_name=run_name or state.run_dir.name,
                                     tags={**tracking.run_tags(PROJECT_ROOT, state.info), tracking.RUN_DIR_TAG: folder,
                                           **(tags or {})},
                                     parent_run_id=parent_run_id, system_metrics=config.tracking.system_metrics)
    # An earlier run of this folder killed outright (SIGKILL, a lost machine) never ended its
    # MLflow run: its process is gone, so it is marked KILLED rather than RUNNING for good.
    tracking.end_abandoned_runs(tracker.client, tracker.experiment_id, folder)
    tracker.log_params(tracking.flatten(config.to_dict()) if params is None else params)
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
    """Per-epoch and final metrics, tags and the dataset input (`Tracker.log_run_metadata`), the
    run folder's files and plots, and the exports (registered, the champion alias moved if this
    run beats it; plain copies only with `tracking.export_artifacts`). If the tracking store
    fails here, the run folder and the exports stay on disk and the failure is reported."""
    config, run_dir = state.config, state.run_dir
    try:
        tracker.log_run_metadata(state.info, state.metrics)
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
                                             register=config.tracking.register,
                                             export_artifacts=config.tracking.export_artifacts,
                                             dataset=state.info.get("dataset"))
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
