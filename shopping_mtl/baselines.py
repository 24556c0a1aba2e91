"""The baselines stage: null models every run scores beside its models; a figure is read next
to them. A baseline is a candidate source's list (`shopping_mtl.candidates`), filled with
popular items to the list size:

- `popularity`: the same list for everyone, items ranked by engagement weighted click 1, save 2,
  purchase 4.
- `user_history`: the user's own items by recency-weighted engagement. Repeat engagement
  dominates shopping logs, so this is a strong baseline.
- `covisit`: items that co-occur with the user's recent items in other users' sessions
  (same user, same calendar day), weighted towards the most recent items.

Each lists from train + validation events only, so nothing computed for a test user sees the
test period.
"""

from __future__ import annotations

import logging
import time

from shopping_mtl.candidates.candidate_set import baseline_list
from shopping_mtl.candidates.registry import SourceDay
from shopping_mtl.evaluation import score_lists
from shopping_mtl.run_state import RunState, write_parquet_atomic

log = logging.getLogger(__name__)


def run_baselines(state: RunState) -> None:
    """Write `baselines/<name>.parquet` for the test users and score each list."""
    config = state.config
    out_dir = state.run_dir / "baselines"
    out_dir.mkdir(parents=True, exist_ok=True)
    split = state.split
    day = SourceDay(split.history, state.truth.users, split.test_start, config.baselines.in_days(split.period_days))
    for name in config.baselines.names:
        started = time.perf_counter()
        lists = baseline_list(name, day, config.evaluation.list_size)
        write_parquet_atomic(lists, out_dir / f"{name}.parquet")
        state.metrics.update(score_lists(
            lists, state.truth, f"baseline/{name}", config.evaluation.ks,
            config.evaluation.bootstrap_resamples, config.evaluation.bootstrap_seed))
        log.info("baseline %s: %d rows for %d users, scored in %.1fs", name, len(lists),
                 lists["user_id"].nunique(), time.perf_counter() - started)
