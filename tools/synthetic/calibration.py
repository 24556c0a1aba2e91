"""Calibration of the generator's knobs by simulation (`calibrate`).

Synthetic logs of the real log's size are drawn in memory with the candidate knobs and measured
with the same statistics as the real log; a damped fixed-point update moves each knob towards
the real value of the statistic it mostly drives.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tools.synthetic.profile import GeneratorParams, SyntheticProfile
from tools.synthetic.stats import _CodeStats, _code_stats
from tools.synthetic.world import _World

# Calibration simulates a log of the real sample's size; a larger real log is measured on a
# random subset of its users of about this many events, to keep fitting fast.
CALIBRATION_EVENTS = 500_000


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

    Returns:
        `profile` with the calibrated `generator` (knobs rounded to 4 digits).
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

    Several seeds, because the popularity slope of a single log of the real size is noisy.

    Args:
        profile: the profile with the candidate knobs.
        n_events: events per simulated log.
        seed: seed of the first log; the others use seed + 1, seed + 2, ...
        repeats: number of logs averaged.

    Returns:
        The mean of each statistic over the logs.
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
