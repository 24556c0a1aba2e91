"""SYNTHETIC shopping event logs of any size, calibrated to the statistics of a real sample.

Scale tests need logs of 1M to 100M events; the real samples hold 85k. This module measures a
`SyntheticProfile` from a real log (`fit_profile`) and draws logs of any size from it
(`generate`), writing Parquet shards user block by user block, so memory depends on the
block size and the number of categories, never on the number of events or items. Every
output says it is synthetic: the README, `synthetic: true` in the dataset spec and
`synthetic=true` in the schema metadata of every Parquet file.

The model, per user (users are independent, so blocks of users are drawn in one go):

* the number of events is lognormal (rounded, at least 1, capped at the largest real user);
* each event either repeats an item of the user's own history (probability `repeat_prob`,
  the earlier event chosen uniformly, so items the user touched often come back more), or
  touches a new item: its category is, with probability `category_stickiness`, the category
  of an earlier event of the user (category affinity), else a draw from the category
  popularity; the item is then a Zipf draw within that category;
* the behaviour (click/save/purchase) is drawn from the real shares of first touches or of
  repeats, according to whether the user had touched that item before;
* timestamps fall on a few active days of the span, at hours drawn from the real hour-of-day
  curve, in time order along the history.

Item popularity is Zipf over the catalogue; category popularity is Zipf over categories. The
catalogue grows with the number of events as Heaps' law measured on the real sample (distinct
items against events while users are added in random order; caveat: inside an 85k-event
sample this is nearly linear, 0.93, so 100M events get ~25M touched items where the full
Taobao log has 4M); categories grow as a power of items. The generator's own parameters (`GeneratorParams`) are calibrated by simulation so that
a synthetic log of the real sample's size reproduces its observed repeat share, category
affinity, popularity slopes and number of distinct items.

Examples:
  python -m shopping_mtl.data.synthetic generate --events 1000000 --out /tmp/synth-1m
  python -m shopping_mtl.data.synthetic fit \
      --ecomm-dir /work/shared/data/alibaba_ecomm_cikm2019_sample \
      --hours-from /work/shared/data/taobao_userbehavior_sample/UserBehavior_head_users1-100370.csv.gz \
      --out shopping_mtl/data/synthetic_profile.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

GENERATOR_VERSION = "1.0"
BEHAVIORS = ("click", "save", "purchase")
DEFAULT_PROFILE_PATH = Path(__file__).with_name("synthetic_profile.yaml")

# Users drawn together with one random stream. Fixed (not derived from chunk_events) so the
# event stream is the same whatever the shard size; ~1k users is ~60k events, ~10 MB of
# working arrays.
USERS_PER_BLOCK = 1024
# Rows per slice when writing items.parquet, again fixed so item attributes do not depend on it.
ITEMS_PER_SLICE = 1 << 17
# Calibration simulates a log of the real sample's size; a larger real log is measured on a
# random subset of its users of about this many events, to keep fitting fast.
CALIBRATION_EVENTS = 500_000
UNKNOWN_BRAND = "unknown"

SCHEMA_METADATA_KEY = b"synthetic"
EVENTS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("behavior", pa.string()),
        ("timestamp", pa.int64()),
        ("category", pa.string()),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
    ]
)


# --------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------


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
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)
        comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
        return comment + body


def _to_plain(value: Any) -> Any:
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
    """Read a profile YAML written by `save_profile` (or the shipped default)."""
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
    """Write `profile` as YAML with `header` as a leading comment."""
    path = Path(path)
    path.write_text(profile.to_yaml(header))
    return path


def default_profile() -> SyntheticProfile:
    """The profile shipped next to this module, fitted on the Alibaba EComm sample."""
    return load_profile(DEFAULT_PROFILE_PATH)


# --------------------------------------------------------------------------------------------
# Measuring a log
# --------------------------------------------------------------------------------------------


def rank_frequency_exponent(counts: np.ndarray, min_count: int = 2, n_points: int = 40) -> float:
    """Popularity exponent s of a rank-frequency curve, count(rank r) ~ r**-s.

    Least squares on log-log at `n_points` log-spaced ranks, from rank 1 to the last rank with
    at least `min_count` events. Log spacing weighs each decade of ranks alike (otherwise the
    long tail, most of the points, decides alone), and the cut drops the plateau of items seen
    once, a finite-sample artefact (about half the items of a small log) that says nothing
    about the slope.

    Args:
        counts: events per item (or per category); zeros are ignored.
        min_count: smallest count still used in the fit.
        n_points: number of log-spaced ranks fitted.
    """
    values = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    values = values[values > 0]
    last = int(np.sum(values >= min_count))
    if last < 3:
        raise ValueError(
            f"need at least 3 items with >= {min_count} events to fit a popularity exponent, "
            f"got {last}"
        )
    ranks = np.unique(np.geomspace(1, last, n_points).round().astype(np.int64))
    slope = np.polyfit(np.log(ranks), np.log(values[ranks - 1]), 1)[0]
    return float(-slope)


@dataclass(frozen=True)
class _CodeStats:
    """The statistics that calibration matches, measured on integer-coded events."""

    repeat_share: float
    category_repeat_share: float
    item_exponent: float
    category_exponent: float
    items: int


def _code_stats(user: np.ndarray, item: np.ndarray, category: np.ndarray) -> _CodeStats:
    """Order-free statistics of events given as integer codes (one entry per event).

    The number of events on an already-touched (user, item) pair does not depend on the order
    of the events, nor does the number of first touches in a new category (each (user,
    category) pair starts with a first touch), so day-resolution logs with ties need no order.
    """
    user = np.asarray(user, dtype=np.int64)
    item = np.asarray(item, dtype=np.int64)
    category = np.asarray(category, dtype=np.int64)
    n = len(user)
    n_users = len(np.unique(user))
    pair = np.unique(user * (int(item.max()) + 1) + item, return_counts=False)
    n_pairs = len(pair)
    n_user_cats = len(np.unique(user * (int(category.max()) + 1) + category))
    first_touches_after_first = n_pairs - n_users
    category_repeat = (
        1.0 - (n_user_cats - n_users) / first_touches_after_first
        if first_touches_after_first > 0
        else 0.0
    )
    return _CodeStats(
        repeat_share=1.0 - n_pairs / n,
        category_repeat_share=float(category_repeat),
        item_exponent=rank_frequency_exponent(np.bincount(item)),
        category_exponent=rank_frequency_exponent(np.bincount(category)),
        items=int(len(np.unique(item))),
    )


def _heaps_exponent(
    users: np.ndarray, keys: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """Growth exponents while users are added in random order.

    Returns (b, g) for distinct items ~ events**b and distinct categories ~ items**g, fitted
    on log-spaced points from 2% of the events to all of them (the first users are noise).

    Args:
        users: user code per event.
        keys: (item code, category code) per event, shape (n, 2).
    """
    n_users = int(users.max()) + 1
    rank = rng.permutation(n_users)[users]
    order = np.argsort(rank, kind="stable")
    item, cat = keys[order, 0], keys[order, 1]
    new_item = np.zeros(len(item), dtype=bool)
    new_item[np.unique(item, return_index=True)[1]] = True
    new_cat = np.zeros(len(cat), dtype=bool)
    new_cat[np.unique(cat, return_index=True)[1]] = True
    items_seen = np.cumsum(new_item)
    cats_seen = np.cumsum(new_cat)
    at = np.unique(np.geomspace(max(1, 0.02 * len(item)), len(item), 40).astype(np.int64)) - 1
    b = np.polyfit(np.log(at + 1.0), np.log(items_seen[at]), 1)[0]
    g = np.polyfit(np.log(items_seen[at]), np.log(cats_seen[at]), 1)[0]
    return float(np.clip(b, 0.05, 1.0)), float(np.clip(g, 0.0, 1.0))


def _behavior_shares(codes: np.ndarray) -> BehaviorShares:
    counts = np.bincount(codes, minlength=3).astype(np.float64)
    if counts.sum() == 0:
        counts = np.ones(3)
    shares = counts / counts.sum()
    return BehaviorShares(*(round(float(s), 5) for s in shares))


def fit_profile(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    *,
    hour_events: pd.DataFrame | None = None,
    source: str = "",
    calibrate_generator: bool = True,
    seed: int = 0,
) -> SyntheticProfile:
    """Measure a `SyntheticProfile` from canonical events and calibrate the generator on it.

    Args:
        events: canonical events: `user_id`, `item_id` (str), `event` (click/save/purchase),
            `timestamp` (datetime64, UTC); may carry `category` when there is no item table.
        items: item table with `item_id`, `category`, and optionally `brand`, `price`; None
            uses the events' `category` column and takes prices and brands from the default
            profile (said in `notes`).
        hour_events: events with sub-day timestamps to measure the hour-of-day curve from,
            when `events` only has dates (the EComm sample); None measures it on `events`.
        source: where the numbers come from, kept in the profile.
        calibrate_generator: run the calibration simulation (a few seconds); False leaves
            the generator knobs at the observed values, for quick looks.
        seed: seed of the user shuffles and of the calibration simulations.
    """
    missing = {"user_id", "item_id", "event", "timestamp"} - set(events.columns)
    if missing:
        raise ValueError(
            f"events frame lacks column(s) {sorted(missing)}; has {list(events.columns)}"
        )
    if len(events) == 0:
        raise ValueError("events frame is empty; cannot fit a profile")
    unknown = sorted(set(events["event"].unique()) - set(BEHAVIORS))
    if unknown:
        raise ValueError(
            f"events.event has unknown value(s) {unknown}; known: {', '.join(BEHAVIORS)}"
        )
    notes = []
    rng = np.random.default_rng(seed)

    categories = _event_categories(events, items)
    timestamps = pd.to_datetime(events["timestamp"], utc=True)
    # Stable sort by time: with day-resolution logs, file order breaks ties, which decides
    # only which of a user's same-day events on an item counts as the first touch.
    order = np.argsort(timestamps.to_numpy(dtype="datetime64[ns]"), kind="stable")
    user = pd.factorize(events["user_id"].to_numpy()[order])[0]
    item = pd.factorize(events["item_id"].to_numpy()[order])[0]
    cat = pd.factorize(categories[order])[0]
    behavior = pd.Series(events["event"].to_numpy()[order]).map(
        {b: i for i, b in enumerate(BEHAVIORS)}
    ).to_numpy(dtype=np.int64)
    ts = timestamps.to_numpy(dtype="datetime64[ns]")[order]

    per_user = np.bincount(user)
    log_counts = np.log(per_user)
    pair = user.astype(np.int64) * (int(item.max()) + 1) + item
    first = np.zeros(len(pair), dtype=bool)
    first[np.unique(pair, return_index=True)[1]] = True

    days = ts.astype("datetime64[D]")
    day_codes = (days - days.min()).astype(np.int64)
    user_day = np.unique(user.astype(np.int64) * (int(day_codes.max()) + 1) + day_codes)
    active_days = np.bincount(user_day // (int(day_codes.max()) + 1), minlength=len(per_user))
    if log_counts.std() > 0:
        days_exp, days_log_coef = np.polyfit(log_counts, np.log(active_days), 1)
    else:  # every user has the same count: no slope to fit
        days_exp, days_log_coef = 0.0, float(np.log(active_days).mean())
    # Quantiles, not min/max: the Taobao log has a few stray rows months before its window.
    lo, hi = np.quantile(day_codes, [0.001, 0.999]).astype(np.int64)
    start_day = days.min() + np.timedelta64(int(lo), "D")

    stats = _code_stats(user, item, cat)
    item_growth, category_growth = _heaps_exponent(user, np.stack([item, cat], axis=1), rng)

    hours = _hour_shares(ts)
    if hours is None and hour_events is not None:
        hour_ts = pd.to_datetime(hour_events["timestamp"], utc=True)
        hours = _hour_shares(hour_ts.to_numpy(dtype="datetime64[ns]"))
        notes.append("hour_shares measured on hour_events (events have dates only)")
    elif hours is None:
        notes.append("events have dates only: hours are uniform")

    catalog = _catalog_profile(items, notes)
    profile = SyntheticProfile(
        source=source,
        scale=ScaleProfile(
            events=len(events),
            users=int(len(per_user)),
            items=stats.items,
            categories=int(cat.max()) + 1,
            item_growth_exponent=round(item_growth, 4),
            category_growth_exponent=round(category_growth, 4),
        ),
        activity=ActivityProfile(
            events_per_user_log_mu=round(float(log_counts.mean()), 4),
            events_per_user_log_sigma=round(float(log_counts.std()), 4),
            max_events_per_user=int(per_user.max()),
            active_days_coef=round(float(np.exp(days_log_coef)), 4),
            active_days_exponent=round(float(days_exp), 4),
            span_days=int(hi - lo) + 1,
            start_date=str(start_day),
            hour_shares=hours,
        ),
        behaviors=BehaviorProfile(
            overall=_behavior_shares(behavior),
            first_touch=_behavior_shares(behavior[first]),
            repeat=_behavior_shares(behavior[~first]),
        ),
        engagement=EngagementProfile(
            repeat_share=round(stats.repeat_share, 4),
            category_repeat_share=round(stats.category_repeat_share, 4),
        ),
        popularity=PopularityProfile(
            item_exponent=round(stats.item_exponent, 4),
            category_exponent=round(stats.category_exponent, 4),
        ),
        catalog=catalog,
        generator=GeneratorParams(
            zipf_exponent=round(stats.item_exponent, 4),
            category_zipf_exponent=round(stats.category_exponent, 4),
            repeat_prob=round(min(stats.repeat_share, 0.95), 4),
            category_stickiness=round(min(stats.category_repeat_share, 0.95), 4),
            catalog_ratio=1.1,
        ),
        notes="; ".join(notes),
    )
    if calibrate_generator:
        profile = calibrate(profile, user, item, cat, seed=seed)
    return profile


def _event_categories(events: pd.DataFrame, items: pd.DataFrame | None) -> np.ndarray:
    if items is not None:
        for column in ("item_id", "category"):
            if column not in items.columns:
                raise ValueError(f"items frame lacks column '{column}'; has {list(items.columns)}")
        lookup = pd.Series(
            items["category"].astype(str).to_numpy(), index=items["item_id"].astype(str).to_numpy()
        )
        lookup = lookup[~lookup.index.duplicated()]
        cats = pd.Series(events["item_id"].astype(str).to_numpy()).map(lookup)
        unmatched = int(cats.isna().sum())
        if unmatched:
            example = events["item_id"].to_numpy()[cats.isna().to_numpy()][0]
            raise ValueError(
                f"{unmatched} event(s) have an item_id missing from the items frame, "
                f"e.g. {example!r}"
            )
        return cats.to_numpy(dtype=object)
    if "category" in events.columns:
        return events["category"].astype(str).to_numpy(dtype=object)
    raise ValueError(
        "fit_profile needs categories: pass an items frame with a 'category' column, or events "
        "with a 'category' column"
    )


def _hour_shares(ts: np.ndarray) -> tuple[float, ...] | None:
    seconds_of_day = (ts - ts.astype("datetime64[D]")).astype("timedelta64[s]").astype(np.int64)
    if not seconds_of_day.any():
        return None  # dates only
    counts = np.bincount(seconds_of_day // 3600, minlength=24).astype(np.float64)
    return tuple(round(float(s), 5) for s in counts / counts.sum())


def _catalog_profile(items: pd.DataFrame | None, notes: list[str]) -> CatalogProfile:
    if items is None or "price" not in items.columns:
        notes.append("no item prices/brands: catalog values taken from the default profile")
        return default_profile().catalog
    price = pd.to_numeric(items["price"], errors="coerce").to_numpy(dtype=np.float64)
    positive = np.isfinite(price) & (price > 0)
    if positive.sum() < 2:
        raise ValueError("items.price has fewer than 2 positive values; cannot fit prices")
    log_price = np.log(price[positive])
    cats = items["category"].astype(str).to_numpy()[positive]
    by_cat = pd.Series(log_price).groupby(cats).transform("mean").to_numpy()
    total_var = log_price.var()
    cat_share = 1.0 - ((log_price - by_cat) ** 2).mean() / total_var if total_var > 0 else 0.0
    if "brand" in items.columns:
        brand = items["brand"].astype(str).to_numpy()
        # The EComm sample writes an unknown brand as 0.
        known = ~np.isin(brand, ["0", "", "nan", "None", "-1", UNKNOWN_BRAND])
        known_share = float(known.mean())
        per_item = len(np.unique(brand[known])) / max(1, int(known.sum()))
    else:
        notes.append("no item brands: every synthetic brand is unknown")
        known_share, per_item = 0.0, 0.0
    return CatalogProfile(
        price_log_mu=round(float(log_price.mean()), 4),
        price_log_sigma=round(float(log_price.std()), 4),
        price_category_share=round(float(np.clip(cat_share, 0.0, 1.0)), 4),
        brand_known_share=round(known_share, 4),
        brands_per_known_item=round(per_item, 4),
    )


def calibrate(
    profile: SyntheticProfile,
    user: np.ndarray,
    item: np.ndarray,
    category: np.ndarray,
    *,
    seed: int = 0,
    iterations: int = 12,
) -> SyntheticProfile:
    """Tune `profile.generator` so synthetic logs of the real size match the real statistics.

    Each target depends mostly on one knob, so a damped fixed-point update converges: repeat
    share <- repeat_prob, category repeat share <- category_stickiness, popularity slopes <-
    Zipf exponents, distinct items <- catalog_ratio. The simulations reuse the same seeds
    (common random numbers), so the updates see the knobs' effect, not noise.

    Args:
        profile: measured profile; its `generator` is the starting point.
        user, item, category: integer codes of the real events (to measure the targets on a
            subset of users when the real log is larger than CALIBRATION_EVENTS).
        seed: seed of the simulations.
        iterations: fixed-point steps.
    """
    n_events = profile.scale.events
    target = _CodeStats(
        profile.engagement.repeat_share,
        profile.engagement.category_repeat_share,
        profile.popularity.item_exponent,
        profile.popularity.category_exponent,
        profile.scale.items,
    )
    if n_events > CALIBRATION_EVENTS:
        # Measure the targets on a user subset of the simulated size: the slopes and item
        # counts depend on the size of the log.
        rng = np.random.default_rng([seed, 7])
        per_user = np.bincount(user)
        shuffled = rng.permutation(len(per_user))
        keep_n = int(np.searchsorted(np.cumsum(per_user[shuffled]), CALIBRATION_EVENTS)) + 1
        keep = np.zeros(len(per_user), dtype=bool)
        keep[shuffled[:keep_n]] = True
        mask = keep[user]
        n_events = int(mask.sum())
        target = _code_stats(user[mask], item[mask], category[mask])
    params = profile.generator
    # Damping < 1: the knobs interact a little (a fresh draw can land on a known item, so the
    # Zipf exponent moves the repeat share too), and full steps overshoot.
    step = 0.8

    def moved(value: float, want: float, got: float, lo: float, hi: float) -> float:
        return float(np.clip(value + step * (want - got), lo, hi))

    for _ in range(iterations):
        got = _simulate_stats(dataclasses.replace(profile, generator=params), n_events, seed)
        params = GeneratorParams(
            zipf_exponent=moved(
                params.zipf_exponent, target.item_exponent, got.item_exponent, 0.05, 3.0
            ),
            category_zipf_exponent=moved(
                params.category_zipf_exponent, target.category_exponent, got.category_exponent,
                0.05, 3.0,
            ),
            repeat_prob=moved(params.repeat_prob, target.repeat_share, got.repeat_share, 0.0, 0.95),
            category_stickiness=moved(
                params.category_stickiness, target.category_repeat_share,
                got.category_repeat_share, 0.0, 0.95,
            ),
            catalog_ratio=float(
                np.clip(params.catalog_ratio * (target.items / got.items) ** step, 1.0, 100.0)
            ),
        )
    rounded = {f.name: round(getattr(params, f.name), 4) for f in dataclasses.fields(params)}
    return dataclasses.replace(profile, generator=GeneratorParams(**rounded))


def _simulate_stats(
    profile: SyntheticProfile, n_events: int, seed: int, repeats: int = 3
) -> _CodeStats:
    """Draw whole synthetic logs in memory (small sizes only); their mean statistics.

    Several seeds, because one log of 85k events moves the popularity slope by ~0.02.
    """
    measured = []
    for offset in range(repeats):
        world = _World.build(profile, n_events, seed + offset, n_days=profile.activity.span_days)
        users, items, cats = [], [], []
        for block in world.blocks():
            users.append(block.user + block.first_user)
            items.append(block.position)
            cats.append(block.category)
        measured.append(
            _code_stats(np.concatenate(users), np.concatenate(items), np.concatenate(cats))
        )
    names = [f.name for f in dataclasses.fields(_CodeStats)]
    return _CodeStats(*(float(np.mean([getattr(m, n) for m in measured])) for n in names))


# --------------------------------------------------------------------------------------------
# Generating
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """One block of users' events, as integer codes, users contiguous and in time order."""

    first_user: int
    user: np.ndarray  # (n,) user index within the block
    position: np.ndarray  # (n,) item position in the category-sorted catalogue
    category: np.ndarray  # (n,) category index
    behavior: np.ndarray  # (n,) 0 click, 1 save, 2 purchase
    timestamp: np.ndarray  # (n,) unix seconds


