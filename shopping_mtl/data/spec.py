"""Dataset specs: the YAML file in `features/` that tells the readers how to get canonical events.

A spec describes an event log (CSV or Parquet: paths, delimiter, header, column names, how raw
behaviour values map to click/save/purchase, the timestamp's format, unit and time zone) and
optional item and user feature tables with their join key and column types. A new catalogue
needs a YAML file, not code. Every key is checked: an unknown key is an error that names it.

Roles (`roles:`, `ROLES`) say which column plays a part the library relies on: the item
columns that are the category, the brand and the price, and the events' session column. They
are resolved here, in the data layer: the readers put a role's column into the canonical tables
under the role's canonical name (`ROLE_NAMES`: `category`, `brand`, `price`, `session_id`), and
the spec's `features:` section (and `defaults.ranking.exclude_features`) is rewritten to that
name, so the code downstream (ranker, export, retrieval, candidate sources), which reads
`category` and `session_id`, needs no role of its own, and the feature names a spec declares
under its own column names keep working. A feature or model input of a role's column is
therefore named by the role (`category`, not `category_code`). An item column literally named
`category`, `brand` or `price` has that role unless `roles:` says otherwise, so specs written
before roles read as they did. `DatasetSpec.role_notes` says what a spec without a category or
session role gives up; `load_spec` logs it once per spec file.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from shopping_mtl.errors import ConfigError
from shopping_mtl.yaml_files import read_yaml

log = logging.getLogger(__name__)

EVENTS = ("click", "save", "purchase")
COLUMN_TYPES = ("string", "float", "int")
FORMATS = ("csv", "parquet")
TIMESTAMP_UNITS = ("s", "ms", "us", "ns")

# Roles a column may play, and the name a role's column gets in the canonical tables.
ITEM_ROLES = ("category", "brand", "price")
ROLES = (*ITEM_ROLES, "session")
SESSION_ID = "session_id"
ROLE_NAMES = {"category": "category", "brand": "brand", "price": "price", "session": SESSION_ID}
# The column types a role's column may have (a category compared as text, a price as a number).
ROLE_TYPES = {"category": ("string",), "brand": ("string",), "price": ("float", "int")}
# What a spec without the role gives up (`DatasetSpec.role_notes`); brand and price: nothing
# reads them by role yet, so leaving them out costs nothing to say.
ROLE_USES = {
    "category": "the ranker's same-category features and the history categories are left out",
    "session": "co-visitation takes each user's calendar day (UTC) as one session",
}
# Spec files whose role notes were logged already: the config and the data stage both load it.
_NOTED: set[Path] = set()

# Folder of the project's specs, so `--dataset ecomm` finds features/ecomm.yaml.
SPEC_DIR = Path(__file__).resolve().parents[2] / "features"


def check_keys(mapping: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    """Raise ConfigError naming the first unknown key of `mapping`, with a close match if any."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(mapping).__name__}: {mapping!r}")
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where} has unknown key '{key}'{hint}; known: {', '.join(known)}"
            )


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] in (None, "", []):
        raise ConfigError(f"{where} is missing required key '{key}'")
    return mapping[key]


def _text(mapping: Mapping[str, Any], key: str, default: str, where: str) -> str:
    """A name or pattern: a number, list or mapping here is a mistake, not something to str()."""
    value = mapping.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be text, got {type(value).__name__}: {value!r}")
    return value


def _mapping(mapping: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """An optional mapping (absent or null: empty) whose keys are column names."""
    value = mapping.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key} must be a mapping, got {type(value).__name__}: {value!r}")
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(f"{where}.{key} has {name!r} where a column name (text) belongs")
    return dict(value)


