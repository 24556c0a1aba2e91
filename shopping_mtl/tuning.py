"""AutoML-style search over the ranker's or the two-tower model's settings with Keras Tuner.

A study (`tuning/<name>.yaml`) names the model it tunes, the objective (a validation figure,
never a test one), the oracle (random, Bayesian or Hyperband, from Keras Tuner), the budget, the
search space and the fixed values:

    name: ranker
    model: ranking                       # ranking | retrieval
    objective: {metric: ranker/holdout_ndcg@10, direction: max}
    oracle: {type: hyperband, max_epochs: 9, factor: 3, seed: 0}
    budget: {max_trials: 20}             # random and bayesian
    space:
      ranking.architecture: {values: [shared_bottom, mmoe, ple, esmm], role: scientific}
      ranking.learning_rate: {min: 0.0003, max: 0.01, sampling: log, role: nuisance}
    fixed:
      ranking.compare_single_task: false

Every space entry is a config key (`--set` syntax) or one of the shorthands of `DERIVED`
(`ranking.bottom_depth` and `ranking.bottom_width` make `ranking.bottom_layers`). `build`
maps a trial's hyperparameters to config overrides and nothing else (the models never see `hp`).

`ShoppingTuner` subclasses Keras Tuner's `BaseTuner`, not its `Tuner`: `Tuner` builds a model
from a hypermodel and accepts only Keras 3 models, while the models here are tf-keras ones
trained by the project's own stages. Each trial trains on data prepared once for the whole
search; with Hyperband a promoted trial continues from its earlier round's ranker weights. A
trial that raises is marked failed with its error, and a search with no completed trial ends
with an error naming the failures, never with a best score of None. The oracle's state lives in
`<run folder>/tuning/`, so a search run again with the same run folder goes on where it
stopped: finished trials are kept.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import keras_tuner as kt
import numpy as np
import yaml
from keras_tuner.engine.base_tuner import BaseTuner
# Private: Keras Tuner 1.4 exports no public way to ask whether this process is a distributed
# search's chief or a worker (its tuners read the KERASTUNER_* variables through these helpers).
from keras_tuner.src.distribute import utils as dist_utils

from shopping_mtl import pipeline, tracking
from shopping_mtl.config import Config, config_from_dict, merge
from shopping_mtl.errors import ConfigError, ShoppingMtlError
from shopping_mtl.evaluation import score_lists
from shopping_mtl.ranking import stage as ranking_stage
from shopping_mtl.retrieval import stage as retrieval_stage
from shopping_mtl.run_state import RunState

log = logging.getLogger(__name__)

MODELS = ("ranking", "retrieval")
ORACLES = ("random", "bayesian", "hyperband")
ROLES = ("scientific", "nuisance")
DEFAULT_OBJECTIVES = {"ranking": "ranker/holdout_ndcg@10", "retrieval": "retrieval/validation/recall@100"}
# Shorthand hyperparameters -> the config values they make.
DERIVED = {
    "ranking.bottom_depth", "ranking.bottom_width", "ranking.tower_width", "ranking.expert_width",
    "retrieval.tower_depth", "retrieval.tower_width",
}
_STUDY_KEYS = ("name", "model", "objective", "oracle", "budget", "space", "fixed", "description")
_PARAM_KEYS = ("values", "min", "max", "step", "sampling", "role", "default")


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter: a choice of `values`, or an int/float range [`min`, `max`]."""

    name: str
    role: str
    values: tuple | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = "linear"

    def register(self, hp) -> Any:
        """Declare it on a Keras Tuner `HyperParameters` and return its value for this trial."""
        if self.values is not None:
            return hp.Choice(self.name, list(self.values))
        if isinstance(self.min, int) and isinstance(self.max, int) and not isinstance(self.step, float):
            return hp.Int(self.name, self.min, self.max, step=self.step or 1, sampling=self.sampling)
        return hp.Float(self.name, float(self.min), float(self.max), step=self.step, sampling=self.sampling)