def catalog_size(profile: SyntheticProfile, n_events: int) -> tuple[int, int]:
    """(items in the catalogue, categories) for a log of `n_events` events.

    Items follow Heaps' law from the real log, times the calibrated catalogue ratio;
    categories grow as a power of items, and never outnumber them.
    """
    scale = profile.scale
    touched = scale.items * (n_events / scale.events) ** scale.item_growth_exponent
    n_items = max(10, int(round(profile.generator.catalog_ratio * touched)))
    n_categories = scale.categories * (touched / scale.items) ** scale.category_growth_exponent
    return n_items, int(np.clip(round(n_categories), 1, n_items))


@dataclass(frozen=True)
class _World:
    """The catalogue and the knobs for one generated log; draws the events block by block.

    Items live in "positions": the catalogue sorted by category, and within a category by
    popularity. A category with n items holds a Zipf over its ranks with the item exponent,
    and categories are sized by a Zipf over categories; a draw is a category, then a rank by
    the continuous inverse CDF. Merged, the items follow one Zipf with the item exponent (for
    sizes proportional to category shares the tails add up), and no per-item array exists,
    so memory does not grow with the catalogue. Positions map to item ids by an affine
    bijection, which also hides the popularity order.
    """

    profile: SyntheticProfile
    n_events: int
    n_days: int
    seed: int
    n_items: int
    n_categories: int
    cat_start: np.ndarray  # (n_categories + 1,) first position of each category
    cat_cum: np.ndarray  # (n_categories,) cumulative category size, for global draws
    id_mult: int
    id_shift: int

    @classmethod
    def build(cls, profile: SyntheticProfile, n_events: int, seed: int, n_days: int) -> "_World":
        n_items, n_categories = catalog_size(profile, n_events)
        rng = np.random.default_rng([seed, 0])
        ranks = np.arange(1, n_categories + 1, dtype=np.float64)
        cat_weight = ranks ** -profile.generator.category_zipf_exponent
        # Shuffled so the category number does not give away its popularity.
        sizes = rng.permutation(rng.multinomial(n_items, cat_weight / cat_weight.sum()))
        id_mult = int(rng.integers(1, n_items)) if n_items > 1 else 1
        while math.gcd(id_mult, n_items) != 1:
            id_mult += 1
        return cls(
            profile=profile,
            n_events=n_events,
            n_days=n_days,
            seed=seed,
            n_items=n_items,
            n_categories=n_categories,
            cat_start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            cat_cum=np.cumsum(sizes).astype(np.float64),
            id_mult=id_mult,
            id_shift=int(rng.integers(0, n_items)),
        )

    def _rank_in_category(self, u: np.ndarray, size: np.ndarray) -> np.ndarray:
        """Zipf rank (0 = most popular) among `size` items from uniforms `u`.

        Inverse CDF of the density x**-a on [1, size + 1), floored: exact for the tail,
        slightly light on the very first ranks (calibration absorbs it).
        """
        a = self.profile.generator.zipf_exponent
        top = size + 1.0
        if abs(1.0 - a) < 1e-9:
            x = np.exp(u * np.log(top))
        else:
            x = (1.0 + u * (top ** (1.0 - a) - 1.0)) ** (1.0 / (1.0 - a))
        return np.clip(x.astype(np.int64) - 1, 0, size - 1)

    def item_number(self, position: np.ndarray) -> np.ndarray:
        """Item id number of catalogue positions (a bijection of 0..n_items-1)."""
        return (position.astype(np.int64) * self.id_mult + self.id_shift) % self.n_items

    def position_of(self, number: np.ndarray) -> np.ndarray:
        inverse = pow(self.id_mult, -1, self.n_items) if self.n_items > 1 else 0
        return ((number.astype(np.int64) - self.id_shift) % self.n_items) * inverse % self.n_items

    def blocks(self):
        """Yield `_Block`s until exactly `n_events` events; the last user may be cut short."""
        done, block_index, first_user = 0, 0, 0
        act = self.profile.activity
        while done < self.n_events:
            rng = np.random.default_rng([self.seed, 1, block_index])
            counts = np.rint(
                rng.lognormal(
                    act.events_per_user_log_mu, act.events_per_user_log_sigma, USERS_PER_BLOCK
                )
            )
            counts = np.clip(counts, 1, act.max_events_per_user).astype(np.int64)
            total = np.cumsum(counts)
            left = self.n_events - done
            if total[-1] >= left:
                n_users = int(np.searchsorted(total, left)) + 1
                counts = counts[:n_users].copy()
                counts[-1] -= int(total[n_users - 1] - left)
            block = self._draw(rng, counts, first_user)
            yield block
            done += len(block.user)
            first_user += len(counts)
            block_index += 1

    def _draw(self, rng: np.random.Generator, counts: np.ndarray, first_user: int) -> _Block:
        gen, act, beh = self.profile.generator, self.profile.activity, self.profile.behaviors
        n = int(counts.sum())
        user = np.repeat(np.arange(len(counts)), counts)
        start = np.repeat(np.cumsum(counts) - counts, counts)
        t = np.arange(n) - start  # position in the user's history

        # Who repeats an item, who copies a category; the earlier event is uniform over the
        # history so far, which makes often-touched items and categories come back more.
        is_repeat = (t > 0) & (rng.random(n) < gen.repeat_prob)
        earlier = start + (rng.random(n) * t).astype(np.int64)
        sticky = ~is_repeat & (t > 0) & (rng.random(n) < gen.category_stickiness)
        item_parent = np.where(is_repeat, earlier, np.arange(n))
        cat_parent = np.where(is_repeat | sticky, earlier, np.arange(n))
        # Pointer doubling: parents always point back in time, so log2(history) steps reach
        # the event that drew the item (or category) itself.
        for _ in range(int(counts.max()).bit_length() + 1):
            item_parent = item_parent[item_parent]
            cat_parent = cat_parent[cat_parent]

        # Empty categories have no width in cat_cum, so a draw never lands on them.
        category = np.searchsorted(self.cat_cum, rng.random(n) * self.cat_cum[-1], side="right")
        category = np.minimum(category, self.n_categories - 1)[cat_parent]
        lo = self.cat_start[category]
        rank = self._rank_in_category(rng.random(n), self.cat_start[category + 1] - lo)
        position = (lo + rank)[item_parent]

        # Behaviour follows whether the user had touched the item before, whichever way the
        # item was drawn (a fresh draw can land on a known item).
        key = user * np.int64(self.n_items) + position
        seen = np.ones(n, dtype=bool)
        seen[np.unique(key, return_index=True)[1]] = False
        shares = np.where(seen[:, None], beh.repeat.as_array(), beh.first_touch.as_array())
        behavior = (rng.random(n)[:, None] > np.cumsum(shares, axis=1)[:, :2]).sum(axis=1)

        return _Block(
            first_user=first_user,
            user=user,
            position=position,
            category=category,
            behavior=behavior.astype(np.int8),
            timestamp=self._timestamps(rng, counts, user, act),
        )

    def _timestamps(
        self, rng: np.random.Generator, counts: np.ndarray, user: np.ndarray, act: ActivityProfile
    ) -> np.ndarray:
        # A user acts on a few distinct days (the real law of active days against events), each
        # event on one of them at an hour from the real curve; sorting gives the time order.
        n = len(user)
        n_active = np.rint(
            act.active_days_coef * counts.astype(np.float64) ** act.active_days_exponent
        )
        n_active = np.clip(n_active, 1, np.minimum(counts, self.n_days)).astype(np.int64)
        if self.n_days <= 512:
            # Distinct days: the first n_active of a random order of the span, per user.
            day_order = np.argsort(rng.random((len(counts), self.n_days)), axis=1)
            pick = (rng.random(n) * n_active[user]).astype(np.int64)
            day = day_order[user, pick]
        else:
            # Long spans: days with replacement; collisions are rare and the matrix would not be.
            day_pool = rng.integers(0, self.n_days, int(n_active.sum()))
            pool_start = np.cumsum(n_active) - n_active
            day = day_pool[pool_start[user] + (rng.random(n) * n_active[user]).astype(np.int64)]
        if act.hour_shares is None:
            hour = rng.integers(0, 24, n)
        else:
            cum = np.cumsum(act.hour_shares)
            hour = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), 23)
        origin = int(pd.Timestamp(act.start_date, tz="UTC").timestamp())
        ts = origin + day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n)
        return ts[np.lexsort((ts, user))].astype(np.int64)


