"""The evaluation split of docs/EVALUATION.md, and the ground truth it scores against.

By calendar day (UTC): test = the last day present, validation = the day before, train = every
earlier day. A log spanning fewer than three days is split at event-time quantiles instead: the
last 20% of events are test and the 20% before them validation. Test users have at least one
event on the test day and at least one in train; what is computed for them may use train and
validation events only. `small_parts` says when a validation or test part is too small to mean
much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

from shopping_mtl.data.spec import EVENTS
from shopping_mtl.errors import DataError

GT_TYPES = ("any", "save", "purchase")
# A validation or test part with under this share of the events, or under this many users it is
# scored on, gives figures too noisy to choose or report by: `small_parts` warns.
SMALL_PART_SHARE = 0.01
SMALL_PART_USERS = 20


@dataclass(frozen=True)
class Split:
    """Events cut into periods by two boundaries: train < validation_start <= validation < test_start."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    validation_start: pd.Timestamp
    test_start: pd.Timestamp
    method: str  # "calendar_day" or "quantile"
    # The time-sorted events the periods are slices of (None: they were filtered, not sliced).
    events: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def history(self) -> pd.DataFrame:
        """Train + validation: everything a test-time list may be computed from."""
        if self.events is not None:  # their rows lead the sorted events: a slice, not a copy
            return self.events.iloc[:len(self.train) + len(self.validation)].reset_index(drop=True)
        return pd.concat([self.train, self.validation], ignore_index=True)

    @property
    def period(self) -> pd.Timedelta:
        """The validation period's length: one day on a calendar-day split, the time from
        `validation_start` to `test_start` on a quantile split (at least a second). Settings
        that are relative to the log's pace (`baselines.history_half_life_days`,
        `ranking.extra_days`) count in it, so on a daily log they count days."""
        return max(self.test_start - self.validation_start, pd.Timedelta(seconds=1))

    @property
    def period_days(self) -> float:
        """`period` in days (1.0 on a calendar-day split)."""
        return self.period / pd.Timedelta(days=1)

    def describe(self) -> dict[str, str | int]:
        return {
            "method": self.method,
            "validation_start": self.validation_start.isoformat(),
            "test_start": self.test_start.isoformat(),
            "train_events": len(self.train),
            "validation_events": len(self.validation),
            "test_events": len(self.test),
        }


def split_events(events: pd.DataFrame, min_days: int = 3, quantile: float = 0.2) -> Split:
    """Split canonical events (sorted by time) by the protocol.

    Args:
        events: canonical events, sorted by `timestamp`.
        min_days: fewer calendar days than this switch to the quantile split.
        quantile: share of events for test, and again for validation, in the quantile split.
    """
    if events.empty:
        raise DataError("cannot split: there are no events")
    days = events["timestamp"].dt.floor("D")
    if days.nunique() >= min_days:
        test_start = days.iloc[-1] if days.is_monotonic_increasing else days.max()
        validation_start = test_start - pd.Timedelta(days=1)
        method = "calendar_day"
    else:
        # Cut at the timestamps of the quantile events; events sharing a timestamp with the cut
        # all fall on the later side, so no timestamp is split across periods.
        times = events["timestamp"].sort_values(kind="stable").reset_index(drop=True)
        n = len(times)
        validation_start = times.iloc[int(np.floor(n * (1 - 2 * quantile)))]
        test_start = times.iloc[int(np.floor(n * (1 - quantile)))]
        method = "quantile"
        if not validation_start < test_start:
            raise DataError(
                "cannot split: the validation and test periods would be empty; the log holds "
                f"{n} events over {events['timestamp'].nunique()} distinct timestamps"
            )
    time = events["timestamp"]
    if time.is_monotonic_increasing:
        # Each period is a run of the sorted events: sliced, its columns shared with the log's
        # (a filter copies them: the whole log again, ~1 GB at 10^7 events).
        bounds = [0, int(time.searchsorted(validation_start)), int(time.searchsorted(test_start)), len(events)]
        train, validation, test = (events.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds, bounds[1:]))
        sorted_events = events
    else:
        train = events[time < validation_start].reset_index(drop=True)
        validation = events[(time >= validation_start) & (time < test_start)].reset_index(drop=True)
        test = events[time >= test_start].reset_index(drop=True)
        sorted_events = None
    if train.empty:
        raise DataError(
            f"cannot split: no training events before {validation_start.isoformat()}; "
            "the log needs at least three days (or enough distinct times for the quantile split)"
        )
    return Split(train, validation, test, validation_start, test_start, method, sorted_events)


