"""The independent protocol check (tests/independent_protocol.py) on logs described only by a spec.

Each log is small and synthetic, with names and formats the bundled specs do not use: a headed
semicolon CSV in two gzip parts with millisecond times and view/wish/cart/order behaviours over
five days (calendar split), and a short log of a few hours with local string times, ties at the
quantile cuts and numeric behaviour codes, as a pipe CSV without header and as Parquet (quantile
split and quantile folds). `train.py --stages data,baselines` runs on each (no model is fitted;
the baselines leave their lists), then the check must agree with every figure of metrics.json.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import random
import shutil
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import independent_protocol
from conftest import ROOT, run_cli, write_spec

CHECK = str(ROOT / "tests" / "independent_protocol.py")
HEADLINES = ("recall@100", "ndcg@10", "purchase/ndcg@10", "new_gt/recall@100", "save/recall@50")
BASELINES = ("popularity", "user_history", "covisit")
START = datetime(2023, 3, 6, tzinfo=timezone.utc)

DAILY_SPEC = """\
    name: corner_shop
    root: ../data              # relative to this file
    events:
      paths: ["part-*.csv.gz"]
      delimiter: ";"
      header: true
      user_id: visitor
      item_id: sku
      behavior: action
      timestamp: ts_ms
      timestamp_format: unix
      timestamp_unit: ms
      behaviors: {view: click, wish: save, cart: save, order: purchase}
      item_columns: {shelf: string}
    """

SHORT_SPEC = """\
    name: flash_sale
    root: .
    events:
      paths: [log.psv]
      delimiter: "|"
      header: false
      columns: [when, who, what, code, note]
      user_id: who
      item_id: what
      behavior: code
      timestamp: when
      timestamp_format: "%d.%m.%Y %H:%M"
      timezone: America/New_York
      behaviors: {1: click, 2: save, 3: save, 4: purchase}
    """

PARQUET_SPEC = """\
    name: flash_sale_parquet
    events:
      paths: [log.parquet]
      user_id: shopper
      item_id: product
      behavior: kind
      timestamp: at
      timestamp_format: "%Y-%m-%dT%H:%M:%S%z"
      behaviors: {"1": click, "2": save, "3": save, "4": purchase}
    """


def _engagement(rng, users, items, n):
    """`n` (user, item, behaviour index 0-3) triples in which users come back to their items."""
    rows = []
    favourites = {u: rng.sample(range(items), 6) for u in range(users)}
    for _ in range(n):
        user = rng.randrange(users)
        item = rng.choice(favourites[user]) if rng.random() < 0.6 else int(rng.paretovariate(1.2)) % items
        rows.append((user, item, rng.choices(range(4), weights=[80, 8, 7, 5])[0]))
    return rows


def write_daily_log(folder, bad_rows=False):
    """The five-day log as two gzip parts under `folder/data` and its spec under `folder/specs`.

    Every 40th row is written again with another `session`, a column the spec does not use: an
    exact duplicate of the row the spec reads. With `bad_rows`, six malformed rows are added: ids
    written as NaN and NULL, a time before 1970, one in 2100, an unknown behaviour and a short row.
    """
    rng = random.Random(7)
    actions = ("view", "wish", "cart", "order")
    lines = []
    for number, (user, item, kind) in enumerate(_engagement(rng, 45, 70, 900)):
        moment = START + timedelta(seconds=rng.randrange(5 * 86400))
        ms = int(moment.timestamp() * 1000) + rng.randrange(1000)
        line = "v%d;%s;sku-%d;%d;shelf%d" % (user, actions[kind], item, ms, item % 7)
        lines.append(line + ";s%d" % number)
        if number % 40 == 0:
            lines.append(line + ";s%d" % (number + 1))
    if bad_rows:
        lines[5:5] = ["NaN;view;sku-1;1678100000000;shelf1;s", "v1;view;NULL;1678100000000;shelf1;s",
                      "v2;view;sku-2;-5000;shelf2;s", "v3;view;sku-3;4102444800000;shelf3;s",
                      "v4;refund;sku-4;1678100000000;shelf4;s", "v5;view;sku-5"]
    data = folder / "data"
    data.mkdir(parents=True)
    header = "visitor;action;sku;ts_ms;shelf;session\n"
    half = len(lines) // 2
    for name, part in (("part-1.csv.gz", lines[:half]), ("part-2.csv.gz", lines[half:])):
        with gzip.open(data / name, "wt") as handle:
            handle.write(header + "\n".join(part) + "\n")
    (folder / "specs").mkdir()
    return write_spec(folder / "specs", DAILY_SPEC, "corner_shop.yaml")


def short_log_rows():
    """700 events over two and a half hours of one New York afternoon, times to the minute (so
    many events share a time), as (local time, user, item, behaviour code)."""
    rng = random.Random(11)
    local = datetime(2024, 7, 3, 12, 0, tzinfo=ZoneInfo("America/New_York"))
    rows = []
    for user, item, kind in _engagement(rng, 35, 50, 700):
        rows.append((local + timedelta(minutes=rng.randrange(150)), "w%d" % user, "p%d" % item, kind + 1))
    return rows


def write_short_log(folder):
    """The short log as a pipe CSV without header (local times, day first) and its spec."""
    folder.mkdir(parents=True)
    text = "".join("%s|%s|%s|%d|x\n" % (moment.strftime("%d.%m.%Y %H:%M"), user, item, code)
                   for moment, user, item, code in short_log_rows())
    (folder / "log.psv").write_text(text)
    return write_spec(folder, SHORT_SPEC, "flash_sale.yaml")


def write_short_parquet(folder):
    """The same short log as Parquet: integer ids and codes, times as text with an offset."""
    folder.mkdir(parents=True)
    rows = short_log_rows()
    pq.write_table(pa.table({
        "shopper": [int(user[1:]) for _, user, _, _ in rows],
        "product": [item for _, _, item, _ in rows],
        "kind": [code for _, _, _, code in rows],
        "at": [moment.strftime("%Y-%m-%dT%H:%M:%S%z") for moment, _, _, _ in rows],
    }), folder / "log.parquet")
    return write_spec(folder, PARQUET_SPEC, "flash_sale.yaml")


def train(spec, run_dir, *flags):
    """`train.py --stages data,baselines` on a spec; the run must succeed."""
    done = run_cli("train.py", "--dataset", str(spec), "--run-dir", str(run_dir), "--stages", "data,baselines",
                   "-q", "--set", "evaluation.bootstrap_resamples=0", "--set", "tracking.enabled=false", *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def check(*args):
    """The check's command line on this machine: (exit status, printed text)."""
    done = run_cli(CHECK, *args)
    return done.returncode, done.stdout + done.stderr