def _id_strings(prefix: str, numbers: np.ndarray) -> pa.Array:
    text = pc.cast(pa.array(numbers, pa.int64()), pa.string())
    return pc.binary_join_element_wise(prefix, text, "")


def _schema_metadata(seed: int, n_events: int) -> dict[bytes, bytes]:
    return {
        SCHEMA_METADATA_KEY: b"true",
        b"shopping_mtl.synthetic": json.dumps(
            {
                "generator": "shopping_mtl.data.synthetic",
                "version": GENERATOR_VERSION,
                "seed": seed,
                "n_events": n_events,
            },
            sort_keys=True,
        ).encode(),
    }


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def generate(
    out_dir: str | Path,
    n_events: int,
    profile: SyntheticProfile | None = None,
    seed: int = 0,
    n_days: int | None = None,
    chunk_events: int = 1_000_000,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
) -> Path:
    """Write a SYNTHETIC event log of exactly `n_events` events into `out_dir`; return the spec.

    Writes `events-00000.parquet`... (at most `chunk_events` rows each; users contiguous, each
    user's events in time order), `items.parquet`, `README.md`, and `spec.yaml` last, so a
    folder with a spec is complete. The events are the same for a seed whatever
    `chunk_events` is (only the shard boundaries move); the same seed and chunk size give
    byte-identical files. Memory holds one block of ~1k users (~60k events) and per-category
    arrays, never the log nor a per-item array; items.parquet is written in slices.

    Args:
        out_dir: folder to create (or an empty one).
        n_events: number of events, > 0.
        profile: calibration profile; None uses the shipped EComm profile.
        seed: random seed (>= 0).
        n_days: span of the timestamps in days; None uses the profile's span. Events per user
            do not change with it.
        chunk_events: rows per Parquet shard.
        progress: called as progress(events_written, n_events) after each block.
        command: the command line to record in the README; None writes the equivalent one.
    """
    n_events = _check_positive_int("n_events", n_events)
    chunk_events = _check_positive_int("chunk_events", chunk_events)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if profile is None:
        profile = default_profile()
    n_days = profile.activity.span_days if n_days is None else _check_positive_int("n_days", n_days)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"output folder {out} exists and is not empty; give a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)

    world = _World.build(profile, n_events, int(seed), n_days)
    metadata = _schema_metadata(int(seed), n_events)
    n_users = _write_events(world, out, chunk_events, metadata, progress)
    _write_items(world, out, metadata)
    n_shards = math.ceil(n_events / chunk_events)
    if command is None:
        command = (
            f"python -m shopping_mtl.data.synthetic generate --events {n_events} --seed {seed} "
            f"--days {n_days} --chunk-events {chunk_events} --out DIR"
        )
    (out / "README.md").write_text(_readme(world, command, n_users, n_shards, chunk_events))
    spec = out / "spec.yaml"
    spec.write_text(_spec_yaml(n_events, int(seed), profile))
    return spec