def scored_users(train: pd.DataFrame, part: pd.DataFrame) -> np.ndarray:
    """The users `part` is scored on: those with an event in it and one in `train`, as
    `truth_for` finds them (test users for the test part, validation users for validation)."""
    users = pd.unique(part["user_id"])
    return users[pd.Index(users).isin(train["user_id"])]


def small_parts(split: Split, validation_users: int, test_users: int) -> list[str]:
    """A warning for each of the validation and test parts that holds under `SMALL_PART_SHARE`
    of the events or under `SMALL_PART_USERS` users scored on it (none when both are large
    enough). Each names the part's start, its events and users, and the likely cause."""
    total = len(split.train) + len(split.validation) + len(split.test)
    parts = (("validation", split.validation, split.validation_start, validation_users),
             ("test", split.test, split.test_start, test_users))
    warnings = []
    for name, part, start, users in parts:
        under = []
        if len(part) < SMALL_PART_SHARE * total:
            under.append(f"under {SMALL_PART_SHARE:.0%} of the events")
        if users < SMALL_PART_USERS:
            under.append(f"under {SMALL_PART_USERS} users")
        if under:
            warnings.append(
                f"the {name} part (from {start.isoformat()}, {split.method} split) holds {len(part):,} of the "
                f"{total:,} events ({len(part) / total:.2%}) and {plural(users, f'{name} user')} (an event in it "
                f"and one in train): {' and '.join(under)}, its figures are mostly noise. A few stray events "
                "far from the rest of the log, or a short log or one with few users, give this.")
    return warnings


def plural(n: int, noun: str) -> str:
    """`1 user`, `2 users`, `1,500 users`."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Fold:
    """One fold of the rolling origin: the log cut before `end` (None: the whole log), then
    split as `split_events` splits a log.

    Attributes:
        name: the fold's test day, `YYYY-MM-DD`, or its number (1 = oldest) for quantile folds.
        end: events at or after this time are unseen by the fold; None: the whole log.
    """

    name: str
    end: pd.Timestamp | None


def fold_cuts(events: pd.DataFrame, n: int, min_days: int = 3, quantile: float = 0.2) -> list[Fold]:
    """The folds of the last `n` test periods, oldest first; the last fold is the whole log.

    A log of at least `min_days` calendar days has the last `n` days present as test days, each
    fold cut at the end of its test day. A shorter log is split at event-time quantiles: fold k
    of n (counted from the last) drops the last `k * quantile` of the events, so each earlier
    fold's test period ends where the next one's starts.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return [Fold(_test_day_name(events, min_days), None)]
    days = pd.DatetimeIndex(events["timestamp"].dt.floor("D").unique()).sort_values()
    if len(days) >= min_days:
        if len(days) - n + 1 < min_days:
            raise DataError(
                f"evaluation.test_days={n} needs at least {n + min_days - 1} days of events (each "
                f"fold keeps {min_days} before its cut); the log has {len(days)}")
        tests = list(days[-n:])
        return [Fold(day.strftime("%Y-%m-%d"), day + pd.Timedelta(days=1) if i < n - 1 else None)
                for i, day in enumerate(tests)]
    # Exact arithmetic: in floats 1 - 3 * 0.2 is 0.3999..., one event short of the protocol's cut.
    share = Fraction(repr(quantile))
    if (n - 1) * share >= 1:
        raise DataError(f"evaluation.test_days={n} on a log split at quantiles drops {n - 1} x {quantile} of "
                        f"the events for the earliest fold, leaving nothing: use at most "
                        f"{math.ceil(1 / share)} test periods, or a smaller split.quantile")
    times = events["timestamp"].sort_values(kind="stable").reset_index(drop=True)
    folds = []
    for back in range(n - 1, -1, -1):
        end = None if back == 0 else times.iloc[math.floor(len(times) * (1 - back * share))]
        folds.append(Fold(str(n - back), end))
    return folds