@dataclasses.dataclass(frozen=True)
class Study:
    """A checked study file (`load_study`); `max_trials` is the budget of random and Bayesian."""

    name: str
    model: str
    objective: str
    direction: str
    oracle: Mapping[str, Any]
    max_trials: int
    space: tuple[Param, ...]
    fixed: Mapping[str, Any]
    path: Path | None = None

    @property
    def scientific(self) -> list[str]:
        return [p.name for p in self.space if p.role == "scientific"]


def _check_keys(where: str, given: Mapping, known) -> None:
    unknown = [k for k in given if k not in known]
    if unknown:
        raise ConfigError(f"{where} has unknown key '{unknown[0]}'; known: {', '.join(known)}")


def load_study(path: str | Path) -> Study:
    """Read and check a study YAML; a bad key or value fails naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study {path} does not exist (the studies are in tuning/)")
    raw = yaml.safe_load(path.read_text()) or {}
    where = str(path)
    _check_keys(where, raw, _STUDY_KEYS)
    model = raw.get("model")
    if model not in MODELS:
        raise ConfigError(f"{where}: model is {model!r}; known: {', '.join(MODELS)}")
    objective = dict(raw.get("objective") or {})
    _check_keys(f"{where}: objective", objective, ("metric", "direction"))
    direction = objective.get("direction", "max")
    if direction not in ("max", "min"):
        raise ConfigError(f"{where}: objective.direction is {direction!r}; known: max, min")
    oracle = dict(raw.get("oracle") or {"type": "random"})
    _check_keys(f"{where}: oracle", oracle, ("type", "seed", "max_epochs", "factor", "hyperband_iterations",
                                             "num_initial_points"))
    if oracle.get("type") not in ORACLES:
        raise ConfigError(f"{where}: oracle.type is {oracle.get('type')!r}; known: {', '.join(ORACLES)}")
    budget = dict(raw.get("budget") or {})
    _check_keys(f"{where}: budget", budget, ("max_trials",))
    space = []
    for name, spec in (raw.get("space") or {}).items():
        spec = dict(spec or {})
        _check_keys(f"{where}: space.{name}", spec, _PARAM_KEYS)
        if not name.startswith(f"{model}.") and not name.startswith("candidates."):
            raise ConfigError(f"{where}: space.{name} is not a {model}.* setting")
        role = spec.get("role", "nuisance")
        if role not in ROLES:
            raise ConfigError(f"{where}: space.{name}.role is {role!r}; known: {', '.join(ROLES)} "
                              "(fixed values go under `fixed:`)")
        if "values" in spec:
            if not spec["values"]:
                raise ConfigError(f"{where}: space.{name}.values is empty")
            space.append(Param(name, role, values=tuple(spec["values"])))
        elif "min" in spec and "max" in spec:
            if spec["min"] >= spec["max"]:
                raise ConfigError(f"{where}: space.{name} needs min < max")
            space.append(Param(name, role, min=spec["min"], max=spec["max"], step=spec.get("step"),
                               sampling=spec.get("sampling", "linear")))
        else:
            raise ConfigError(f"{where}: space.{name} needs `values` or `min` and `max`")
    if not space:
        raise ConfigError(f"{where}: the search space is empty")
    return Study(name=raw.get("name") or path.stem, model=model,
                 objective=objective.get("metric", DEFAULT_OBJECTIVES[model]), direction=direction,
                 oracle=oracle, max_trials=int(budget.get("max_trials", 10)), space=tuple(space),
                 fixed=dict(raw.get("fixed") or {}), path=path)


def _nested(dotted: Mapping[str, Any]) -> dict:
    """`{"ranking.loss_weights.save": 2}` -> `{"ranking": {"loss_weights": {"save": 2}}}`."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def build(study: Study, values: Mapping[str, Any]) -> dict:
    """A trial's hyperparameter values -> nested config overrides (fixed values included)."""
    values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    plain = {k: v for k, v in values.items() if k not in DERIVED}
    if "ranking.bottom_width" in values:
        width, depth = int(values["ranking.bottom_width"]), int(values.get("ranking.bottom_depth", 2))
        plain["ranking.bottom_layers"] = [max(width // 2 ** i, 8) for i in range(depth)]
    if "ranking.tower_width" in values:
        plain["ranking.tower_layers"] = [int(values["ranking.tower_width"])]
    if "ranking.expert_width" in values:
        plain["ranking.expert_layers"] = [int(values["ranking.expert_width"])]
    if "retrieval.tower_depth" in values:
        depth = int(values["retrieval.tower_depth"])
        plain["retrieval.tower_layers"] = [int(values.get("retrieval.tower_width", 128))] * depth
    return merge(_nested(dict(study.fixed)), _nested(plain))


def make_oracle(study: Study, max_trials: int | None = None):
    """The study's Keras Tuner oracle; `max_trials` overrides the study's budget."""
    objective = kt.Objective(study.objective, direction=study.direction)
    kind, seed = study.oracle["type"], study.oracle.get("seed", 0)
    trials = max_trials or study.max_trials
    if kind == "random":
        return kt.oracles.RandomSearchOracle(objective=objective, max_trials=trials, seed=seed)
    if kind == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(objective=objective, max_trials=trials, seed=seed,
                                                     num_initial_points=study.oracle.get("num_initial_points"))
    return kt.oracles.HyperbandOracle(objective=objective, max_epochs=int(study.oracle.get("max_epochs", 9)),
                                      factor=int(study.oracle.get("factor", 3)), seed=seed,
                                      hyperband_iterations=int(study.oracle.get("hyperband_iterations", 1)))


def _search_space(study: Study):
    """The study's space declared on a fresh Keras Tuner `HyperParameters`."""
    hp = kt.HyperParameters()
    for param in study.space:
        param.register(hp)
    return hp


class ShoppingTuner(BaseTuner):
    """Keras Tuner's search loop over one study, each trial trained by this project's stages.

    `state` is a RunState whose data stage (and, for a ranker study, retrieval stage) has run;
    the oracle's trials are kept under `directory/<study name>/`. `run_trial(trial)` maps the
    trial's hyperparameters to config overrides (`build`), validates the merged config as
    `--set` does (rejected settings raise `ShoppingMtlError`), trains the study's model on data
    prepared once per tuner, and returns `{study.objective: value}`, a validation figure.

    With `tracker`, each trial is a child MLflow run of the tracker's run: its hyperparameters
    as parameters (`tuner/x` logged as `tuner.x`), tags `trial_id`, `study`, `tuner_id`, its
    per-epoch history, the objective and `trial/seconds` as metrics, status FINISHED. A trial
    that raises ends its child run FAILED with an `error` tag and is re-raised as Keras Tuner's
    `FailedTrialError`, so the oracle marks it failed with that message. A ranker trial saves
    its scorer's weights as `<trial folder>/ranker_weights.npz`; a Hyperband trial promoted from
    it (`tuner/trial_id`) starts from them at `tuner/initial_epoch`.
    """

    def __init__(self, study: Study, state: RunState, directory: Path, tracker=None,
                 max_trials: int | None = None):
        # Set before BaseTuner's constructor, which may already reload the oracle's trials.
        self.study, self.state, self.tracker = study, state, tracker
        self.prepared = None  # the ranker's training data, prepared at the first ranker trial
        oracle = make_oracle(study, max_trials)
        oracle.hyperparameters = _search_space(study)
        super().__init__(oracle=oracle, directory=str(directory), project_name=study.name)

    def trial_config(self, values: Mapping[str, Any]) -> Config:
        """The run's config with the trial's overrides, validated; `ShoppingMtlError` if rejected."""
        overrides = build(self.study, values)
        base = self.state.config.to_dict()
        try:
            return config_from_dict(merge(base, overrides)).validate()
        except ConfigError as err:
            raise ShoppingMtlError(f"trial settings rejected: {err}") from None

    def run_trial(self, trial, *args, **kwargs):
        """Train one trial; `{study.objective: value}` (what it records: see the class docstring)."""
        values = trial.hyperparameters.values
        child = self.tracker.child(run_name=f"{self.study.name} trial {trial.trial_id}") if self.tracker else None
        started = time.perf_counter()
        try:
            if child is not None:
                child.log_params({k.replace("tuner/", "tuner."): v for k, v in values.items()})
                child.set_tags({"trial_id": trial.trial_id, "study": self.study.name, "tuner_id": self.tuner_id})
            # Inside the try: a trial whose settings are rejected is a failed child run too.
            config = self.trial_config(values)
            objective, history = self._train(trial, config, values)
            if child is not None:
                for epoch, row in enumerate(zip(*history.values())):
                    child.log_epoch("epoch", dict(zip(history, row)), epoch)
                child.log_metrics({self.study.objective: objective, "trial/seconds": time.perf_counter() - started})
                child.end("FINISHED")
        except Exception as err:
            if child is not None:
                child.set_tags({"error": f"{type(err).__name__}: {err}"[:4000]})
                child.end("FAILED")
            log.error("trial %s failed: %s: %s", trial.trial_id, type(err).__name__, err)
            raise kt.errors.FailedTrialError(f"{type(err).__name__}: {err}") from err
        log.info("trial %s: %s = %.4f (%s) in %.0fs", trial.trial_id, self.study.objective, objective,
                 {k: v for k, v in values.items() if not k.startswith("tuner/")}, time.perf_counter() - started)
        return {self.study.objective: objective}

    def _train(self, trial, config: Config, values: Mapping[str, Any]) -> tuple[float, dict]:
        """Train one trial; its objective and its Keras history."""
        if self.study.model == "ranking":
            return self._train_ranker(trial, config, values)
        return self._train_retrieval(config, values)

    def _train_ranker(self, trial, config: Config, values: Mapping[str, Any]) -> tuple[float, dict]:
        if self.prepared is None:
            self.prepared = ranking_stage.prepare_ranking(self.state)
        rconfig = config.ranking
        initial, initial_epoch = None, 0
        if "tuner/epochs" in values:
            # Hyperband: this round's epochs, no early stop inside it; a promoted trial
            # continues from its earlier round's weights.
            epochs = int(values["tuner/epochs"])
            rconfig = dataclasses.replace(rconfig, epochs=epochs, patience=epochs)
            if values.get("tuner/trial_id"):
                initial = self._load_weights(values["tuner/trial_id"])
                initial_epoch = int(values.get("tuner/initial_epoch", 0))
        features = self.state.retrieval.data.features
        fitted = ranking_stage.fit_ranker(features, self.prepared, rconfig, config.seed,
                                          initial_weights=initial, initial_epoch=initial_epoch)
        self.save_model(trial.trial_id, fitted.model)
        if self.study.objective == "ranker/holdout_ndcg@10":
            objective = fitted.holdout_ndcg
        elif self.study.objective == "ranker/holdout_mean_auc":
            objective = fitted.holdout_mean_auc
        else:
            raise ShoppingMtlError(f"objective {self.study.objective!r} is not a ranker validation figure; "
                                   "known: ranker/holdout_ndcg@10, ranker/holdout_mean_auc")
        return float(objective), fitted.history

    def _train_retrieval(self, config: Config, values: Mapping[str, Any]) -> tuple[float, dict]:
        rconfig = config.retrieval
        if "tuner/epochs" in values:  # retrieval rounds train from scratch for their epochs
            rconfig = dataclasses.replace(rconfig, epochs=int(values["tuner/epochs"]))
        data = retrieval_stage.prepare(self.state.dataset, self.state.split, rconfig)
        model, fitted = retrieval_stage.fit(data, rconfig, config.seed)
        lists, truth = retrieval_stage.validation_lists(model, data, rconfig.top_k)
        metrics = score_lists(lists, truth, "retrieval/validation", (10, 50, 100), n_resamples=0)
        if self.study.objective not in metrics:
            raise ShoppingMtlError(f"objective {self.study.objective!r} is not a retrieval validation "
                                   f"figure; known: {', '.join(sorted(metrics))}")
        return float(metrics[self.study.objective]), fitted["history"]

    def _weights_path(self, trial_id) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "ranker_weights.npz"

    def save_model(self, trial_id, model, step=0):
        """Write the ranker's scorer weights into the trial's folder (atomically: a temp file renamed)."""
        path = self._weights_path(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = model.scorer.get_weights()
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, *weights)
        tmp.replace(path)

    def _load_weights(self, trial_id) -> list[np.ndarray]:
        path = self._weights_path(trial_id)
        if not path.is_file():
            raise ShoppingMtlError(f"Hyperband continues trial {trial_id} but its weights {path} are missing")
        with np.load(path) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]

    def load_model(self, trial):
        """The weights `save_model` wrote for `trial` (a list of arrays, not a model)."""
        return self._load_weights(trial.trial_id)


@dataclasses.dataclass
class SearchResult:
    """What `run_search` hands back: every trial, the best completed one, the search's minutes."""

    study: Study
    trials: list[dict]  # trial_id, status, objective, values, error
    best: dict | None
    minutes: float
    final_metrics: dict | None = None  # the best config's full run, when there was one


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
    tracker = tracking.Tracker.attach(pipeline.PROJECT_ROOT, parent_id) if parent_id and config.tracking.enabled else None
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
    the oracle and reports, and a worker trains trials and returns None. Raises
    `ShoppingMtlError` when no trial completed, naming the first failures.
    """
    study = load_study(study_path)
    stages = ("data",) if study.model == "retrieval" else ("data", "retrieval")
    # The study's fixed values hold for every trial, so also for what is prepared once for all
    # of them (the ranking days of `ranking.extra_days`, the holdout users, the retrieval stage);
    # each trial's config still validates them (a bad fixed value fails every trial, reported).
    config = config_from_dict(merge(config.to_dict(), _nested(dict(study.fixed))))
    config = dataclasses.replace(config, stages=stages)
    role = ("chief" if dist_utils.is_chief_oracle() else "worker") if dist_utils.has_chief_oracle() else "single"
    if role == "worker":
        return run_worker(config, study)
    state = pipeline.prepare_state(config)
    tracker = pipeline.start_tracking(state, run_name=f"search {study.name} ({state.run_dir.name})",
                                      tags={"search": study.name, "oracle": study.oracle["type"]}) \
        if config.tracking.enabled else None
    if role == "chief":
        # Keras Tuner's distributed mode: this process serves the oracle; the workers
        # (KERASTUNER_TUNER_ID=tuner0, tuner1, ...) train the trials under this run.
        stages = ()
        _parent_file(state.run_dir, study).write_text(tracker.run_id if tracker is not None else "")
    try:
        for name in stages:
            pipeline.run_stage(name, state)
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
    if result.best is not None and final_run:
        best_config = dict(best_config, run_dir=str(state.run_dir / "best"),
                           stages=list(pipeline.DEFAULT_STAGES))
        log.info("search %s: training the best config (trial %s) with every stage", study.name,
                 result.best["trial_id"])
        final = pipeline.run(config_from_dict(best_config).validate(),
                             parent_run_id=tracker.run_id if tracker is not None else None)
        result.final_metrics = dict(final.metrics)
    if tracker is not None:
        tracker.log_text(text, "search.txt")
        tracker.log_metrics({"search/trials": len(result.trials), "search/failed_trials": len(failed),
                             "search/minutes": result.minutes,
                             **({f"search/best/{study.objective}": result.best["objective"]} if result.best else {})})
        if result.best is not None:
            tracker.log_artifact(state.run_dir / "best_config.yaml")
        tracker.end("FINISHED" if result.best is not None else "FAILED")
    if result.best is None:
        errors = "; ".join(f"trial {t['trial_id']}: {t['error']}" for t in failed[:3]) or "no trial ran"
        raise ShoppingMtlError(f"search {study.name}: no trial completed ({errors})")
