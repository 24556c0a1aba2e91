"""The ranker's quality against how many training lists it learns from (`ranking.max_training_lists`).

The data and retrieval stages run once (`pipeline.run_stage`); then, for every cap and seed,
the ranker's rows are built (`prepare_ranking`) and it is fitted, calibrated and weighted
(`fit_ranker`) as `train.py` does. The figure is the NDCG@10 (any engagement) of the held-out
users' lists on the validation day, the one day every cap builds with all its held-out users, so
it is comparable across caps (the held-out user-days of earlier days come and go with the cap);
each list is the user's top `ranking.list_size` by the fitted value score, ties by item id, as
the final list is ordered. Validation data only: the test period is never read by this script's
figures.

Usage:
  python bench/lists_curve.py --dataset ecomm --caps 250,500,1000,none --seeds 0
  python bench/lists_curve.py --dataset taobao --caps 1000,none --seeds 0,1 --out /tmp/curve.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project imports from here on


from shopping_mtl import pipeline
from shopping_mtl.config import load_config
from shopping_mtl.data.split import GroundTruth
from shopping_mtl.evaluation import score_lists
from shopping_mtl.ranking import model as model_lib
from shopping_mtl.ranking.calibration import calibrate
from shopping_mtl.ranking.stage import fit_ranker, prepare_ranking
from shopping_mtl.ranking.value import value_score
from shopping_mtl.scale.top_lists import top_lists


def parse_caps(text: str) -> list[int | None]:
    caps = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("none", "null"):
            caps.append(None)
        elif part.isdigit() and int(part) > 0:
            caps.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"a cap is a positive integer or 'none', got {part!r}")
    return caps


def validation_day_ndcg(data, fitted, rconfig) -> tuple[float, int]:
    """NDCG@10 (any engagement) of the validation day's held-out users' lists, and their number."""
    day0 = data.holdout_rows["user_id"].str.endswith("@0").to_numpy()
    users = tuple(u for u in data.holdout_truth.users if u.endswith("@0"))
    truth = GroundTruth(users, {g: {u: v for u, v in items.items() if u.endswith("@0")}
                                for g, items in data.holdout_truth.items.items()},
                        {u: v for u, v in data.holdout_truth.seen.items() if u.endswith("@0")})
    inputs = {k: v[day0] for k, v in data.holdout_inputs.items()}
    p = calibrate(model_lib.predict(fitted.model.scorer, inputs), fitted.platt, rconfig.architecture == "esmm")
    held = data.holdout_rows[day0]
    lists = top_lists(held["user_id"].to_numpy(), held["item_id"].to_numpy(), value_score(p, fitted.weights), p,
                      rconfig.list_size)
    return score_lists(lists, truth, "h", (10,), n_resamples=0).get("h/ndcg@10", float("nan")), len(users)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ecomm", help="ecomm (default), taobao, or a dataset spec YAML")
    parser.add_argument("--caps", type=parse_caps, default=parse_caps("250,500,1000,none"),
                        help="training-list caps, comma-separated, 'none' for no cap (250,500,1000,none)")
    parser.add_argument("--seeds", default="0", help="ranker seeds, comma-separated (0)")
    parser.add_argument("--max-events", type=int, help="read only this many events (whole users; for smoke runs)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    work = Path(tempfile.mkdtemp(prefix="lists-curve-"))
    config = load_config(overrides={"data": {"dataset": args.dataset, "max_events": args.max_events},
                                    "run_dir": str(work / "run"), "tracking": {"enabled": False},
                                    "stages": ["data", "retrieval"],  # the ranker is fitted below, per cap
                                    "ranking": {"compare_single_task": False}})
    state = pipeline.prepare_state(config)
    pipeline.run_stage("data", state)
    pipeline.run_stage("retrieval", state)
    rows_out = []
    for cap in args.caps:
        for seed in seeds:
            rconfig = dataclasses.replace(config.ranking, max_training_lists=cap)
            started = time.perf_counter()
            data = prepare_ranking(state, rconfig)
            fitted = fit_ranker(state.retrieval.data.features, data, rconfig, seed)
            ndcg, n_users = validation_day_ndcg(data, fitted, rconfig)
            row = (cap, seed, data.n_fit_lists, data.n_fit_rows, data.n_days, n_users, ndcg,
                   time.perf_counter() - started)
            rows_out.append(row)
            print(f"cap {cap}, seed {seed}: {row[2]:,} lists, {row[3]:,} rows, {row[4]} days; validation-day "
                  f"held-out NDCG@10 {ndcg:.4f} on {n_users} users ({row[7]:.0f} s)", flush=True)
    lines = [f"### Ranker quality against training lists ({args.dataset})", "",
             f"- command: `python bench/lists_curve.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores", "",
             "| max_training_lists | seed | training lists | training rows | ranking days | validation-day "
             "held-out users | their NDCG@10 | seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {'none' if c is None else f'{c:,}'} | {s} | {n:,} | {r:,} | {d} | {u} | {v:.4f} | {t:.0f} |"
              for c, s, n, r, d, u, v, t in rows_out]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
