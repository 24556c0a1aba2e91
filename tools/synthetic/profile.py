"""The calibration profile of the synthetic generator: its dataclasses and YAML round trip.

A `SyntheticProfile` holds the statistics measured on a real log (see `fitting.fit_profile`)
plus the generator's calibrated knobs (`GeneratorParams`). `load_profile` and `save_profile`
read and write it as YAML; `default_profile` loads `profile.yaml`, shipped next to this module.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

BEHAVIORS = ("click", "save", "purchase")
DEFAULT_PROFILE_PATH = Path(__file__).with_name("profile.yaml")
UNKNOWN_BRAND = "unknown"


@dataclass(frozen=True)
class BehaviorShares:
    """Shares of click, save and purchase among a set of events; they sum to 1.

    Args:
        click: share of clicks (page views).
        save: share of saves (favourite or add-to-cart).
        purchase: share of purchases.
    """

    click: float
    save: float
    purchase: float

    def __post_init__(self) -> None:
        values = self.as_array()
        if (values < 0).any() or abs(values.sum() - 1.0) > 1e-3:
            raise ValueError(
                f"behaviour shares must be >= 0 and sum to 1, got click={self.click}, "
                f"save={self.save}, purchase={self.purchase}"
            )

    def as_array(self) -> np.ndarray:
        """The shares as a float64 array in the order click, save, purchase."""
        return np.array([self.click, self.save, self.purchase], dtype=np.float64)


@dataclass(frozen=True)
class ScaleProfile:
    """The size of the real log and how its catalogue grows with the number of events.

    Args:
        events: events in the real log (the anchor of the growth laws).
        users: distinct users in it.
        items: distinct items that occur in its events.
        categories: distinct categories that occur in its events.
        item_growth_exponent: Heaps' law exponent b in items ~ events**b, measured while
            adding users in random order. Caveat: measured inside a small user sample it is
            close to 1, and extrapolating it 1000-fold overstates a real catalogue's growth.
        category_growth_exponent: exponent g in categories ~ items**g, measured the same way.
    """

    events: int
    users: int
    items: int
    categories: int
    item_growth_exponent: float
    category_growth_exponent: float


@dataclass(frozen=True)
class ActivityProfile:
    """How much and when users act.

    Args:
        events_per_user_log_mu: mean of log(events per user).
        events_per_user_log_sigma: standard deviation of log(events per user).
        max_events_per_user: the largest real user; draws are capped there.
        active_days_coef: c in active days ~ c * events**e per user (least squares on log-log).
        active_days_exponent: e in that law.
        span_days: calendar days from the first to the last event.
        start_date: first day of the real log, YYYY-MM-DD (synthetic logs start there).
        hour_shares: share of events in each UTC hour 0..23, or None when the log only has
            dates (hours are then uniform).
    """

    events_per_user_log_mu: float
    events_per_user_log_sigma: float
    max_events_per_user: int
    active_days_coef: float
    active_days_exponent: float
    span_days: int
    start_date: str
    hour_shares: tuple[float, ...] | None = None


@dataclass(frozen=True)
class BehaviorProfile:
    """Behaviour shares overall, on a user's first touch of an item, and on repeats of it."""

    overall: BehaviorShares
    first_touch: BehaviorShares
    repeat: BehaviorShares


@dataclass(frozen=True)
class EngagementProfile:
    """How much users come back to what they know.

    Args:
        repeat_share: share of events on an item the user had already touched.
        category_repeat_share: among first touches of an item (after the user's first event),
            the share in a category the user had already touched.
    """

    repeat_share: float
    category_repeat_share: float


@dataclass(frozen=True)
class PopularityProfile:
    """Observed slopes of the log-log rank-frequency curves (see `rank_frequency_exponent`).

    Args:
        item_exponent: s in events(item at rank r) ~ r**-s.
        category_exponent: the same over categories.
    """

    item_exponent: float
    category_exponent: float


@dataclass(frozen=True)
class CatalogProfile:
    """Item attributes.

    Args:
        price_log_mu: mean of log(price) over items with a positive price.
        price_log_sigma: standard deviation of log(price).
        price_category_share: share of the variance of log(price) explained by the category.
        brand_known_share: share of items with a known brand.
        brands_per_known_item: distinct brands per item with a known brand.
    """

    price_log_mu: float
    price_log_sigma: float
    price_category_share: float
    brand_known_share: float
    brands_per_known_item: float


