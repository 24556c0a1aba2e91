#!/usr/bin/env python
"""Kill a run in each stage, rerun the same command, and compare metrics.json byte for byte.

For each kill point, `train.py` runs into its own folder with tests/kill_hook on its path, which
SIGKILLs the process at that exact point (right after a stage returned, or right after a fit
backed up an epoch); then the same command runs again into the same folder, without the hook.
The rerun must finish and write a metrics.json identical, byte for byte, to an uninterrupted
run's. The suite kills one point (tests/test_faults.py: the ranker mid-fit); this script covers
every stage, at about 30 s per point on a 6,000-event synthetic log.

Usage:
  python tests/kill_each_stage.py                       # every point, into a temporary folder
  python tests/kill_each_stage.py --points stage:export --out /tmp/kills
Exit status 1 when a point's rerun fails or differs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import synthetic  # noqa: E402

KILL_HOOK = Path(__file__).parent / "kill_hook"
# Every stage, the fits mid-way: a kill after data, after baselines, in the two-tower fit after
# its first epoch, after candidates, in the ranker's fit after its second epoch, after ranking,
# and after export (every model published; metrics.json and COMPLETE not yet written).
POINTS = ("stage:data", "stage:baselines", "retrieval:1", "stage:candidates", "ranker:2", "stage:ranking",
          "stage:export")
ARGS = ("--set", "evaluation.bootstrap_resamples=50", "--set", "ranking.compare_single_task=false",
        "--set", "retrieval.epochs=2", "--set", "ranking.epochs=3", "--set", "ranking.patience=3",
        "--set", "tracking.enabled=false", "-q")


def train(spec: Path, run_dir: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if kill_at:
        env["SHOPPING_MTL_KILL_AFTER"] = kill_at
        env["PYTHONPATH"] = os.pathsep.join([str(KILL_HOOK), str(ROOT)])
    return subprocess.run([sys.executable, "train.py", "--dataset", str(spec), "--run-dir", str(run_dir), *ARGS],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma-separated kill points (default: {','.join(POINTS)})")
    parser.add_argument("--out", help="folder for the log and the runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="kill_each_stage-"))
    spec = synthetic.generate(out / "data", 6_000, seed=1)
    reference = train(spec, out / "reference")
    if reference.returncode != 0:
        print(reference.stderr[-3000:], file=sys.stderr)
        return 1
    expected = (out / "reference" / "metrics.json").read_bytes()
    print(f"{'kill point':<18} {'killed':>7} {'rerun':>6} {'seconds':>8}  metrics.json")
    failed = False
    for point in args.points.split(","):
        run_dir = out / point.replace(":", "_")
        started = time.perf_counter()
        killed = train(spec, run_dir, point)
        rerun = train(spec, run_dir)
        same = rerun.returncode == 0 and (run_dir / "metrics.json").read_bytes() == expected
        failed |= killed.returncode != -9 or not same
        print(f"{point:<18} {killed.returncode:>7} {rerun.returncode:>6} {time.perf_counter() - started:>8.0f}  "
              f"{'identical' if same else 'DIFFERS'}")
        if rerun.returncode != 0:
            print(rerun.stderr[-3000:], file=sys.stderr)
    print(f"runs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
