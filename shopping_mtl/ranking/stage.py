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
import gc
import logging
import time

import numpy as np
import pandas as pd

from shopping_mtl import tracking
from shopping_mtl.candidates.candidate_set import build_candidate_set
from shopping_mtl.candidates.registry import SourceDay
from shopping_mtl.data.split import GroundTruth, truth_for
from shopping_mtl.evaluation import score_lists
from shopping_mtl.ranking import examples, model as model_lib
from shopping_mtl.ranking.calibration import Platt, auc, calibrate, expected_calibration_error, head_metrics
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.ranking.cross import CROSS_FEATURES
from shopping_mtl.ranking.value import choose_value_weights, value_score
from shopping_mtl.retrieval import examples as retrieval_examples
from shopping_mtl.run_state import RunState
from shopping_mtl.scale import shards
from shopping_mtl.scale.top_lists import top_lists

log = logging.getLogger(__name__)
# Under this many positive training rows a head's probabilities mean little; a held-out AUC this
# close to 0.5 means the head learned nothing (both are said in the run summary).
FEW_POSITIVES = 50
NO_SKILL_AUC = 0.02


def _subset(arrays: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in arrays.items()}


@dataclasses.dataclass
class RankingDay:
    """One ranking day's rows: the fitting users' and the held-out users' (named `user@days_back`,
    so lists and ground truth of different days never mix), with their model inputs (the
    fitting rows' inputs None when they went to a `shards.ShardWriter`)."""

    n_fit_rows: int
    n_fit_lists: int
    fit_positives: dict  # task -> positive fitting rows
    fit_inputs: dict | None
    holdout_rows: pd.DataFrame
    holdout_inputs: dict
    holdout_truth: GroundTruth


def ranking_day(state, days_back: int, held: set, writer: shards.ShardWriter | None = None,
                chunk_rows: int = 200_000, max_lists: int | None = None) -> RankingDay | None:
    """Rows for the day `days_back` days before the validation day (0: the validation day);
    a "day" is a validation period (`Split.period`), a calendar day on a daily log.

    Candidates and features come from the events before that day only: the user's own items,
    co-visitation, popularity and, on the validation day, the two-tower model's lists (it was
    trained on the earlier days' events, so it is no source for them; its score is 0 there).
    With `writer`, the fitting rows' inputs are built about `chunk_rows` rows (whole users) at
    a time and written there, never all held at once. With `max_lists`, at most that many
    fitting users (a fixed sample by hash, different each day) and the held-out users are
    kept; the others' candidates are never computed.
    """
    config, split, dataset, retrieval = state.config, state.split, state.dataset, state.retrieval
    rconfig = config.ranking
    features = retrieval.data.features
    period = split.period  # a day on a daily log
    start = split.validation_start - days_back * period
    earlier = (split.train["timestamp"] < start).to_numpy()
    # On the validation day every train event is before it: the frame itself, not a copy of it
    # (8M events, ~1.5 GB at 10^7).
    before = split.train if earlier.all() else split.train[earlier]
    if days_back == 0:
        day = split.validation
    else:
        day = split.train[(split.train["timestamp"] >= start) & (split.train["timestamp"] < start + period)]
    truth = truth_for(before, before, day)
    fitting = np.asarray([u for u in truth.users if u not in held], dtype=object)
    if max_lists is not None and len(fitting) > max_lists:
        kept = set(fitting[examples.split_users(fitting, 1.0, config.seed + 1 + days_back, max_lists)])
        day = day[day["user_id"].isin(kept | held)]
        truth = truth_for(before, before, day)
        log.info("ranking: day -%d, %d of its %d fitting users kept (ranking.max_training_lists)",
                 days_back, len(kept), len(fitting))
    if not truth.users:
        return None
    # The two-tower model was fitted on the days before the validation day: it lists on that
    # day only.
    two_tower = shards.held(retrieval.validation_lists, users=truth.users) if days_back == 0 else None
    candidates = build_candidate_set(SourceDay(before, truth.users, start, config.baselines.in_days(split.period_days),
                                               two_tower),
                                     config.candidates.quotas)
    del two_tower
    if before is split.train:  # the validation day
        catalogue = retrieval.data.train_catalogue()
    else:
        catalogue = retrieval_examples.item_catalogue(before, dataset.items, features)
    is_held = candidates["user_id"].isin(held)

    def inputs(rows):
        return examples.ranking_inputs(rows, before, start, dataset.users, catalogue, features, rconfig.history_length,
                                       rconfig.list_features, rconfig.engagement_features,
                                       rconfig.target_attention, rconfig.activity_features)

    provenance = rconfig.source_features
    fit_rows = examples.label_rows(candidates[~is_held], day, add_missed=rconfig.add_missed_positives,
                                   provenance=provenance)
    holdout_rows = examples.label_rows(candidates[is_held], day, add_missed=False, provenance=provenance)
    holdout_inputs = inputs(holdout_rows)
    holdout_rows = holdout_rows.assign(user_id=holdout_rows["user_id"] + f"@{days_back}")
    rename = {u: f"{u}@{days_back}" for u in truth.users if u in held}
    holdout_truth = GroundTruth(
        tuple(rename.values()),
        {g: {rename[u]: v for u, v in items.items() if u in rename} for g, items in truth.items.items()},
        {rename[u]: v for u, v in truth.seen.items() if u in rename})
    # One list per user and day, for the within-list loss.
    list_id = pd.factorize(fit_rows["user_id"])[0].astype(np.int64) + days_back * 10_000_000
    holdout_inputs["list_id"] = pd.factorize(holdout_rows["user_id"])[0].astype(np.int64)
    positives = {t: float(fit_rows[t].sum()) for t in TASKS}
    n_lists = int(fit_rows["user_id"].nunique())
    if writer is None:
        fit_inputs = inputs(fit_rows)
        fit_inputs["list_id"] = list_id
        return RankingDay(len(fit_rows), n_lists, positives, fit_inputs, holdout_rows, holdout_inputs, holdout_truth)
    n_chunks = _write_in_chunks(writer, fit_rows, list_id, before, start, dataset.users, catalogue, features,
                                rconfig, chunk_rows)
    log.info("ranking: day -%d, %d training rows written in %d chunks", days_back, len(fit_rows), n_chunks)
    return RankingDay(len(fit_rows), n_lists, positives, None, holdout_rows, holdout_inputs, holdout_truth)