def _write_events(world: _World, out: Path, chunk_events: int, metadata, progress) -> int:
    schema = EVENTS_SCHEMA.with_metadata(metadata)
    behavior_names = pa.array(BEHAVIORS, pa.string())
    category_names = _id_strings("c", np.arange(world.n_categories))
    writer, shard, in_shard, written, n_users = None, 0, 0, 0, 0
    try:
        for block in world.blocks():
            table = pa.Table.from_arrays(
                [
                    _id_strings("u", block.user + block.first_user),
                    _id_strings("i", world.item_number(block.position)),
                    behavior_names.take(pa.array(block.behavior)),
                    pa.array(block.timestamp, pa.int64()),
                    category_names.take(pa.array(block.category)),
                ],
                schema=schema,
            )
            n_users = block.first_user + int(block.user[-1]) + 1
            offset = 0
            while offset < table.num_rows:
                if writer is None:
                    writer = pq.ParquetWriter(out / f"events-{shard:05d}.parquet", schema)
                take = min(chunk_events - in_shard, table.num_rows - offset)
                writer.write_table(table.slice(offset, take))
                offset += take
                in_shard += take
                if in_shard == chunk_events:
                    writer.close()
                    writer, shard, in_shard = None, shard + 1, 0
            written += table.num_rows
            if progress is not None:
                progress(written, world.n_events)
    finally:
        if writer is not None:
            writer.close()
    return n_users


