"""A study: the model it tunes, the objective (a validation figure), the oracle, the budget, the
search space and the fixed values, read from `tuning/<name>.yaml` and checked whole before any
data is read (`load_study`: every key a config key or a shorthand, every value the space can
produce a valid config); `build` maps a trial's hyperparameters to config overrides."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

import keras_tuner as kt

from shopping_mtl.candidates import builtin, registry  # noqa: F401  (builtin: registers the built-in sources)
from shopping_mtl.config import Config, check_key, config_from_dict, merge
from shopping_mtl.errors import ConfigError
from shopping_mtl.yaml_files import read_yaml

log = logging.getLogger(__name__)


MODELS = ("ranking", "retrieval")
ORACLES = ("random", "bayesian", "hyperband")
ROLES = ("scientific", "nuisance")
SAMPLINGS = ("linear", "log", "reverse_log")
DEFAULT_OBJECTIVES = {"ranking": "ranker/holdout_ndcg@10", "retrieval": "retrieval/validation/recall@100"}
# Shorthand hyperparameters -> the integers each takes (least, most; None: no bound); `build`
# makes config values of them. A depth is a count of layers: bounded, so no value makes a list
# that fills the memory.
DERIVED = {
    "ranking.bottom_depth": (0, 16), "ranking.bottom_width": (1, None), "ranking.tower_width": (1, None),
    "ranking.expert_width": (1, None), "retrieval.tower_depth": (0, 16), "retrieval.tower_width": (1, None),
}
# A Keras Tuner choice cannot hold null: a study writes 0 for these settings' null ("off").
ZERO_MEANS_NULL = ("retrieval.hard_negatives",)
_STUDY_KEYS = ("name", "model", "objective", "oracle", "budget", "space", "fixed", "description")
_PARAM_KEYS = ("values", "min", "max", "step", "sampling", "role", "default")
# Oracle settings that are integers, and the least each may be (num_initial_points: or null).
_ORACLE_INTS = {"seed": 0, "max_epochs": 1, "factor": 2, "hyperband_iterations": 1, "num_initial_points": 1}


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
            if all(isinstance(v, bool) for v in self.values) and len(set(self.values)) == 2:
                # Keras Tuner's Choice turns booleans into 0 and 1, which a boolean setting refuses.
                return hp.Boolean(self.name)
            return hp.Choice(self.name, list(self.values))
        if isinstance(self.min, int) and isinstance(self.max, int) and not isinstance(self.step, float):
            # Keras Tuner's log-sampled Int takes a step > 1 (a factor) or none at all.
            step = self.step or (1 if self.sampling == "linear" else None)
            return hp.Int(self.name, self.min, self.max, step=step, sampling=self.sampling)
        return hp.Float(self.name, float(self.min), float(self.max), step=self.step, sampling=self.sampling)

    def describe(self) -> str:
        """`[a, b, c]` for a choice, `[min, max]` with its sampling for a range; and the role."""
        if self.values is not None:
            text = "[" + ", ".join(map(str, self.values)) + "]"
        else:
            text = f"[{self.min}, {self.max}]" + (f" {self.sampling}" if self.sampling != "linear" else "")
        return f"{text} {self.role}"

    def ends(self) -> list:
        """The values checked at load: every choice, or the range's min and max."""
        return list(self.values) if self.values is not None else [self.min, self.max]