def _write_in_chunks(writer: shards.ShardWriter, fit_rows: pd.DataFrame, list_id: np.ndarray,
                     before: pd.DataFrame, start: pd.Timestamp, users, catalogue, features, rconfig,
                     chunk_rows: int) -> int:
    """Build the fitting rows' inputs about `chunk_rows` rows (whole users) at a time and write
    them to `writer`, whole lists in list order; returns the number of chunks. A chunk's
    features need its users' own events only, plus every item's count."""
    n_chunks = max(1, -(-len(fit_rows) // chunk_rows))
    counts = before["item_id"].value_counts()
    recent = examples.recent_item_counts(before, start) if rconfig.activity_features else None
    lookup = retrieval_examples.ItemLookup.of(catalogue)
    for rows, history_rows in retrieval_examples.user_chunks(fit_rows["user_id"], before["user_id"], n_chunks):
        rows = rows[np.argsort(list_id[rows], kind="stable")]
        part = examples.ranking_inputs(fit_rows.iloc[rows], before.iloc[history_rows], start, users,
                                       catalogue, features, rconfig.history_length, rconfig.list_features,
                                       rconfig.engagement_features, rconfig.target_attention,
                                       rconfig.activity_features, item_counts=counts, recent_counts=recent,
                                       lookup=lookup)
        part["list_id"] = list_id[rows]
        writer.write(part)
    return n_chunks


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclasses.dataclass
class RankingData:
    """The ranker's training and held-out rows over all ranking days, built once per run (a
    search reuses them for every trial)."""

    n_fit_rows: int
    n_fit_lists: int  # user-days
    fit_positive_rates: dict  # task -> share of positive fitting rows
    fit_inputs: dict | shards.ExampleShards
    holdout_rows: pd.DataFrame
    holdout_inputs: dict
    holdout_truth: GroundTruth
    n_days: int


def prepare_ranking(state, rconfig=None) -> RankingData:
    """Rows of the validation day and `extra_days` train days (validation periods) before it,
    each from the events before it; a fixed share of users is held out on every day. Above `data.stream_above_events`
    events the fitting rows go to Parquet shards (`RunState.examples_dir`) and are streamed."""
    config, split = state.config, state.split
    rconfig = rconfig or config.ranking
    everyone = np.asarray(sorted(set(split.train["user_id"])), dtype=object)
    held = set(everyone[examples.split_users(everyone, rconfig.holdout_share, config.seed,
                                                 rconfig.holdout_max_users)])
    folder = state.examples_dir("ranker")
    writer = shards.ShardWriter(folder, config.data.shard_rows, "list_id") if folder is not None else None
    days, places = [], rconfig.max_training_lists
    for back in range(rconfig.extra_days + 1):
        if places is not None and places <= 0:
            log.info("ranking: %d training lists reached (ranking.max_training_lists); days -%d..-%d not built",
                     rconfig.max_training_lists, back, rconfig.extra_days)
            break
        day = ranking_day(state, back, held, writer, config.data.shard_rows, max_lists=places)
        if day is not None:
            days.append(day)
            places = None if places is None else places - day.n_fit_lists
    n_fit = sum(d.n_fit_rows for d in days)
    data = RankingData(
        n_fit_rows=n_fit,
        n_fit_lists=sum(d.n_fit_lists for d in days),
        fit_positive_rates={t: sum(d.fit_positives[t] for d in days) / max(n_fit, 1) for t in TASKS},
        fit_inputs=writer.close() if writer is not None else _concat([d.fit_inputs for d in days]),
        holdout_rows=pd.concat([d.holdout_rows for d in days], ignore_index=True),
        holdout_inputs=_concat([d.holdout_inputs for d in days]),
        holdout_truth=GroundTruth(
            tuple(u for d in days for u in d.holdout_truth.users),
            {g: {u: v for d in days for u, v in d.holdout_truth.items[g].items()} for g in ("any", "save", "purchase")},
            {u: v for d in days for u, v in d.holdout_truth.seen.items()}),
        n_days=len(days))
    log.info("ranking: %d days, %d training rows (%d lists), %d holdout rows (%d held-out user-days); "
             "positive rates %s", data.n_days, data.n_fit_rows, data.n_fit_lists, len(data.holdout_rows),
             len(data.holdout_truth.users),
             {t: round(rate, 4) for t, rate in data.fit_positive_rates.items()})
    return data


@dataclasses.dataclass
class RankerFit:
    """A fitted ranker and what the held-out users say of it (validation only, never test)."""

    model: object
    history: dict
    platt: dict
    weights: dict
    holdout_ndcg: float  # the final list's NDCG@10 on the held-out user-days
    holdout_mean_auc: float
    holdout_reference_ndcg: float  # the same lists ordered by the engagement feature alone
    holdout_auc: dict  # task -> the kept model's AUC on the held-out rows (NaN: one class only)


def holdout_ndcg_objective(data: RankingData, rconfig):
    """`model -> float`: NDCG@10 (any engagement) of the held-out user-days' lists as the model
    orders them, cut to `list_size`; the early-stopping objective `ranking.early_stopping=
    holdout_ndcg@10`. One prediction over the holdout rows per call.

    The order: with `value_weights` configured, the value score of the Platt-calibrated heads
    (calibration fitted on the same rows, as after training: the final list's own order). With
    the weights chosen after training (None), the click probability alone: every weighting on
    the grid gives click 1.0, the choice needs calibrated heads of a finished model, and its 32
    list scorings per epoch would cost more than the epoch; the raw click probability orders as
    its calibrated one does (Platt is monotone). So this is the list of the grid's click-only
    point, a lower bound of the chosen weights' held-out NDCG (Taobao, epoch 1: 0.1405 click
    alone, 0.1433 with the chosen 1/1/4).
    """
    users, items = data.holdout_rows["user_id"].to_numpy(), data.holdout_rows["item_id"].to_numpy()

    def objective(model) -> float:
        p = model_lib.predict(model.scorer, data.holdout_inputs)
        if rconfig.value_weights is None:
            score = p["click"]
        else:
            platt = {t: Platt.fit(p[t], data.holdout_inputs[f"label_{t}"]) for t in TASKS}
            score = value_score(calibrate(p, platt, rconfig.architecture == "esmm"), rconfig.value_weights)
        lists = top_lists(users, items, score, p, rconfig.list_size)
        return score_lists(lists, data.holdout_truth, "h", (10,), n_resamples=0).get("h/ndcg@10", 0.0)
    return objective


def fit_ranker(features, data: RankingData, rconfig, seed: int, tasks=TASKS, initial_weights=None,
               initial_epoch: int = 0, backup_dir=None, label: str = "ranker") -> RankerFit:
    """Train (early-stopping on `rconfig.early_stopping`; the held-out NDCG@10 of each epoch is
    the history's `val_objective`), calibrate per head on the held-out rows, choose the value
    weights on their NDCG@10. `label` names the fit in its epoch log lines."""
    objective = holdout_ndcg_objective(data, rconfig) if rconfig.early_stopping == "holdout_ndcg@10" else None
    model, fitted = model_lib.train_ranker(features, data.fit_inputs, data.holdout_inputs, rconfig, seed, tasks,
                                           initial_weights=initial_weights, initial_epoch=initial_epoch,
                                           backup_dir=backup_dir, objective=objective, label=label)
    holdout_p = model_lib.predict(model.scorer, data.holdout_inputs)
    platt = {t: Platt.fit(holdout_p[t], data.holdout_inputs[f"label_{t}"]) for t in TASKS}
    calibrated = calibrate(holdout_p, platt, rconfig.architecture == "esmm")
    users, items = data.holdout_rows["user_id"].to_numpy(), data.holdout_rows["item_id"].to_numpy()
    if rconfig.value_weights is None:
        weights, ndcg = choose_value_weights(users, items, calibrated, data.holdout_truth, rconfig.list_size)
    else:
        weights = dict(rconfig.value_weights)
        lists = top_lists(users, items, value_score(calibrated, weights), calibrated, rconfig.list_size)
        ndcg = score_lists(lists, data.holdout_truth, "h", (10,), n_resamples=0).get("h/ndcg@10", 0.0)
    reference = top_lists(users, items, data.holdout_inputs["cross"][:, CROSS_FEATURES.index("ui_engagement")]
                       + 1e-6 * data.holdout_inputs["item_popularity"], calibrated, rconfig.list_size)
    reference_ndcg = score_lists(reference, data.holdout_truth, "h", (10,), n_resamples=0).get("h/ndcg@10", 0.0)
    mean_auc = float(max(fitted["history"].get("val_mean_auc", [float("nan")])))
    head_auc = {t: auc(holdout_p[t], data.holdout_inputs[f"label_{t}"]) for t in TASKS}
    return RankerFit(model, fitted["history"], platt, dict(weights), float(ndcg), mean_auc, float(reference_ndcg),
                     head_auc)


def head_warnings(positives: dict, holdout_auc: dict) -> list[str]:
    """What the run summary says of heads that cannot be trusted: fewer than `FEW_POSITIVES`
    positive training rows, or a held-out AUC within `NO_SKILL_AUC` of 0.5 (learned nothing;
    the head is still exported, with this warning in run_info.json)."""
    warnings = []
    for task in TASKS:
        if positives.get(task, 0) < FEW_POSITIVES:
            warnings.append(f"ranker: the {task} head had {positives.get(task, 0):,.0f} positive training rows "
                            f"(under {FEW_POSITIVES}): its probabilities mean little")
        value = holdout_auc.get(task, float("nan"))
        if abs(value - 0.5) <= NO_SKILL_AUC:
            warnings.append(f"ranker: the {task} head learned nothing (held-out AUC {value:.3f}, within "
                            f"{NO_SKILL_AUC} of 0.5); it is exported as it is: do not use its probability")
    return warnings


@dataclasses.dataclass
class RankingOutput:
    """The ranking stage's hand-off to the export: the fitted ranker (`scorer`: raw features
    -> the heads' probabilities), its Platt calibration per head and the value weights."""

    scorer: object
    platt: dict
    weights: dict


def record_fit(state: RunState, fitted: RankerFit, ranking: RankingData) -> None:
    """The fit's figures (all from the ranking days' rows, none from the test day), its curves,
    and the value weights and calibration in run_info.json."""
    state.histories["ranker"] = fitted.history
    state.metrics["ranker/epochs"] = float(len(fitted.history["loss"]))
    # The epoch (1-based) whose weights were kept: the best of the early-stopping value.
    watched = fitted.history.get("val_objective", fitted.history.get("val_mean_auc"))
    if watched:
        state.metrics["ranker/best_epoch"] = float(np.nanargmax(watched) + 1)
    state.metrics["ranker/holdout_mean_auc"] = fitted.holdout_mean_auc
    state.metrics["ranker/training_rows"] = float(ranking.n_fit_rows)
    state.metrics["ranker/training_lists"] = float(ranking.n_fit_lists)
    state.metrics["ranker/ranking_days"] = float(ranking.n_days)
    state.metrics["ranker/holdout_ndcg@10"] = fitted.holdout_ndcg
    # The held-out lists ordered by the user-item engagement feature alone: what the model has
    # to beat (it is close to the user-history baseline's score).
    state.metrics["ranker/holdout_reference_ndcg@10"] = fitted.holdout_reference_ndcg
    state.info["ranking"] = {"value_weights": fitted.weights,
                             "platt": {t: dataclasses.asdict(p) for t, p in fitted.platt.items()}}
    for task in TASKS:
        state.metrics[f"ranker/value_weight/{task}"] = float(fitted.weights.get(task, 0.0))
        state.metrics[f"ranker/{task}/training_positives"] = float(
            round(ranking.fit_positive_rates[task] * ranking.n_fit_rows))
        state.metrics[f"ranker/{task}/holdout_auc"] = float(fitted.holdout_auc[task])
    warnings = head_warnings({t: state.metrics[f"ranker/{t}/training_positives"] for t in TASKS},
                             fitted.holdout_auc)
    for warning in warnings:
        log.warning("%s", warning)
    if warnings:
        state.info["warnings"] = [*state.info.get("warnings", []), *warnings]


def run_ranking_stage(state: RunState) -> RankingOutput:
    """Fit the ranker on the ranking days, score the test candidates, write
    recommendations.parquet, the reports, and the figures of the final list."""
    config, split = state.config, state.split
    rconfig, ev = config.ranking, config.evaluation
    retrieval = state.retrieval
    features = retrieval.data.features
    started = time.perf_counter()

    ranking = prepare_ranking(state)
    retrieval.data.forget_train_catalogue()
    fit_inputs, holdout_inputs = ranking.fit_inputs, ranking.holdout_inputs
    fitted = fit_ranker(features, ranking, rconfig, config.seed, backup_dir=state.backup_dir("ranker"),
                        label=state.fit_label(f"ranker {rconfig.architecture}"))
    gc.collect()  # the fit's datasets and traces, in reference cycles
    model, platt, weights = fitted.model, fitted.platt, fitted.weights
    ordered = rconfig.architecture == "esmm"
    record_fit(state, fitted, ranking)

    singles = {}
    if rconfig.compare_single_task:
        for task in TASKS:
            singles[task], _ = model_lib.train_ranker(features, fit_inputs, holdout_inputs, rconfig, config.seed,
                                                      tasks=(task,), backup_dir=state.backup_dir(f"ranker_{task}"),
                                                      label=state.fit_label(f"ranker {task} only (comparison)"))
    # The fitting and held-out rows are done with (the held-out inputs are ~0.3 GB at 10^7 events).
    del ranking, fit_inputs, holdout_inputs

    # Test: the retrieval stage's merged candidates, features from train + validation.
    # The ranks only when the model reads them: two more columns of ~20M rows at 10^7 events.
    columns = ["user_id", "item_id", "source", "score"] + (["rank", "source_rank"] if rconfig.source_features else [])
    test_rows = examples.label_rows(shards.held(state.candidates.candidate_set, columns), split.test, add_missed=False,
                                    provenance=rconfig.source_features)
    predicted, test_labels = predict_rows(state, test_rows, {"ranker": model.scorer,
                                                             **{t: m.scorer for t, m in singles.items()}})
    # Only the ids are read from here on: the rows' labels and scores (~0.3 GB at 10^7 events)
    # are in `test_labels` and the model inputs.
    users, items = test_rows["user_id"], test_rows["item_id"]
    del test_rows
    raw = predicted.pop("ranker")
    calibrated = calibrate(raw, platt, ordered)
    for task in TASKS:
        state.metrics[f"ranker/{task}/ece_uncalibrated"] = expected_calibration_error(raw[task], test_labels[task])
    del raw  # ~20M rows a head at 10^7 events
    # The per-user AUCs group by user: integer codes (-1: no user), coded once (not per head and
    # model), from the Arrow strings without a Python str per row (~20M rows at 10^7 events).
    groups = pd.factorize(users)[0].astype(np.int32)
    for task in TASKS:
        state.metrics.update(head_metrics(calibrated[task], test_labels[task], groups, f"ranker/{task}"))
    for task in singles:
        state.metrics.update({k.replace("single", f"ranker/single_task/{task}"): v for k, v in
                              head_metrics(predicted[task][task], test_labels[task], groups, "single").items()
                              if k.endswith(("/auc", "/gauc"))})
    del predicted, groups
    write_reports(state, model.scorer, {t: (calibrated[t], test_labels[t]) for t in TASKS})
    del test_labels
    recommendations = top_lists(users, items, value_score(calibrated, weights), calibrated, rconfig.list_size)
    state.write_list(recommendations, "recommendations.parquet")
    # The test rows' ids and scores (~20M rows at 10^7 events) are done with: freed before the
    # lists are scored and the candidate set is read back.
    del users, items, calibrated
    gc.collect()
    state.metrics.update(score_lists(recommendations, state.truth, "pipeline", ev.ks,
                                     ev.bootstrap_resamples, ev.bootstrap_seed))
    # The candidate set in retrieval order, for the table: what ranking adds.
    state.metrics.update(score_lists(shards.held(state.candidates.candidate_set, ["user_id", "rank", "item_id"], coded=True),
                                     state.truth, "retrieval_order", ev.ks,
                                     ev.bootstrap_resamples, ev.bootstrap_seed))
    state.timings["ranking_fit"] = time.perf_counter() - started
    return RankingOutput(model.scorer, platt, weights)


def predict_rows(state, rows: pd.DataFrame, scorers: dict) -> tuple[dict, dict]:
    """Each scorer's probabilities ({name: {task: array}}) and the labels ({task: array}) of the
    test candidates `rows`, in their order, features from the events before the test period.
    When the run streams (`data.stream_above_events`), the inputs are built and scored about
    four shards' rows (whole users) at a time, never all held at once (at 10^7 events the
    test candidates are ~20M rows, ~0.5 KB each as model inputs)."""
    config, split, dataset = state.config, state.split, state.dataset
    rconfig, data = config.ranking, state.retrieval.data

    def inputs(part, history, **kwargs):
        return examples.ranking_inputs(part, history, split.test_start, dataset.users, data.catalogue,
                                       data.features, rconfig.history_length, rconfig.list_features,
                                       rconfig.engagement_features, rconfig.target_attention,
                                       rconfig.activity_features, **kwargs)

    chunk_rows = 4 * config.data.shard_rows
    if state.examples_dir("ranker") is None or len(rows) <= chunk_rows:
        arrays = inputs(rows, split.history)
        return ({name: model_lib.predict(scorer, arrays) for name, scorer in scorers.items()},
                {t: arrays[f"label_{t}"] for t in TASKS})
    predicted = {name: {t: np.zeros(len(rows), np.float32) for t in TASKS} for name in scorers}
    labels = {t: np.zeros(len(rows), np.float32) for t in TASKS}
    history = split.history
    counts = history["item_id"].value_counts()
    recent = examples.recent_item_counts(history, split.test_start) if rconfig.activity_features else None
    lookup = retrieval_examples.ItemLookup.of(data.catalogue)
    chunks = retrieval_examples.user_chunks(rows["user_id"], history["user_id"], -(-len(rows) // chunk_rows))
    for number, (positions, history_rows) in enumerate(chunks):
        arrays = inputs(rows.iloc[positions], history.iloc[history_rows], item_counts=counts, recent_counts=recent,
                        lookup=lookup)
        for name, scorer in scorers.items():
            for task, values in model_lib.predict(scorer, arrays).items():
                predicted[name][task][positions] = values
        for task in TASKS:
            labels[task][positions] = arrays[f"label_{task}"]
        log.info("ranking: test candidates scored, chunk %d of %d", number + 1, len(chunks))
    return predicted, labels


def write_reports(state, scorer, curves) -> None:
    """`calibration.png` (reliability diagram per head on the test rows) and
    `model_summary.txt` (the ranker's and the two towers' layers) in the run folder."""
    tracking.plot_calibration(curves, state.run_dir / "calibration.png")
    lines = []
    models = [scorer]
    two_tower = state.retrieval.model if state.retrieval else None
    if two_tower is not None:
        models += [two_tower.query_model, two_tower.candidate_model]
    for model in models:
        model.summary(print_fn=lines.append, expand_nested=False)
        lines.append("")
    (state.run_dir / "model_summary.txt").write_text("\n".join(lines))
