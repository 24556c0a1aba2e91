"""The run configuration: grouped frozen dataclasses, loaded from YAML plus `--set key=value`.

One file plus command-line overrides, logged whole at the start of a run (`config.yaml` in the
run folder). Bad keys and values fail before any work with a `ConfigError` naming the full
dotted key, the value and what is allowed: every number must be finite, and every range a
setting's docstring gives is checked (`Config.validate` and each folder's `validate`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as dt
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from shopping_mtl.candidates.config import BaselineConfig, CandidateConfig
from shopping_mtl.data.spec import load_spec
from shopping_mtl.errors import ConfigError
from shopping_mtl.ranking.config import RankingConfig
from shopping_mtl.retrieval.config import RetrievalConfig
from shopping_mtl.yaml_files import read_yaml

# In data-flow order; each needs the stages its hand-off comes from (NEEDS), and data always runs.
STAGES = ("data", "baselines", "retrieval", "candidates", "ranking", "export")
NEEDS = {"ranking": ("retrieval", "candidates"), "export": ("retrieval",)}
DEFAULT_STAGES = STAGES
ON_BAD_ROWS = ("fail", "skip")
# numpy's legacy global seed (set by `tf.keras.utils.set_random_seed`) takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class DataConfig:
    """Which data to read and how strictly.

    Args:
        dataset: a name under features/ (`ecomm`, `taobao`, `taobao_timeslice`) or a spec path.
        root: folder the spec's relative data paths start from; None keeps the spec's own.
        max_events: keep whole users (in a fixed hashed order) until this many events (> 0,
            checked; None: all); a smoke run.
        on_bad_rows: "fail" stops at malformed rows; "skip" skips, counts and lists them (checked).
        stream_above_events: above this many events (>= 0, checked), the training examples
            (two-tower pairs, ranker rows) are built one user chunk at a time into Parquet
            shards under `<run folder>/.examples/` and streamed through tf.data instead of held
            in memory; 0: always; None: never.
        shard_rows: examples per Parquet shard when streaming (> 0, checked; four shards are
            read at a time).
        until: read the log as it stood then: events at or after this UTC time (ISO, e.g.
            `2019-06-18`; checked) are left out (and counted); None: the whole log. With `until`
            set to the first rolling-origin fold's test day, the run's test day is the day before
            every reported one: where defaults are chosen.
    """

    dataset: str = "ecomm"
    root: str | None = None
    max_events: int | None = None
    until: str | None = None
    on_bad_rows: str = "fail"
    stream_above_events: int | None = 500_000
    shard_rows: int = 200_000


@dataclass(frozen=True)
class SplitConfig:
    """The protocol's split; `min_days` and `quantile` only matter for logs under three days.

    Args:
        min_days: a log of fewer calendar days than this is split at event-time quantiles
            instead of by day (>= 3, checked: the calendar split needs a train, a validation
            and a test day).
        quantile: share of the events for test, and again for validation, in the quantile
            split, in (0, 0.5) (checked).
    """

    min_days: int = 3
    quantile: float = 0.2


@dataclass(frozen=True)
class EvaluationConfig:
    """How lists are scored.

    Args:
        ks: cut-offs for Recall@K and HitRate@K (NDCG is always @10); each > 0 and at most
            `list_size` (checked).
        list_size: rows per user in every list written (> 0, checked).
        bootstrap_resamples: resamples over users for the 95% intervals (>= 0, checked; 0: no
            intervals).
        bootstrap_seed: seed of the resampling, fixed so intervals reproduce (>= 0, checked).
        test_days: rolling origin: each of the last `test_days` days is the test day of one
            fold, with every stage fitted again on the days before it (>= 1, checked; 1: one test
            day, the last). Figures are pooled over the folds' test users; each fold's lists go
            to `folds/<test day>/` of the run folder; exports are the last fold's.
    """

    ks: tuple[int, ...] = (10, 50, 100)
    list_size: int = 100
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    test_days: int = 1


@dataclass(frozen=True)
class ExportConfig:
    """Where and how the SavedModels for TF Serving are written.

    Args:
        base: the export base, `<base>/<model>/<version>/`; None: `<run folder>/export`. Point
            it at the folder a model server watches to publish a run's models there.
        keep_versions: newest versions kept per model (>= 1, checked); older ones are removed.
        warmup_requests: validation rows written as warmup requests into each version (>= 0,
            checked).
        server_base: the export base as the model server sees it, for `models.config`'s
            base paths (e.g. `/models` when the base is mounted there in a container); None:
            the base's absolute local path.
    """

    base: str | None = None
    server_base: str | None = None
    keep_versions: int = 5
    warmup_requests: int = 10


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking of the run.

    Args:
        enabled: record the run in MLflow (the store: MLFLOW_TRACKING_URI, else `mlflow.db` and
            `mlruns/` in the project folder). A tracking server that does not answer stops the
            run before any training.
        experiment: the MLflow experiment.
        register: register the run's exports as `shopping-retrieval`, `shopping-ranker`,
            `shopping-recommend`; the `champion` alias moves only to a model that beats the
            champion on the validation objective.
        system_metrics: sample CPU, memory, disk, network (and GPU) use into the run's
            `system/...` metrics every 10 s (MLflow's monitor, a background thread; its trials
            too in a search).
        export_artifacts: also copy each registered export's SavedModel into the run's plain
            artifacts (`exports/<name>`); off, a registered model's files are stored once, in
            its logged model (a full run's exports are tens of MB each time they are stored).
            Unregistered exports (`register` off) are always copied there.
    """

    enabled: bool = True
    experiment: str = "shopping_mtl"
    register: bool = True
    system_metrics: bool = True
    export_artifacts: bool = False


