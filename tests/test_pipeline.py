"""End to end: train.py on the real samples, checked against an independent implementation."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import independent_protocol
from conftest import ROOT, BackgroundCli, run_cli, run_client, stand_in_server, start_early, write_spec
from mlflow_server import create_store
from shopping_mtl.config import load_config
from shopping_mtl.pipeline import run

TAOBAO_DIR = ROOT.parent / "shared" / "data" / "taobao_userbehavior_sample"
RUN_FILES = {"config.yaml", "metrics.json", "run_info.json", "baselines", "candidates.parquet",
             "candidate_set.parquet", "export"}


def check_against_independent(dataset: str, data_dir: Path, run_dir: Path) -> dict:
    """Score the run's baseline lists with the independent protocol; every figure must agree."""
    result = independent_protocol.evaluate(dataset, str(data_dir))
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        mismatches = independent_protocol.compare_run(str(run_dir), result["gt"], result["seen"])
    assert mismatches == 0, printed.getvalue()
    assert "MISSING" not in printed.getvalue()
    return result


@pytest.fixture(scope="module")
def ecomm_run_started(tmp_path_factory, mlflow_store):
    """`train.py` on the bundled EComm sample, started in the background as the module begins
    (the module's longest command, and no timing is asserted of it): the other tests run
    meanwhile. Every stage, the models kept short (their figures come from `python train.py`;
    see docs/DECISIONS.md): the two-tower model stops at 5 epochs (its early stopping would run
    about 9), the ranker learns from the validation day alone."""
    folder = tmp_path_factory.mktemp("ecomm")
    create_store(mlflow_store / "mlflow.db")  # its tables made once, not by two runs at a time
    started = BackgroundCli(folder, "train.py", "--run-dir", str(folder / "run"),
                            "--set", "ranking.compare_single_task=false", "--set", "retrieval.epochs=5",
                            "--set", "ranking.extra_days=0", "--set", "ranking.epochs=2")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module", autouse=True)
def start_the_ecomm_run_early(request):
    start_early(request, "ecomm_run_started")


@pytest.mark.skipif(not TAOBAO_DIR.is_dir(), reason="shared Taobao sample not beside the repository")
def test_train_on_taobao(tmp_path):
    config = load_config(overrides={"run_dir": str(tmp_path), "data": {"dataset": "taobao"},
                                    "evaluation": {"bootstrap_resamples": 20},
                                    "stages": ["data", "baselines"]})
    state = run(config)
    assert state.metrics["eval/test_users"] == 875
    assert state.metrics["data/events/truncated_last_line"] == 1
    assert state.metrics["baseline/popularity/recall@100"] == pytest.approx(0.011, abs=5e-4)
    assert state.metrics["baseline/user_history/recall@100"] == pytest.approx(0.19, abs=0.01)
    check_against_independent("taobao", TAOBAO_DIR, tmp_path)


def test_dataset_described_only_by_yaml(tmp_path):
    """A catalogue the project has never seen: Parquet events with other column names, millisecond
    times in a non-UTC zone, other behaviour words, and a headed CSV item table."""
    rng = np.random.default_rng(3)
    n = 400
    local = pd.Timestamp("2024-03-01 00:30", tz="Asia/Tokyo")  # = 2024-02-29 15:30 UTC
    offsets = np.sort(rng.integers(0, 4 * 86400, size=n))
    pd.DataFrame({
        "customer": [f"c{i}" for i in rng.integers(0, 30, size=n)],
        "sku": [f"s{i}" for i in rng.zipf(1.5, size=n) % 50],
        "action": rng.choice(["view", "wish", "order"], size=n, p=[0.8, 0.15, 0.05]),
        "ts_ms": (local.timestamp() + offsets) * 1000,
    }).to_parquet(tmp_path / "log.parquet")
    (tmp_path / "catalogue.csv").write_text("sku;family;cost\n" + "".join(f"s{i};f{i % 5};{i + 1}.5\n" for i in range(50)))
    spec = write_spec(tmp_path, """\
        name: my_shop
        events:
          paths: [log.parquet]
          user_id: customer
          item_id: sku
          behavior: action
          timestamp: ts_ms
          timestamp_format: unix
          timestamp_unit: ms
          behaviors: {view: click, wish: save, order: purchase}
        items:
          paths: [catalogue.csv]
          delimiter: ";"
          key: sku
          types: {family: string, cost: float}
        """, name="my_shop.yaml")
    # Every stage, each fit kept short: what is new here is the reading and the features.
    done = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(tmp_path / "run"), "-q",
                   "--set", "evaluation.bootstrap_resamples=50", "--set", "retrieval.epochs=2",
                   "--set", "ranking.epochs=2", "--set", "ranking.compare_single_task=false")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["dataset"] == "my_shop" and metrics["data/events"] == n
    assert metrics["data/items/rows"] == 50
    # Unix times are absolute, so the days are UTC days: the log starts 2024-02-29 15:30 UTC and
    # spans four days, so the test day is 2024-03-04 (UTC).
    assert info["split"]["test_start"] == "2024-03-04T00:00:00+00:00"
    assert metrics["eval/test_users"] > 0
    assert "baseline/covisit/recall@100" in metrics
    # Heads with few positives (a small shop's log) are named in the summary and run_info.json.
    positives = {t: metrics[f"ranker/{t}/training_positives"] for t in ("click", "save", "purchase")}
    weak = [t for t, n in positives.items() if n < 50]
    for task in weak:
        warning = (f"ranker: the {task} head had {positives[task]:,.0f} positive training rows (under 50): "
                   "its probabilities mean little")
        assert warning in info["warnings"] and warning in done.stdout
    assert "MLflow: run " in done.stdout and "make ui" in done.stdout


