#!/usr/bin/env python
"""Compare two run folders: a restructure that claims to change no behaviour must leave the
same figures and the same lists.

    python tools/compare_runs.py RUN_A RUN_B [--tolerance 1e-9]

Checks that metrics.json has the same keys with values equal within the tolerance, and that
each list file (candidates, candidate_set, recommendations, baselines/*) is byte-identical;
where one is not, it says whether the frames are equal all the same. Exit status 1 on any
difference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

LISTS = ["candidates.parquet", "candidate_set.parquet", "recommendations.parquet"]


def compare_metrics(a: Path, b: Path, tolerance: float) -> list[str]:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    problems = [f"metrics.json: {key} only in {a.parent}" for key in sorted(set(left) - set(right))]
    problems += [f"metrics.json: {key} only in {b.parent}" for key in sorted(set(right) - set(left))]
    for key in sorted(set(left) & set(right)):
        x, y = left[key], right[key]
        if not (x == y or (isinstance(x, float) and isinstance(y, float)
                           and (abs(x - y) <= tolerance or (math.isnan(x) and math.isnan(y))))):
            problems.append(f"metrics.json: {key}: {x!r} != {y!r}")
    return problems


def compare_list(a: Path, b: Path) -> list[str]:
    if not a.is_file() or not b.is_file():
        return [f"{a.name}: missing in {a.parent if not a.is_file() else b.parent}"]
    if a.read_bytes() == b.read_bytes():
        return []
    same = pd.read_parquet(a).equals(pd.read_parquet(b))
    return [f"{a.relative_to(a.parents[1]) if a.parent.name == 'baselines' else a.name}: bytes differ"
            f" ({'frames equal' if same else 'frames differ'})"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-9, help="largest metric difference (default 1e-9)")
    args = parser.parse_args(argv)
    problems = compare_metrics(args.run_a / "metrics.json", args.run_b / "metrics.json", args.tolerance)
    names = LISTS + sorted(f"baselines/{p.name}" for p in (args.run_a / "baselines").glob("*.parquet"))
    for name in names:
        problems += compare_list(args.run_a / name, args.run_b / name)
    n_metrics = len(json.loads((args.run_a / "metrics.json").read_text()))
    for problem in problems:
        print(problem)
    print(f"{n_metrics} metrics and {len(names)} list files compared: "
          f"{'identical' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
