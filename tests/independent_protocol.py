"""An independent implementation of the evaluation protocol (docs/EVALUATION.md).

It exists to cross-check the project: it uses only the Python standard library (plus
``pyarrow.parquet`` to read the list files a run leaves behind) and does not import
``shopping_mtl``, pandas or numpy. It reads the raw data, builds the canonical events, splits
them, builds the ground truth, scores ranked lists and recomputes the popularity baseline.

Usage::

    python tests/independent_protocol.py --dataset ecomm --data-dir DIR [--run-dir RUN]
    python tests/independent_protocol.py --dataset taobao --data-dir DIR [--run-dir RUN]

Judgement calls (where the protocol text leaves room) are stated in the docstrings:

* Duplicates are dropped on the *raw* row (all raw fields, before mapping behaviours to events),
  keeping the first occurrence; so an EComm "collect" and an "add-to-cart" of the same item on the
  same day stay two ``save`` events.
* Days are UTC calendar days (``timestamp // 86400``); validation is the calendar day before the
  test day (it may hold no events); train is every day before that.
* Seen items = the user's items in train + validation (any event type).
* Hits are counted over distinct items, so a list that repeats an item cannot score it twice.
* Popularity counts every deduplicated train + validation event with weight click 1, save 2,
  purchase 4; ties go to the smaller item_id compared as strings.
"""

import argparse
import csv
import gzip
import json
import math
import os
import sys
from collections import defaultdict
from datetime import datetime, timezone

ECOMM_BEHAVIOUR = {"1": "click", "2": "save", "3": "save", "4": "purchase"}
TAOBAO_BEHAVIOUR = {"pv": "click", "fav": "save", "cart": "save", "buy": "purchase"}
TAOBAO_FILES = (
    "UserBehavior_head_users1-100370.csv.gz",
    "UserBehavior_tail_users999477-999999.csv.gz",
)
EVENT_WEIGHT = {"click": 1, "save": 2, "purchase": 4}
GT_TYPES = ("any", "save", "purchase")
VARIANTS = ("all", "excl_seen", "new_gt")
SECONDS_PER_DAY = 86400

# Filled in by the loaders so that main() can print how many duplicates were dropped.
LAST_LOAD_STATS = {}


def _date_to_unix(yyyymmdd):
    """Return the unix seconds (UTC) of midnight of a date given as 'YYYYMMDD'."""
    day = datetime.strptime(yyyymmdd, "%Y%m%d").replace(tzinfo=timezone.utc)
    return int(day.timestamp())


