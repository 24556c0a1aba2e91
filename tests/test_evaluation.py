"""Metric golden numbers on hand-made lists, with the arithmetic written out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from shopping_mtl.data.split import GroundTruth
from shopping_mtl.evaluation import bootstrap_interval, score_lists, user_metrics


def lists(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, r + 1, item, 1.0 / (r + 1)) for u, items in rows.items() for r, item in enumerate(items)],
        columns=["user_id", "rank", "item_id", "score"],
    )


def test_user_metrics_golden_numbers():
    ranked = {"u1": ["a", "x", "b", "y"], "u2": ["z", "c"]}
    truth = {"u1": frozenset({"a", "b", "q"}), "u2": frozenset({"c"})}
    got = user_metrics(ranked, truth, ks=(1, 3))
    # u1: hits at positions 1 and 3 of 3 relevant. recall@1 = 1/3, recall@3 = 2/3.
    # u2: hit at position 2 of 1 relevant. recall@1 = 0, recall@3 = 1.
    np.testing.assert_allclose(got["recall@1"], [1 / 3, 0.0])
    np.testing.assert_allclose(got["recall@3"], [2 / 3, 1.0])
    np.testing.assert_allclose(got["hitrate@1"], [1.0, 0.0])
    np.testing.assert_allclose(got["hitrate@3"], [1.0, 1.0])
    # u1: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5;
    #     IDCG (3 relevant) = 1 + 1/log2(3) + 1/log2(4) = 1 + 0.63093 + 0.5 = 2.13093.
    # u2: DCG = 1/log2(3) = 0.63093; IDCG = 1.
    np.testing.assert_allclose(got["ndcg@10"], [1.5 / (1.5 + 1 / math.log2(3)), 1 / math.log2(3)])


def test_repeated_item_is_a_hit_once_and_missing_user_scores_zero():
    got = user_metrics({"u1": ["a", "a", "a"]}, {"u1": frozenset({"a", "b"}), "u2": frozenset({"c"})}, ks=(3,))
    np.testing.assert_allclose(got["recall@3"], [0.5, 0.0])


def test_variants_and_types():
    truth = GroundTruth(
        users=("u1", "u2"),
        items={
            "any": {"u1": frozenset({"a", "n"}), "u2": frozenset({"b"})},
            "save": {"u1": frozenset({"n"})},
            "purchase": {},
        },
        seen={"u1": frozenset({"a"}), "u2": frozenset({"b"})},
    )
    frame = lists({"u1": ["a", "n"], "u2": ["x", "b"]})
    got = score_lists(frame, truth, "m", ks=(1, 2), n_resamples=0)
    # all: u1 recall@1 = 1/2 (a), u2 recall@1 = 0 -> 0.25; recall@2 = (1 + 1) / 2 = 1.
    assert got["m/recall@1"] == pytest.approx(0.25)
    assert got["m/recall@2"] == pytest.approx(1.0)
    # excl_seen: u1's list becomes [n] (hit at 1 -> 1/2), u2's [x] (no hit) -> 0.25 at K=1.
    assert got["m/excl_seen/recall@1"] == pytest.approx(0.25)
    assert got["m/excl_seen/recall@2"] == pytest.approx(0.25)
    # new_gt: u1's truth {n}, list [n] -> 1; u2's truth is empty -> u2 drops out.
    assert got["m/new_gt/recall@1"] == pytest.approx(1.0)
    assert got["m/new_gt/users"] == 1.0
    # save: only u1, whose saved item n is at rank 2 of the full list.
    assert got["m/save/recall@1"] == 0.0 and got["m/save/recall@2"] == 1.0
    assert got["m/save/ndcg@10"] == pytest.approx(1 / math.log2(3))
    # purchase: nobody purchased -> no figure, only the user count.
    assert got["m/purchase/users"] == 0.0 and "m/purchase/recall@1" not in got


def test_exact_metric_key_set():
    truth = GroundTruth(("u",), {"any": {"u": frozenset("a")}, "save": {"u": frozenset("a")},
                                 "purchase": {"u": frozenset("a")}}, {"u": frozenset("b")})
    got = score_lists(lists({"u": ["a"]}), truth, "p", ks=(10,), n_resamples=5)
    prefixes = [f"p{v}{t}" for v in ("", "/excl_seen", "/new_gt") for t in ("", "/save", "/purchase")]
    expected = set()
    for prefix in prefixes:
        expected.add(f"{prefix}/users")
        for metric in ("recall@10", "hitrate@10", "ndcg@10"):
            expected |= {f"{prefix}/{metric}", f"{prefix}/{metric}/ci95_low", f"{prefix}/{metric}/ci95_high"}
    assert set(got) == expected


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    values = np.random.default_rng(1).random(500)
    low, high = bootstrap_interval(values, 1000, seed=0)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_interval(values, 1000, seed=0)
    # The standard error of a uniform mean over 500 users is sqrt(1/12/500) = 0.0129, so a 95%
    # interval is about 2 * 1.96 * 0.0129 = 0.051 wide.
    assert high - low == pytest.approx(0.051, abs=0.008)
    assert bootstrap_interval(np.ones(10), 100) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([]), 100))


def test_scoring_only_the_rows_that_count_changes_no_figure(monkeypatch):
    """Long lists (the test candidate set) are cut to the rows a metric can reach before they
    become Python lists: every figure equals the one from the whole frame, duplicates, seen
    items, users outside the truth and unsorted rows included."""
    from shopping_mtl import evaluation

    rng = np.random.default_rng(3)
    users = [f"u{i}" for i in range(60)]
    items = [f"i{i}" for i in range(300)]
    rows = []
    for user in users + ["stranger"]:
        length = int(rng.integers(1, 250))
        listed = rng.choice(items, length)  # with repeats
        rows += [(user, rank, item, float(-rank)) for rank, item in enumerate(listed, 1)]
    frame = pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"]).sample(frac=1, random_state=0)
    truth_users = tuple(sorted(users[:50]))
    seen = {u: frozenset(rng.choice(items, int(rng.integers(0, 120)))) for u in truth_users}
    any_items = {u: frozenset(rng.choice(items, int(rng.integers(1, 30)))) for u in truth_users}
    truth = GroundTruth(truth_users, {"any": any_items,
                                      "save": {u: frozenset(list(v)[:3]) for u, v in any_items.items()},
                                      "purchase": {u: frozenset(list(v)[:1]) for u, v in any_items.items()}},
                        seen)
    cut = score_lists(frame, truth, "x", (10, 50), n_resamples=20)
    assert len(evaluation.rows_that_count(frame, truth, 50)) < len(frame) / 2
    # No list longer than the cut-off: every truth user's row stays, in order.
    whole_lists = evaluation.rows_that_count(frame, truth, 1000)
    pd.testing.assert_frame_equal(whole_lists, frame[frame["user_id"].isin(truth_users)])
    monkeypatch.setattr(evaluation, "rows_that_count", lambda frame, truth, deepest: frame)
    whole = score_lists(frame, truth, "x", (10, 50), n_resamples=20)
    assert cut.keys() == whole.keys() and len(cut) > 50
    assert all(cut[k] == whole[k] or (math.isnan(cut[k]) and math.isnan(whole[k])) for k in cut)


def test_lists_by_user_equal_the_sorted_groups():
    """Lists built on integer codes are pandas' (user, rank) sort and groups: same users in the
    same order, same items, ties in row order, a row without a user in no list."""
    from shopping_mtl.evaluation import lists_by_user

    rng = np.random.default_rng(0)
    n = 5000
    frame = pd.DataFrame({"user_id": rng.choice([f"u{i}" for i in range(90)] + ["é", ""], n),
                          "rank": rng.integers(1, 30, n),  # repeated ranks: ties
                          "item_id": rng.choice([f"i{i}" for i in range(400)], n), "score": rng.random(n)})
    frame.loc[5, "user_id"] = None
    for given in (frame, frame.astype({"user_id": object, "item_id": object}), frame.iloc[:0]):
        ordered = given.sort_values(["user_id", "rank"], kind="stable")
        expected = {user: list(items) for user, items in ordered.groupby("user_id", sort=False)["item_id"]}
        got = lists_by_user(given)
        assert got == expected and list(got) == list(expected)
    assert len(got) == 0 and len(lists_by_user(frame)) == 92


@pytest.mark.parametrize("rows_per_pass", [1, 50, 1 << 22])
@pytest.mark.parametrize("in_list_order", [False, True])
def test_lists_scored_on_codes_equal_the_per_user_python_lists(monkeypatch, rows_per_pass, in_list_order):
    """`score_lists` scores integer codes; every figure, intervals included, equals scoring the
    {user: items} lists with `user_metrics`: repeats, seen items, ties in rank, rows without
    ids, users without lists or outside the truth, and lists with 9 or 10 hits in their top 10
    (where numpy's pairwise sum differs from adding in order). The same whether the rows come
    shuffled or already by (user, rank), keyed all at once or a few users at a time."""
    from shopping_mtl import evaluation

    monkeypatch.setattr(evaluation, "LIST_ROWS_PER_PASS", rows_per_pass)

    rng = np.random.default_rng(7)
    users = [f"u{i}" for i in range(80)]
    items = [f"i{i}" for i in range(120)]
    truth_users = tuple(sorted(users[:70]))
    any_items = {u: frozenset(rng.choice(items, int(rng.integers(1, 40)))) for u in truth_users}
    seen = {u: frozenset(rng.choice(items, int(rng.integers(0, 30)))) for u in truth_users[5:]}
    rows = []
    for number, user in enumerate(users[10:] + ["stranger"]):
        if number % 7 == 0 and user in any_items:  # a list led by its truth: many top-10 hits
            listed = list(any_items[user])[:10] + list(rng.choice(items, 30))
        else:
            listed = list(rng.choice(items, int(rng.integers(1, 160))))
        rows += [(user, int(rank) if rng.random() > 0.1 else 3, item, 0.0) for rank, item in enumerate(listed, 1)]
    frame = pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"]).sample(frac=1, random_state=1)
    frame.loc[frame.index[:3], "item_id"] = None
    frame.loc[frame.index[3], "user_id"] = None
    if in_list_order:  # as lists and candidate sets are written: no sort needed
        frame = frame[frame["user_id"].notna()].sort_values(["user_id", "rank"], kind="stable")
        assert evaluation._in_list_order(pd.factorize(frame["user_id"])[0], frame["rank"].to_numpy())
    truth = GroundTruth(truth_users, {"any": any_items,
                                      "save": {u: frozenset(sorted(v)[:4]) for u, v in any_items.items()},
                                      "purchase": {u: frozenset(sorted(v)[:1]) for u, v in any_items.items()}}, seen)
    assert max(len(set(listed[:10]) & any_items.get(u, set()))
               for u, listed in evaluation.lists_by_user(frame).items()) >= 9
    got = score_lists(frame, truth, "x", (5, 10, 50), n_resamples=30, seed=4)

    ranked = evaluation.lists_by_user(frame)
    unseen = {u: [i for i in items if i not in seen.get(u, frozenset())] for u, items in ranked.items()}
    expected = {}
    for variant in evaluation.VARIANTS:
        for gt_type in ("any", "save", "purchase"):
            relevant = truth.for_variant(gt_type, variant)
            name = evaluation.metric_prefix("x", variant, gt_type)
            expected[f"{name}/users"] = float(len(relevant))
            for metric, values in user_metrics(ranked if variant == "all" else unseen, relevant, (5, 10, 50)).items():
                expected[f"{name}/{metric}"] = float(values.mean())
                low, high = bootstrap_interval(values, 30, 4)
                expected[f"{name}/{metric}/ci95_low"], expected[f"{name}/{metric}/ci95_high"] = low, high
    assert got == expected