@dataclasses.dataclass(frozen=True)
class Study:
    """A checked study file (`load_study`); `max_trials` caps the trials of every oracle
    (a Hyperband round of a configuration counts as a trial)."""

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

    def params(self) -> dict[str, Any]:
        """The study as flat MLflow parameters: `study.*`, `oracle.*`, `budget.max_trials`, each
        searched setting under `space.<key>` and each fixed one under `fixed.<key>`."""
        return {"study.name": self.name, "study.model": self.model,
                "study.objective": f"{self.objective} ({self.direction})",
                **{f"oracle.{k}": v for k, v in self.oracle.items()}, "budget.max_trials": self.max_trials,
                **{f"space.{p.name}": p.describe() for p in self.space},
                **{f"fixed.{k}": v for k, v in self.fixed.items()}}

    def trial_name(self, values: Mapping[str, Any], objective: float | None = None) -> str:
        """A short run name for a trial: its architecture (when searched) and its first two
        other searched settings, `key=value` with the key's last part, then the objective once
        known (e.g. `mmoe learning_rate=0.00312 dropout=0.2 -> 0.2716`)."""
        def short(value):
            return f"{value:.3g}" if isinstance(value, float) else str(value)
        searched = [p.name for p in self.space if p.name in values]
        head = [short(values[n]) for n in searched if n.endswith(".architecture")]
        rest = [f"{n.rsplit('.', 1)[-1]}={short(values[n])}" for n in searched if not n.endswith(".architecture")]
        name = " ".join(head + rest[:2]) or self.name
        if "tuner/epochs" in values:
            name += f" ({values['tuner/epochs']} ep)"
        return name if objective is None else f"{name} -> {objective:.4f}"


def _check_keys(where: str, given: Mapping, known) -> None:
    unknown = [k for k in given if k not in known]
    if unknown:
        raise ConfigError(f"{where} has unknown key '{unknown[0]}'; known: {', '.join(known)}")


def _mapping(where: str, value: Any) -> dict:
    """`value` as a dict (null: empty), or fail naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    return dict(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(where: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{where} must be an integer >= {least}, got {value!r}")
    return value


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"study {path} does not exist (the studies are in tuning/)")
    return _mapping(f"{path}: a study", read_yaml(path))


def _param(where: str, model: str, name: Any, spec: Any) -> Param:
    """One `space:` entry, its key and its declaration checked (not yet its values)."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: space has key {name!r}; keys are dotted settings such as {model}.learning_rate")
    at = f"{where}: space.{name}"
    spec = _mapping(at, spec)
    _check_keys(at, spec, _PARAM_KEYS)
    if not name.startswith(f"{model}.") and not name.startswith("candidates."):
        raise ConfigError(f"{at} is not a {model}.* setting")
    _check_study_key(at, name)
    role = spec.get("role", "nuisance")
    if role not in ROLES:
        raise ConfigError(f"{at}.role is {role!r}; known: {', '.join(ROLES)} (fixed values go under `fixed:`)")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{at}.values must be a non-empty list, got {values!r}")
        param = Param(name, role, values=tuple(values))
    elif "min" in spec and "max" in spec:
        low, high, step = spec["min"], spec["max"], spec.get("step")
        if not _is_number(low) or not _is_number(high):
            raise ConfigError(f"{at} needs numbers for min and max, got {low!r} and {high!r}")
        if not low < high:
            raise ConfigError(f"{at} needs min < max, got {low!r} and {high!r}")
        if step is not None and not (_is_number(step) and step > 0):
            raise ConfigError(f"{at}.step must be a number > 0 (or left out), got {step!r}")
        sampling = spec.get("sampling", "linear")
        if sampling not in SAMPLINGS:
            raise ConfigError(f"{at}.sampling is {sampling!r}; known: {', '.join(SAMPLINGS)}")
        param = Param(name, role, min=low, max=high, step=step, sampling=sampling)
    else:
        raise ConfigError(f"{at} needs `values` or `min` and `max`")
    try:  # what Keras Tuner itself refuses (mixed types, a log range from 0, ...)
        param.register(kt.HyperParameters())
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{at}: Keras Tuner refuses it: {err}") from None
    return param


def _check_study_key(at: str, name: str) -> None:
    """A space or fixed key must be a config key or a shorthand of `DERIVED`."""
    if name in DERIVED:
        return
    try:
        check_key(name)
    except ConfigError as err:
        raise ConfigError(f"{at}: {err}, nor a study shorthand ({', '.join(DERIVED)})") from None


