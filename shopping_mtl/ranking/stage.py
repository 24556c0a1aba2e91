"""The ranking stage: train the multi-task ranker on the validation day, rank the test candidates.

The ranker learns from the validation day: candidates from sources computed on train only (the
two-tower model's validation lists, the user's own items, co-visitation, popularity), labelled
by the validation day's events, with features from train events only. A share of those users is
held out for early stopping, Platt calibration and the value-model weights. Test candidates
(the retrieval stage's merged set, from train + validation) are then scored, calibrated and
combined into one list per user: `recommendations.parquet`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time

import numpy as np
import pandas as pd

from shopping_mtl.baselines import run_baseline
from shopping_mtl.data.split import GroundTruth, validation_truth
from shopping_mtl.evaluation import score_lists
from shopping_mtl.ranking import examples, model as model_lib
from shopping_mtl.ranking.calibration import Platt, head_metrics
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.retrieval import examples as retrieval_examples
from shopping_mtl.retrieval.sources import merge_sources

log = logging.getLogger(__name__)
VALUE_GRID = {"click": (1.0,), "save": (0.0, 0.5, 1.0, 2.0), "purchase": (0.0, 1.0, 2.0, 4.0)}


def _subset(arrays: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in arrays.items()}


def _lists(users, items, score, probabilities, k: int) -> pd.DataFrame:
    frame = pd.DataFrame({"user_id": users, "item_id": items, "score": score,
                          **{f"p_{t}": probabilities[t] for t in TASKS}})
    frame = frame.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True], kind="stable")
    frame = frame.groupby("user_id", sort=False).head(k)
    frame.insert(1, "rank", frame.groupby("user_id", sort=False).cumcount() + 1)
    return frame.reset_index(drop=True)


def value_score(probabilities: dict, weights) -> np.ndarray:
    return sum(weights.get(t, 0.0) * probabilities[t] for t in TASKS)


def choose_value_weights(users, items, probabilities, truth: GroundTruth, k: int) -> tuple[dict, float]:
    """The grid's weights with the best NDCG@10 (any engagement) on the holdout users."""
    best, best_ndcg = None, -1.0
    for values in itertools.product(*(VALUE_GRID[t] for t in TASKS)):
        weights = dict(zip(TASKS, values))
        lists = _lists(users, items, value_score(probabilities, weights), probabilities, k)
        ndcg = score_lists(lists, truth, "h", (10,), n_resamples=0).get("h/ndcg@10", 0.0)
        if ndcg > best_ndcg:
            best, best_ndcg = weights, ndcg
    return best, best_ndcg


def validation_candidates(state, retrieval) -> pd.DataFrame:
    """The merged candidate set at the start of the validation day, from train events only."""
    config, split = state.config, state.split
    truth = validation_truth(split)
    own = dataclasses.replace(config.baselines, fill_with_popularity=False)
    sources = {}
    for name in config.candidates.quotas:
        sources[name] = retrieval["validation_lists"] if name == "two_tower" else run_baseline(
            name, split.train, truth.users, config.retrieval.top_k, own, now=split.validation_start)
    return merge_sources(sources, config.candidates.quotas)


