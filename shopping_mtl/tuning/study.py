"""A study: the model it tunes, the objective (a validation figure), the oracle, the budget, the
search space and the fixed values, read from `tuning/<name>.yaml` and checked whole before any
data is read; `build` maps a trial's hyperparameters to config overrides."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

import keras_tuner as kt
import yaml

from shopping_mtl.config import merge
from shopping_mtl.errors import ConfigError

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


def nested(dotted: Mapping[str, Any]) -> dict:
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
    return merge(nested(dict(study.fixed)), nested(plain))


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


def search_space(study: Study):
    """The study's space declared on a fresh Keras Tuner `HyperParameters`."""
    hp = kt.HyperParameters()
    for param in study.space:
        param.register(hp)
    return hp
