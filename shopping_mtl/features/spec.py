"""The ``features:`` section of a dataset's YAML file: validated, frozen spec dataclasses.

``FeatureSpec.from_dict(config["features"])`` checks every key and value and raises
``ValueError`` naming the bad one; the result says, per user / item column, how it enters the
model (``FeatureConfig``), which time parts of the prediction timestamp are context
(``ContextConfig``), and which item features a history pools. Nothing here touches data or
TensorFlow: ``shopping_mtl.features.feature_set`` adapts a spec to the train data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

FEATURE_TYPES = ("categorical", "hashed", "id", "numeric")
GROUPS = ("user", "item", "history", "context")
ENTITY_GROUPS = ("user", "item")
TIMESTAMP = "timestamp"
CONTEXT_SIZES = {"hour": 24, "weekday": 7}  # number of values of each time part
TRANSFORMS = ("log1p",)
EMBEDDED_TYPES = ("categorical", "hashed", "id")  # types a history may pool

_SPEC_KEYS = (
    "context",
    "embedding_dim",
    "history_features",
    "history_length",
    "item",
    "num_oov_indices",
    "user",
)
_TYPE_KEYS = {
    "id": ("dim", "min_count", "num_oov_indices", "type"),
    "categorical": ("dim", "min_count", "type"),
    "hashed": ("bins", "dim", "type"),
    "numeric": ("buckets", "dim", "transform", "type"),
}
_CONTEXT_KEYS = ("dim",)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """One user or item column and how it enters the model.

    ``num_oov_indices`` is the number of OOV rows of a string lookup (``id``: the spec's
    default, ``categorical``: 1, others: 0). ``dim`` is the embedding width (0 for a normalised
    numeric, which enters as one float).
    """

    name: str
    group: str
    type: str
    dim: int
    num_oov_indices: int = 0
    min_count: int = 1
    bins: int | None = None
    transform: str | None = None
    buckets: int | None = None

    @property
    def embedded(self) -> bool:
        """Whether the feature is looked up in an embedding table (else: one float)."""
        return self.type != "numeric" or self.buckets is not None


@dataclasses.dataclass(frozen=True)
class ContextConfig:
    """A part of the prediction timestamp (``hour`` or ``weekday``, UTC) and its embedding."""

    name: str
    dim: int


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The ``features:`` section of a dataset's YAML file, validated.

    ``history_features`` names the item features pooled over the history (default:
    ``item_id`` when ``history_length`` > 0). ``history_sessions``: the events carry each event's
    session (the dataset spec's ``session`` role, set by the retrieval stage, not by this
    section); the ranker then also reads the user's latest session.
    """

    user: tuple[FeatureConfig, ...] = ()
    item: tuple[FeatureConfig, ...] = ()
    context: tuple[ContextConfig, ...] = ()
    history_length: int = 0
    history_features: tuple[str, ...] = ()
    embedding_dim: int = 32
    num_oov_indices: int = 8
    history_sessions: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Builds and validates a spec; a bad key or value raises ``ValueError`` naming it."""
        if not isinstance(d, Mapping):
            raise ValueError(f"features must be a mapping, got {type(d).__name__}")
        _check_keys("features", d, _SPEC_KEYS)

        def get(key, default, minimum=1):
            return _int(f"features.{key}", d.get(key, default), minimum)

        embedding_dim = get("embedding_dim", cls.embedding_dim)
        default_oov = get("num_oov_indices", cls.num_oov_indices)
        history_length = get("history_length", cls.history_length, 0)

        groups: dict[str, tuple[FeatureConfig, ...]] = {}
        for group in ENTITY_GROUPS:
            columns = d.get(group) or {}
            if not isinstance(columns, Mapping):
                raise ValueError(f"features.{group} must map column names to settings")
            groups[group] = tuple(
                _feature_config(group, str(name), settings, embedding_dim, default_oov)
                for name, settings in columns.items()
            )
        names = [f.name for g in groups.values() for f in g]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"feature {name!r} is in both features.user and features.item")
            if name == TIMESTAMP or name.startswith("history_"):
                raise ValueError(f"feature name {name!r} is reserved for the model's inputs")

        embedded_items = [f.name for f in groups["item"] if f.type in EMBEDDED_TYPES]
        if "history_features" in d:
            raw = d["history_features"] or ()
            if isinstance(raw, str) or not isinstance(raw, Iterable):
                raise ValueError("features.history_features must be a list of item feature names")
            history_features = tuple(str(n) for n in raw)
        else:
            by_default = history_length and "item_id" in embedded_items
            history_features = ("item_id",) if by_default else ()
        for name in history_features:
            if name not in embedded_items:
                raise _unknown("features.history_features", "key", name, embedded_items)
        if history_length and not history_features:
            raise ValueError("features.history_length > 0 needs an item_id or history_features")
        if history_features and not history_length:
            raise ValueError("features.history_features needs features.history_length > 0")

        return cls(
            user=groups["user"],
            item=groups["item"],
            context=_context_configs(d.get("context") or (), embedding_dim),
            history_length=history_length,
            history_features=history_features,
            embedding_dim=embedding_dim,
            num_oov_indices=default_oov,
        )

    def group(self, group: str) -> tuple[FeatureConfig, ...]:
        """The user or item features."""
        if group not in ENTITY_GROUPS:
            raise _unknown("feature group", "name", group, ENTITY_GROUPS)
        return getattr(self, group)

    def feature(self, name: str) -> FeatureConfig:
        """A user or item feature by column name."""
        for f in self.user + self.item:
            if f.name == name:
                return f
        raise _unknown("features", "feature", name, [f.name for f in self.user + self.item])


def _unknown(where: str, what: str, value: Any, known: Iterable[str]) -> ValueError:
    return ValueError(f"{where} has unknown {what} {value!r}; known: {', '.join(known) or 'none'}")


def _check_keys(where: str, given: Any, known: Sequence[str]) -> None:
    if not isinstance(given, Mapping):
        raise ValueError(f"{where} must be a mapping, got {given!r}")
    for key in given:
        if key not in known:
            raise _unknown(where, "key", key, known)


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _feature_config(
    group: str, name: str, settings: Any, embedding_dim: int, default_oov: int
) -> FeatureConfig:
    where = f"features.{group}.{name}"
    if not isinstance(settings, Mapping):
        raise ValueError(f"{where} must be a mapping like {{type: categorical}}, got {settings!r}")
    kind = settings.get("type")
    if kind not in _TYPE_KEYS:
        raise _unknown(f"{where}.type", "value", kind, FEATURE_TYPES)
    _check_keys(where, settings, _TYPE_KEYS[kind])

    def get(key, default, minimum=1):
        return _int(f"{where}.{key}", settings.get(key, default), minimum)

    dim = get("dim", embedding_dim)
    if kind == "id":
        oov = get("num_oov_indices", default_oov)
        return FeatureConfig(name, group, kind, dim, oov, min_count=get("min_count", 1))
    if kind == "categorical":
        return FeatureConfig(name, group, kind, dim, 1, min_count=get("min_count", 1))
    if kind == "hashed":
        if "bins" not in settings:
            raise ValueError(f"{where} of type hashed needs 'bins'")
        return FeatureConfig(name, group, kind, dim, bins=get("bins", None))
    transform = settings.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        raise _unknown(f"{where}.transform", "value", transform, TRANSFORMS)
    if "buckets" not in settings:
        if "dim" in settings:
            raise ValueError(f"{where}.dim needs buckets (a normalised numeric is one float)")
        return FeatureConfig(name, group, kind, 0, transform=transform)
    buckets = get("buckets", None, 2)
    return FeatureConfig(name, group, kind, dim, transform=transform, buckets=buckets)


def _context_configs(raw: Any, embedding_dim: int) -> tuple[ContextConfig, ...]:
    if isinstance(raw, str) or not isinstance(raw, (Mapping, Sequence)):
        raise ValueError("features.context must be a list of time parts or a mapping of them")
    items = raw.items() if isinstance(raw, Mapping) else ((name, None) for name in raw)
    configs = []
    for name, settings in items:
        if name not in CONTEXT_SIZES:
            raise _unknown("features.context", "key", name, CONTEXT_SIZES)
        settings = settings or {}
        _check_keys(f"features.context.{name}", settings, _CONTEXT_KEYS)
        dim = _int(f"features.context.{name}.dim", settings.get("dim", embedding_dim), 1)
        configs.append(ContextConfig(name, dim))
    return tuple(configs)