def run_ranking_stage(state) -> None:
    config, split, dataset = state.config, state.split, state.dataset
    rconfig, ev = config.ranking, config.evaluation
    retrieval = state.retrieval
    data = retrieval["data"]
    features = data.features
    started = time.perf_counter()

    # Ranking-day rows: the validation day, everything known before it.
    vcandidates = validation_candidates(state, retrieval)
    vusers = np.asarray(sorted(set(vcandidates["user_id"])), dtype=object)
    held = set(vusers[examples.split_users(vusers, rconfig.holdout_share, config.seed)])
    fit_rows = examples.label_rows(vcandidates[~vcandidates["user_id"].isin(held)], split.validation,
                                   add_missed=rconfig.add_missed_positives)
    holdout_rows = examples.label_rows(vcandidates[vcandidates["user_id"].isin(held)], split.validation, add_missed=False)
    vcatalogue = retrieval_examples.item_catalogue(split.train, dataset.items, features)
    fit_inputs = examples.ranking_inputs(fit_rows, split.train, split.validation_start, dataset.users,
                                         vcatalogue, features, rconfig.history_length)
    holdout_inputs = examples.ranking_inputs(holdout_rows, split.train, split.validation_start, dataset.users,
                                             vcatalogue, features, rconfig.history_length)
    log.info("ranking: %d training rows (%d users), %d holdout rows (%d users); positive rates %s",
             len(fit_rows), fit_rows["user_id"].nunique(), len(holdout_rows), len(held),
             {t: round(float(fit_rows[t].mean()), 4) for t in TASKS})

    model, fitted = model_lib.train_ranker(features, fit_inputs, holdout_inputs, rconfig, config.seed)
    state.metrics["ranker/epochs"] = float(len(fitted["history"]["loss"]))
    state.metrics["ranker/training_rows"] = float(len(fit_rows))
    holdout_p = model_lib.predict(model.scorer, holdout_inputs)
    platt = {t: Platt.fit(holdout_p[t], holdout_inputs[f"label_{t}"]) for t in TASKS}
    calibrated_holdout = {t: platt[t](holdout_p[t]) for t in TASKS}
    vtruth = validation_truth(split)
    holdout_truth = GroundTruth(
        tuple(u for u in vtruth.users if u in held),
        {g: {u: s for u, s in items.items() if u in held} for g, items in vtruth.items.items()},
        {u: s for u, s in vtruth.seen.items() if u in held})
    weights = rconfig.value_weights
    if weights is None:
        weights, holdout_ndcg = choose_value_weights(holdout_rows["user_id"].to_numpy(), holdout_rows["item_id"].to_numpy(),
                                                     calibrated_holdout, holdout_truth, rconfig.list_size)
        state.metrics["ranker/holdout_ndcg@10"] = holdout_ndcg
    weights = dict(weights)
    state.info["ranking"] = {"value_weights": weights, "platt": {t: dataclasses.asdict(p) for t, p in platt.items()}}
    for task in TASKS:
        state.metrics[f"ranker/value_weight/{task}"] = float(weights.get(task, 0.0))

    # Test: the retrieval stage's merged candidates, features from train + validation.
    test_rows = examples.label_rows(state.candidate_set, split.test, add_missed=False)
    test_inputs = examples.ranking_inputs(test_rows, split.history, split.test_start, dataset.users,
                                          data.catalogue, features, rconfig.history_length)
    raw = model_lib.predict(model.scorer, test_inputs)
    calibrated = {t: platt[t](raw[t]) for t in TASKS}
    users = test_rows["user_id"].to_numpy()
    for task in TASKS:
        labels = test_inputs[f"label_{task}"]
        state.metrics.update(head_metrics(calibrated[task], labels, users, f"ranker/{task}"))
        state.metrics[f"ranker/{task}/ece_uncalibrated"] = head_metrics(raw[task], labels, users, "x")["x/ece"]
    recommendations = _lists(users, test_rows["item_id"].to_numpy(), value_score(calibrated, weights),
                             calibrated, rconfig.list_size)
    state.write_list(recommendations, "recommendations.parquet")
    state.metrics.update(score_lists(recommendations, state.truth, "pipeline", ev.ks,
                                     ev.bootstrap_resamples, ev.bootstrap_seed))
    # The candidate set in retrieval order, for the table: what ranking adds.
    state.metrics.update(score_lists(state.candidate_set, state.truth, "retrieval_order", ev.ks,
                                     ev.bootstrap_resamples, ev.bootstrap_seed))

    if rconfig.compare_single_task:
        for task in TASKS:
            single, _ = model_lib.train_ranker(features, fit_inputs, holdout_inputs, rconfig, config.seed, tasks=(task,))
            p = model_lib.predict(single.scorer, test_inputs)[task]
            state.metrics.update({k.replace("single", f"ranker/single_task/{task}"): v for k, v in
                                  head_metrics(p, test_inputs[f"label_{task}"], users, "single").items()
                                  if k.endswith(("/auc", "/gauc"))})
    state.timings["ranking_fit"] = time.perf_counter() - started
