"""The stages of a run, in order: data -> baselines (-> retrieval -> ranking -> export, later).

`run(config)` reads the dataset, splits it by the protocol, scores the baselines on the test
users, and leaves in the run folder: `config.yaml` (the resolved configuration), `metrics.json`
(one flat object of figures), `run_info.json` (dataset, split boundaries, timings),
`baselines/<name>.parquet`, and `bad_rows.csv` when rows were skipped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from shopping_mtl.baselines import run_baseline
from shopping_mtl.config import Config
from shopping_mtl.data.readers import Dataset, read_dataset, spec_files
from shopping_mtl.data.spec import load_spec
from shopping_mtl.data.split import GroundTruth, Split, cold_item_shares, ground_truth, split_events
from shopping_mtl.evaluation import score_lists

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Log the start and end of a stage and record its wall time."""
    log.info("stage %s: start", name)
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started
    log.info("stage %s: done in %.1fs", name, timings[name])


def write_atomic(path: Path, text: str) -> None:
    """Write text to a sibling temp file and rename it into place: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def limit_events(events: pd.DataFrame, max_events: int, seed: int) -> pd.DataFrame:
    """Keep whole users, in a fixed pseudo-random order, until `max_events` events are kept.

    Whole users keep histories and every day intact, so a smoke run still has a real split.
    """
    users = pd.Index(events["user_id"].unique())
    order = np.argsort(pd.util.hash_array(users.to_numpy(dtype=object), hash_key=f"{seed:016d}"[:16]),
                       kind="stable")
    counts = events["user_id"].value_counts().reindex(users[order]).to_numpy()
    keep_n = max(1, int(np.searchsorted(np.cumsum(counts), max_events, side="right")))
    kept = set(users[order][:keep_n])
    return events[events["user_id"].isin(kept)].reset_index(drop=True)


def data_fingerprint(spec_path: Path, files: list[Path]) -> str:
    """SHA-256 over the spec and the bytes of every input file: which data a figure came from."""
    digest = hashlib.sha256(spec_path.read_bytes())
    for path in files:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class RunState:
    """What the stages hand each other."""

    config: Config
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    dataset: Dataset | None = None
    split: Split | None = None
    truth: GroundTruth | None = None
    retrieval: dict | None = None  # the fitted two-tower model, its data and validation lists
    candidate_set: pd.DataFrame | None = None  # the merged candidates for test users

    def write_list(self, frame: pd.DataFrame, name: str) -> Path:
        """Write a list file into the run folder atomically."""
        path = self.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(frame, path)
        return path


def default_run_dir(dataset: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return PROJECT_ROOT / "runs" / f"{Path(dataset).stem}-{stamp}"


def run_data(state: RunState) -> None:
    """Read, validate, limit and split the dataset; compute the ground truth."""
    config = state.config
    spec = load_spec(config.data.dataset, config.data.root)
    dataset = read_dataset(spec, config.data.on_bad_rows)
    report = dataset.report
    if report.n_bad:
        path = state.run_dir / "bad_rows.csv"
        report.bad_rows_frame().to_csv(path, index=False)
        log.warning("%d skipped rows are listed in %s", report.n_bad, path)
    state.metrics.update(report.metrics())
    events = dataset.events
    if config.data.max_events is not None and len(events) > config.data.max_events:
        events = limit_events(events, config.data.max_events, config.seed)
        log.info("--max-events %d: kept %d events of %d users", config.data.max_events,
                 len(events), events["user_id"].nunique())
        dataset.events = events
    split = split_events(events, config.split.min_days, config.split.quantile)
    truth = ground_truth(split)
    state.dataset, state.split, state.truth = dataset, split, truth
    state.metrics.update({
        "data/events_used": float(len(events)),
        "data/distinct_users": float(events["user_id"].nunique()),
        "data/distinct_items": float(events["item_id"].nunique()),
        "split/train_events": float(len(split.train)),
        "split/validation_events": float(len(split.validation)),
        "split/test_events": float(len(split.test)),
        "eval/test_users": float(len(truth.users)),
        **cold_item_shares(split, truth),
    })
    input_files = spec_files(spec)
    state.info.update({
        "dataset": spec.name,
        "spec": str(spec.path),
        "data_root": str(spec.root),
        "synthetic": spec.synthetic,
        "data_fingerprint": data_fingerprint(spec.path, input_files),
        "input_files": [str(p) for p in input_files],
        "split": split.describe(),
    })
    log.info("split (%s): train %d, validation %d, test %d events; test from %s; %d test users",
             split.method, len(split.train), len(split.validation), len(split.test),
             split.test_start.date(), len(truth.users))
    if not truth.users:
        log.warning("no test users: no user has events both in train and on the test day")


def run_baselines(state: RunState) -> None:
    """Score each baseline on the test users from train + validation events only."""
    config = state.config
    out_dir = state.run_dir / "baselines"
    out_dir.mkdir(parents=True, exist_ok=True)
    history = state.split.history
    for name in config.baselines.names:
        started = time.perf_counter()
        lists = run_baseline(name, history, state.truth.users, config.evaluation.list_size,
                             config.baselines, now=state.split.test_start)
        write_parquet_atomic(lists, out_dir / f"{name}.parquet")
        state.metrics.update(score_lists(
            lists, state.truth, f"baseline/{name}", config.evaluation.ks,
            config.evaluation.bootstrap_resamples, config.evaluation.bootstrap_seed))
        log.info("baseline %s: %d rows for %d users, scored in %.1fs", name, len(lists),
                 lists["user_id"].nunique(), time.perf_counter() - started)


def run_retrieval(state: RunState) -> None:
    """Train the two-tower model, retrieve for validation and test users, merge the sources."""
    from shopping_mtl.retrieval.stage import run_retrieval_stage

    run_retrieval_stage(state)


def run_ranking(state: RunState) -> None:
    """Train the multi-task ranker and write the final list."""
    from shopping_mtl.ranking.stage import run_ranking_stage

    run_ranking_stage(state)


STAGE_FUNCTIONS = {"data": run_data, "baselines": run_baselines, "retrieval": run_retrieval,
                   "ranking": run_ranking}


def summary_table(metrics: dict[str, float], names: list[str]) -> str:
    """Headline figures side by side, each with its 95% interval."""
    columns = ["recall@10", "recall@100", "ndcg@10", "purchase/ndcg@10", "new_gt/recall@100"]
    names = [name for name in names if f"{name}/recall@100" in metrics]
    header = f"{'list':<26}" + "".join(f"{c:>26}" for c in columns)
    rows = [header, "-" * len(header)]
    for name in names:
        cells = []
        for column in columns:
            key = f"{name}/{column}"
            if key in metrics:
                low, high = metrics.get(f"{key}/ci95_low"), metrics.get(f"{key}/ci95_high")
                interval = f" [{low:.3f},{high:.3f}]" if low is not None else ""
                cells.append(f"{metrics[key]:.4f}{interval}")
            else:
                cells.append("-")
        rows.append(f"{name:<26}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(rows)


def run(config: Config) -> RunState:
    """Run the configured stages and write the run folder."""
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.data.dataset)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, run_dir=str(run_dir))
    state = RunState(config=config, run_dir=run_dir)
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    log.info("run folder: %s", run_dir)
    stages = list(config.stages)
    if "data" not in stages:
        # Every later stage needs the data; it is cheap next to them.
        stages.insert(0, "data")
    started = time.perf_counter()
    for name in stages:
        with stage(name, state.timings):
            STAGE_FUNCTIONS[name](state)
    state.info["timings_s"] = {k: round(v, 3) for k, v in state.timings.items()}
    state.info["wall_s"] = round(time.perf_counter() - started, 3)
    write_atomic(run_dir / "metrics.json", json.dumps(state.metrics, indent=1, sort_keys=True))
    write_atomic(run_dir / "run_info.json", json.dumps(state.info, indent=1, sort_keys=True))
    return state
