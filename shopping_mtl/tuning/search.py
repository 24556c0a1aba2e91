"""Running a search: the stages prepared once, the tuner's trials, the report and the final run
of the best config."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import yaml

# Private: Keras Tuner 1.4 exports no public way to ask whether this process is a distributed
# search's chief or a worker (its tuners read the KERASTUNER_* variables through these helpers).
from keras_tuner.src.distribute import utils as dist_utils

from shopping_mtl import pipeline, tracking
from shopping_mtl.config import Config, config_from_dict, merge
from shopping_mtl.errors import ShoppingMtlError
from shopping_mtl.run_state import RunState
from shopping_mtl.tuning.study import Study, build, load_study
from shopping_mtl.tuning.tuner import ShoppingTuner

log = logging.getLogger(__name__)

# The searched settings the UI's view of a search shows as columns (the first of the study's
# space, those trial names start with): more push the winner's tag off a laptop's screen.
VIEW_SETTINGS = 3


@dataclasses.dataclass
class SearchResult:
    """What `run_search` hands back: every trial, the best completed one, the search's minutes."""

    study: Study
    trials: list[dict]  # trial_id, status, objective, values, error
    best: dict | None
    minutes: float
    final_metrics: dict | None = None  # the best config's full run, when there was one
    ui_address: str | None = None  # the MLflow UI's view of the search's runs, when tracked


def summarize(tuner, study: Study, minutes: float) -> SearchResult:
    """Every trial with its status, objective and error; the best completed one."""
    trials = []
    for trial in tuner.oracle.trials.values():
        metric = trial.metrics.get_best_value(study.objective) if trial.metrics.exists(study.objective) else None
        trials.append({"trial_id": trial.trial_id, "status": str(trial.status),
                       "objective": None if metric is None or (isinstance(metric, float) and math.isnan(metric))
                       else float(metric),
                       "values": dict(trial.hyperparameters.values),
                       "error": (trial.message or "").strip().splitlines()[-1] if trial.message else None})
    done = [t for t in trials if t["status"] == "COMPLETED" and t["objective"] is not None]
    best = None
    if done:
        best = (max if study.direction == "max" else min)(done, key=lambda t: t["objective"])
    return SearchResult(study, sorted(trials, key=lambda t: t["trial_id"]), best, minutes)


def table(result: SearchResult) -> str:
    """The trial table a search prints and writes as search.txt: one row per trial, errors below."""
    names = [p.name for p in result.study.space]
    lines = [f"{'trial':<8}{'status':<11}{result.study.objective:>24}  settings"]
    for t in result.trials:
        value = f"{t['objective']:.4f}" if t["objective"] is not None else "-"
        settings = ", ".join(f"{n.split('.', 1)[1]}={t['values'].get(n)}" for n in names if n in t["values"])
        if "tuner/epochs" in t["values"]:
            settings += f", epochs={t['values']['tuner/epochs']}"
        lines.append(f"{t['trial_id']:<8}{t['status']:<11}{value:>24}  {settings}")
        if t["error"]:
            lines.append(f"{'':<8}error: {t['error']}")
    return "\n".join(lines)


