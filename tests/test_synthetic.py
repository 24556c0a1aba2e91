"""Tests of the SYNTHETIC event generator: read-back, calibration, determinism, chunking, memory,
the synthetic label, profile fitting and the CLI. Sizes stay at 20k-1M events (seconds each)."""

from __future__ import annotations

import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tools import synthetic
from tools.synthetic import (
    BEHAVIORS,
    GENERATOR_VERSION,
    SyntheticProfile,
    default_profile,
    fit_profile,
    generate,
    load_profile,
    rank_frequency_exponent,
)

REPO = Path(__file__).resolve().parents[1]
N_EVENTS = 100_000


def read_events(folder: Path) -> pd.DataFrame:
    shards = sorted(folder.glob("events-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "ds"
    generate(out, N_EVENTS, seed=0, chunk_events=40_000)
    return out


@pytest.fixture(scope="module")
def events(dataset) -> pd.DataFrame:
    return read_events(dataset)


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def test_output_reads_back_with_columns_dtypes_and_exact_rows(dataset, events):
    assert sorted(p.name for p in dataset.iterdir()) == [
        "README.md", "events-00000.parquet", "events-00001.parquet", "events-00002.parquet",
        "items.parquet", "spec.yaml",
    ]
    assert list(events.columns) == ["user_id", "item_id", "behavior", "timestamp", "category"]
    assert len(events) == N_EVENTS
    for column in ("user_id", "item_id", "behavior", "category"):
        assert pd.api.types.is_string_dtype(events[column]), column
    assert events["timestamp"].dtype == np.int64
    assert set(events["behavior"]) == set(BEHAVIORS)
    assert events.notna().all().all()

    # The span is the profile's 10 days from its start date, in UTC seconds.
    start = pd.Timestamp(default_profile().activity.start_date, tz="UTC").timestamp()
    assert events["timestamp"].min() >= start
    assert events["timestamp"].max() < start + 10 * 86_400
    # Each user's history is contiguous and in time order.
    assert events["user_id"].ne(events["user_id"].shift()).sum() == events["user_id"].nunique()
    assert (events.groupby("user_id", sort=False)["timestamp"].diff().dropna() >= 0).all()

    items = pd.read_parquet(dataset / "items.parquet")
    assert list(items.columns) == ["item_id", "category", "brand", "price"]
    assert items["price"].dtype == np.float64 and (items["price"] > 0).all()
    assert items["item_id"].is_unique
    # Every event's item is in the catalogue, with the same category.
    joined = events.merge(items, on="item_id", how="left", suffixes=("", "_item"))
    assert joined["category_item"].notna().all()
    assert (joined["category"] == joined["category_item"]).all()


def test_statistics_match_the_profile(events):
    profile = default_profile()

    shares = events["behavior"].value_counts(normalize=True)
    for name in BEHAVIORS:
        expected = getattr(profile.behaviors.overall, name)
        assert shares[name] == pytest.approx(expected, abs=0.02), name

    # Lognormal events per user: the median is exp(mu) (~36.5; the real sample's is 37).
    median = events.groupby("user_id").size().median()
    assert median == pytest.approx(math.exp(profile.activity.events_per_user_log_mu), rel=0.15)

    item_exponent = rank_frequency_exponent(events["item_id"].value_counts().to_numpy())
    assert item_exponent == pytest.approx(profile.popularity.item_exponent, abs=0.06)
    category_exponent = rank_frequency_exponent(events["category"].value_counts().to_numpy())
    assert category_exponent == pytest.approx(profile.popularity.category_exponent, abs=0.1)

    repeat = events.duplicated(["user_id", "item_id"]).mean()
    assert repeat == pytest.approx(profile.engagement.repeat_share, abs=0.03)

    # Category affinity: a user's events concentrate in a few categories (real sample: 0.82 of
    # a user's events fall in their top 3 categories), far above what popularity alone gives.
    per_user_cat = events.groupby(["user_id", "category"]).size()
    top3 = per_user_cat.groupby(level=0).apply(lambda s: s.nlargest(3).sum() / s.sum())
    assert top3.mean() > 0.75


def test_repeats_and_purchases_are_linked(events):
    # Repeat engagement is strong: purchases are far more common on an item already touched.
    repeat = events.duplicated(["user_id", "item_id"])
    purchase = events["behavior"] == "purchase"
    assert purchase[repeat].mean() > 3 * purchase[~repeat].mean()


# --------------------------------------------------------------------------------------------
# Determinism, chunking, memory
# --------------------------------------------------------------------------------------------


def test_same_seed_and_chunk_size_give_identical_bytes(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(first, 20_000, seed=3, chunk_events=8_000)
    generate(second, 20_000, seed=3, chunk_events=8_000)
    generate(other, 20_000, seed=4, chunk_events=8_000)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    shard = "events-00000.parquet"
    assert (first / shard).read_bytes() != (other / shard).read_bytes()


def test_chunk_size_moves_only_shard_boundaries(tmp_path):
    generate(tmp_path / "one", 60_000, seed=1, chunk_events=1_000_000)
    generate(tmp_path / "many", 60_000, seed=1, chunk_events=7_000)
    shards = sorted((tmp_path / "many").glob("events-*.parquet"))
    assert len(shards) == 9  # ceil(60_000 / 7_000)
    rows = [pq.ParquetFile(p).metadata.num_rows for p in shards]
    assert rows == [7_000] * 8 + [4_000]
    pd.testing.assert_frame_equal(read_events(tmp_path / "one"), read_events(tmp_path / "many"))
    items = [(tmp_path / name / "items.parquet").read_bytes() for name in ("one", "many")]
    assert items[0] == items[1]


def _peak_bytes(out: Path, n_events: int, chunk_events: int) -> int:
    """Peak of numpy/Python (tracemalloc) plus Arrow (a proxy pool's high-water mark) memory."""
    old_pool = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(old_pool)
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        generate(out, n_events, seed=0, chunk_events=chunk_events)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(old_pool)
    return python_peak + pool.max_memory()


def test_memory_stays_flat_as_events_grow(tmp_path):
    small = _peak_bytes(tmp_path / "small", 100_000, 20_000)
    big = _peak_bytes(tmp_path / "big", 1_000_000, 100_000)
    data = sum(pq.read_table(p).nbytes for p in (tmp_path / "big").glob("events-*.parquet"))
    # 10x the events: the peak stays at one block of users (~18 MB vs ~45 MB of events).
    assert big < 1.5 * small, (small, big)
    assert big < 0.5 * data, (big, data)


# --------------------------------------------------------------------------------------------
# The synthetic label and the dataset spec
# --------------------------------------------------------------------------------------------


EXPECTED_SPEC = {
    "name": f"synthetic-{N_EVENTS}",
    "synthetic": True,
    "root": ".",
    "events": {
        "paths": ["events-*.parquet"],
        "format": "parquet",
        "user_id": "user_id",
        "item_id": "item_id",
        "behavior": "behavior",
        "timestamp": "timestamp",
        "timestamp_format": "unix",
        "timestamp_unit": "s",
        "timezone": "UTC",
        "behaviors": {"click": "click", "save": "save", "purchase": "purchase"},
        "item_columns": {"category": "string"},
    },
    "items": {
        "paths": ["items.parquet"],
        "format": "parquet",
        "key": "item_id",
        "types": {"category": "string", "brand": "string", "price": "float"},
    },
    "features": {
        "history_length": 20,
        "user": {"user_id": {"type": "id"}},
        "item": {
            "item_id": {"type": "id"},
            "category": {"type": "categorical"},
            "brand": {"type": "categorical"},
            "price": {"type": "numeric", "transform": "log1p", "buckets": 10},
        },
        "context": ["hour", "weekday"],
    },
}


def test_synthetic_label_in_readme_spec_and_parquet_metadata(dataset):
    readme = (dataset / "README.md").read_text()
    assert "SYNTHETIC" in readme
    assert f"| generator version | {GENERATOR_VERSION} |" in readme
    assert "| seed | 0 |" in readme
    assert "python -m tools.synthetic generate --events 100000 --seed 0" in readme
    assert "events_per_user_log_mu" in readme  # the profile is written out

    spec = yaml.safe_load((dataset / "spec.yaml").read_text())
    description = spec.pop("description")
    assert description.startswith("SYNTHETIC events from tools.synthetic (seed 0)")
    assert spec == EXPECTED_SPEC

    for path in sorted(dataset.glob("*.parquet")):
        metadata = pq.read_schema(path).metadata
        assert metadata[b"synthetic"] == b"true", path.name
        assert b'"seed": 0' in metadata[b"shopping_mtl.synthetic"]


def test_spec_loads_with_the_project_reader(dataset):
    # The project's reader is written in parallel; this checks the two agree while both exist.
    load_spec = getattr(pytest.importorskip("shopping_mtl.data.spec"), "load_spec", None)
    if load_spec is None:
        pytest.skip("shopping_mtl.data.spec has no load_spec")
    spec = load_spec(str(dataset / "spec.yaml"))
    assert spec.synthetic is True
    assert spec.root == dataset.resolve()
    assert spec.events.timestamp_format == "unix"


# --------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------


def test_profile_round_trips_through_yaml(tmp_path):
    profile = default_profile()
    path = synthetic.save_profile(profile, tmp_path / "p.yaml", header="test")
    assert load_profile(path) == profile
    assert (tmp_path / "p.yaml").read_text().startswith("# test\n")


def test_profile_names_an_unknown_key():
    raw = default_profile().to_dict()
    raw["engagement"]["repeats"] = 0.5
    with pytest.raises(ValueError, match="profile.engagement has unknown key 'repeats'"):
        SyntheticProfile.from_dict(raw)


def test_rank_frequency_exponent_of_an_exact_power_law():
    # counts = 10_000 * r**-0.8 for r = 1..500 lie on a line of slope -0.8 in log-log.
    ranks = np.arange(1, 501)
    assert rank_frequency_exponent(np.round(10_000 * ranks**-0.8)) == pytest.approx(0.8, abs=0.01)


def test_fit_profile_recovers_a_synthetic_log(events, dataset):
    canonical = pd.DataFrame(
        {
            "user_id": events["user_id"],
            "item_id": events["item_id"],
            "event": events["behavior"],
            "timestamp": pd.to_datetime(events["timestamp"], unit="s", utc=True),
        }
    )
    items = pd.read_parquet(dataset / "items.parquet")
    fitted = fit_profile(canonical, items, calibrate_generator=False)
    truth = default_profile()
    assert fitted.scale.events == N_EVENTS
    assert fitted.activity.span_days == 10
    assert fitted.activity.start_date == truth.activity.start_date
    assert fitted.activity.events_per_user_log_mu == pytest.approx(
        truth.activity.events_per_user_log_mu, abs=0.1
    )
    # Purchases are ~3% of first touches and ~14% of repeats, in the sample and here.
    first_touch, repeat = fitted.behaviors.first_touch, fitted.behaviors.repeat
    assert first_touch.purchase == pytest.approx(truth.behaviors.first_touch.purchase, abs=0.01)
    assert repeat.purchase == pytest.approx(truth.behaviors.repeat.purchase, abs=0.02)
    assert fitted.catalog.price_log_mu == pytest.approx(truth.catalog.price_log_mu, abs=0.15)
    assert fitted.activity.hour_shares is not None
    assert np.argmax(fitted.activity.hour_shares) == np.argmax(truth.activity.hour_shares)


def test_fit_profile_names_a_missing_column():
    frame = pd.DataFrame(
        {"user_id": ["u"], "item_id": ["i"], "timestamp": [pd.Timestamp(0, tz="UTC")]}
    )
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['event'\]"):
        fit_profile(frame, None)


# --------------------------------------------------------------------------------------------
# Argument checks and the CLI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_events": 0}, "n_events must be a positive integer, got 0"),
        ({"n_events": 2.5}, "n_events must be a positive integer, got 2.5"),
        ({"n_events": 10, "chunk_events": -1}, "chunk_events must be a positive integer, got -1"),
        ({"n_events": 10, "n_days": 0}, "n_days must be a positive integer, got 0"),
        ({"n_events": 10, "seed": -1}, "seed must be an integer >= 0, got -1"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_generate_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match=f"output folder {tmp_path} exists and is not empty"):
        generate(tmp_path, 10)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.synthetic", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_cli_rejects_bad_arguments_without_traceback(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    new, full = str(tmp_path / "a"), str(tmp_path / "full")
    cases = [
        (["--events", "0", "--out", new], "argument --events: must be a positive integer, got '0'"),
        (["--events", "many", "--out", new], "--events: must be a positive integer, got 'many'"),
        (["--events", "10", "--out", new, "--chunk-events", "-3"], "argument --chunk-events"),
        (["--events", "10", "--out", full], f"--out {full} exists and is not empty"),
    ]
    for args, message in cases:
        result = run_cli("generate", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "a").exists()


def test_cli_generates_with_progress_on_stderr(tmp_path):
    out = tmp_path / "cli"
    result = run_cli(
        "generate", "--events", "5000", "--out", str(out), "--seed", "2", "--chunk-events", "2000"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out / "spec.yaml")
    assert "synthetic: 5,000 / 5,000 events (100%)" in result.stderr
    assert "events/s" in result.stderr
    assert len(read_events(out)) == 5000
    assert "generate --events 5000 --out" in (out / "README.md").read_text()


def test_cli_help_explains_the_command():
    result = run_cli("generate", "--help")
    assert result.returncode == 0
    for word in ("--events", "--out", "--seed", "--days", "--chunk-events", "synthetic: true"):
        assert word in result.stdout, word
