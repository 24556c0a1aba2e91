"""The export stage: the run's SavedModels for TF Serving, after every other stage.

- `retrieval`: the two-tower query tower over a brute-force index of the catalogue;
- `ranker`: scores the candidates a caller brings;
- `recommend`: retrieval, every registered candidate source and the ranker in one graph.

All of a run's models are published under one version number, chosen once per run
(`export.publishing.next_run_version`: one more than the highest version of any model under the
export base) and kept in `run_info.json` as `export_version` (`export.publishing.publish`:
atomic, with warmup requests from real validation rows and their expected answers). Without
the ranking stage only `retrieval` is exported; without the retrieval stage nothing is.
"""

from __future__ import annotations

import gc
import logging
import time

import numpy as np
import pandas as pd

from shopping_mtl.candidates.registry import QueryIndex
from shopping_mtl.export import graphs
from shopping_mtl.export.publishing import next_run_version, publish
from shopping_mtl.retrieval import examples as retrieval_examples, index as index_lib
from shopping_mtl.run_state import RunState
from shopping_mtl.scale import shards

log = logging.getLogger(__name__)


def run_export(state: RunState) -> None:
    """Publish the run's exports; their paths go to `run_info.json`'s `exports`."""
    if state.retrieval is None:
        log.warning("export: the retrieval stage did not run in this run; nothing to export")
        return
    export_retrieval(state)
    if state.ranking is not None:
        export_ranker_and_recommend(state)


def run_version(state: RunState) -> int:
    """The version every model of this run is published as: chosen at the run's first publish
    (`next_run_version` over all the models), then the same for the others."""
    if "export_version" not in state.info:
        state.info["export_version"] = next_run_version(state.config.export_base)
    return state.info["export_version"]


def _publish(state: RunState, name: str, module, warmup) -> None:
    export = state.config.export
    started = time.perf_counter()
    target = publish(module, state.config.export_base, name, warmup, export.warmup_requests,
                     export.keep_versions, export.server_base, version=run_version(state))
    state.info.setdefault("exports", {})[name] = str(target)
    log.info("export: %s in %.1fs", target, time.perf_counter() - started)


def export_retrieval(state: RunState) -> None:
    """`<export base>/retrieval/<version>`: warmup requests are real validation rows (the
    query state before a validation-day event)."""
    retrieval = state.retrieval
    module = index_lib.RetrievalServing(retrieval.index.build(), retrieval.data.features,
                                        retrieval.model.query_model.input_names, state.config.retrieval.top_k,
                                        state.config.retrieval.exclude_seen)
    warmup = shards.head(retrieval.data.validation, list(module.signature), state.config.export.warmup_requests)
    _publish(state, "retrieval", module, warmup)
    del module
    gc.collect()  # the module's traced functions, in reference cycles, hold the built index


def ranker_graph(state: RunState, history: pd.DataFrame) -> tuple[graphs.RankerGraph, graphs.CatalogueSnapshot]:
    """The ranker's serving graph over the catalogue known before the test period (`history`:
    the events before it)."""
    config, data, ranking = state.config, state.retrieval.data, state.ranking
    snapshot = graphs.CatalogueSnapshot.from_events(data.catalogue, history, state.split.test_start)
    graph = graphs.RankerGraph(ranking.scorer, data.features, snapshot, ranking.platt, ranking.weights,
                               config.ranking.history_length, config.ranking.list_features,
                               ordered=config.ranking.architecture == "esmm")
    return graph, snapshot


def recommend_module(state: RunState, graph: graphs.RankerGraph, snapshot: graphs.CatalogueSnapshot,
                     history: pd.DataFrame) -> graphs.RecommendServing:
    config, parts = state.config, state.retrieval.index
    return graphs.RecommendServing(
        graph, snapshot, history, config.baselines.in_days(state.split.period_days), config.candidates.quotas,
        config.ranking.list_size,
        retrieval=QueryIndex(parts.build(), parts.query_model.input_names, graph.features.spec.history_length))


def warmup_lists(lists, n: int) -> pd.DataFrame:
    """The rows of the first `n` (at least one) users, by id, of the two-tower validation lists
    (a frame or a `FrameOnDisk`): the users of the warmup requests."""
    users = sorted(pd.unique(shards.held(lists, ["user_id"])["user_id"]))[:max(n, 1)]
    return shards.held(lists, users=users).reset_index(drop=True)


def warmup_requests(state: RunState, n: int) -> tuple[dict, dict]:
    """Real validation rows as serving requests: up to `n` validation-day users with their
    history before that day (`recommend`), plus their two-tower validation candidates
    (`ranker`, 100 per user)."""
    split, data = state.split, state.retrieval.data
    lists = warmup_lists(state.retrieval.validation_lists, n)
    users = sorted(set(lists["user_id"]))
    request = graphs.requests_for(users, split.train, split.validation_start, state.dataset.users,
                                  data.features, state.config.ranking.history_length)
    width = 100
    top = lists[lists["user_id"].isin(users) & (lists["rank"] <= width)]
    slots = pd.MultiIndex.from_product([users, range(1, width + 1)], names=["user_id", "rank"])
    top = top.set_index(["user_id", "rank"]).reindex(slots)
    item_ids = top["item_id"].fillna("").to_numpy(dtype=object)
    ranker = dict(request)
    items = retrieval_examples.item_arrays(data.catalogue, data.features, item_ids)
    for name, values in items.items():
        ranker[name] = values.reshape(len(users), width)
    ranker["item_id"] = item_ids.astype(str).reshape(len(users), width)
    ranker[graphs.TWO_TOWER_SCORE] = top["score"].fillna(0.0).to_numpy(np.float32).reshape(len(users), width)
    # Where the candidates came from, for a ranker that reads it (`ranking.source_features`).
    found = ranker["item_id"] != ""
    ranker[graphs.SOURCE] = np.where(found, "two_tower", "")
    ranker[graphs.SOURCE_RANK] = np.where(found, np.arange(1, width + 1)[None, :], 0).astype(np.int64)
    ranker[graphs.SOURCE_SCORE] = ranker[graphs.TWO_TOWER_SCORE]
    return request, {k: v.astype(str) if v.dtype == object else v for k, v in ranker.items()}


def export_ranker_and_recommend(state: RunState) -> None:
    """`<export base>/ranker/<version>` and `.../recommend/<version>`, with warmup requests."""
    history = state.split.history  # a copy for an unsorted log: taken once for both graphs
    graph, snapshot = ranker_graph(state, history)
    request, ranker_request = warmup_requests(state, state.config.export.warmup_requests)
    module = graphs.RankerServing(graph)
    _publish(state, "ranker", module, {k: v for k, v in ranker_request.items() if k in module.signature})
    _publish(state, "recommend", recommend_module(state, graph, snapshot, history), request)