def load_study(path: str | Path, base: Config | None = None) -> Study:
    """Read and check a whole study YAML, before any data is read; a bad key or value raises
    `ConfigError` naming the study file and the key.

    Checked: the study's keys and the type of each value; the objective's direction, the oracle
    and the budget; every `space:` and `fixed:` key is a config key (`--set` syntax, e.g.
    `ranking.dropout`, `ranking.loss_weights.save`) or a shorthand of `DERIVED`; each space
    entry declares on Keras Tuner; and every value the space can produce gives a valid config
    (`Config.validate` and the candidate sources' names) on top of `base` (default: the
    defaults, `Config()`): the fixed values, each alone and together; each choice value and each
    range's min and max, with the fixed values; and the space's first values (a choice's first,
    a range's min) together.
    """
    path = Path(path)
    where = str(path)
    raw = _read(path)
    _check_keys(where, raw, _STUDY_KEYS)
    model = raw.get("model")
    if model not in MODELS:
        raise ConfigError(f"{where}: model is {model!r}; known: {', '.join(MODELS)}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or "/" in name or "\\" in name:
        raise ConfigError(f"{where}: name must be a text without '/' (it names the trials' folder), got {name!r}")
    objective = _mapping(f"{where}: objective", raw.get("objective"))
    _check_keys(f"{where}: objective", objective, ("metric", "direction"))
    metric = objective.get("metric", DEFAULT_OBJECTIVES[model])
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"{where}: objective.metric must be a metric name, got {metric!r}")
    direction = objective.get("direction", "max")
    if direction not in ("max", "min"):
        raise ConfigError(f"{where}: objective.direction is {direction!r}; known: max, min")
    oracle = _mapping(f"{where}: oracle", raw.get("oracle")) or {"type": "random"}
    _check_keys(f"{where}: oracle", oracle, ("type", *_ORACLE_INTS))
    if oracle.get("type") not in ORACLES:
        raise ConfigError(f"{where}: oracle.type is {oracle.get('type')!r}; known: {', '.join(ORACLES)}")
    for key, least in _ORACLE_INTS.items():
        if oracle.get(key) is not None:
            _integer(f"{where}: oracle.{key}", oracle[key], least)
    budget = _mapping(f"{where}: budget", raw.get("budget"))
    _check_keys(f"{where}: budget", budget, ("max_trials",))
    max_trials = _integer(f"{where}: budget.max_trials", budget.get("max_trials", 10), 1)
    space = tuple(_param(where, model, key, spec)
                  for key, spec in _mapping(f"{where}: space", raw.get("space")).items())
    if not space:
        raise ConfigError(f"{where}: the search space is empty")
    fixed = _mapping(f"{where}: fixed", raw.get("fixed"))
    for key in fixed:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: fixed has key {key!r}; keys are dotted settings such as {model}.epochs")
        _check_study_key(f"{where}: fixed.{key}", key)
    study = Study(name=name, model=model, objective=metric, direction=direction, oracle=oracle,
                  max_trials=max_trials, space=space, fixed=fixed, path=path)
    _check_values(study, base if base is not None else Config())
    return study


def _check_values(study: Study, base: Config) -> None:
    """Fail, naming the study key and value, where a value the study can give makes `base` an
    invalid config (what `load_study` says it checks)."""
    where, base_dict = str(study.path), base.to_dict()

    def check(fixed: Mapping[str, Any], values: Mapping[str, Any], what: str) -> None:
        try:
            config = config_from_dict(merge(base_dict, _overrides(fixed, values))).validate()
            registry.check_names(config.candidates.quotas, config.baselines.names)
        except ConfigError as err:
            raise ConfigError(f"{where}: {what} gives an invalid config: {err}") from None

    for key, value in study.fixed.items():
        check({key: value}, {}, f"fixed.{key} = {value!r}")
    check(study.fixed, {}, "fixed (together)")
    for param in study.space:
        labels = ["value"] * len(param.values) if param.values is not None else ["min", "max"]
        for label, value in zip(labels, param.ends()):
            check(study.fixed, {param.name: value}, f"space.{param.name} {label} {value!r}")
    check(study.fixed, {p.name: p.ends()[0] for p in study.space}, "the space's first values (together)")


