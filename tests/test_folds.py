"""Rolling-origin evaluation: fold cuts, pooled figures, the paired ratio against the best
baseline, and a run of several test days checked by the independent protocol."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

import independent_protocol
from conftest import ROOT, run_cli
from shopping_mtl.config import load_config
from shopping_mtl.data.split import GroundTruth, fold_cuts
from shopping_mtl.errors import ConfigError, DataError
from shopping_mtl.evaluation import pool, score_lists, summarize, user_values, versus_best
from shopping_mtl.pipeline import run
from tools import synthetic


def _events(stamps) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.to_datetime(stamps, utc=True)})


def test_calendar_folds_are_the_last_days_present_each_cut_after_its_test_day():
    events = _events(["2020-01-01 10:00", "2020-01-02 00:00", "2020-01-04 05:00", "2020-01-05 23:00",
                      "2020-01-07 01:00"])
    folds = fold_cuts(events, 3)
    # Days without events (01-03, 01-06) are no test days: the last three days present are.
    assert [f.name for f in folds] == ["2020-01-04", "2020-01-05", "2020-01-07"]
    assert [f.end for f in folds] == [pd.Timestamp("2020-01-05", tz="UTC"), pd.Timestamp("2020-01-06", tz="UTC"), None]
    assert fold_cuts(events, 1)[0].name == "2020-01-07" and fold_cuts(events, 1)[0].end is None
    with pytest.raises(DataError, match="test_days=4 needs at least 6 days"):
        fold_cuts(events, 4)


def test_short_logs_get_quantile_folds_each_dropping_one_test_share():
    events = _events(pd.date_range("2020-01-01", periods=100, freq="min"))
    folds = fold_cuts(events, 3, quantile=0.2)
    assert [f.name for f in folds] == ["1", "2", "3"]
    kept = [int((events["timestamp"] < f.end).sum()) if f.end is not None else 100 for f in folds]
    assert kept == [60, 80, 100]


def test_quantile_folds_cut_exactly_and_refuse_to_drop_the_whole_log():
    """Was: 1 - 3 * 0.2 in floats, one event short of the cut (found by the independent check)."""
    events = _events(pd.date_range("2020-01-01", periods=500, freq="s"))
    folds = fold_cuts(events, 4, quantile=0.2)
    kept = [int((events["timestamp"] < f.end).sum()) if f.end is not None else 500 for f in folds]
    assert kept == [200, 300, 400, 500]
    with pytest.raises(DataError, match="test_days=6 .* leaving nothing: use at most 5 test periods"):
        fold_cuts(events, 6, quantile=0.2)


def test_test_days_is_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match="test_days"):
        load_config(overrides={"evaluation": {"test_days": 0}})


def _truth(users_items: dict) -> GroundTruth:
    users = tuple(sorted(users_items))
    items = {"any": {u: frozenset(v) for u, v in users_items.items()}, "save": {}, "purchase": {}}
    return GroundTruth(users, items, {u: frozenset() for u in users})


def _list(rows: dict) -> pd.DataFrame:
    return pd.DataFrame([(u, r + 1, i, 1.0) for u, items in rows.items() for r, i in enumerate(items)],
                        columns=["user_id", "rank", "item_id", "score"])


def test_user_values_summarize_to_score_lists_and_pool_over_folds():
    truth_a = _truth({"u1": {"a"}, "u2": {"b", "c"}})
    truth_b = _truth({"u1": {"x"}, "u3": {"y"}, "u4": {"z"}})
    list_a = _list({"u1": ["a", "b"], "u2": ["x", "c"]})
    list_b = _list({"u1": ["q", "x"], "u3": ["y"], "u4": ["w"]})
    a = user_values(list_a, truth_a, "pipeline", (1, 2))
    b = user_values(list_b, truth_b, "pipeline", (1, 2))
    assert summarize(a, 50, 0) == score_lists(list_a, truth_a, "pipeline", (1, 2), 50, 0)
    pooled = summarize(pool([a, b]), 0)
    # The mean over all five user-days, not the mean of the two folds' means.
    assert pooled["pipeline/recall@1"] == pytest.approx((1 + 0 + 0 + 1 + 0) / 5)
    assert pooled["pipeline/recall@2"] == pytest.approx((1 + 0.5 + 1 + 1 + 0) / 5)
    assert pooled["pipeline/users"] == 5 and pooled["pipeline/save/users"] == 0
    assert "pipeline/save/recall@1" not in pooled


def test_versus_best_picks_the_best_list_per_figure_and_pairs_users():
    rng = np.random.default_rng(0)
    good = rng.uniform(0, 1, 400)
    values = {"pipeline/ndcg@10": good * 1.2, "pipeline/recall@10": good * 0.5,
              "baseline/a/ndcg@10": good, "baseline/a/recall@10": good * 0.2,
              "baseline/b/ndcg@10": good * 0.5, "baseline/b/recall@10": good}
    figures, best = versus_best(values, "pipeline", ["baseline/a", "baseline/b"], 200, 0)
    assert best == {"ndcg@10": "baseline/a", "recall@10": "baseline/b"}
    assert figures["vs_best_baseline/ndcg@10"] == pytest.approx(1.2)
    assert figures["vs_best_baseline/recall@10"] == pytest.approx(0.5)
    # Paired: every resample's ratio is the same 1.2, however noisy the users are.
    assert figures["vs_best_baseline/ndcg@10/ci95_low"] == pytest.approx(1.2)
    assert figures["vs_best_baseline/ndcg@10/ci95_high"] == pytest.approx(1.2)


def test_three_test_days_on_ecomm_pool_figures_that_an_independent_check_reproduces(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("train.py", "--run-dir", str(run_dir), "--stages", "data,baselines", "-q",
                   "--set", "evaluation.test_days=3", "--set", "evaluation.bootstrap_resamples=20",
                   "--set", "tracking.enabled=false")
    assert done.returncode == 0, done.stderr
    assert "over 3 test days (2019-06-17, 2019-06-18, 2019-06-19), pooled" in done.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    folds = [json.loads((run_dir / "folds" / day / "metrics.json").read_text())
             for day in ("2019-06-17", "2019-06-18", "2019-06-19")]
    # Each fold is a run made on its test day: the last one is the whole log's single day.
    assert folds[-1]["eval/test_users"] == 546
    assert metrics["eval/test_users"] == sum(f["eval/test_users"] for f in folds) == 1911
    assert not (run_dir / "baselines").exists()  # the lists are the folds'
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        mismatches = independent_protocol.compare_folds(str(run_dir), "ecomm", str(ROOT / "data" / "ecomm"))
    assert mismatches == 0, printed.getvalue()
    assert "pooled over folds 2019-06-17, 2019-06-18, 2019-06-19" in printed.getvalue()
    # Without the final list the ratio has nothing to compare.
    assert not any(k.startswith("vs_best_baseline/") for k in metrics)


def test_every_stage_is_fitted_per_fold_and_the_exports_are_the_last_folds(tmp_path):
    spec = synthetic.generate(tmp_path / "data", 6_000, seed=4)
    config = load_config(overrides={
        "run_dir": str(tmp_path / "run"), "data": {"dataset": str(spec)},
        "tracking": {"enabled": False}, "evaluation": {"bootstrap_resamples": 20, "test_days": 2},
        "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
        "ranking": {"epochs": 1, "compare_single_task": False, "bottom_layers": [8], "tower_layers": [4],
                    "extra_days": 0},
    })
    state = run(config)
    run_dir = tmp_path / "run"
    names = state.info["folds"]
    assert len(names) == 2 and names[0] < names[1]
    for name in names:
        fold = run_dir / "folds" / name
        assert {"recommendations.parquet", "candidate_set.parquet", "candidates.parquet", "metrics.json",
                "run_info.json"} <= {p.name for p in fold.iterdir()}
        assert not (fold / "export").exists()
        info = json.loads((fold / "run_info.json").read_text())
        assert info["split"]["test_start"].startswith(name)
        # The earlier fold never saw its test day's successors: its ranker learned from days before.
        assert json.loads((fold / "metrics.json").read_text())["ranker/training_rows"] > 0
    assert state.split.test_start.strftime("%Y-%m-%d") == names[-1]
    for model in ("retrieval", "ranker", "recommend"):
        assert (run_dir / "export" / model / "1" / "saved_model.pb").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = json.loads((run_dir / "folds" / names[-1] / "metrics.json").read_text())
    assert metrics["ranker/holdout_ndcg@10"] == last["ranker/holdout_ndcg@10"]  # the exported ranker's
    assert metrics[f"fold/{names[0]}/eval/test_users"] + metrics[f"fold/{names[1]}/eval/test_users"] \
        == metrics["eval/test_users"] == metrics["pipeline/users"]
    low, ratio, high = (metrics[f"vs_best_baseline/ndcg@10{s}"] for s in ("/ci95_low", "", "/ci95_high"))
    assert low <= ratio <= high
    best = state.info["best_baseline"]["ndcg@10"]
    assert ratio == pytest.approx(metrics["pipeline/ndcg@10"] / metrics[f"{best}/ndcg@10"])


def test_data_until_is_the_first_fold_alone(tmp_path):
    """`data.until` reads the log as it stood: the run of the first of three folds, cheaply."""
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "stages": ["data", "baselines"],
                                    "tracking": {"enabled": False}, "evaluation": {"bootstrap_resamples": 0},
                                    "data": {"until": "2019-06-18"}})
    state = run(config)
    assert state.split.test_start == pd.Timestamp("2019-06-17", tz="UTC")
    assert state.dataset.events["timestamp"].max() < pd.Timestamp("2019-06-18", tz="UTC")
    assert state.metrics["data/events_after_until"] > 0
    assert state.metrics["eval/test_users"] == 622  # the first fold's of the three-day run
    with pytest.raises(ConfigError, match="data.until is 'June'; give an ISO date"):
        load_config(overrides={"data": {"until": "June"}})