@dataclass(frozen=True)
class GeneratorParams:
    """The generator's own knobs, calibrated by simulation (see `calibrate`).

    Args:
        zipf_exponent: item weight ~ rank**-zipf_exponent over the catalogue.
        category_zipf_exponent: category weight ~ rank**-category_zipf_exponent.
        repeat_prob: probability that an event (after the first) repeats an earlier event's item.
        category_stickiness: probability that a new item is taken in an earlier event's category.
        catalog_ratio: catalogue size / distinct items in events at the real log's size
            (a Zipf catalogue has items nobody touched).
    """

    zipf_exponent: float
    category_zipf_exponent: float
    repeat_prob: float
    category_stickiness: float
    catalog_ratio: float

    def __post_init__(self) -> None:
        for name in ("repeat_prob", "category_stickiness"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"generator.{name} must be in [0, 1), got {value}")
        if self.catalog_ratio < 1.0:
            raise ValueError(f"generator.catalog_ratio must be >= 1, got {self.catalog_ratio}")


@dataclass(frozen=True)
class SyntheticProfile:
    """Everything `generate` needs: measured statistics of a real log plus calibrated knobs.

    Args:
        source: where the numbers came from (dataset and files).
        scale: size of the real log and catalogue growth laws.
        activity: events per user and their timing.
        behaviors: click/save/purchase shares.
        engagement: repeat and category-affinity shares.
        popularity: observed rank-frequency slopes.
        catalog: prices and brands.
        generator: calibrated generator parameters.
        notes: free text (fallbacks used while fitting, caveats).
    """

    source: str
    scale: ScaleProfile
    activity: ActivityProfile
    behaviors: BehaviorProfile
    engagement: EngagementProfile
    popularity: PopularityProfile
    catalog: CatalogProfile
    generator: GeneratorParams
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists for tuples) that `from_dict` and YAML round-trip."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "SyntheticProfile":
        """Build from a nested mapping; unknown or missing keys raise ValueError naming them."""
        return _from_plain(cls, raw, "profile")

    def to_yaml(self, header: str = "") -> str:
        """YAML text of `to_dict`, preceded by `header` as `# ` comment lines (if any)."""
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)
        comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
        return comment + body


def _to_plain(value: Any) -> Any:
    """Dataclasses to dicts, tuples to lists, NumPy scalars to Python ones (recursively)."""
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def _from_plain(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from mapping `raw`; errors name the key path `where`."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(raw).__name__}: {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{where} has unknown key '{unknown[0]}'; known: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                raise ValueError(f"{where} is missing key '{name}'")
            continue
        kwargs[name] = _convert(hints[name], raw[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    """Convert one plain value to the field type `hint` (optional, dataclass, tuple, scalar)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if dataclasses.is_dataclass(hint):
        return _from_plain(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return tuple(float(v) for v in value)
    try:
        if hint is int:
            if float(value) != int(value):
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a {hint.__name__}, got {value!r}") from None
    return str(value)


def load_profile(path: str | Path) -> SyntheticProfile:
    """Read a profile YAML written by `save_profile` (or the shipped default).

    Args:
        path: the YAML file.

    Returns:
        The profile.

    Raises:
        ValueError: the file cannot be read, is not YAML, or does not describe a profile.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ValueError(f"cannot read profile {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"profile {path} is not valid YAML: {err}") from None
    try:
        return SyntheticProfile.from_dict(raw)
    except ValueError as err:
        raise ValueError(f"profile {path}: {err}") from None


def save_profile(profile: SyntheticProfile, path: str | Path, header: str = "") -> Path:
    """Write `profile` as YAML with `header` as a leading comment.

    Args:
        profile: the profile to write.
        path: the file to (over)write.
        header: text written first, each line as a `# ` comment.

    Returns:
        `path` as a Path.
    """
    path = Path(path)
    path.write_text(profile.to_yaml(header))
    return path


def default_profile() -> SyntheticProfile:
    """The profile shipped next to this module (`profile.yaml`), fitted on the Alibaba EComm sample.

    Returns:
        The loaded profile.
    """
    return load_profile(DEFAULT_PROFILE_PATH)
