#!/usr/bin/env python
"""A GBDT reference for the quality benchmark: LightGBM LambdaRank over the TF ranker's own rows.

What a practitioner would build instead of the multi-task network: one gradient-boosted ranker
(LightGBM 4.7.0, the `bench` extra) fitted on exactly the rows and features the TF ranker learns
from, so the two differ only in the model.

- **Rows**: `shopping_mtl.ranking.stage.prepare_ranking(state)`: the validation day's and the
  `ranking.extra_days` earlier days' candidate lists (the fitting users), and the held-out
  users' lists of the same days. The test rows are the candidates stage's merged set, labelled
  and turned into inputs exactly as `run_ranking_stage` / `predict_rows` do
  (`examples.label_rows`, `examples.ranking_inputs` with the same arguments: features from
  train + validation events before the test day).
- **Features**: the inputs the TF ranker's scorer takes under the run's config
  (`ranking.model.build_scorer(...).input_names`: the spec's user and item features less
  `ranking.exclude_features`, `cross`, `item_popularity`, `two_tower_score`, and `list`,
  `engagement`, `source`/`provenance` where `ranking.list_features`, `engagement_features`,
  `source_features` turn them on), flattened to columns: a 2-D input becomes one column per
  slot, named after the slot (`cross` -> `cross_<CROSS_FEATURES name>`, likewise `list`,
  `engagement`, `provenance`); float inputs as they are (NaN stays missing, LightGBM routes it);
  string inputs (the spec's categorical user and item features) and integer code inputs (the
  candidate's `source`) as integer codes fitted on the fitting rows, passed as LightGBM
  categorical features (splits regularised for thousands of rare codes: `CATEGORICAL`), ""
  and values the fitting rows never had as missing. Left out: the raw
  ids (`user_id`, `item_id`, any spec feature of type `id`): held-out and test users are never
  among the fitting users, so an id code could only memorise them; the labels and `list_id`.
- **Label**: graded relevance from the three heads, purchase 3 > save 2 > click 1 > none 0
  (a purchase or save implies a click), gains `LABEL_GAIN` (LightGBM's default 2^label - 1).
  One query group per list (user-day), rows made contiguous in list order.
- **Choices, on the held-out users only, never the test day**: each setting of `GRID` is
  early-stopped on the held-out lists' NDCG@10 (LightGBM's `ndcg@10` with the held-out rows'
  click label, i.e. binary any-engagement relevance over the candidates); the setting kept is
  the one whose held-out lists (top `ranking.list_size` by score, `scale.top_lists`) have the
  best project NDCG@10 (`evaluation.score_lists` against the held-out truth, as the TF ranker's
  `ranker/holdout_ndcg@10`). Two threads, deterministic, fixed seed.

Usage (one run on the whole log, single fold; the stages data, baselines, retrieval and
candidates run with the project's defaults and the spec's `defaults:`, tracking off):
  python bench/gbdt_reference.py --dataset ecomm --out /tmp/gbdt-ecomm
  python bench/gbdt_reference.py --dataset taobao --max-events 20000 --set retrieval.epochs=2
The out folder (also the stages' run folder) receives `gbdt.parquet` (the GBDT's final list,
`user_id, rank, item_id, score`) and `gbdt_metrics.json` (its figures beside the baselines',
the chosen settings, timings). `bench/quality_bench.py` calls `gbdt_lists(state)` per fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import shlex
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the project imports from here on

import numpy as np
import pandas as pd

import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from shopping_mtl import pipeline, training
from shopping_mtl.candidates import registry
from shopping_mtl.config import load_config, merge, parse_override
from shopping_mtl.data.split import fold_cuts
from shopping_mtl.errors import ConfigError, ShoppingMtlError
from shopping_mtl.evaluation import score_lists
from shopping_mtl.ranking import cross, examples, model as model_lib
from shopping_mtl.ranking.stage import prepare_ranking
from shopping_mtl.run_state import write_atomic, write_parquet_atomic
from shopping_mtl.scale import shards
from shopping_mtl.scale.top_lists import top_lists

try:  # the bench extra; without it the module still imports and says what is missing when used
    import lightgbm as lgb
except ImportError:
    lgb = None

log = logging.getLogger("gbdt_reference")
MISSING = "lightgbm is not installed: pip install lightgbm==4.7.0 (the project's bench extra: pip install -e '.[bench]')"

# Graded relevance of a row: the highest of its heads (purchase and save imply click).
GRADES = {"click": 1, "save": 2, "purchase": 3}
LABEL_GAIN = [0.0, 1.0, 3.0, 7.0]  # 2^grade - 1, LightGBM's default, written out
# The grid: small on purpose, each point is one early-stopped fit (choices on held-out data).
GRID = ({"num_leaves": 31}, {"num_leaves": 63})
LEARNING_RATE = 0.05
MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 50
# Categorical splits regularised for high-cardinality codes (EComm's brand and category, Taobao's
# category: thousands of values, most rare): with LightGBM's defaults (100, 10, 32) the trees
# split on groups of rare codes and the held-out NDCG@10 stops rising after a few trees (EComm
# 0.3460, Taobao 0.1266 at num_leaves 31; held-out users only); with these 0.3507 and 0.1411.
CATEGORICAL = {"min_data_per_group": 500, "cat_smooth": 50.0, "max_cat_threshold": 16}
NDCG_AT = 10
# Inputs that are never features: labels, the list key, and the raw ids.
NOT_FEATURES = {"user_id", "item_id", "list_id", *(f"label_{t}" for t in GRADES)}
# Column names of the 2-D inputs' slots: the constant of `ranking.cross` that names them, where
# it has one (others are numbered).
SLOT_NAMES = {"cross": "CROSS_FEATURES", "list": "LIST_FEATURES", "engagement": "ENGAGEMENT_FEATURES",
              "provenance": "PROVENANCE_FEATURES", "session": "SESSION_FEATURES",
              "activity": "ACTIVITY_FEATURES"}


def _flat(values) -> np.ndarray:
    """An input as (rows,) or (rows, columns): a sequence input's (rows, slots, features)
    becomes one column per slot and feature."""
    values = np.asarray(values)
    return values.reshape(len(values), -1) if values.ndim > 2 else values


@dataclasses.dataclass
class FeatureEncoder:
    """How the ranker's input arrays become LightGBM's float matrix, fitted on the fitting rows.

    Attributes:
        names: input name -> its column names, in matrix order.
        categories: categorical input name -> the fitting rows' distinct values (code = index).
    """

    names: dict[str, list[str]]
    categories: dict[str, pd.Index]

    @classmethod
    def fit(cls, inputs, features) -> "FeatureEncoder":
        """Columns of the inputs `features`, and codes of the string and integer inputs' values.

        Args:
            inputs: the fitting rows' inputs (name -> array), `RankingData.fit_inputs`.
            features: the input names that are features, in any order (the matrix's is sorted).

        Returns:
            The encoder; its `feature_names` and `categorical` say what LightGBM is given.
        """
        names, categories = {}, {}
        for name in sorted(features):  # a fixed column order, whatever the caller's
            values = _flat(inputs[name])
            if values.ndim == 2:
                slots = getattr(cross, SLOT_NAMES.get(name, ""), None)
                if slots is None or len(slots) != values.shape[1]:
                    slots = [str(i) for i in range(values.shape[1])]
                names[name] = [f"{name}_{slot}" for slot in slots]
            else:
                names[name] = [name]
            # Strings are categorical; so are integer inputs, which the ranker takes as codes to
            # one-hot (`source`). "" is the string inputs' missing value.
            if values.dtype.kind in "OUSiu":
                seen = pd.unique(values.astype(str).ravel())
                categories[name] = pd.Index(np.sort(seen[seen != ""]))
        return cls(names, categories)

    @property
    def feature_names(self) -> list[str]:
        return [column for columns in self.names.values() for column in columns]

    @property
    def categorical(self) -> list[str]:
        return [column for name in self.categories for column in self.names[name]]

    def matrix(self, inputs) -> np.ndarray:
        """(rows, features) float32: numbers as they are, strings as their fitted codes (NaN:
        "" or a value the fitting rows never had, which LightGBM treats as missing)."""
        columns = []
        for name, column_names in self.names.items():
            values = _flat(inputs[name])
            if name in self.categories:
                codes = self.categories[name].get_indexer(values.astype(str).ravel()).astype(np.float32)
                codes[codes < 0] = np.nan
                values = codes.reshape(values.shape)
            values = values.astype(np.float32, copy=False)
            columns.append(values if values.ndim == 2 else values[:, None])
        return np.hstack(columns) if columns else np.zeros((0, 0), np.float32)


def relevance(inputs) -> np.ndarray:
    """Graded label per row (int32): the highest of click 1, save 2, purchase 3 among its
    heads' labels, 0 when none."""
    grade = np.zeros(len(inputs["label_click"]), np.int32)
    for task, value in GRADES.items():
        grade = np.maximum(grade, np.where(np.asarray(inputs[f"label_{task}"]) > 0, value, 0).astype(np.int32))
    return grade


def grouped(keys) -> tuple[np.ndarray, np.ndarray]:
    """Rows in list order, each list's rows together: (row order, rows per list). Lists keep
    their first appearance's order and rows their order within the list (a stable sort), so
    rows that are already contiguous are left as they are."""
    codes, _ = pd.factorize(np.asarray(keys))
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    return order, sizes[sizes > 0]


def ranker_features(features, rconfig) -> list[str]:
    """The inputs the TF ranker's scorer takes under `rconfig` (its Keras inputs' names, so the
    GBDT follows every feature switch and `ranking.exclude_features` without a second list),
    less the raw ids (spec features of type `id`) and `NOT_FEATURES`.

    Args:
        features: the run's `FeatureSet` (`state.retrieval.data.features`).
        rconfig: the run's `RankingConfig`.
    """
    scorer = model_lib.build_scorer(features, rconfig)  # a few layers; only its input names are read
    names = list(scorer.input_names)
    del scorer
    ids = {f.name for f in (*features.spec.user, *features.spec.item) if f.type == "id"}
    return [name for name in names if name not in NOT_FEATURES | ids]


def _params(setting: dict, seed: int) -> dict:
    """LightGBM parameters of one grid point: LambdaRank with the graded gains, NDCG@10 as the
    early-stopping metric, the categorical regularisation, 2 threads and deterministic
    (force_row_wise: LightGBM's advice for reproducible fits)."""
    return {"objective": "lambdarank", "metric": "ndcg", "eval_at": [NDCG_AT], "label_gain": LABEL_GAIN,
            "learning_rate": LEARNING_RATE, **CATEGORICAL, "num_threads": 2, "deterministic": True,
            "force_row_wise": True, "seed": seed, "verbosity": -1, **setting}


def gbdt_lists(state, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fit the LightGBM LambdaRank reference on the TF ranker's rows and list the test users.

    Args:
        state: a `shopping_mtl.run_state.RunState` on which the data, retrieval and candidates
            stages have run (`state.data`, `state.retrieval`, `state.candidates` set). Runs whose
            ranker examples stream from shards (above `data.stream_above_events` events) are
            refused: the GBDT needs its whole matrix in memory.
        seed: LightGBM's seed.

    Returns:
        (lists, info). `lists`: the GBDT's final list for the test users, `user_id, rank, item_id,
        score`, `ranking.list_size` rows per user (fewer where the user has fewer candidates),
        the shape of recommendations.parquet. `info`: the chosen setting, its best iteration and
        held-out NDCG@10, every grid point's, the LightGBM parameters, the feature names (and
        which are categorical), each feature's total gain, row counts and timings in seconds.
    """
    if lgb is None:
        raise ConfigError(MISSING)
    if state.data is None or state.retrieval is None or state.candidates is None:
        raise ValueError("gbdt_lists needs a RunState on which the data, retrieval and candidates stages ran")
    if state.examples_dir("ranker") is not None:
        raise ConfigError(f"gbdt_lists: this run streams the ranker's examples ({len(state.dataset.events):,} events "
                          f"> data.stream_above_events={state.config.data.stream_above_events:,}); the GBDT "
                          "reference builds its whole matrix in memory: raise data.stream_above_events or set it "
                          "to null for this run")
    config, split, dataset = state.config, state.split, state.dataset
    rconfig, data = config.ranking, state.retrieval.data
    timings = {}

    started = time.perf_counter()
    ranking = prepare_ranking(state)
    timings["prepare_ranking"] = time.perf_counter() - started

    encoder = FeatureEncoder.fit(ranking.fit_inputs, ranker_features(data.features, rconfig))
    names = encoder.feature_names
    fit_order, fit_sizes = grouped(ranking.fit_inputs["list_id"])
    # The held-out list_id restarts at 0 on each day; the renamed user (`u@days_back`) does not.
    holdout_users = ranking.holdout_rows["user_id"].to_numpy()
    holdout_items = ranking.holdout_rows["item_id"].to_numpy()
    holdout_order, holdout_sizes = grouped(holdout_users)
    fit_x = encoder.matrix(ranking.fit_inputs)
    holdout_x = encoder.matrix(ranking.holdout_inputs)
    train_set = lgb.Dataset(fit_x[fit_order], relevance(ranking.fit_inputs)[fit_order], group=fit_sizes,
                            feature_name=names, categorical_feature=encoder.categorical, free_raw_data=False)
    # Early stopping reads binary any-engagement relevance: the project's held-out NDCG is binary.
    valid_set = lgb.Dataset(holdout_x[holdout_order],
                            (np.asarray(ranking.holdout_inputs["label_click"]) > 0).astype(np.int32)[holdout_order],
                            group=holdout_sizes, reference=train_set)
    log.info("gbdt: %d fitting rows in %d lists, %d held-out rows in %d lists, %d features (%d categorical)",
             len(fit_x), len(fit_sizes), len(holdout_x), len(holdout_sizes), len(names), len(encoder.categorical))

    trials, best = [], None
    for setting in GRID:
        started = time.perf_counter()
        booster = lgb.train(_params(setting, seed), train_set, num_boost_round=MAX_ROUNDS, valid_sets=[valid_set],
                            valid_names=["holdout"],
                            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, first_metric_only=True, verbose=False)])
        score = booster.predict(holdout_x, num_iteration=booster.best_iteration, num_threads=2)
        lists = top_lists(holdout_users, holdout_items, score, {}, rconfig.list_size)
        ndcg = score_lists(lists, ranking.holdout_truth, "h", (NDCG_AT,), n_resamples=0).get(f"h/ndcg@{NDCG_AT}", 0.0)
        trial = {**setting, "learning_rate": LEARNING_RATE, "best_iteration": int(booster.best_iteration),
                 "lightgbm_holdout_ndcg@10": float(booster.best_score["holdout"][f"ndcg@{NDCG_AT}"]),
                 "holdout_ndcg@10": float(ndcg), "fit_s": round(time.perf_counter() - started, 2)}
        trials.append(trial)
        log.info("gbdt: %s", trial)
        if best is None or ndcg > best[0]["holdout_ndcg@10"]:  # ties keep the earlier, smaller setting
            best = (trial, booster)
    chosen, booster = best
    del train_set, valid_set, fit_x, holdout_x, ranking

    # Test: the candidates stage's merged set, labelled and built as `run_ranking_stage` does.
    started = time.perf_counter()
    # Every column of the set: `label_rows` keeps what the inputs are made of (the source and its
    # score, and where the set has them the ranks that `source_features` read).
    test_rows = examples.label_rows(shards.held(state.candidates.candidate_set), split.test, add_missed=False,
                                    provenance=rconfig.source_features)
    test_inputs = examples.ranking_inputs(test_rows, split.history, split.test_start, dataset.users, data.catalogue,
                                          data.features, rconfig.history_length, rconfig.list_features,
                                          rconfig.engagement_features, rconfig.target_attention,
                                          rconfig.activity_features)
    timings["test_inputs"] = time.perf_counter() - started
    started = time.perf_counter()
    score = booster.predict(encoder.matrix(test_inputs), num_iteration=chosen["best_iteration"], num_threads=2)
    frame = top_lists(test_rows["user_id"], test_rows["item_id"], score, {}, rconfig.list_size)
    timings["test_predict"] = time.perf_counter() - started
    timings["fit"] = sum(t["fit_s"] for t in trials)

    importance = booster.feature_importance("gain", iteration=chosen["best_iteration"])
    info = {
        "lightgbm": lgb.__version__,
        "chosen": chosen,
        "grid": trials,
        "holdout_ndcg@10": chosen["holdout_ndcg@10"],
        "best_iteration": chosen["best_iteration"],
        "params": _params({}, seed),
        "label": "graded: purchase 3, save 2, click 1, else 0",
        "features": names,
        "categorical_features": encoder.categorical,
        # [feature, total gain] pairs, largest first (a list: the report's JSON sorts dict keys).
        "gain_importance": [[n, round(float(g), 3)] for n, g in sorted(zip(names, importance), key=lambda p: -p[1])],
        "fit_rows": int(len(fit_order)),
        "fit_lists": int(len(fit_sizes)),
        "holdout_rows": int(len(holdout_order)),
        "holdout_lists": int(len(holdout_sizes)),
        "test_rows": int(len(test_rows)),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    return frame[["user_id", "rank", "item_id", "score"]], info


def gbdt_for_run(run_dir: Path, seed: int = 0) -> dict[str, dict]:
    """The GBDT reference for every fold of a finished run: each fold's data, retrieval and
    candidates stages again from the run's config.yaml (in a scratch folder; with the run's seed
    and determinism they give the run's candidate set, which is checked), then `gbdt_lists`;
    its list goes to the fold's folder as `gbdt.parquet` (the run folder itself for a run of one
    test day) and its info to `gbdt_info.json`.

    Returns:
        fold name ("run" for one test day) -> info, with `same_candidates`: whether the candidate
        set built again equals the run's `candidate_set.parquet` row for row.
    """
    config = load_config(Path(run_dir) / "config.yaml")
    registry.check_names(config.candidates.quotas, config.baselines.names)
    out = {}
    with tempfile.TemporaryDirectory(prefix="gbdt-") as tmp:
        scratch = dataclasses.replace(config, run_dir=tmp, tracking=dataclasses.replace(config.tracking, enabled=False))
        state = pipeline.prepare_state(scratch)
        if scratch.deterministic:
            training.enable_determinism(scratch.seed)
        pipeline.run_stage("data", state)
        folds = fold_cuts(state.dataset.events, config.evaluation.test_days, config.split.min_days,
                          config.split.quantile)
        for fold in folds:
            folder = Path(run_dir) if len(folds) == 1 else Path(run_dir) / "folds" / fold.name
            fold_state = pipeline.fold_run_state(state, fold, Path(tmp) / "folds" / fold.name)
            work = fold_state.run_dir
            for name in ("retrieval", "candidates"):
                pipeline.run_stage(name, fold_state)
            log.info("gbdt: fold %s: stages done; fitting", fold.name)
            frame, info = gbdt_lists(fold_state, seed=seed)
            mine = pd.read_parquet(work / "candidate_set.parquet")
            theirs_path = folder / "candidate_set.parquet"
            info["same_candidates"] = bool(theirs_path.is_file() and mine.equals(pd.read_parquet(theirs_path)))
            write_parquet_atomic(frame, folder / "gbdt.parquet")
            write_atomic(folder / "gbdt_info.json", json.dumps(info, indent=1, sort_keys=True, default=str))
            out["run" if len(folds) == 1 else fold.name] = info
    return out


# --------------------------------------------------------------------------------------------
# The command line: one run of the whole log (single fold)

STAGES = ["data", "baselines", "retrieval", "candidates"]
HEADLINE = ["ndcg@10", "recall@10", "recall@100", "purchase/ndcg@10"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/gbdt_reference.py",
        description=textwrap.fill(
            "Run the data, baselines, retrieval and candidates stages on a dataset (the whole log, one test "
            "day), fit the LightGBM LambdaRank reference on the TF ranker's training rows and features "
            "(choices on the held-out users only), list the test users' candidates with it and score the "
            "lists by the project's protocol beside the baselines. Writes gbdt.parquet and gbdt_metrics.json "
            "into the out folder (also the stages' run folder). Needs lightgbm==4.7.0 (the bench extra: "
            "pip install -e '.[bench]').", 96),
        epilog="Usage" + __doc__.split("Usage", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ecomm", help="ecomm (default), taobao, or a dataset spec YAML")
    parser.add_argument("--max-events", type=int, help="keep whole users until this many events (a smoke run)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key as train.py --set does (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="LightGBM's seed (default 0; the pipeline's is "
                        "--set seed=N)")
    parser.add_argument("--out", type=Path, help="out and run folder (default: runs/gbdt-<dataset>-<date>-<time>)")
    parser.add_argument("--run-dir", type=Path, help="instead: a finished train.py run folder; the GBDT is fitted "
                        "for each of its folds (stages again from its config.yaml) and written beside each "
                        "fold's lists as gbdt.parquet")
    return parser


def config_from_args(args: argparse.Namespace):
    """The run's config as train.py builds it (defaults <- the spec's `defaults:` <- --set), with
    tracking off and only the stages the GBDT needs."""

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "runs" / f"gbdt-{Path(args.dataset).stem}-{stamp}"
    data = {"dataset": args.dataset}
    if args.max_events is not None:
        data["max_events"] = args.max_events
    overrides = {"data": data, "run_dir": str(out)}
    for text in args.overrides:
        overrides = merge(overrides, parse_override(text))
    overrides = merge(overrides, {"tracking": {"enabled": False}, "stages": STAGES})
    return load_config(None, overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    command = shlex.join(["python", "bench/gbdt_reference.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    if lgb is None:  # before the stages' minutes: a missing extra fails at once
        print(f"error: {MISSING}", file=sys.stderr)
        return 2
    if args.run_dir is not None:
        try:
            for name, info in gbdt_for_run(args.run_dir, seed=args.seed).items():
                print(f"{name}: held-out NDCG@10 {info['holdout_ndcg@10']:.4f}, {info['chosen']}; the run's "
                      f"candidate set reproduced: {info['same_candidates']}")
        except ShoppingMtlError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        config = config_from_args(args)
        # As pipeline.run does before any work: source names checked, determinism on.
        registry.check_names(config.candidates.quotas, config.baselines.names)
        state = pipeline.prepare_state(config)
        if state.config.deterministic:
            training.enable_determinism(state.config.seed)
        for name in STAGES:
            pipeline.run_stage(name, state)
        log.info("gbdt: stages done in %.0fs; fitting", time.perf_counter() - started)
        frame, info = gbdt_lists(state, seed=args.seed)
    except ShoppingMtlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ev = state.config.evaluation
    metrics = score_lists(frame, state.truth, "gbdt", ev.ks, ev.bootstrap_resamples, ev.bootstrap_seed)
    wall = time.perf_counter() - started
    state.write_list(frame, "gbdt.parquet")
    baselines = [f"baseline/{n}" for n in state.config.baselines.names]
    report = {"command": command, "dataset": state.info.get("dataset", args.dataset),
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "wall_s": round(wall, 1),
              "stage_timings_s": {k: round(v, 1) for k, v in state.timings.items()},
              "metrics": {**state.metrics, **metrics}, "gbdt": info}
    write_atomic(state.run_dir / "gbdt_metrics.json", json.dumps(report, indent=1, sort_keys=True, default=str))

    all_metrics = report["metrics"]
    print(f"\n{report['dataset']}: {int(all_metrics.get('eval/test_users', 0))} test users; GBDT {info['chosen']}, "
          f"held-out NDCG@10 {info['holdout_ndcg@10']:.4f}")
    print(pipeline.summary_table(all_metrics, ["gbdt", "retrieval", *baselines], HEADLINE))
    best = max(baselines, key=lambda n: all_metrics.get(f"{n}/ndcg@10", float("-inf")))
    if f"{best}/ndcg@10" in all_metrics and all_metrics[f"{best}/ndcg@10"] > 0:
        print(f"\ngbdt NDCG@10 over the best baseline ({best}): "
              f"{metrics['gbdt/ndcg@10'] / all_metrics[f'{best}/ndcg@10']:.3f}x")
    print(f"wall {wall:.0f}s; out folder: {state.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