def assert_headlines_agree(spec, part_dir, metrics, events=None, end=None):
    """The headline figures of each baseline list, scored independently, within 0.005 of the
    run's (the check itself requires 1e-9)."""
    if events is None:
        result = independent_protocol.evaluate(str(spec))
    else:
        result = independent_protocol.evaluate(None, loaded=(events, {}), end=end)
    assert result["gt"]["any"], "no test users"
    for name in BASELINES:
        rows = independent_protocol.read_list_file(str(part_dir / "baselines" / (name + ".parquet")))
        mine = independent_protocol.score_lists(rows, result["gt"], result["seen"])
        for figure in HEADLINES:
            key = "baseline/%s/%s" % (name, figure)
            if mine[figure] == mine[figure]:
                assert mine[figure] == pytest.approx(metrics[key], abs=0.005), key
    assert metrics["eval/test_users"] == len(result["gt"]["any"])
    return result


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    """The five-day log and a run of it: (spec, run folder, metrics)."""
    folder = tmp_path_factory.mktemp("daily")
    spec = write_daily_log(folder)
    return spec, folder / "run", train(spec, folder / "run")


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """The short log and a run of it: (spec, run folder, metrics)."""
    folder = tmp_path_factory.mktemp("short")
    spec = write_short_log(folder / "data")
    return spec, folder / "run", train(spec, folder / "run")


def test_a_daily_log_of_any_spec_is_checked_figure_by_figure(daily):
    spec, run_dir, metrics = daily
    code, printed = check("--spec", str(spec), "--run-dir", str(run_dir))
    assert code == 0, printed
    assert "DIFFERS" not in printed and "MISSING" not in printed
    assert "== split (calendar days)" in printed and "data fingerprint (run_info.json)              the same" in printed
    for name in BASELINES:
        assert "== baseline/%s/" % name in printed
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["split"]["method"] == "calendar_day"
    assert metrics["data/events/duplicate_rows"] > 20
    assert_headlines_agree(spec, run_dir, metrics)


def test_data_dir_replaces_the_specs_root(daily, tmp_path):
    spec, run_dir, _ = daily
    elsewhere = tmp_path / "elsewhere" / "spec.yaml"
    elsewhere.parent.mkdir()
    shutil.copy(spec, elsewhere)  # its root, ../data, is no folder from here
    code, printed = check("--spec", str(elsewhere), "--run-dir", str(run_dir))
    assert code == 2 and "no file matches" in printed
    code, printed = check("--spec", str(elsewhere), "--data-dir", str(spec.parent.parent / "data"),
                          "--run-dir", str(run_dir))
    assert code == 0, printed


def test_a_figure_the_run_got_wrong_is_found(daily, tmp_path):
    spec, run_dir, metrics = daily
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    metrics = dict(metrics)
    metrics["baseline/user_history/ndcg@10"] += 0.001
    metrics["split/test_events"] += 1
    (copy / "metrics.json").write_text(json.dumps(metrics))
    code, printed = check("--spec", str(spec), "--run-dir", str(copy))
    assert code == 1
    assert printed.count("<-- DIFFERS") == 2
    assert "baseline/user_history/ndcg@10" in [line.split()[0] for line in printed.splitlines() if "DIFFERS" in line]