def _check_timestamp(fmt: str, timezone: str, where: str) -> None:
    """Fail on a pattern or zone that pandas would reject while reading, row after row."""
    if fmt != "unix":
        if "%" not in fmt:
            raise ConfigError(f"{where}.timestamp_format is '{fmt}': 'unix' or a strftime "
                              "pattern such as '%Y-%m-%d %H:%M:%S'")
        try:
            pd.to_datetime(pd.Series(["1970-01-01"]), format=fmt, errors="coerce")
        except ValueError as err:
            raise ConfigError(f"{where}.timestamp_format '{fmt}' is not a strftime pattern: {err}") from None
    try:
        pd.Timestamp(0).tz_localize(timezone)
    except (LookupError, ValueError, TypeError) as err:
        raise ConfigError(f"{where}.timezone '{timezone}' is not a time zone ({err}); use an IANA "
                          "name such as 'UTC' or 'Europe/Paris'") from None


@dataclass(frozen=True)
class TableSpec:
    """Where one table lives and how to parse it (shared by events, items and users).

    Args:
        paths: files or glob patterns, relative to the spec's root unless absolute.
        format: "csv" or "parquet"; inferred from the first path's extension when omitted.
        delimiter: CSV field separator.
        header: whether the CSV's first line holds column names.
        columns: column names in file order; required for a CSV without header.
    """

    paths: tuple[str, ...]
    format: str
    delimiter: str = ","
    header: bool = True
    columns: tuple[str, ...] | None = None

    @staticmethod
    def _fields(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        paths = _require(raw, "paths", where)
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise ConfigError(f"{where}.paths must be a file name or a list of them, got {paths!r}")
        paths = tuple(paths)
        fmt = raw.get("format")
        if fmt is None:
            first = paths[0].lower()
            fmt = "parquet" if first.endswith((".parquet", ".pq")) else "csv"
        if fmt not in FORMATS:
            raise ConfigError(f"{where}.format is '{fmt}'; known: {', '.join(FORMATS)}")
        header = raw.get("header", True)
        if not isinstance(header, bool):
            raise ConfigError(f"{where}.header must be true or false, got {header!r}")
        columns = raw.get("columns")
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise ConfigError(f"{where}.columns must be a list of column names, got {columns!r}")
            columns = tuple(columns)
            if len(set(columns)) != len(columns):
                raise ConfigError(f"{where}.columns has a repeated name: {list(columns)}")
        if fmt == "csv" and not header and columns is None:
            raise ConfigError(f"{where}: a CSV without header needs 'columns'")
        delimiter = _text(raw, "delimiter", ",", where)
        if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n\0':
            raise ConfigError(f"{where}.delimiter must be one ASCII character other than a quote, "
                              f"NUL or line break, got {delimiter!r}")
        return dict(paths=paths, format=fmt, delimiter=delimiter, header=header, columns=columns)


@dataclass(frozen=True)
class EventsSpec(TableSpec):
    """The event log: which columns hold the ids, the behaviour and the time.

    Args:
        behaviors: raw behaviour value (as text) -> canonical event (click, save or purchase).
        timestamp_format: "unix" for numbers since the epoch (see `timestamp_unit`), or a
            strftime pattern such as "%Y%m%d" or "%Y-%m-%d %H:%M:%S".
        timezone: zone of timestamps written without one; canonical events are UTC.
        item_columns: item attributes carried on each event (Taobao's category) -> type.
        session: the column that holds each event's session (the `session` role), or None.
        canonical: column read -> its name in the canonical events, for a role's column
            whose name is not the role's (set by `DatasetSpec.from_dict`).
    """

    user_id: str = "user_id"
    item_id: str = "item_id"
    behavior: str = "behavior"
    timestamp: str = "timestamp"
    timestamp_format: str = "unix"
    timestamp_unit: str = "s"
    timezone: str = "UTC"
    behaviors: Mapping[str, str] = field(default_factory=dict)
    item_columns: Mapping[str, str] = field(default_factory=dict)
    session: str | None = None
    canonical: Mapping[str, str] = field(default_factory=dict)

    KNOWN = (
        "paths", "format", "delimiter", "header", "columns", "user_id", "item_id", "behavior",
        "timestamp", "timestamp_format", "timestamp_unit", "timezone", "behaviors", "item_columns",
    )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "events") -> "EventsSpec":
        if isinstance(raw, Mapping) and "session" in raw:
            raise ConfigError(f"{where} has unknown key 'session': the session column is a role, named "
                              f"at the spec's top level (roles: {{session: {raw['session']}}})")
        check_keys(raw, cls.KNOWN, where)
        base = TableSpec._fields(raw, where)
        behaviors_raw = _require(raw, "behaviors", where)
        if not isinstance(behaviors_raw, Mapping) or not behaviors_raw:
            raise ConfigError(f"{where}.behaviors must map raw values to click/save/purchase")
        behaviors = {}
        for raw_value, event in behaviors_raw.items():
            if event not in EVENTS:
                raise ConfigError(
                    f"{where}.behaviors maps '{raw_value}' to unknown event '{event}'; "
                    f"known: {', '.join(EVENTS)}"
                )
            # YAML reads yes/no/true/off as booleans and ~ as null: quote such raw values.
            if isinstance(raw_value, bool) or raw_value is None:
                raise ConfigError(f"{where}.behaviors has the YAML value {raw_value!r} as a raw "
                                  "value; quote it as written in the file")
            if str(raw_value) in behaviors:
                raise ConfigError(f"{where}.behaviors maps '{raw_value}' twice")
            behaviors[str(raw_value)] = event
        unit = _text(raw, "timestamp_unit", "s", where)
        if unit not in TIMESTAMP_UNITS:
            raise ConfigError(
                f"{where}.timestamp_unit is '{unit}'; known: {', '.join(TIMESTAMP_UNITS)}"
            )
        item_columns = _mapping(raw, "item_columns", where)
        for name, kind in item_columns.items():
            if kind not in COLUMN_TYPES:
                raise ConfigError(
                    f"{where}.item_columns.{name} has type '{kind}'; known: {', '.join(COLUMN_TYPES)}"
                )
            if name in ("user_id", "item_id", "event", "timestamp"):
                raise ConfigError(f"{where}.item_columns.{name} would replace the canonical "
                                  f"events column '{name}'")
        spec = cls(
            **base,
            **{role: _text(raw, role, role, where)
               for role in ("user_id", "item_id", "behavior", "timestamp")},
            timestamp_format=_text(raw, "timestamp_format", "unix", where),
            timestamp_unit=unit,
            timezone=_text(raw, "timezone", "UTC", where),
            behaviors=behaviors,
            item_columns=item_columns,
        )
        _check_timestamp(spec.timestamp_format, spec.timezone, where)
        if spec.columns is not None:
            for role in ("user_id", "item_id", "behavior", "timestamp"):
                name = getattr(spec, role)
                if name not in spec.columns:
                    raise ConfigError(
                        f"{where}.{role} names column '{name}', which is not in "
                        f"{where}.columns {list(spec.columns)}"
                    )
            for name in item_columns:
                if name not in spec.columns:
                    raise ConfigError(f"{where}.item_columns names column '{name}', which is not "
                                      f"in {where}.columns {list(spec.columns)}")
        return spec

    @property
    def used_columns(self) -> tuple[str, ...]:
        session = (self.session,) if self.session is not None else ()
        return (self.user_id, self.item_id, self.behavior, self.timestamp, *session, *self.item_columns)