def nested(dotted: Mapping[str, Any]) -> dict:
    """`{"ranking.loss_weights.save": 2}` -> `{"ranking": {"loss_weights": {"save": 2}}}`."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, last = str(key).split(".")
        node = out
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"'{key}' is inside '{'.'.join(parents[:depth + 1])}', which is given "
                                  f"a value of its own ({node!r})")
        node[last] = value
    return out


def _shorthand(values: Mapping[str, Any], name: str, default: int) -> int:
    value = values.get(name, default)
    least, most = DERIVED[name]
    if (isinstance(value, bool) or not isinstance(value, int) or value < least
            or (most is not None and value > most)):
        allowed = f"in [{least}, {most}]" if most is not None else f">= {least}"
        raise ConfigError(f"study shorthand {name} must be an integer {allowed}, got {value!r}")
    return value


def _overrides(fixed: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """Fixed values and a trial's values (these win) -> nested config overrides; shorthands of
    `DERIVED` (from either) become the config values they stand for."""
    values = {k: v for k, v in values.items() if not str(k).startswith("tuner/")}
    shorthands = {k: v for k, v in {**fixed, **values}.items() if k in DERIVED}
    for name in shorthands:
        _shorthand(shorthands, name, 0)
    made: dict[str, Any] = {}
    if "ranking.bottom_width" in shorthands:
        width = _shorthand(shorthands, "ranking.bottom_width", 0)
        depth = _shorthand(shorthands, "ranking.bottom_depth", 2)
        made["ranking.bottom_layers"] = [max(width // 2 ** i, 8) for i in range(depth)]
    if "ranking.tower_width" in shorthands:
        made["ranking.tower_layers"] = [_shorthand(shorthands, "ranking.tower_width", 0)]
    if "ranking.expert_width" in shorthands:
        made["ranking.expert_layers"] = [_shorthand(shorthands, "ranking.expert_width", 0)]
    if "retrieval.tower_depth" in shorthands:
        depth = _shorthand(shorthands, "retrieval.tower_depth", 0)
        made["retrieval.tower_layers"] = [_shorthand(shorthands, "retrieval.tower_width", 128)] * depth
    parts = []
    for given in (fixed, {**values, **made}):
        plain = {k: v for k, v in given.items() if k not in DERIVED}
        for key in ZERO_MEANS_NULL:
            if type(plain.get(key)) is int and plain[key] == 0:
                plain[key] = None
        parts.append(nested(plain))
    return merge(parts[0], parts[1])


def build(study: Study, values: Mapping[str, Any]) -> dict:
    """A trial's hyperparameter values -> nested config overrides (fixed values included; the
    shorthands of `DERIVED` made into config values; 0 for a setting of `ZERO_MEANS_NULL` made
    null). A shorthand that is no integer in its range raises `ConfigError`."""
    return _overrides(study.fixed, values)


def make_oracle(study: Study, max_trials: int | None = None):
    """The study's Keras Tuner oracle, capped at `max_trials` trials (default: the study's
    budget) whatever its type; a Hyperband round of a configuration counts as a trial."""
    objective = kt.Objective(study.objective, direction=study.direction)
    kind, seed = study.oracle["type"], study.oracle.get("seed", 0)
    trials = max_trials or study.max_trials
    if kind == "random":
        return kt.oracles.RandomSearchOracle(objective=objective, max_trials=trials, seed=seed)
    if kind == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(objective=objective, max_trials=trials, seed=seed,
                                                     num_initial_points=study.oracle.get("num_initial_points"))
    oracle = kt.oracles.HyperbandOracle(objective=objective, max_epochs=int(study.oracle.get("max_epochs", 9)),
                                        factor=int(study.oracle.get("factor", 3)), seed=seed,
                                        hyperband_iterations=int(study.oracle.get("hyperband_iterations", 1)))
    # HyperbandOracle takes no `max_trials`, but `Oracle.create_trial` stops the search once the
    # public `max_trials` attribute is reached, as it does for the other oracles.
    oracle.max_trials = trials
    return oracle


def search_space(study: Study):
    """The study's space declared on a fresh Keras Tuner `HyperParameters`."""
    hp = kt.HyperParameters()
    for param in study.space:
        param.register(hp)
    return hp