def test_calendar_folds_and_skipped_malformed_rows(tmp_path):
    spec = write_daily_log(tmp_path, bad_rows=True)
    code, printed = check("--spec", str(spec))
    assert code == 2 and "6 malformed rows" in printed and "missing_id 2" in printed
    run_dir = tmp_path / "run"
    metrics = train(spec, run_dir, "--on-bad-rows", "skip", "--set", "evaluation.test_days=2")
    assert metrics["data/bad_rows/total"] == 6
    days = sorted(p.name for p in (run_dir / "folds").iterdir())
    assert days == ["2023-03-09", "2023-03-10"]
    code, printed = check("--spec", str(spec), "--run-dir", str(run_dir))
    assert code == 0, printed
    assert "DIFFERS" not in printed and "pooled over folds 2023-03-09, 2023-03-10" in printed
    code, printed = check("--spec", str(spec), "--run-dir", str(run_dir / "folds" / "2023-03-09"))
    assert code == 0, printed
    events, _ = independent_protocol.load(str(spec), skip_bad_rows=True)
    for day in days:
        fold_metrics = json.loads((run_dir / "folds" / day / "metrics.json").read_text())
        end = independent_protocol.parse_iso_ns(day) + independent_protocol.NS_PER_DAY
        assert_headlines_agree(spec, run_dir / "folds" / day, fold_metrics, events, end)


def test_a_short_log_is_split_at_event_time_quantiles_keeping_ties_together(short):
    spec, run_dir, metrics = short
    events, _ = independent_protocol.load(str(spec))
    times = sorted(ns for *_, ns in events)
    n = len(times)
    # The cuts fall inside runs of one time: cutting by count would split them.
    assert times[math.floor(0.6 * n) - 1] == times[math.floor(0.6 * n)]
    assert times[math.floor(0.8 * n) - 1] == times[math.floor(0.8 * n)]
    code, printed = check("--spec", str(spec), "--run-dir", str(run_dir))
    assert code == 0, printed
    assert "== split (event-time quantiles)" in printed and "DIFFERS" not in printed
    result = assert_headlines_agree(spec, run_dir, metrics)
    assert result["split"]["mode"] == "quantile"
    assert len(result["split"]["train"]) < math.floor(0.6 * n)
    info = json.loads((run_dir / "run_info.json").read_text())
    # 12:00 in New York on 3 July is 16:00 UTC.
    assert info["split"]["test_start"].startswith("2024-07-03T")


def test_quantile_folds_of_a_parquet_log(tmp_path):
    spec = write_short_parquet(tmp_path / "data")
    run_dir = tmp_path / "run"
    metrics = train(spec, run_dir, "--set", "evaluation.test_days=2")
    assert sorted(p.name for p in (run_dir / "folds").iterdir()) == ["1", "2"]
    code, printed = check("--spec", str(spec), "--run-dir", str(run_dir))
    assert code == 0, printed
    assert "pooled over folds 1, 2" in printed and "DIFFERS" not in printed
    assert printed.count("== split (event-time quantiles)") == 2
    code, printed = check("--spec", str(spec), "--run-dir", str(run_dir / "folds" / "1"))
    assert code == 0, printed
    events, _ = independent_protocol.load(str(spec))
    cuts = dict(independent_protocol.folds(events, 2))
    assert cuts["2"] is None and sum(ns < cuts["1"] for *_, ns in events) <= 0.8 * len(events)
    for name in ("1", "2"):
        fold_metrics = json.loads((run_dir / "folds" / name / "metrics.json").read_text())
        assert_headlines_agree(spec, run_dir / "folds" / name, fold_metrics, events, cuts[name])
    assert metrics["eval/test_users"] == sum(metrics["fold/%s/eval/test_users" % n] for n in ("1", "2"))


def test_what_the_check_cannot_read_is_refused_with_a_reason(tmp_path):
    (tmp_path / "log.csv.zst").write_bytes(b"")
    write_spec(tmp_path, SHORT_SPEC.replace("log.psv", "log.csv.zst"), "zst.yaml")
    write_spec(tmp_path, SHORT_SPEC.replace("%H:%M", "%H:%M %Z"), "zone.yaml")
    write_spec(tmp_path, SHORT_SPEC.replace("      columns:", "      session: code\n      columns:"), "key.yaml")
    expected = {"zst.yaml": "compressed as .zst", "zone.yaml": "holds %Z", "key.yaml": "events key 'session'"}
    for name, message in expected.items():
        with contextlib.redirect_stderr(io.StringIO()) as printed:
            assert independent_protocol.main(["--spec", str(tmp_path / name)]) == 2
        assert message in printed.getvalue(), printed.getvalue()


def test_a_run_on_part_of_the_log_is_refused(short, tmp_path):
    spec, run_dir, _ = short
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = (copy / "config.yaml").read_text().replace("max_events: null", "max_events: 300")
    assert "max_events: 300" in config
    (copy / "config.yaml").write_text(config)
    code, printed = check("--spec", str(spec), "--run-dir", str(copy))
    assert code == 2 and "data.max_events=300" in printed
