"""Settings of the candidate sources and of the merged candidate set, importable without
TensorFlow or pandas (the config layer validates them before any work)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from shopping_mtl.errors import ConfigError

DEFAULT_EVENT_WEIGHTS = {"click": 1.0, "save": 2.0, "purchase": 4.0}


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the sources that list without a model, and of the baselines (their lists).

    `validate` checks every range given here; `names` are checked when a run starts (against
    the registered sources).

    Args:
        names: the sources scored as baselines (a baseline is a source's list): registered
            sources that can list without a model (popularity, user_history, covisit).
        event_weights: event type -> engagement weight (keys click, save, purchase, weights
            >= 0, checked; a type left out weighs 0), for popularity and the user's own items.
        covisit_recent_items: how many of the user's most recent distinct items seed
            co-visitation (> 0, checked).
        covisit_decay: seed n's counts are weighted decay**n, n = 0 for the most recent seed;
            in (0, 1] (checked; 1: all seeds alike).
        covisit_max_session_items: per session (the spec's session, else a user's calendar
            day), only its last N distinct items pair up (> 0, checked), which bounds the
            quadratic pair count on very active users.
        history_half_life_days: age (> 0, checked) at which an engagement's weight in the
            user's own items halves, in validation periods (`Split.period`: days on a daily log,
            the validation part's length on a log split at quantiles; `in_days` converts). Each
            dataset's spec sets its own in `defaults:`, chosen on the validation day
            (docs/DECISIONS.md, Data, split and baselines).
        fill_with_popularity: extend a baseline's list with popular items to the full list size,
            as a deployed list would be (its own items come first). Candidate sources are never
            filled: popularity is a source of its own there.
    """

    names: tuple[str, ...] = ("popularity", "user_history", "covisit")
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    covisit_recent_items: int = 20
    covisit_decay: float = 0.9
    covisit_max_session_items: int = 50
    history_half_life_days: float = 1.0
    fill_with_popularity: bool = True

    def in_days(self, period_days: float) -> "BaselineConfig":
        """These settings with the half-life in days, for a validation period `period_days`
        days long (1.0 on a daily log: unchanged). The sources read days."""
        if period_days == 1.0:
            return self
        return dataclasses.replace(self, history_half_life_days=self.history_half_life_days * period_days)

    def validate(self) -> None:
        for event, weight in self.event_weights.items():
            if event not in ("click", "save", "purchase"):
                raise ConfigError(
                    f"baselines.event_weights has unknown key '{event}'; known: click, save, purchase")
            if not weight >= 0:
                raise ConfigError(f"baselines.event_weights.{event} must be >= 0, got {weight}")
        for key in ("covisit_recent_items", "covisit_max_session_items"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"baselines.{key} must be positive, got {getattr(self, key)}")
        if not 0 < self.covisit_decay <= 1:
            raise ConfigError(f"baselines.covisit_decay must be in (0, 1] (1: all seeds alike), "
                              f"got {self.covisit_decay}")
        if not self.history_half_life_days > 0:
            raise ConfigError(f"baselines.history_half_life_days must be > 0, got {self.history_half_life_days}")


@dataclass(frozen=True)
class CandidateConfig:
    """The merged candidate set: per-source quotas, in priority order.

    Args:
        quotas: source -> the most items it adds per user (>= 0, checked; 0 leaves the source
            out). Sources are merged in this order and an item belongs to the first that brought
            it, so a source's figures say what it adds after the ones before it. The names are
            those of `shopping_mtl.candidates.registry` (checked when a run starts, once every
            source has registered). Chosen on validation: see docs/DECISIONS.md, Candidates.
    """

    quotas: Mapping[str, int] = field(default_factory=lambda: {
        "two_tower": 100, "user_history": 200, "covisit": 200, "popularity": 20})

    def validate(self) -> None:
        for name, quota in self.quotas.items():
            if quota < 0:
                raise ConfigError(f"candidates.quotas.{name} must be >= 0, got {quota}")

    @property
    def size(self) -> int:
        return sum(self.quotas.values())