def _write_items(world: _World, out: Path, metadata) -> None:
    """items.parquet in id order, slice by slice; attributes depend on the position's category."""
    cat = world.profile.catalog
    rng = np.random.default_rng([world.seed, 2])
    between = cat.price_log_sigma * math.sqrt(cat.price_category_share)
    within = cat.price_log_sigma * math.sqrt(1.0 - cat.price_category_share)
    cat_price = cat.price_log_mu + between * rng.standard_normal(world.n_categories)
    n_known = cat.brand_known_share * world.n_items
    n_brands = max(1, int(round(cat.brands_per_known_item * n_known)))
    category_names = _id_strings("c", np.arange(world.n_categories))
    schema = ITEMS_SCHEMA.with_metadata(metadata)
    with pq.ParquetWriter(out / "items.parquet", schema) as writer:
        for index, lo in enumerate(range(0, world.n_items, ITEMS_PER_SLICE)):
            rng = np.random.default_rng([world.seed, 3, index])
            number = np.arange(lo, min(lo + ITEMS_PER_SLICE, world.n_items), dtype=np.int64)
            category = np.searchsorted(world.cat_start, world.position_of(number), side="right") - 1
            price = np.exp(cat_price[category] + within * rng.standard_normal(len(number)))
            price = np.maximum(np.round(price, 2), 0.01)
            known = rng.random(len(number)) < cat.brand_known_share
            brand = pc.if_else(
                pa.array(known),
                _id_strings("b", rng.integers(0, n_brands, len(number))),
                pa.scalar(UNKNOWN_BRAND),
            )
            writer.write_table(
                pa.Table.from_arrays(
                    [
                        _id_strings("i", number),
                        category_names.take(pa.array(category)),
                        brand,
                        pa.array(price),
                    ],
                    schema=schema,
                )
            )


