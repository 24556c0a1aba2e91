"""Measuring a `SyntheticProfile` from a real log (`fit_profile`).

The measured statistics go into the profile as they are; the generator's own knobs start at
the observed values and are then calibrated by simulation (`calibration.calibrate`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tools.synthetic.calibration import calibrate
from tools.synthetic.profile import (
    BEHAVIORS,
    UNKNOWN_BRAND,
    ActivityProfile,
    BehaviorProfile,
    CatalogProfile,
    EngagementProfile,
    GeneratorParams,
    PopularityProfile,
    ScaleProfile,
    SyntheticProfile,
    default_profile,
)
from tools.synthetic.stats import _behavior_shares, _code_stats, _heaps_exponent, _hour_shares


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
        calibrate_generator: run the calibration simulation (several simulated logs of the
            real size); False leaves the generator knobs at the observed values, for quick looks.
        seed: seed of the user shuffles and of the calibration simulations.

    Returns:
        The measured profile, its `generator` calibrated when `calibrate_generator` is true.

    Raises:
        ValueError: missing columns, no events, an unknown behaviour, an item without a
            category, or too few items or prices to fit.
    """
    _check_events(events)
    notes = []
    rng = np.random.default_rng(seed)

    categories = _event_categories(events, items)
    user, item, cat, behavior, ts = _coded_events(events, categories)
    per_user = np.bincount(user)
    log_counts = np.log(per_user)

    stats = _code_stats(user, item, cat)
    item_growth, category_growth = _heaps_exponent(user, np.stack([item, cat], axis=1), rng)
    hours = _fit_hours(ts, hour_events, notes)
    activity = _activity_profile(user, ts, per_user, log_counts, hours)
    behaviors = _behavior_profile(user, item, behavior)

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
        activity=activity,
        behaviors=behaviors,
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


def _check_events(events: pd.DataFrame) -> None:
    """Raise ValueError unless `events` has the canonical columns, rows and known behaviours."""
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


def _coded_events(
    events: pd.DataFrame, categories: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The events in time order as integer codes.

    Args:
        events: canonical events (checked by `_check_events`).
        categories: category of each event, aligned with `events`.

    Returns:
        (user, item, category, behavior, timestamp): codes from 0 in order of first
        appearance, behaviour codes 0 click, 1 save, 2 purchase, and datetime64[ns] UTC.
    """
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
    return user, item, cat, behavior, ts


def _fit_hours(
    ts: np.ndarray, hour_events: pd.DataFrame | None, notes: list[str]
) -> tuple[float, ...] | None:
    """Hour-of-day shares of `ts`, or of `hour_events` when `ts` has dates only.

    Returns None (uniform hours) when neither has sub-day times; appends to `notes` where the
    curve came from when it is not `ts`.
    """
    hours = _hour_shares(ts)
    if hours is None and hour_events is not None:
        hour_ts = pd.to_datetime(hour_events["timestamp"], utc=True)
        hours = _hour_shares(hour_ts.to_numpy(dtype="datetime64[ns]"))
        notes.append("hour_shares measured on hour_events (events have dates only)")
    elif hours is None:
        notes.append("events have dates only: hours are uniform")
    return hours


def _activity_profile(
    user: np.ndarray,
    ts: np.ndarray,
    per_user: np.ndarray,
    log_counts: np.ndarray,
    hours: tuple[float, ...] | None,
) -> ActivityProfile:
    """Events per user, active days and the calendar span of coded events.

    Args:
        user: user code per event.
        ts: datetime64[ns] per event.
        per_user: events per user code.
        log_counts: log(per_user).
        hours: the hour-of-day shares to record (see `_fit_hours`).
    """
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
    return ActivityProfile(
        events_per_user_log_mu=round(float(log_counts.mean()), 4),
        events_per_user_log_sigma=round(float(log_counts.std()), 4),
        max_events_per_user=int(per_user.max()),
        active_days_coef=round(float(np.exp(days_log_coef)), 4),
        active_days_exponent=round(float(days_exp), 4),
        span_days=int(hi - lo) + 1,
        start_date=str(start_day),
        hour_shares=hours,
    )


def _behavior_profile(user: np.ndarray, item: np.ndarray, behavior: np.ndarray) -> BehaviorProfile:
    """Behaviour shares overall, on each user's first event on an item, and on later ones.

    Args:
        user, item, behavior: codes per event, in time order.
    """
    pair = user.astype(np.int64) * (int(item.max()) + 1) + item
    first = np.zeros(len(pair), dtype=bool)
    first[np.unique(pair, return_index=True)[1]] = True
    return BehaviorProfile(
        overall=_behavior_shares(behavior),
        first_touch=_behavior_shares(behavior[first]),
        repeat=_behavior_shares(behavior[~first]),
    )


def _event_categories(events: pd.DataFrame, items: pd.DataFrame | None) -> np.ndarray:
    """Category of each event (object array): from `items` when given, else `events.category`."""
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


def _catalog_profile(items: pd.DataFrame | None, notes: list[str]) -> CatalogProfile:
    """Price and brand statistics of `items`; the default profile's when it has no prices
    (appending to `notes` what was not measured)."""
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
