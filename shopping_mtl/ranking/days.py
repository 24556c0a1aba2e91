"""Which user-days the ranker learns from, known from the split alone, so that a log that
cannot train it is refused in the data stage, before any model is fitted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shopping_mtl.config import Config
from shopping_mtl.data.split import Split, plural
from shopping_mtl.errors import DataError
from shopping_mtl.ranking.examples import split_users


def ranking_day_users(split: Split, extra_days: int) -> list[np.ndarray]:
    """The users of each day the ranker learns from, as the ranking stage finds them
    (`ranking.stage.ranking_day`): day 0 is the validation part, day d (1 .. `extra_days`) the
    validation period (`Split.period`, 24 hours on a daily log) starting d periods before
    `validation_start`, within train; a day's users have an event on it and one in train
    before it."""
    train = split.train
    time = train["timestamp"]
    in_order = time.is_monotonic_increasing
    starts = [split.validation_start - back * split.period for back in range(extra_days + 1)]
    day_users = [pd.unique(split.validation["user_id"])]
    for start in starts[1:]:
        end = start + split.period
        if in_order:  # a slice of the sorted events, not a filter over all of them
            day = train.iloc[int(time.searchsorted(start)):int(time.searchsorted(end))]
        else:
            day = train[(time >= start) & (time < end)]
        day_users.append(pd.unique(day["user_id"]))
    # Each user's first train event, for the users of any of the days: one pass over train.
    candidates = train[train["user_id"].isin(np.concatenate(day_users))]
    first = candidates.groupby("user_id", sort=False)["timestamp"].min()
    return [users[(first.reindex(users) < start).to_numpy()] for users, start in zip(day_users, starts)]



def check_ranker_days(split: Split, config: Config) -> None:
    """Raise DataError, saying what the log lacks, when the ranking stage could not fit: it
    learns from user-days (`ranking_day_users`) and holds a hashed share of the train users out
    (`ranking.examples.split_users`, as `ranking.stage.prepare_ranking` does), so it needs at
    least one user-day of a user it trains on and one of a user it holds out. Without, Keras
    fails on empty input after the retrieval model is fitted."""
    rconfig = config.ranking
    days = ranking_day_users(split, rconfig.extra_days)
    everyone = np.sort(pd.unique(split.train["user_id"]))  # sorted(set(...)), as prepare_ranking
    held = pd.Index(everyone[split_users(everyone, rconfig.holdout_share, config.seed, rconfig.holdout_max_users)])
    n_held = sum(int(held.isin(users).sum()) for users in days)
    n_days = sum(len(users) for users in days)
    if n_held and n_days - n_held:
        return
    users = pd.unique(np.concatenate(days)) if n_days else np.array([], dtype=object)
    shown = ", ".join(map(str, users[:5])) + (", ..." if len(users) > 5 else "")
    others = ",".join(stage for stage in config.stages if stage != "ranking")
    raise DataError(
        f"the log cannot train the ranker: it learns from user-days of the validation part and the "
        f"{rconfig.extra_days} periods of its length before it (ranking.extra_days), each a user with an event "
        "in that period and an "
        f"earlier one in train, and holds {rconfig.holdout_share:.0%} of the train users out (ranking."
        f"holdout_share, by a hash of the id and the seed {config.seed}) for early stopping and calibration. "
        "It needs at least one user-day to train on and one held out, so at least 2 users with such days. "
        f"This log has {plural(split.train['user_id'].nunique(), 'user')} in train and "
        f"{plural(n_days, 'such user-day')} of {plural(len(users), 'user')} ({shown or 'none'}): "
        f"{n_days - n_held:,} to train on, {n_held:,} held out. Use a log with more users, or leave the "
        f"ranking stage out (--stages {others}).")
