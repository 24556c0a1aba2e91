"""The event simulation: a catalogue and knobs (`_World`) that draw users' events block by block.

Everything is integer codes here (user index, catalogue position, category index, behaviour
code, unix seconds); `writers` turns them into ids and files. Each block of users has its own
random stream, so the events depend only on the profile, the seed and the number of events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tools.synthetic.profile import ActivityProfile, SyntheticProfile

# Users drawn together with one random stream. Fixed (not derived from chunk_events) so the
# event stream is the same whatever the shard size; ~1k users is ~60k events, ~10 MB of
# working arrays.
USERS_PER_BLOCK = 1024


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

    Args:
        profile: the calibration profile.
        n_events: events in the log to generate.

    Returns:
        (n_items, n_categories), with n_items >= 10 and 1 <= n_categories <= n_items.
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
        """Size the catalogue for `n_events` and draw category sizes and the id bijection.

        Args:
            profile: the calibration profile.
            n_events: events in the log.
            seed: the log's seed; the catalogue uses stream [seed, 0].
            n_days: span of the timestamps in days.
        """
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
        """Catalogue positions of item id numbers (the inverse of `item_number`)."""
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
        """Draw the events of one block of users with `counts[u]` events each, from `rng`."""
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
        """Unix seconds of each event of the block, in time order within each user."""
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