def _spec_yaml(n_events: int, seed: int, profile: SyntheticProfile) -> str:
    description = json.dumps(
        f"SYNTHETIC events from shopping_mtl.data.synthetic (seed {seed}), {n_events:,} events "
        f"calibrated to {profile.source or 'a profile'}; not real user data"
    )
    return f"""\
name: synthetic-{n_events}
description: {description}
synthetic: true
root: .                 # relative to this spec file
events:
  paths: ["events-*.parquet"]
  format: parquet
  user_id: user_id
  item_id: item_id
  behavior: behavior
  timestamp: timestamp
  timestamp_format: unix
  timestamp_unit: s
  timezone: UTC
  behaviors: {{click: click, save: save, purchase: purchase}}
  item_columns: {{category: string}}
items:
  paths: [items.parquet]
  format: parquet
  key: item_id
  types: {{category: string, brand: string, price: float}}
features:
  history_length: 20
  user:
    user_id: {{type: id}}
  item:
    item_id: {{type: id}}
    category: {{type: categorical}}
    brand: {{type: categorical}}
    price: {{type: numeric, transform: log1p, buckets: 10}}
  context: [hour, weekday]
"""


def _readme(world: _World, command: str, n_users: int, n_shards: int, chunk_events: int) -> str:
    profile = world.profile
    return f"""\
# SYNTHETIC shopping events — not real user data

This folder was generated by `shopping_mtl.data.synthetic`, generator version
{GENERATOR_VERSION}. Every user, item, price and timestamp here is **SYNTHETIC**: drawn at
random from a statistical profile of a real sample. It is for scale and pipeline tests; do
not report results on it as results on real data. `spec.yaml` says `synthetic: true` and
every Parquet file carries `synthetic=true` in its schema metadata.

| | |
| --- | --- |
| generator version | {GENERATOR_VERSION} |
| seed | {world.seed} |
| events | {world.n_events:,} in {n_shards} shard(s) of at most {chunk_events:,} rows |
| users | {n_users:,} |
| items in catalogue | {world.n_items:,} |
| categories | {world.n_categories:,} |
| days | {world.n_days} from {profile.activity.start_date} (UTC) |
| profile source | {profile.source or "(not given)"} |

Command:

```
{command}
```

Files: `events-*.parquet` (`user_id`, `item_id`, `behavior` click/save/purchase, `timestamp`
unix seconds UTC, `category`; users contiguous, each user's events in time order),
`items.parquet` (`item_id`, `category`, `brand`, `price`), `spec.yaml` (dataset spec).

What is modelled: lognormal events per user; repeats of the user's own items; category
affinity; Zipf item and category popularity; behaviour shares of first touches and of
repeats; active days and an hour-of-day curve; lognormal prices with a category effect.
What is not: sessions within a day, trends over days, weekday effects, price effects on
behaviour, cross-user co-occurrence beyond shared popularity and categories.

## Profile

```yaml
{profile.to_yaml().rstrip()}
```
"""