def _test_day_name(events: pd.DataFrame, min_days: int) -> str:
    days = events["timestamp"].dt.floor("D")
    return days.max().strftime("%Y-%m-%d") if days.nunique() >= min_days else "1"


def events_before(events: pd.DataFrame, end: pd.Timestamp | None) -> pd.DataFrame:
    """The events before `end` (None: all of them); a slice when they are in time order."""
    if end is None:
        return events
    time = events["timestamp"]
    if time.is_monotonic_increasing:
        return events.iloc[:int(time.searchsorted(end))]
    return events[time < end].reset_index(drop=True)


@dataclass(frozen=True)
class GroundTruth:
    """Per test user: the items engaged with in the test period, by type, and items seen before.

    Attributes:
        users: the test users, sorted.
        items: GT type ("any", "save", "purchase") -> {user: set of items}.
        seen: {user: set of items in train + validation}.
    """

    users: tuple[str, ...]
    items: dict[str, dict[str, frozenset]]
    seen: dict[str, frozenset]

    def for_variant(self, gt_type: str, variant: str) -> dict[str, frozenset]:
        """Non-empty ground truth of one type; `new_gt` removes the user's seen items first."""
        out = {}
        for user in self.users:
            truth = self.items[gt_type].get(user, frozenset())
            if variant == "new_gt":
                truth = truth - self.seen.get(user, frozenset())
            if truth:
                out[user] = truth
        return out


def _sets(frame: pd.DataFrame) -> dict[str, frozenset]:
    if frame.empty:
        return {}
    return {user: frozenset(items) for user, items in frame.groupby("user_id", sort=False)["item_id"]}


def ground_truth(split: Split) -> GroundTruth:
    """Test users and their ground truth per docs/EVALUATION.md."""
    return truth_for(split.train, split.history, split.test)


def validation_truth(split: Split) -> GroundTruth:
    """The same protocol one day earlier: validation users, judged on the validation period
    from train events only. Model selection and tuning read this, never the test period."""
    return truth_for(split.train, split.train, split.validation)


def truth_for(train: pd.DataFrame, history: pd.DataFrame, target: pd.DataFrame) -> GroundTruth:
    """Users with a `target` event and a `train` event; their `target` items by type, and the
    items they touched in `history` (the events before the target period)."""
    users = set(target["user_id"]) & set(train["user_id"])
    target = target[target["user_id"].isin(users)]
    items = {"any": _sets(target)}
    for event in EVENTS[1:]:
        items[event] = _sets(target[target["event"] == event])
    seen = _sets(history[history["user_id"].isin(users)])
    return GroundTruth(tuple(sorted(users)), items, seen)


def cold_item_shares(split: Split, truth: GroundTruth) -> dict[str, float]:
    """Share of test ground-truth items never seen in train (and never seen before the test).

    Computed over (user, item) pairs of the `any` ground truth, and over distinct items.
    """
    in_train = set(split.train["item_id"])
    before_test = in_train | set(split.validation["item_id"])
    pairs = [item for user in truth.users for item in truth.items["any"].get(user, ())]
    distinct = set(pairs)
    if not pairs:
        return {}
    return {
        "eval/cold_item_share": float(np.mean([i not in in_train for i in pairs])),
        "eval/cold_item_share_distinct": float(np.mean([i not in in_train for i in distinct])),
        "eval/unseen_before_test_share": float(np.mean([i not in before_test for i in pairs])),
    }
