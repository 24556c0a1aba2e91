"""The candidate set of a day, and a baseline's list: what the registered sources list.

The same function builds the set the ranker learns from (each ranking day, from the events
before it) and the set it ranks (the test day, from train + validation events).
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from shopping_mtl.candidates import builtin, registry  # noqa: F401  (builtin: registers the built-in sources)
from shopping_mtl.candidates.lists import fill_from
from shopping_mtl.candidates.merge import merge_sources
from shopping_mtl.candidates.popularity import SOURCE as POPULARITY
from shopping_mtl.candidates.registry import SourceDay


def build_candidate_set(day: SourceDay, quotas: Mapping[str, int]) -> pd.DataFrame:
    """Every source's list for `day.users`, to the depth of its quota, merged in the quotas'
    order (`merge.merge_sources`): `user_id, rank, item_id, score, source, source_rank`.
    A source with nothing to list from on that day (None) is left out."""
    lists = {}
    for name, quota in quotas.items():
        found = registry.get(name).lists(day, max(quota, 1))
        if found is not None:
            lists[name] = found
    return merge_sources(lists, quotas)


def baseline_list(name: str, day: SourceDay, k: int) -> pd.DataFrame:
    """The source's top k as a baseline: filled with popular items to k rows when
    `settings.fill_with_popularity` (popularity's own list is full already)."""
    source = registry.get(name)
    lists = source.lists(day, k)
    if source is POPULARITY or not day.settings.fill_with_popularity:
        return lists
    return fill_from(lists, POPULARITY.lists(day, k), k)
