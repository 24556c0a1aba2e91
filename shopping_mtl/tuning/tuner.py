"""`ShoppingTuner`: Keras Tuner's search loop over the project's own stages."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import keras_tuner as kt
import numpy as np
from keras_tuner.engine.base_tuner import BaseTuner

from shopping_mtl.config import Config, config_from_dict, merge
from shopping_mtl.errors import ConfigError, ShoppingMtlError
from shopping_mtl.evaluation import score_lists
from shopping_mtl.ranking import stage as ranking_stage
from shopping_mtl.ranking.config import INPUT_SETTINGS
from shopping_mtl.retrieval import stage as retrieval_stage
from shopping_mtl.run_state import RunState
from shopping_mtl.tracking import flatten
from shopping_mtl.tuning.study import Study, build, make_oracle, search_space

log = logging.getLogger(__name__)


def restored_epoch(history: Mapping[str, list[float]]) -> int:
    """The 0-based epoch (of `history`) whose weights early stopping kept: the best of the
    objective curve (`val_objective`), else of the ranker's mean AUC, else the lowest
    validation loss; the last epoch when no watched figure was logged. Ties go to the first,
    as `training.EarlyStopping` keeps the first best."""
    for key, best in (("val_objective", np.nanargmax), ("val_mean_auc", np.nanargmax), ("val_loss", np.nanargmin)):
        values = history.get(key)
        if values is not None and len(values) and not np.all(np.isnan(values)):
            return int(best(np.asarray(values, dtype=float)))
    return max(len(next(iter(history.values()), [])) - 1, 0)


class ShoppingTuner(BaseTuner):
    """Keras Tuner's search loop over one study, each trial trained by this project's stages.

    `state` is a RunState whose data stage (and, for a ranker study, retrieval stage) has run;
    the oracle's trials are kept under `directory/<study name>/`. `run_trial(trial)` maps the
    trial's hyperparameters to config overrides (`build`), validates the merged config as
    `--set` does (rejected settings raise `ShoppingMtlError`), trains the study's model on data
    prepared once per tuner, and returns `{study.objective: value}`, a validation figure.

    With `tracker`, each trial is a child MLflow run of the tracker's run, named by its settings
    (`Study.trial_name`, the objective appended once known): its Keras Tuner values (`tuner/x`
    logged as `tuner.x`) and the rest of its resolved config as parameters, tags `trial_id`, `study`,
    `tuner_id` and the run's metadata (`Tracker.log_run_metadata`: git commit, data
    fingerprint, the dataset as an input), its per-epoch history under the names a full run uses (`ranker/epoch/*`,
    `retrieval/epoch/*`), the objective (at the step of the epoch whose weights were kept, also
    tagged `restored_epoch`, 1-based) and `trial/seconds` as metrics, status FINISHED. A trial
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
        oracle.hyperparameters = search_space(study)
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
        name = self.study.trial_name(values)
        log.info("trial %s: started (%s)", trial.trial_id, name)
        child = self.tracker.child(run_name=name) if self.tracker else None
        started = time.perf_counter()
        try:
            if child is not None:
                child.log_params({k.replace("tuner/", "tuner."): v for k, v in values.items()})
                child.set_tags({"trial_id": trial.trial_id, "study": self.study.name, "tuner_id": self.tuner_id})
                child.log_run_metadata(self.state.info, self.state.metrics)  # git, data fingerprint, dataset
            # Inside the try: a trial whose settings are rejected is a failed child run too.
            config = self.trial_config(values)
            if child is not None:  # the whole config, beside the searched values logged above
                child.log_params({k: v for k, v in flatten(config.to_dict()).items() if k not in values})
            objective, history = self._train(trial, config, values)
            if child is not None:
                prefix = "ranker/epoch" if self.study.model == "ranking" else "retrieval/epoch"
                for epoch, row in enumerate(zip(*history.values())):
                    child.log_epoch(prefix, dict(zip(history, row)), epoch)
                # At the step of the epoch whose weights were kept, so that the objective sits on
                # the epoch curves where the trial's model comes from.
                restored = restored_epoch(history)
                child.log_metrics({self.study.objective: objective}, step=restored)
                child.log_metrics({"trial/seconds": time.perf_counter() - started})
                child.set_tags({"restored_epoch": restored + 1})
                child.rename(self.study.trial_name(values, objective))
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
        return self._train_retrieval(trial, config, values)

    def prepared_ranking_config(self):
        """The ranking settings the rows are prepared with, once for every trial: the run's, with
        each input setting (`INPUT_SETTINGS`) the study may turn on turned on, so that a trial
        that turns one on finds its inputs (a model ignores the inputs it does not read)."""
        rconfig = self.state.config.ranking
        searched = {p.name: p.values for p in self.study.space}
        on = {name: True for name in INPUT_SETTINGS if True in (searched.get(f"ranking.{name}") or ())}
        return dataclasses.replace(rconfig, **on)

    def _train_ranker(self, trial, config: Config, values: Mapping[str, Any]) -> tuple[float, dict]:
        if self.prepared is None:
            config_all_inputs = dataclasses.replace(self.state.config, ranking=self.prepared_ranking_config())
            self.prepared = ranking_stage.prepare_ranking(dataclasses.replace(self.state, config=config_all_inputs))
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
                                          initial_weights=initial, initial_epoch=initial_epoch,
                                          label=f"trial {trial.trial_id} ranker {rconfig.architecture}")
        self.save_model(trial.trial_id, fitted.model)
        if self.study.objective == "ranker/holdout_ndcg@10":
            objective = fitted.holdout_ndcg
        elif self.study.objective == "ranker/holdout_mean_auc":
            objective = fitted.holdout_mean_auc
        else:
            raise ShoppingMtlError(f"objective {self.study.objective!r} is not a ranker validation figure; "
                                   "known: ranker/holdout_ndcg@10, ranker/holdout_mean_auc")
        return float(objective), fitted.history

    def _train_retrieval(self, trial, config: Config, values: Mapping[str, Any]) -> tuple[float, dict]:
        rconfig = config.retrieval
        if "tuner/epochs" in values:  # retrieval rounds train from scratch for their epochs
            rconfig = dataclasses.replace(rconfig, epochs=int(values["tuner/epochs"]))
        data = retrieval_stage.prepare(self.state.dataset, self.state.split, rconfig)
        model, fitted = retrieval_stage.fit(data, rconfig, config.seed, label=f"trial {trial.trial_id} two-tower")
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
