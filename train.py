#!/usr/bin/env python
"""Train and evaluate shopping_mtl on a dataset: parse the config, then run the pipeline.

Examples:
  python train.py                                   # EComm sample bundled in data/ecomm
  python train.py --dataset taobao --run-dir runs/taobao
  python train.py --dataset features/my_shop.yaml --data-root /data/my_shop --max-events 50000
  python train.py --stages data,baselines --on-bad-rows skip --set evaluation.bootstrap_resamples=200
  python train.py --set ranking.architecture=mmoe --set ranking.compare_single_task=false
  python train.py --stages data,baselines,retrieval,candidates  # stop at the candidate set
"""

from __future__ import annotations

import argparse
import sys

import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from shopping_mtl import console
from shopping_mtl.config import STAGES, load_config, merge, parse_override
from shopping_mtl.errors import ShoppingMtlError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description=(
            "Read a shopping event log, split it by calendar day (test = last day, validation = "
            "the day before), score the baselines (popularity, the user's own items, "
            "co-visitation), train the two-tower retrieval model, merge the candidate sources "
            "into the candidate set, train the calibrated multi-task ranker (click, save, "
            "purchase) and export the retrieval, "
            "ranker and recommend SavedModels for TF Serving. Leaves config.yaml, metrics.json, "
            "run_info.json, baselines/*.parquet, candidates.parquet, candidate_set.parquet, "
            "recommendations.parquet and export/<model>/<version>/ in the run folder, and prints "
            "the final list against retrieval order and each baseline with 95% bootstrap "
            "intervals."
        ),
        epilog=__doc__.split("Examples:", 1)[1].join(["Examples:", ""]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", help="ecomm (default, bundled), taobao, taobao_timeslice, "
                        "or the path of a dataset spec YAML (see features/)")
    parser.add_argument("--run-dir", help="folder for the run's outputs "
                        "(default: runs/<dataset>-<date>-<time>); a folder holds one configuration's run: "
                        "run again with the same configuration, an interrupted run resumes and a finished one "
                        "is reproduced; another configuration is refused (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir even if it has "
                        "another configuration: its files, figures and backups are removed first (not with "
                        "--tune); its published exports stay, and this run publishes the next version")
    parser.add_argument("--config", help="a YAML file of config values (overridden by the flags)")
    parser.add_argument("--data-root", help="folder the spec's relative data paths start from "
                        "(default: the spec's own 'root')")
    parser.add_argument("--stages", help=f"comma-separated stages to run, of: {', '.join(STAGES)} "
                        "(default: all, in that order; data always runs; e.g. leave out export to "
                        "write no SavedModels, or stop at candidates)")
    parser.add_argument("--max-events", type=int, help="keep whole users until this many events "
                        "(a quick smoke run)")
    parser.add_argument("--on-bad-rows", choices=("fail", "skip"), help="on malformed rows: fail "
                        "(default) or skip them, counting them in metrics.json and listing them "
                        "in bad_rows.csv")
    parser.add_argument("--seed", type=int, help="seed of everything random (default 42)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set evaluation.ks=[10,20] "
                        "--set baselines.covisit_recent_items=10 (repeatable)")
    parser.add_argument("--tune", metavar="STUDY", help="run a Keras Tuner search instead of one training: "
                        "a study YAML such as tuning/ranker.yaml or tuning/retrieval.yaml; every trial is a "
                        "child MLflow run; running it again with the same --run-dir resumes the search")
    parser.add_argument("--max-trials", type=int, help="with --tune: at most this many trials, whatever the "
                        "oracle (a Hyperband round counts as one; default: the study's budget)")
    parser.add_argument("--no-final-run", action="store_true", help="with --tune: do not train the best "
                        "config with every stage after the search (its test figures and registered exports)")
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")
    chatter.add_argument("-v", "--verbose", action="store_true", help="also TensorFlow's, MLflow's and "
                         "Keras Tuner's own log lines (hidden by default: start-up notices, warnings about "
                         "the untrained heads of single-task comparison models)")
    return parser