# --------------------------------------------------------------------------------------------
# Plain readers of the raw samples (fitting only)
# --------------------------------------------------------------------------------------------

ECOMM_BEHAVIORS = {"1": "click", "2": "save", "3": "save", "4": "purchase"}
TAOBAO_BEHAVIORS = {"pv": "click", "fav": "save", "cart": "save", "buy": "purchase"}


def read_ecomm_sample(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical events and items of the Alibaba CIKM 2019 EComm sample (training edges).

    Behaviour 1 -> click, 2 (collect) and 3 (cart) -> save, 4 -> purchase; the date is
    midnight UTC (the sample has days only). Items: `category` is `cate_id`, `brand` is
    `brand_id` (0 = unknown).
    """
    folder = Path(folder)
    events_path = folder / "ecomm_edge_train.txt.gz"
    items_path = folder / "ecomm_item_feature.txt.gz"
    for path in (events_path, items_path):
        if not path.is_file():
            raise ValueError(f"EComm sample file not found: {path}")
    raw = pd.read_csv(
        events_path, sep="\t", header=None, names=["user_id", "item_id", "behavior", "date"],
        dtype=str,
    )
    bad = sorted(set(raw["behavior"]) - set(ECOMM_BEHAVIORS))
    if bad:
        raise ValueError(f"{events_path}: unknown behaviour code(s) {bad}; known: 1, 2, 3, 4")
    events = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "event": raw["behavior"].map(ECOMM_BEHAVIORS),
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d", utc=True),
        }
    )
    items = pd.read_csv(
        items_path, sep="\t", header=None,
        names=["item_id", "cate_1_id", "category", "brand", "price"], dtype=str,
    )
    items["price"] = pd.to_numeric(items["price"])
    return events, items[["item_id", "category", "brand", "price"]]


def read_taobao_sample(path: str | Path) -> pd.DataFrame:
    """Canonical events (with `category`) of a Taobao UserBehavior CSV piece.

    Rows without a timestamp (the head piece ends in a truncated line) are dropped.
    """
    raw = pd.read_csv(
        path, header=None, names=["user_id", "item_id", "category", "behavior", "timestamp"],
        dtype=str,
    ).dropna()
    return pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "event": raw["behavior"].map(TAOBAO_BEHAVIORS),
            "timestamp": pd.to_datetime(pd.to_numeric(raw["timestamp"]), unit="s", utc=True),
            "category": raw["category"],
        }
    ).dropna()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
        value = int(number)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shopping_mtl.data.synthetic",
        description=(
            "SYNTHETIC shopping event logs for scale tests. 'generate' writes a log of any size "
            "calibrated to a real sample's statistics (events per user, repeats, category "
            "affinity, popularity, behaviour shares, prices); 'fit' measures a new profile "
            "from the raw Alibaba EComm sample."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate",
        help="write a synthetic log (Parquet shards + items + spec.yaml + README)",
        description=(
            "Write exactly EVENTS synthetic events into OUT as events-00000.parquet, ... "
            "(CHUNK_EVENTS rows each), items.parquet, a README and spec.yaml, a dataset spec "
            "marked synthetic: true that the project reads like any other (train.py --dataset "
            "OUT/spec.yaml). Memory stays flat whatever EVENTS is; the same seed gives the same "
            "events. Progress goes to stderr."
        ),
    )
    gen.add_argument(
        "--events", type=_positive_int, required=True, help="number of events, e.g. 1000000 or 1e8"
    )
    gen.add_argument("--out", required=True, help="output folder; must not exist or be empty")
    gen.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    gen.add_argument(
        "--days", type=_positive_int, default=None,
        help="span of the timestamps in days (default: the profile's, 10)",
    )
    gen.add_argument(
        "--chunk-events", type=_positive_int, default=1_000_000,
        help="rows per Parquet shard (default 1000000)"
    )
    gen.add_argument(
        "--profile", default=None, help=f"profile YAML (default: {DEFAULT_PROFILE_PATH.name})"
    )
    gen.add_argument("--quiet", action="store_true", help="no progress lines")

    fit = sub.add_parser(
        "fit",
        help="measure a profile from the raw Alibaba EComm sample",
        description=(
            "Read the raw EComm sample (ecomm_edge_train.txt.gz, ecomm_item_feature.txt.gz), "
            "measure its statistics, calibrate the generator by simulation (a few seconds) and "
            "write the profile YAML."
        ),
    )
    fit.add_argument("--ecomm-dir", required=True, help="folder of the raw EComm sample")
    fit.add_argument(
        "--hours-from", default=None,
        help="Taobao UserBehavior CSV(.gz) to take the hour-of-day curve from"
    )
    fit.add_argument("--out", required=True, help="profile YAML to write")
    fit.add_argument("--seed", type=_seed, default=0, help="seed of the calibration (default 0)")
    return parser


class _Progress:
    """Progress lines on stderr, at most one every `every` seconds plus the last one."""

    def __init__(self, every: float = 2.0) -> None:
        self.start = time.monotonic()
        self.last = 0.0
        self.every = every

    def __call__(self, written: int, total: int) -> None:
        now = time.monotonic()
        if written < total and now - self.last < self.every:
            return
        self.last = now
        rate = written / max(now - self.start, 1e-9)
        print(
            f"synthetic: {written:,} / {total:,} events ({100 * written / total:.0f}%), "
            f"{rate:,.0f} events/s",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    try:
        if args.command == "generate":
            out = Path(args.out)
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise FileExistsError(
                    f"--out {out} exists and is not empty; give a new or empty folder"
                )
            profile = load_profile(args.profile) if args.profile else None
            command = "python -m shopping_mtl.data.synthetic " + " ".join(
                sys.argv[1:] if argv is None else argv
            )
            spec = generate(
                out,
                args.events,
                profile=profile,
                seed=args.seed,
                n_days=args.days,
                chunk_events=args.chunk_events,
                progress=None if args.quiet else _Progress(),
                command=command,
            )
            print(spec)
        else:
            events, items = read_ecomm_sample(args.ecomm_dir)
            hour_events = read_taobao_sample(args.hours_from) if args.hours_from else None
            source = (
                f"Alibaba CIKM 2019 EComm sample ({Path(args.ecomm_dir).name}/"
                "ecomm_edge_train.txt.gz, ecomm_item_feature.txt.gz)"
            )
            if args.hours_from:
                source += f"; hour-of-day from {Path(args.hours_from).name}"
            profile = fit_profile(
                events, items, hour_events=hour_events, source=source, seed=args.seed
            )
            fit_args = " ".join(sys.argv[2:] if argv is None else argv[1:])
            header = (
                "Calibration profile for shopping_mtl.data.synthetic (SYNTHETIC data generator).\n"
                f"Measured on {source}.\n"
                f"EComm training edges: {len(events):,} events; 1 = click, 2/3 = save, "
                "4 = purchase;\n"
                "the EComm sample has dates only, so hour_shares come from the Taobao file when\n"
                "--hours-from is given. 'generator' is calibrated by simulation so that synthetic\n"
                "logs of the sample's size reproduce its repeat share, category affinity,\n"
                "popularity slopes and distinct items. Produced by (from the repository root):\n"
                f"  python -m shopping_mtl.data.synthetic fit {fit_args}"
            )
            print(save_profile(profile, args.out, header))
    except (ValueError, FileExistsError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permissions: not the arguments' fault
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