def _parent_file(run_dir: Path, study: Study) -> Path:
    """Where the chief writes its MLflow run id for the workers (the folder is created)."""
    path = Path(run_dir) / "tuning" / f"{study.name}.parent_run_id"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_worker(config: Config, study: Study, wait_s: float = 600.0) -> None:
    """A distributed search's worker: wait for the chief's MLflow run, prepare the data, take
    trials from the chief's oracle until it says stop. Returns None (the chief reports)."""
    run_dir = Path(config.run_dir) if config.run_dir else None
    if run_dir is None:
        raise ShoppingMtlError("a distributed search's worker needs the chief's --run-dir")
    parent = _parent_file(run_dir, study)
    deadline = time.time() + wait_s
    while not parent.is_file() and time.time() < deadline:
        time.sleep(1.0)
    if not parent.is_file():
        raise ShoppingMtlError(f"no chief started the search in {run_dir} within {wait_s:.0f}s ({parent} missing)")
    # The workers share the chief's tuner folder (the trials) but not the stages' outputs: each
    # prepares its own (the retrieval stage's lists, export and resumable-fit backup, which
    # two workers writing into one folder at once would trample) under workers/<tuner id>/.
    own_dir = run_dir / "workers" / os.environ.get("KERASTUNER_TUNER_ID", "worker")
    own_dir.mkdir(parents=True, exist_ok=True)
    state = RunState(config=dataclasses.replace(config, run_dir=str(own_dir)), run_dir=own_dir)
    parent_id = parent.read_text().strip()
    tracker = (tracking.Tracker.attach(pipeline.PROJECT_ROOT, parent_id, system_metrics=config.tracking.system_metrics)
               if parent_id and config.tracking.enabled else None)
    for name in pipeline.stages_to_run(config):
        pipeline.run_stage(name, state)
    tuner = ShoppingTuner(study, state, run_dir / "tuning", tracker)
    tuner.search()
    log.info("worker %s: the chief's oracle has no more trials", os.environ.get("KERASTUNER_TUNER_ID"))
    return None


def run_search(config: Config, study_path: str | Path, max_trials: int | None = None,
               final_run: bool = True) -> SearchResult:
    """Prepare the data (and, for a ranker study, the retrieval stage) once, run the study's
    search with every trial a child MLflow run of the search's run, write the best config.

    Writes `<run folder>/search.txt` (the trial table) and, when a trial completed,
    `best_config.yaml`. With `final_run`, the best config then runs every stage into
    `<run folder>/best/` as a child run of the search: its test figures, and its exports
    registered (the `champion` alias moves only if it beats the champion on the validation
    objective). In Keras Tuner's distributed mode (KERASTUNER_ORACLE_IP set) the chief serves
    the oracle and reports, and a worker trains trials and returns None. Raises `ConfigError`
    before any data is read or any folder made when the study has a bad key or a value that
    makes `config` invalid (`load_study`), and `ShoppingMtlError` when no trial completed,
    naming the first failures.
    """
    # The whole study against this run's config, before the data stage (minutes on a big log).
    study = load_study(study_path, base=config)
    stages = ("data",) if study.model == "retrieval" else ("data", "retrieval")
    # The study's fixed values hold for every trial, so also for what is prepared once for all
    # of them (the ranking days of `ranking.extra_days`, the holdout users, the retrieval stage).
    config = config_from_dict(merge(config.to_dict(), build(study, {}))).validate()
    config = dataclasses.replace(config, stages=stages)
    role = ("chief" if dist_utils.is_chief_oracle() else "worker") if dist_utils.has_chief_oracle() else "single"
    if role == "worker":
        return run_worker(config, study)
    state = pipeline.prepare_state(config)
    # The search's run logs its study; each trial logs its own resolved config.
    tracker = pipeline.start_tracking(state, run_name=f"search {study.name} ({state.run_dir.name})",
                                      tags={"search": study.name, "oracle": study.oracle["type"]},
                                      params=study.params()) \
        if config.tracking.enabled else None
    if role == "chief":
        # Keras Tuner's distributed mode: this process serves the oracle; the workers
        # (KERASTUNER_TUNER_ID=tuner0, tuner1, ...) train the trials under this run.
        stages = ()
        _parent_file(state.run_dir, study).write_text(tracker.run_id if tracker is not None else "")
    try:
        for name in stages:
            pipeline.run_stage(name, state)
        if tracker is not None and state.data is not None:  # the data the trials are judged on
            tracker.log_run_metadata(state.info, state.metrics)
        result = _search(study, state, tracker, max_trials)
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    _report(config, result, state, tracker, final_run)
    return result


def _search(study: Study, state: RunState, tracker, max_trials: int | None) -> SearchResult:
    """Run the tuner's search over the prepared `state` and sum up its trials."""
    started = time.perf_counter()
    tuner = ShoppingTuner(study, state, state.run_dir / "tuning", tracker, max_trials)
    log.info("search %s: %s oracle, objective %s (%s), space: %s", study.name, study.oracle["type"],
             study.objective, study.direction, ", ".join(p.name for p in study.space))
    try:
        tuner.search()
    except RuntimeError as err:
        # Keras Tuner gives up after `max_consecutive_failed_trials` failures in a row; the
        # trials' own errors are reported below.
        log.error("search %s stopped: %s", study.name, str(err).strip().splitlines()[0])
    return summarize(tuner, study, (time.perf_counter() - started) / 60)