def config_from_args(args: argparse.Namespace):
    overrides = {}
    flags = {
        "run_dir": args.run_dir,
        "seed": args.seed,
        "stages": args.stages,
        "data": {"dataset": args.dataset, "root": args.data_root, "max_events": args.max_events,
                 "on_bad_rows": args.on_bad_rows},
    }
    for key, value in flags.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
            if value:
                overrides[key] = value
        elif value is not None:
            overrides[key] = value
    for text in args.overrides:
        overrides = merge(overrides, parse_override(text))
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.overwrite and args.tune:
        # A search's folder holds its tuner state, shared with its workers: it resumes, never
        # replaced from under them.
        parser.error("--overwrite replaces one training's run folder and does not apply to --tune "
                     "(a search resumes from its folder): start another search in a new --run-dir")
    console.configure_logging(console.QUIET if args.quiet else console.VERBOSE if args.verbose else console.NORMAL)
    try:
        config = config_from_args(args)
        # Imported once the flags and the config are known good: they bring TensorFlow, MLflow
        # and Keras Tuner (~6 s), and --help or a bad flag should answer at once.
        with console.quiet_native_stderr(enabled=not args.verbose):
            from shopping_mtl import pipeline, tuning

        if args.tune:
            result = tuning.run_search(config, args.tune, args.max_trials, final_run=not args.no_final_run)
            if result is None:  # a distributed search's worker: the chief reports
                return 0
            print(tuning.table(result))
            if result.final_metrics:
                print("\nthe best config, every stage (test day):")
                print(pipeline.summary_table(result.final_metrics, pipeline.summary_lists(config)))
            best = result.best
            print(f"\nbest: trial {best['trial_id']}, {result.study.objective} = {best['objective']:.4f}; "
                  f"{len(result.trials)} trials in {result.minutes:.1f} minutes; the best config is "
                  f"best_config.yaml in the run folder")
            if result.ui_address:
                print(f"MLflow: the search's runs, best first: {result.ui_address} (after `make ui`)")
            return 0
        state = pipeline.run(config, overwrite=args.overwrite)
    except ShoppingMtlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    names = pipeline.summary_lists(state.config)
    print()
    folds = state.info.get("folds", [])
    pooled = f" over {len(folds)} test days ({', '.join(folds)}), pooled" if len(folds) > 1 else ""
    print(f"{state.info['dataset']}: {int(state.metrics.get('eval/test_users', 0))} test users{pooled}, "
          f"cold-item share {state.metrics.get('eval/cold_item_share', float('nan')):.3f}")
    print(pipeline.summary_table(state.metrics, names))
    ratios = pipeline.summary_ratios(state.metrics, state.info.get("best_baseline", {}))
    if ratios:
        print(ratios)
    size = state.config.candidates.size
    if f"candidate_set/recall@{size}" in state.metrics:
        m = state.metrics
        key = f"candidate_set/recall@{size}"
        interval = (f" [{m[key + '/ci95_low']:.3f},{m[key + '/ci95_high']:.3f}]"
                    if key + "/ci95_low" in m else "")
        # recall@<size> of a set cut at its quotas' sum is the recall of the whole set.
        print(f"\ncandidate set for the ranker: {m['candidate_set/mean_size']:.0f} items per user (at most "
              f"{size}, the sum of the quotas); recall of the whole set {m[key]:.4f}{interval}, "
              f"new_gt {m.get(f'candidate_set/new_gt/recall@{size}', float('nan')):.4f}")
    warnings = [*state.info.get("split", {}).get("warnings", []), *state.info.get("warnings", [])]
    if warnings:
        print("\nwarnings (also in run_info.json):")
        for warning in warnings:
            print(f"  - {warning}")
    print(f"\nrun folder: {state.run_dir}")
    tracked = state.info.get("mlflow")
    if tracked:
        print(f"MLflow: run {tracked['run_id']} in {tracked['tracking_uri']} "
              f"(`make ui` opens the project's store at http://127.0.0.1:5000)")
    if state.tracking_error:
        print(f"error: the run is complete on disk in {state.run_dir} (exports included), but recording it "
              f"in MLflow failed: {state.tracking_error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