def _day_name(day_number):
    """Return the ISO date of a UTC day number (days since 1970-01-01)."""
    moment = datetime.fromtimestamp(day_number * SECONDS_PER_DAY, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d")


def load_ecomm(data_dir):
    """Read the EComm training edges and return canonical events.

    The file ``ecomm_edge_train.txt.gz`` is tab-separated without header: user_id, item_id,
    behavior (1 click, 2 collect, 3 cart, 4 buy) and date YYYYMMDD. Each event is returned as
    ``(user_id, item_id, event, timestamp)`` with the timestamp at midnight UTC of the date.
    Exact duplicate raw rows (same four fields) are dropped, keeping the first one; file order is
    kept. The number of raw rows and of dropped duplicates goes to ``LAST_LOAD_STATS``.
    """
    path = os.path.join(data_dir, "ecomm_edge_train.txt.gz")
    events = []
    seen_rows = set()
    raw_rows = 0
    duplicates = 0
    with gzip.open(path, "rt", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if not row:
                continue
            raw_rows += 1
            user_id, item_id, behaviour, date = [field.strip() for field in row[:4]]
            key = (user_id, item_id, behaviour, date)
            if key in seen_rows:
                duplicates += 1
                continue
            seen_rows.add(key)
            events.append((user_id, item_id, ECOMM_BEHAVIOUR[behaviour], _date_to_unix(date)))
    LAST_LOAD_STATS.clear()
    LAST_LOAD_STATS.update(raw_rows=raw_rows, duplicates=duplicates, malformed=0)
    return events


def load_taobao(data_dir):
    """Read the Taobao head and tail files and return canonical events.

    Both files are comma-separated without header: user_id, item_id, category_id, behaviour
    (pv, fav, cart, buy) and unix seconds. The head file is read first, then the tail file.
    Lines with fewer than five fields (the truncated last line of the head file) are dropped.
    Exact duplicate raw rows (all five fields, over both files) are dropped, keeping the first.
    """
    events = []
    seen_rows = set()
    raw_rows = 0
    duplicates = 0
    malformed = 0
    for name in TAOBAO_FILES:
        path = os.path.join(data_dir, name)
        with gzip.open(path, "rt", newline="") as handle:
            for row in csv.reader(handle):
                if not row:
                    continue
                raw_rows += 1
                if len(row) < 5 or row[4].strip() == "":
                    malformed += 1
                    continue
                fields = tuple(field.strip() for field in row[:5])
                if fields in seen_rows:
                    duplicates += 1
                    continue
                seen_rows.add(fields)
                user_id, item_id, _category, behaviour, timestamp = fields
                events.append((user_id, item_id, TAOBAO_BEHAVIOUR[behaviour], int(timestamp)))
    LAST_LOAD_STATS.clear()
    LAST_LOAD_STATS.update(raw_rows=raw_rows, duplicates=duplicates, malformed=malformed)
    return events


def split(events):
    """Split events into train, validation and test; return a dict describing the split.

    With at least three distinct UTC days: test = the last day present, validation = the
    calendar day before it (possibly empty), train = every earlier day. With fewer days, the
    events are sorted by time (stable, so ties keep file order) and cut by count: the last 20%
    are test, the 20% before validation (cut points ``int(0.6 * n)`` and ``int(0.8 * n)``).

    Returned keys: ``train``, ``validation``, ``test`` (lists of events), ``mode`` ('day' or
    'quantile'), ``days`` (sorted distinct day numbers), ``test_day``, ``validation_day``.
    """
    days = sorted({timestamp // SECONDS_PER_DAY for _, _, _, timestamp in events})
    result = {"days": days, "train": [], "validation": [], "test": []}
    if len(days) >= 3:
        test_day = days[-1]
        validation_day = test_day - 1
        for event in events:
            day = event[3] // SECONDS_PER_DAY
            if day == test_day:
                result["test"].append(event)
            elif day == validation_day:
                result["validation"].append(event)
            else:
                result["train"].append(event)
        result.update(mode="day", test_day=test_day, validation_day=validation_day)
        return result
    ordered = sorted(events, key=lambda event: event[3])
    n = len(ordered)
    first_cut = int(0.6 * n)
    second_cut = int(0.8 * n)
    result["train"] = ordered[:first_cut]
    result["validation"] = ordered[first_cut:second_cut]
    result["test"] = ordered[second_cut:]
    result.update(mode="quantile", test_day=None, validation_day=None)
    return result


def ground_truth(train, validation, test):
    """Build the test users' ground truth and seen items.

    Test users have at least one test event and at least one train event. Returns
    ``(gt, seen)``: ``gt[type][user]`` is the set of distinct items of that user on the test
    day with any event (type 'any'), a save ('save') or a purchase ('purchase'); every test
    user has an entry for every type, possibly empty. ``seen[user]`` is the set of items the
    user had any event with in train or validation.
    """
    train_users = {user for user, _, _, _ in train}
    test_users = {user for user, _, _, _ in test if user in train_users}
    gt = {gt_type: {user: set() for user in test_users} for gt_type in GT_TYPES}
    for user, item, event, _ in test:
        if user not in test_users:
            continue
        gt["any"][user].add(item)
        if event in ("save", "purchase"):
            gt[event][user].add(item)
    seen = {user: set() for user in test_users}
    for user, item, _, _ in train + validation:
        if user in seen:
            seen[user].add(item)
    return gt, seen


def lists_by_user(list_rows):
    """Turn rows with user_id, rank, item_id (dicts) into ``{user: [item, ...]}`` by rank.

    Ids are compared as strings, whatever type the parquet file stores them in.
    """
    ranked = defaultdict(list)
    for row in list_rows:
        ranked[str(row["user_id"])].append((int(row["rank"]), str(row["item_id"])))
    return {user: [item for _, item in sorted(pairs)] for user, pairs in ranked.items()}


def read_list_file(path):
    """Read a ranked list parquet file into a list of row dicts."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["user_id", "rank", "item_id", "score"])
    return table.to_pylist()


def _dcg_at(items, truth, k):
    """Discounted cumulative gain of the first k items with binary relevance."""
    total = 0.0
    counted = set()
    for position, item in enumerate(items[:k], start=1):
        if item in truth and item not in counted:
            counted.add(item)
            total += 1.0 / math.log2(position + 1)
    return total


def _ideal_dcg(truth_size, k):
    """Best possible DCG of a list of k items when truth_size items are relevant."""
    return sum(1.0 / math.log2(position + 1) for position in range(1, min(truth_size, k) + 1))


def _metric_prefix(variant, gt_type):
    """Key prefix in the project's naming: variant unless 'all', then type unless 'any'."""
    parts = []
    if variant != "all":
        parts.append(variant)
    if gt_type != "any":
        parts.append(gt_type)
    return "".join(part + "/" for part in parts)


def score_lists(list_rows, gt, seen, ks=(10, 50, 100)):
    """Score ranked lists against the ground truth; return a flat dict of metrics.

    ``list_rows`` are dicts with user_id, rank, item_id (score is ignored); or a ready
    ``{user: [items by rank]}`` dict. For each ground-truth type and variant ('all': the list
    as is; 'excl_seen': the user's seen items removed from the list, then cut at K;
    'new_gt': seen items removed from the list and from the ground truth) the metrics
    Recall@K, HitRate@K and NDCG@10 are averaged over users whose ground truth (for that
    variant) is not empty; users without a list score zero. Hits count distinct items.
    A group with no eligible user is reported as NaN.
    """
    ranked = list_rows if isinstance(list_rows, dict) else lists_by_user(list_rows)
    metrics = {}
    for variant in VARIANTS:
        for gt_type in GT_TYPES:
            sums = defaultdict(float)
            users = 0
            for user, truth in gt[gt_type].items():
                items = ranked.get(user, [])
                user_seen = seen.get(user, set())
                if variant != "all":
                    items = [item for item in items if item not in user_seen]
                if variant == "new_gt":
                    truth = {item for item in truth if item not in user_seen}
                if not truth:
                    continue
                users += 1
                for k in ks:
                    hits = len(set(items[:k]) & truth)
                    sums["recall@%d" % k] += hits / len(truth)
                    sums["hitrate@%d" % k] += 1.0 if hits > 0 else 0.0
                sums["ndcg@10"] += _dcg_at(items, truth, 10) / _ideal_dcg(len(truth), 10)
            prefix = _metric_prefix(variant, gt_type)
            names = ["recall@%d" % k for k in ks] + ["hitrate@%d" % k for k in ks] + ["ndcg@10"]
            for name in names:
                metrics[prefix + name] = sums[name] / users if users else float("nan")
            metrics[prefix + "users"] = float(users)
    return metrics


def eligible_user_counts(gt, seen):
    """Number of users with a non-empty ground truth, per (variant, type) prefix."""
    counts = {}
    for variant in ("all", "new_gt"):
        for gt_type in GT_TYPES:
            count = 0
            for user, truth in gt[gt_type].items():
                if variant == "new_gt":
                    truth = truth - seen.get(user, set())
                if truth:
                    count += 1
            counts[variant + "/" + gt_type] = count
    return counts


def cold_item_share(train, gt_any):
    """Share of test ground-truth items (type 'any') that never occur in train.

    Returns ``(pair_share, item_share)``: over all (user, item) ground-truth pairs and over the
    distinct ground-truth items. Validation events do not count as train here.
    """
    train_items = {item for _, item, _, _ in train}
    pairs = 0
    cold_pairs = 0
    distinct_items = set()
    for items in gt_any.values():
        for item in items:
            pairs += 1
            distinct_items.add(item)
            if item not in train_items:
                cold_pairs += 1
    cold_items = sum(1 for item in distinct_items if item not in train_items)
    pair_share = cold_pairs / pairs if pairs else float("nan")
    item_share = cold_items / len(distinct_items) if distinct_items else float("nan")
    return pair_share, item_share


def popularity_list(history, n=100):
    """Top-n items by weighted engagement count (click 1, save 2, purchase 4).

    ``history`` is the train + validation events. Ties go to the smaller item_id as a string.
    Returns a list of ``(item_id, score)``.
    """
    weight = defaultdict(int)
    for _, item, event, _ in history:
        weight[item] += EVENT_WEIGHT[event]
    ordered = sorted(weight.items(), key=lambda pair: (-pair[1], pair[0]))
    return ordered[:n]


def popularity_rows(top_items, users):
    """The same popularity list as row dicts for every user, ranks starting at 1."""
    rows = []
    for user in sorted(users):
        for rank, (item, score) in enumerate(top_items, start=1):
            rows.append({"user_id": user, "rank": rank, "item_id": item, "score": float(score)})
    return rows


def load(dataset, data_dir):
    """The canonical events of a dataset, and the loader's counts."""
    if dataset == "ecomm":
        events = load_ecomm(data_dir)
    elif dataset == "taobao":
        events = load_taobao(data_dir)
    else:
        raise ValueError("unknown dataset %r" % dataset)
    return events, dict(LAST_LOAD_STATS)


def up_to_day(events, test_day):
    """The events up to the end of ``test_day`` ('YYYY-MM-DD'): the log as it stood when a
    rolling-origin fold with that test day was run (later days unseen)."""
    end = _date_to_unix(test_day.replace("-", "")) + SECONDS_PER_DAY
    return [event for event in events if event[3] < end]


def fold_test_day(run_dir):
    """The test day of a fold folder ``.../folds/YYYY-MM-DD``, else None."""
    path = os.path.normpath(run_dir)
    name = os.path.basename(path)
    if os.path.basename(os.path.dirname(path)) == "folds" and len(name) == 10 and name[4] == name[7] == "-":
        return name
    return None


def evaluate(dataset, data_dir, test_day=None, loaded=None):
    """Load (or take ``loaded``: events and counts), cut after ``test_day`` if given, split and
    build the ground truth of a dataset; return everything in one dict."""
    events, stats = loaded if loaded is not None else load(dataset, data_dir)
    if test_day is not None:
        events = up_to_day(events, test_day)
    parts = split(events)
    gt, seen = ground_truth(parts["train"], parts["validation"], parts["test"])
    return {"events": events, "stats": stats, "split": parts, "gt": gt, "seen": seen}


def _format(value):
    """Print a metric value with enough digits to compare."""
    return "nan" if value != value else "%.10f" % value


def compare_run(run_dir, gt, seen, tolerance=1e-9, scores=None):
    """Score every list file of a run and compare with its metrics.json; return #mismatches.

    Scores ``baselines/<name>.parquet`` under the key prefix ``baseline/<name>/`` and, when
    present, ``candidates.parquet`` under ``retrieval/`` and ``recommendations.parquet`` under
    ``pipeline/``. Keys missing in metrics.json are reported, not counted as mismatches. Every
    figure scored here goes to the dict ``scores`` when one is given.
    """
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        reported = json.load(handle)
    files = []
    baseline_dir = os.path.join(run_dir, "baselines")
    if os.path.isdir(baseline_dir):
        for name in sorted(os.listdir(baseline_dir)):
            if name.endswith(".parquet"):
                files.append(("baseline/" + name[: -len(".parquet")] + "/",
                              os.path.join(baseline_dir, name)))
    for name, prefix in (("candidates.parquet", "retrieval/"),
                         ("recommendations.parquet", "pipeline/")):
        if os.path.exists(os.path.join(run_dir, name)):
            files.append((prefix, os.path.join(run_dir, name)))
    mismatches = 0
    for prefix, path in files:
        print("\n== %s  (%s)" % (prefix, os.path.relpath(path, run_dir)))
        mine = score_lists(read_list_file(path), gt, seen)
        if scores is not None:
            scores.update({prefix + key: value for key, value in mine.items()})
        for key in sorted(mine):
            full_key = prefix + key
            if full_key not in reported:
                print("  %-45s mine %s   metrics.json: MISSING" % (full_key, _format(mine[key])))
                continue
            theirs = float(reported[full_key])
            both_nan = mine[key] != mine[key] and theirs != theirs
            differs = not both_nan and not abs(mine[key] - theirs) <= tolerance
            flag = "  <-- DIFFERS" if differs else ""
            mismatches += 1 if differs else 0
            print("  %-45s mine %s   theirs %s%s"
                  % (full_key, _format(mine[key]), _format(theirs), flag))
    print("\n%d of the compared figures differ by more than %g" % (mismatches, tolerance))
    return mismatches


def compare_folds(run_dir, dataset, data_dir, tolerance=1e-9):
    """A rolling-origin run: score each ``folds/<test day>/`` folder on the log cut after its
    test day, compare it with its own metrics.json, then pool each figure over the folds (the
    mean over all folds' users: each fold's mean weighted by its users) and compare with the
    run's metrics.json. Returns the number of mismatches."""
    loaded = load(dataset, data_dir)
    folds_dir = os.path.join(run_dir, "folds")
    names = sorted(name for name in os.listdir(folds_dir) if fold_test_day(os.path.join(folds_dir, name)))
    mismatches, sums, users = 0, defaultdict(float), defaultdict(float)
    for name in names:
        result = evaluate(dataset, data_dir, test_day=name, loaded=loaded)
        scores = {}
        print("\n==== fold %s: %d test users" % (name, len(result["gt"]["any"])))
        mismatches += compare_run(os.path.join(folds_dir, name), result["gt"], result["seen"], tolerance, scores)
        for key, value in scores.items():
            if key.endswith("/users"):
                continue
            count = scores[key.rsplit("/", 1)[0] + "/users"]
            if count:
                sums[key] += value * count
                users[key] += count
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        reported = json.load(handle)
    print("\n==== pooled over folds %s" % ", ".join(names))
    for key in sorted(sums):
        mine = sums[key] / users[key]
        theirs = reported.get(key)
        differs = theirs is None or not abs(mine - float(theirs)) <= tolerance
        mismatches += 1 if differs else 0
        print("  %-45s mine %s   theirs %s%s" % (key, _format(mine), "MISSING" if theirs is None else _format(theirs),
                                                  "  <-- DIFFERS" if differs else ""))
    print("\n%d figures differ over the folds and pooled" % mismatches)
    return mismatches


def main(argv=None):
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=["ecomm", "taobao"])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--run-dir", help="a run folder; with folds/ (several test days) each fold is checked "
                        "and the pooled figures too; a fold folder folds/YYYY-MM-DD is checked on its own")
    parser.add_argument("--test-day", help="YYYY-MM-DD: cut the log after this day first (default: a fold "
                        "folder's name)")
    args = parser.parse_args(argv)
    if args.run_dir and os.path.isdir(os.path.join(args.run_dir, "folds")):
        return 1 if compare_folds(args.run_dir, args.dataset, args.data_dir) else 0

    test_day = args.test_day or (fold_test_day(args.run_dir) if args.run_dir else None)
    result = evaluate(args.dataset, args.data_dir, test_day=test_day)
    stats, parts, gt, seen = result["stats"], result["split"], result["gt"], result["seen"]
    print("dataset: %s" % args.dataset)
    print("raw rows: %d   malformed dropped: %d   duplicates dropped: %d   events: %d"
          % (stats["raw_rows"], stats["malformed"], stats["duplicates"], len(result["events"])))
    print("days: %d (%s .. %s)" % (len(parts["days"]), _day_name(parts["days"][0]),
                                   _day_name(parts["days"][-1])))
    if parts["mode"] == "day":
        print("test day: %s   validation day: %s"
              % (_day_name(parts["test_day"]), _day_name(parts["validation_day"])))
    else:
        print("split: event-count quantiles (fewer than three days)")
    print("events train / validation / test: %d / %d / %d"
          % (len(parts["train"]), len(parts["validation"]), len(parts["test"])))
    counts = eligible_user_counts(gt, seen)
    print("test users: %d" % len(gt["any"]))
    print("users with non-empty GT  any / save / purchase: %d / %d / %d"
          % (counts["all/any"], counts["all/save"], counts["all/purchase"]))
    print("users with non-empty new_gt  any / save / purchase: %d / %d / %d"
          % (counts["new_gt/any"], counts["new_gt/save"], counts["new_gt/purchase"]))
    pair_share, item_share = cold_item_share(parts["train"], gt["any"])
    print("cold-item share (not in train): pairs %.4f   distinct items %.4f"
          % (pair_share, item_share))

    top = popularity_list(parts["train"] + parts["validation"])
    popularity = score_lists({user: [item for item, _ in top] for user in gt["any"]}, gt, seen)
    print("independent popularity baseline: recall@100 %.6f   ndcg@10 %.6f   "
          "(new_gt recall@100 %.6f, purchase recall@100 %.6f)"
          % (popularity["recall@100"], popularity["ndcg@10"],
             popularity["new_gt/recall@100"], popularity["purchase/recall@100"]))

    if args.run_dir:
        mismatches = compare_run(args.run_dir, gt, seen)
        if mismatches:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
