"""Smoke test of bench/retrieval_bench.py: `--quick` runs end to end and writes the tables with
the expected rows and numeric cells. No timing is asserted (the machines are noisy)."""

from __future__ import annotations

import re

from conftest import ROOT, run_cli

QUICK_ITEMS = (2000, 5000)  # the --quick catalogue sizes
BATCHES = (1, 64)


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after `heading`, as lists of cells."""
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    assert len(rows) >= 2 and set(rows[1][0]) <= set("-:"), f"no table under {heading!r}"
    return rows[2:]  # skip the header and the |---| line


def test_quick_run_writes_the_tables(tmp_path):
    out = tmp_path / "x.md"
    proc = run_cli(str(ROOT / "bench" / "retrieval_bench.py"), "--quick", "--out", str(out),
                   timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout  # printed as written

    # The header: the exact command, the machine, the date.
    assert "- command: `python bench/retrieval_bench.py --quick --out " in text
    assert re.search(r"- machine: .+, \d+ cores", text)
    assert re.search(r"- date: \d{4}-\d{2}-\d{2}", text)

    training = table_rows(text, "## Training throughput")
    assert len(training) == 1
    name, measured, baseline, ratio, meets = training[0]
    assert name == "two-tower training pairs/s"
    assert number(measured) > 0
    assert baseline == "50,000 (issue target)"
    assert abs(number(ratio) - number(measured) / 50_000) < 0.01
    assert meets in ("yes", "no")

    latency = table_rows(text, "## Exported top-100 latency")
    assert [(number(r[0]), number(r[1])) for r in latency] == [
        (n, b) for n in QUICK_ITEMS for b in BATCHES]
    for row in latency:
        p50, p99, floor50, floor99, ratio50, ratio99 = map(number, row[2:8])
        assert 0 < p50 <= p99 and 0 < floor50 <= floor99
        assert abs(ratio50 - p50 / floor50) < 0.02 * max(ratio50, 1)
        assert ratio99 > 0
        assert row[8] == "-"  # the 1.5x target is for 100k items only
        assert number(row[9]) >= 20  # calls

    split = table_rows(text, "### Where the exported time goes")
    assert [(number(r[0]), number(r[1])) for r in split] == [
        (n, b) for n in QUICK_ITEMS for b in BATCHES]
    for row in split:
        assert all(number(c) > 0 for c in row[2:-1])  # the last column is a difference


def test_help_names_the_flags():
    proc = run_cli(str(ROOT / "bench" / "retrieval_bench.py"), "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--items", "--dim", "--repeats", "--out", "--quick", "--profile"):
        assert flag in proc.stdout
    assert "--worker" not in proc.stdout  # internal


def test_serving_bench_quick_run_writes_its_table(tmp_path):
    out = tmp_path / "serving.md"
    proc = run_cli(str(ROOT / "bench" / "serving_bench.py"), "--quick", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "- command: `python bench/serving_bench.py --quick --out " in text
    rows = table_rows(text, "## `recommend` latency")
    assert [r[1] for r in rows] == ["1", "64"]
    for row in rows:
        assert number(row[0]) > 1000  # catalogue items
        p50, p99, alone50, alone99 = map(number, row[3:7])
        assert 0 < p50 <= p99 and 0 < alone50 <= alone99
        assert number(row[2]) >= 20  # calls
        assert row[7] == ""  # the 20 ms target is for 100k items only