def _report(config: Config, result: SearchResult, state: RunState, tracker, final_run: bool) -> None:
    """Write search.txt and best_config.yaml, run the best config (`final_run`), record the
    search on its MLflow run and end it; raise if no trial completed."""
    study = result.study
    text = table(result)
    (state.run_dir / "search.txt").write_text(text + "\n")
    failed = [t for t in result.trials if t["status"] != "COMPLETED"]
    if result.best is not None:
        best_config = merge(config.to_dict(), build(study, result.best["values"]))
        if "tuner/epochs" in result.best["values"]:  # Hyperband: the epochs the best trial reached
            best_config[study.model]["epochs"] = int(result.best["values"]["tuner/epochs"])
        (state.run_dir / "best_config.yaml").write_text(yaml.safe_dump(best_config, sort_keys=False))
    final = None
    if result.best is not None and final_run:
        best_config = dict(best_config, run_dir=str(state.run_dir / "best"),
                           stages=list(pipeline.DEFAULT_STAGES))
        log.info("search %s: training the best config (trial %s) with every stage", study.name,
                 result.best["trial_id"])
        # best/ is the search's own: a resumed search whose best changed replaces it.
        final = pipeline.run(config_from_dict(best_config).validate(),
                             parent_run_id=tracker.run_id if tracker is not None else None, overwrite=True)
        result.final_metrics = dict(final.metrics)
    if tracker is not None:
        tracker.log_text(text, "search.txt")
        tracker.log_metrics({"search/trials": len(result.trials), "search/failed_trials": len(failed),
                             "search/minutes": result.minutes,
                             **({f"search/best/{study.objective}": result.best["objective"]} if result.best else {})})
        if result.best is not None:
            tracker.log_artifact(state.run_dir / "best_config.yaml")
            link_best(tracker, study, result, best_config, final)
        result.ui_address = tracking.share_search_view(tracker.client, tracker.experiment_id, tracker.run_id,
                                                       study.objective, [p.name for p in study.space][:VIEW_SETTINGS])
        tracker.end("FINISHED" if result.best is not None else "FAILED")
    if result.best is None:
        errors = "; ".join(f"trial {t['trial_id']}: {t['error']}" for t in failed[:3]) or "no trial ran"
        raise ShoppingMtlError(f"search {study.name}: no trial completed ({errors})")


def link_best(tracker, study: Study, result: SearchResult, best_config: dict, final) -> None:
    """Mark the winning trial and link the search, the trial and the best config's run both
    ways: the search's run gets the best config as `best.<key>` parameters and tags
    `best_trial_id`, `best_trial_run_id`, `best_run_id`; the trial gets `best_trial=true`; the
    final run gets `from_trial_id` and `from_trial_run_id` (not `trial_id`: it is no trial)."""
    trial_id = str(result.best["trial_id"])
    trial_run = tracker.find_child({"trial_id": trial_id})
    final_run = (final.info.get("mlflow") or {}).get("run_id") if final is not None else None
    tracker.log_params({f"best.{k}": v for k, v in tracking.flatten(best_config).items()
                        if k not in ("run_dir", "stages") and not k.startswith("tracking.")})
    tracker.set_tags({"best_trial_id": trial_id, **({"best_trial_run_id": trial_run} if trial_run else {}),
                      **({"best_run_id": final_run} if final_run else {})})
    if trial_run:
        tracker.client.set_tag(trial_run, "best_trial", "true")
        if final_run:
            tracker.client.set_tag(trial_run, "best_run_id", final_run)
    if final_run:
        tracker.client.set_tag(final_run, "from_trial_id", trial_id)
        if trial_run:
            tracker.client.set_tag(final_run, "from_trial_run_id", trial_run)