@dataclass(frozen=True)
class SideTableSpec(TableSpec):
    """An item or user feature table joined on `key`; `types` maps each kept column to a type.

    A number column's value must be finite and non-negative (a NaN or negative price is a bad
    row), unless it is one of the column's `missing_values`, which mark "unknown" explicitly
    (EComm writes -1 for an unknown income) and are read as missing. `canonical`: column read ->
    its name in the canonical table, for a role's column (set by `DatasetSpec.from_dict`).
    """

    key: str = "item_id"
    types: Mapping[str, str] = field(default_factory=dict)
    missing_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    canonical: Mapping[str, str] = field(default_factory=dict)

    KNOWN = ("paths", "format", "delimiter", "header", "columns", "key", "types", "missing_values")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str, default_key: str) -> "SideTableSpec":
        check_keys(raw, cls.KNOWN, where)
        base = TableSpec._fields(raw, where)
        key = _text(raw, "key", default_key, where)
        types = _mapping(raw, "types", where)
        for name, kind in types.items():
            if kind not in COLUMN_TYPES:
                raise ConfigError(
                    f"{where}.types.{name} is '{kind}'; known: {', '.join(COLUMN_TYPES)}"
                )
            if name in (key, default_key):
                raise ConfigError(f"{where}.types.{name} would replace the key column '{name}'")
        missing = _mapping(raw, "missing_values", where)
        check_keys(missing, tuple(types), f"{where}.missing_values")
        missing = {
            name: tuple(str(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
            for name, values in missing.items()
        }
        spec = cls(**base, key=key, types=types, missing_values=missing)
        if spec.columns is not None:
            for name in (spec.key, *types):
                if name not in spec.columns:
                    raise ConfigError(
                        f"{where} uses column '{name}', which is not in {where}.columns "
                        f"{list(spec.columns)}"
                    )
        return spec


@dataclass(frozen=True)
class DatasetSpec:
    """A whole dataset: events plus optional side tables and the feature section.

    `root` is the folder that relative data paths start from: the spec's own `root` key,
    resolved against the spec file's folder, unless the user overrides it (`--data-root`).
    `features` is kept as the raw mapping (`shopping_mtl.features` validates it), each role's
    column named by its role; a spec without one gets `default_features`. `defaults` holds
    run-config values chosen for this dataset (e.g. `retrieval: {popularity_prior: 1.0}`),
    applied under the user's config. `roles` maps each role the spec has (`ROLES`) to the column
    read for it: those under `roles:`, plus an item column named like its role.
    """

    name: str
    path: Path
    root: Path
    events: EventsSpec
    items: SideTableSpec | None = None
    users: SideTableSpec | None = None
    features: Mapping[str, Any] | None = None
    description: str = ""
    synthetic: bool = False

    @property
    def feature_section(self) -> Mapping[str, Any]:
        """The spec's `features:` section, or the default one derived from its columns."""
        return self.features if self.features else default_features(self)

    defaults: Mapping[str, Any] = field(default_factory=dict)
    roles: Mapping[str, str] = field(default_factory=dict)

    KNOWN = ("name", "description", "synthetic", "root", "events", "items", "users", "features",
             "defaults", "roles")

    def role_notes(self) -> list[str]:
        """One line per role this spec leaves out that something relies on (`ROLE_USES`): what
        is given up and how to name the role; and one when its `features:` section leaves the
        category out of `item` (the ranker reads an item's category from the item features)."""
        notes = [f"spec {self.path.name}: no {role} role: {uses} (name it under roles: {role}: <column>)"
                 for role, uses in ROLE_USES.items() if role not in self.roles]
        item = self.feature_section.get("item")
        if "category" in self.roles and isinstance(item, Mapping) and "category" not in item:
            notes.append(f"spec {self.path.name}: the category column '{self.roles['category']}' is not "
                         f"under features.item: {ROLE_USES['category']} (add it there)")
        return notes

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: Path, root: str | Path | None = None) -> "DatasetSpec":
        where = path.name
        check_keys(raw, cls.KNOWN, where)
        events = EventsSpec.from_dict(_require(raw, "events", where), f"{where}: events")
        items = raw.get("items")
        users = raw.get("users")
        items = SideTableSpec.from_dict(items, f"{where}: items", "item_id") if items is not None else None
        roles = _roles(raw.get("roles"), events, items, where)
        canonical = {column: ROLE_NAMES[role] for role, column in roles.items()
                     if role in ITEM_ROLES and column != ROLE_NAMES[role]}
        events = dataclasses.replace(events, session=roles.get("session"), canonical={
            column: name for column, name in canonical.items() if column in events.item_columns})
        if items is not None:
            items = dataclasses.replace(items, canonical={
                column: name for column, name in canonical.items() if column in items.types})
        if root is None:
            if not isinstance(raw.get("root", "."), str):
                raise ConfigError(f"{where}: root must be a folder name, got {raw['root']!r}")
            root = path.parent / raw.get("root", ".")
        try:
            root = Path(root).expanduser().resolve()
        except (OSError, RuntimeError) as err:  # an unknown ~user, a name too long
            raise ConfigError(f"{where}: root {str(root)!r} cannot be resolved: {err}") from None
        for key in ("features", "defaults"):
            if raw.get(key) is not None and not isinstance(raw[key], Mapping):
                raise ConfigError(f"{where}: {key} must be a mapping, got {raw[key]!r}")
        synthetic = raw.get("synthetic", False)
        if not isinstance(synthetic, bool):
            raise ConfigError(f"{where}: synthetic must be true or false, got {synthetic!r}")
        return cls(
            name=str(raw.get("name", path.stem)),
            path=path,
            root=root,
            events=events,
            items=items,
            users=SideTableSpec.from_dict(users, f"{where}: users", "user_id") if users is not None else None,
            features=_canonical_features(raw.get("features") or None, canonical, where),
            description=str(raw.get("description", "")),
            synthetic=synthetic,
            defaults=_canonical_defaults(dict(raw.get("defaults") or {}), canonical),
            roles=roles,
        )


def _roles(given: Any, events: EventsSpec, items: SideTableSpec | None, where: str) -> dict[str, str]:
    """Role -> column read: the spec's `roles:` checked against the columns it reads, plus each
    item role whose name is an item column's (and that no role names already).

    An item role names an item column the spec reads and types (`items.types` or
    `events.item_columns`) with a type the role allows (`ROLE_TYPES`); the session role names
    an events column other than the item, behaviour, time and item attribute columns (the user
    column may be it: then a user's whole log is one session). A role's column must not take the
    canonical name of another column read. Anything else is a ConfigError naming the spec file,
    the role and the columns there are.
    """
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: roles must map a role ({', '.join(ROLES)}) to a column, got {given!r}")
    check_keys(given, ROLES, f"{where}: roles")
    item_types = {**events.item_columns, **(items.types if items is not None else {})}
    roles: dict[str, str] = {}
    for role, column in given.items():
        if not isinstance(column, str) or not column:
            raise ConfigError(f"{where}: roles.{role} must be a column name, got {column!r}")
        if role == "session":
            _check_session(column, events, where)
        elif column not in item_types:
            raise ConfigError(
                f"{where}: roles.{role} names column '{column}', which is not an item column the spec "
                f"reads; item columns: {', '.join(item_types) or 'none'} (an item column is typed under "
                "items.types or events.item_columns)")
        elif item_types[column] not in ROLE_TYPES[role]:
            raise ConfigError(f"{where}: roles.{role} names column '{column}' of type '{item_types[column]}'; "
                              f"a {role} column is {' or '.join(ROLE_TYPES[role])}")
        roles[role] = column
    named = list(roles.items())
    for i, (role, column) in enumerate(named):
        for other, same in named[i + 1:]:
            if same == column:
                raise ConfigError(f"{where}: roles.{role} and roles.{other} both name column '{column}'")
    for role in ITEM_ROLES:  # today's specs: a column named like the role has it
        if role not in roles and role in item_types and role not in roles.values():
            roles[role] = role
    for role, column in roles.items():
        name = ROLE_NAMES[role]
        taken = item_types if role in ITEM_ROLES else events.item_columns
        if column != name and name in taken:
            raise ConfigError(
                f"{where}: roles.{role} names column '{column}', but the spec also reads a column '{name}', "
                f"the name the {role} takes in the canonical tables; drop or rename one of them")
    return roles


def _check_session(column: str, events: EventsSpec, where: str) -> None:
    """The session role's column: an events column, not one that holds something else."""
    if events.columns is not None and column not in events.columns:
        raise ConfigError(f"{where}: roles.session names column '{column}', which is not in "
                          f"events.columns {list(events.columns)}")
    for role in ("item_id", "behavior", "timestamp"):
        if column == getattr(events, role):
            raise ConfigError(f"{where}: roles.session names column '{column}', the events' {role} column")
    if column in events.item_columns:
        raise ConfigError(f"{where}: roles.session names column '{column}', an item column "
                          "(events.item_columns)")


def _canonical_features(features: Mapping[str, Any] | None, canonical: Mapping[str, str],
                        where: str) -> Mapping[str, Any] | None:
    """The `features:` section with each role's column (`canonical`: column -> role name) named
    by its role in `item` and `history_features`; other keys as written (`shopping_mtl.features`
    validates them). A feature given under both names is a ConfigError."""
    if not features or not canonical:
        return features
    out = dict(features)
    item = features.get("item")
    if isinstance(item, Mapping):
        renamed: dict[Any, Any] = {}
        for name, settings in item.items():
            new = canonical.get(name, name) if isinstance(name, str) else name
            if new in renamed:
                raise ConfigError(f"{where}: features.item names the column of role '{new}' twice "
                                  f"('{new}' and its column's own name)")
            renamed[new] = settings
        out["item"] = renamed
    history = features.get("history_features")
    if isinstance(history, list):
        out["history_features"] = [canonical.get(n, n) if isinstance(n, str) else n for n in history]
    return out


def _canonical_defaults(defaults: dict[str, Any], canonical: Mapping[str, str]) -> dict[str, Any]:
    """`defaults` with the feature names of `ranking.exclude_features` named by their role."""
    ranking = defaults.get("ranking")
    if not canonical or not isinstance(ranking, Mapping):
        return defaults
    excluded = ranking.get("exclude_features")
    if not isinstance(excluded, list):
        return defaults
    names = [canonical.get(n, n) if isinstance(n, str) else n for n in excluded]
    return {**defaults, "ranking": {**ranking, "exclude_features": names}}


def default_features(spec: "DatasetSpec") -> dict[str, Any]:
    """The feature section a spec gets when it has none: ids, every typed item and user column
    (strings as categories, numbers log-bucketed), the hour and weekday, and a history of items
    (and their category, when there is one)."""
    def typed(columns: Mapping[str, str]) -> dict[str, Any]:
        out = {}
        for name, kind in columns.items():
            out[name] = ({"type": "numeric", "transform": "log1p", "buckets": 10}
                         if kind in ("float", "int") else {"type": "categorical"})
        return out

    item_columns = {spec.events.canonical.get(n, n): kind for n, kind in spec.events.item_columns.items()}
    if spec.items is not None:
        item_columns.update({spec.items.canonical.get(n, n): kind for n, kind in spec.items.types.items()})
    user_columns = dict(spec.users.types) if spec.users is not None else {}
    history = ["item_id"] + (["category"] if item_columns.get("category") == "string" else [])
    return {
        "history_length": 20,
        "history_features": history,
        "user": {"user_id": {"type": "id"}, **typed(user_columns)},
        "item": {"item_id": {"type": "id"}, **typed(item_columns)},
        "context": ["hour", "weekday"],
    }


def resolve_spec_path(dataset: str) -> Path:
    """`ecomm` -> features/ecomm.yaml; a path to a YAML file stays itself."""
    candidate = Path(dataset).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"dataset spec not found: {candidate}")
        return candidate
    named = SPEC_DIR / f"{dataset}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
    raise ConfigError(
        f"unknown dataset '{dataset}'; known: {', '.join(known)}, or give the path of a YAML spec"
    )


def load_spec(dataset: str, root: str | Path | None = None) -> DatasetSpec:
    """Load and validate a dataset spec by name (`ecomm`) or path (`my_shop.yaml`).

    Args:
        dataset: a name under `features/` or the path of a YAML spec.
        root: overrides the spec's data folder (the `--data-root` flag).
    """
    path = resolve_spec_path(dataset)
    raw = read_yaml(path)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: a dataset spec must be a YAML mapping, got {raw!r}")
    spec = DatasetSpec.from_dict(raw, path.resolve(), root)
    if spec.path not in _NOTED:
        _NOTED.add(spec.path)
        for note in spec.role_notes():
            log.info("%s", note)
    return spec