@dataclass(frozen=True)
class Config:
    """Everything a `train.py` run does.

    `seed` seeds everything random (0 .. 2**32 - 1, checked: numpy's seed range). `validate`
    checks every group's settings and which stages need which; it returns the config.
    """

    run_dir: str | None = None
    seed: int = 42
    # Deterministic TF ops: the same seed gives the same metrics.json (off: faster on some GPUs).
    deterministic: bool = True
    stages: tuple[str, ...] = DEFAULT_STAGES
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> "Config":
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in [0, {MAX_SEED}] (numpy's seed range), got {self.seed}")
        for stage in self.stages:
            if stage not in STAGES:
                raise ConfigError(f"stages has unknown stage '{stage}'; known: {', '.join(STAGES)}")
        if self.data.on_bad_rows not in ON_BAD_ROWS:
            raise ConfigError(
                f"data.on_bad_rows is '{self.data.on_bad_rows}'; known: {', '.join(ON_BAD_ROWS)}")
        if self.data.max_events is not None and self.data.max_events <= 0:
            raise ConfigError(f"data.max_events must be positive, got {self.data.max_events}")
        if self.data.stream_above_events is not None and self.data.stream_above_events < 0:
            raise ConfigError(f"data.stream_above_events must be >= 0 (or null: never stream), "
                              f"got {self.data.stream_above_events}")
        if self.data.until is not None:
            try:
                dt.datetime.fromisoformat(self.data.until)
            except ValueError:
                raise ConfigError(f"data.until is '{self.data.until}'; give an ISO date or time such as "
                                  "2019-06-18 or 2019-06-18T12:00:00+00:00 (UTC when no offset is given)") from None
        if self.data.shard_rows < 1:
            raise ConfigError(f"data.shard_rows must be positive, got {self.data.shard_rows}")
        if self.split.min_days < 3:
            raise ConfigError(f"split.min_days must be >= 3 (a calendar split needs a train, a validation "
                              f"and a test day), got {self.split.min_days}")
        if not 0 < self.split.quantile < 0.5:
            raise ConfigError(f"split.quantile must be in (0, 0.5), got {self.split.quantile}")
        if self.evaluation.list_size < 1:
            raise ConfigError(f"evaluation.list_size must be positive, got {self.evaluation.list_size}")
        if not self.evaluation.ks or min(self.evaluation.ks) <= 0:
            raise ConfigError(f"evaluation.ks must be positive cut-offs, got {list(self.evaluation.ks)}")
        if max(self.evaluation.ks) > self.evaluation.list_size:
            raise ConfigError(
                f"evaluation.ks goes up to {max(self.evaluation.ks)} but evaluation.list_size is "
                f"{self.evaluation.list_size}")
        if self.evaluation.bootstrap_resamples < 0:
            raise ConfigError(f"evaluation.bootstrap_resamples must be >= 0 (0: no intervals), "
                              f"got {self.evaluation.bootstrap_resamples}")
        if self.evaluation.bootstrap_seed < 0:
            raise ConfigError(f"evaluation.bootstrap_seed must be >= 0, got {self.evaluation.bootstrap_seed}")
        if self.evaluation.test_days < 1:
            raise ConfigError(f"evaluation.test_days must be >= 1, got {self.evaluation.test_days}")
        self.baselines.validate()
        if self.export.keep_versions < 1:
            raise ConfigError(f"export.keep_versions must be >= 1, got {self.export.keep_versions}")
        if self.export.warmup_requests < 0:
            raise ConfigError(f"export.warmup_requests must be >= 0, got {self.export.warmup_requests}")
        self.retrieval.validate()
        self.candidates.validate()
        self.ranking.validate()
        for stage, needs in NEEDS.items():
            for need in needs:
                if stage in self.stages and need not in self.stages:
                    raise ConfigError(f"stage '{stage}' needs stage '{need}' (its input comes from there)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @property
    def export_base(self) -> Path:
        """The export base: `export.base`, else `<run folder>/export`."""
        return Path(self.export.base) if self.export.base else Path(self.run_dir or ".") / "export"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML value to the field's declared type, or fail naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _build(hint, value, key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") if args else v for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as text; `--set ranking.learning_rate=1e-4` means a number.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        # YAML reads .nan and .inf as numbers; no setting means anything by them, and NaN
        # passes every range check (each comparison with it is false).
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (dt.date, dt.datetime)):  # YAML reads an unquoted 2019-06-18 as a date
            return value.isoformat()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, raw: Mapping[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            prefix = f"{where}." if where else ""
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}; known: "
                              + ", ".join(f"{where}.{n}" if where else n for n in names))
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def check_key(dotted: str) -> None:
    """Raise `ConfigError` unless `dotted` (`--set` syntax, e.g. `ranking.dropout`) names a
    setting or a group of settings of `Config`. An entry of a mapping setting
    (`ranking.loss_weights.save`) counts as a key: which entries a mapping takes is checked
    with its value (`Config.validate`)."""
    node, parts = Config, str(dotted).split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            close = difflib.get_close_matches(part, names, n=1)
            suggestion = f" (did you mean '{where + '.' if where else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{dotted}'{suggestion}; known: "
                              + ", ".join(f"{where}.{n}" if where else n for n in names))
        hint = typing.get_type_hints(node)[part]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        rest = parts[depth + 1:]
        if dataclasses.is_dataclass(hint):
            node = hint
            continue
        if typing.get_origin(hint) in (collections.abc.Mapping, dict) and len(rest) <= 1:
            return
        if rest:
            raise ConfigError(f"unknown config key '{dotted}': '{'.'.join(parts[:depth + 1])}' is a "
                              "setting, not a group of settings")
        return


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """A `Config` from nested plain values (as `config.yaml` holds them), every key checked and
    every value coerced to its field's type; not yet `validate()`d."""
    return _build(Config, raw)


def merge(base: dict, override: Mapping) -> dict:
    """Deep-merge nested dicts; `override` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`data.max_events=5000` -> {"data": {"max_events": 5000}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: dict[str, Any] = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                with_dataset_defaults: bool = True) -> Config:
    """Defaults <- the dataset spec's `defaults:` <- YAML file <- overrides, validated."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: a config must be a YAML mapping")
        raw = merge(raw, loaded)
    if overrides:
        raw = merge(raw, overrides)
    if with_dataset_defaults:
        data = raw.get("data")
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"data must be a mapping, got {data!r}")
        dataset = _coerce((data or {}).get("dataset", DataConfig.dataset), str, "data.dataset")
        spec_defaults = load_spec(dataset).defaults
        if spec_defaults:
            _build(Config, spec_defaults)  # a bad key fails here, naming it
            raw = merge(spec_defaults, raw)
    return _build(Config, raw).validate()