def test_max_events_keeps_whole_users(tmp_path):
    config = load_config(overrides={"run_dir": str(tmp_path), "data": {"max_events": 5000},
                                    "stages": ["data"]})
    state = run(config)
    events = state.dataset.events
    assert 4000 < len(events) <= 5000
    full = state.dataset.report.counts["data/events"]
    assert full == 80943
    # every kept user has as many events as in the full log
    kept = events["user_id"].value_counts()
    assert state.metrics["data/events_used"] == len(events)
    assert set(kept.index) and kept.sum() == len(events)


def test_help_explains_the_flags():
    done = run_cli("train.py", "--help")
    assert done.returncode == 0
    for flag in ("--dataset", "--run-dir", "--stages", "--max-events", "--set", "--on-bad-rows", "--data-root"):
        assert flag in done.stdout


def test_bundled_sample_is_byte_identical_to_its_source():
    """data/ecomm/README.md lists the git blob id of each file's uncompressed bytes."""
    import gzip
    import re

    readme = (ROOT / "data" / "ecomm" / "README.md").read_text()
    listed = dict(re.findall(r"\| `(\S+\.gz)` \| `[^`]+` \| `([0-9a-f]{40})`", readme))
    assert len(listed) == 3
    for name, blob in listed.items():
        raw = gzip.decompress((ROOT / "data" / "ecomm" / name).read_bytes())
        got = subprocess.run(["git", "hash-object", "--stdin"], input=raw, capture_output=True, check=True)
        assert got.stdout.decode().strip() == blob, name


def test_train_on_bundled_ecomm(ecomm_run_started):
    run_dir = ecomm_run_started.folder / "run"
    done = ecomm_run_started.result(timeout=900)
    assert done.returncode == 0, done.stderr
    assert "baseline/user_history" in done.stdout and "[" in done.stdout  # table with intervals
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval/test_users"] == 546
    assert metrics["data/events/duplicate_rows"] == 4270
    assert metrics["baseline/popularity/recall@100"] == pytest.approx(0.0559, abs=5e-4)
    assert metrics["baseline/user_history/recall@100"] == pytest.approx(0.38, abs=0.01)
    low = metrics["baseline/user_history/recall@100/ci95_low"]
    high = metrics["baseline/user_history/recall@100/ci95_high"]
    assert low < metrics["baseline/user_history/recall@100"] < high
    for name in ("popularity", "user_history", "covisit"):
        lists = pd.read_parquet(run_dir / "baselines" / f"{name}.parquet")
        assert list(lists.columns) == ["user_id", "rank", "item_id", "score"]
        assert lists.groupby("user_id").size().eq(100).all() and lists["user_id"].nunique() == 546
    candidates = pd.read_parquet(run_dir / "candidates.parquet")
    assert list(candidates.columns) == ["user_id", "rank", "item_id", "score"]
    assert candidates.groupby("user_id").size().max() == 100
    assert (run_dir / "export" / "retrieval" / "1" / "saved_model.pb").is_file()
    merged = pd.read_parquet(run_dir / "candidate_set.parquet")
    assert set(merged["source"]) == {"two_tower", "user_history", "covisit", "popularity"}
    assert not merged.duplicated(["user_id", "item_id"]).any()
    assert metrics["candidate_set/recall@520"] > 1.1 * metrics["baseline/user_history/recall@100"]
    final = pd.read_parquet(run_dir / "recommendations.parquet")
    assert final["user_id"].nunique() == 546 and final.groupby("user_id").size().max() == 100
    assert ((final[["p_click", "p_save", "p_purchase"]] > 0) & (final[["p_click", "p_save", "p_purchase"]] < 1)).all().all()
    assert "pipeline" in done.stdout and "retrieval_order" in done.stdout
    for name in ("ranker", "recommend"):
        assert (run_dir / "export" / name / "1" / "saved_model.pb").is_file()
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["split"]["test_start"].startswith("2019-06-19")
    assert len(info["data_fingerprint"]) == 64
    check_against_independent("ecomm", ROOT / "data" / "ecomm", run_dir)


@pytest.mark.parametrize("client", ["grpc", "rest"])
def test_the_client_examples_answer_against_the_ecomm_export(ecomm_run_started, client):
    """EComm's `recommend` signature has its user features besides the id, history and time:
    the clients build every input from it (was: five inputs, refused by the server)."""
    assert ecomm_run_started.result(timeout=900).returncode == 0
    export = ecomm_run_started.folder / "run" / "export" / "recommend" / "1"
    events = pd.read_csv(ROOT / "data" / "ecomm" / "ecomm_edge_train.txt.gz", sep="\t", header=None, dtype=str,
                         names=["user_id", "item_id", "behavior", "date"], nrows=200)
    user = events["user_id"].iloc[0]
    mine = events[events["user_id"] == user].head(3)
    seconds = pd.to_datetime(mine["date"], format="%Y%m%d", utc=True).astype("int64") // 10**9
    history = ",".join(f"{i}:click:{t}" for i, t in zip(mine["item_id"], seconds))
    with stand_in_server(export) as (grpc_address, rest_address):
        server = grpc_address if client == "grpc" else rest_address
        done = run_client(client, server, "--user", user, "--history", history, "--feature", "gender=1",
                          "--feature", "income=5200")
        assert done.returncode == 0, done.stderr[-2000:]
        rows = [line.split() for line in done.stdout.splitlines()[1:]]
        assert len(rows) == 10 and all(float(r[2]) >= float(rows[-1][2]) for r in rows)
        bare = run_client(client, server, "--user", "someone-new")  # every user feature missing
        assert bare.returncode == 0 and len(bare.stdout.splitlines()) == 11, bare.stderr[-2000:]
