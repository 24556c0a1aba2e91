#!/usr/bin/env python
"""`make bench`: run the benchmarks and collect their tables into bench/RESULTS.md.

Three sections, each made of parts that run in their own process (a part is a script of bench/
that writes its markdown with `--out`):

- quality: `bench/quality_bench.py` (train.py on EComm and Taobao; every metric of
  docs/EVALUATION.md with 95% intervals for the final list, the two-tower model, the
  candidate set and its sources, and each baseline; the ranker's heads; the final list over the
  best baseline).
- speed: `bench/retrieval_bench.py` (two-tower training pairs/s; exported top-100 latency against
  the matmul floor), `bench/serving_bench.py` (latency of the exported `recommend` model) and
  `bench/ranker_bench.py` (the ranker's training rows/s beside the two-tower pairs/s).
- scale: `bench/scale_bench.py` (synthetic logs of 10^5, 10^6, 10^7 events through the data,
  retrieval, candidates and ranking stages: wall time, peak memory, slopes per stage).

Each part's markdown goes into its section under the exact command that made it, with the
part's wall time and the load average around it. A part that fails (or whose script does not
exist) leaves its error and the end of its stderr in its place, and the others go on. Only the
sections run are replaced: `--parts scale` rewrites the scale section of an existing
bench/RESULTS.md and keeps the others as they are. The file is written atomically (a temp file,
then a rename). This script runs the parts; the page's markdown (sections, overview, the speed
summary) is `bench/benchmarks_report.py`.

Usage:
  python bench/make_benchmarks.py                             # everything (about 1.5 h with 10^7 events)
  python bench/make_benchmarks.py --parts quality,speed       # leave the scale section as it is
  python bench/make_benchmarks.py --parts scale --scale-sizes 100000,1000000
  python bench/make_benchmarks.py --quick --out /tmp/B.md     # smoke run: tiny sizes everywhere
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench_common import git_commit, load_average  # the benches' shared helpers (stdlib only)
from bench_common import machine as described_machine
from benchmarks_report import SECTIONS, placeholder, read_sections, render, render_section

ROOT = Path(__file__).resolve().parents[1]
SPEED_PARTS = ("retrieval", "serving", "ranker")
SCALE_SIZES = "100000,1000000,10000000"


def rel(path) -> str:
    try:
        return os.path.relpath(path, ROOT) if Path(os.path.abspath(path)).is_relative_to(ROOT) else str(path)
    except (OSError, ValueError):
        return str(path)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def log(message: str) -> None:
    print(f"[make_benchmarks {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    m = described_machine()
    memory = f", {m['mem_gb']:.0f} GB memory" if m["mem_gb"] else ""
    try:
        tf = f", TensorFlow {metadata.version('tensorflow')}"
    except metadata.PackageNotFoundError:
        tf = ""
    return f"{m['cpu']}, {m['cores']} cores{memory}; {platform.system()} {platform.release()}; Python {m['python']}{tf}"

# --------------------------------------------------------------------------------------------
# The parts


def plan(args) -> dict[str, list[dict]]:
    """section -> its steps: {name, script, argv (after the interpreter), out}."""
    py = rel(sys.executable)
    parts_dir = Path(args.parts_dir)
    quick = ["--quick"] if args.quick else []

    def step(name, script, flags, extra):
        out = parts_dir / f"{name}.md"
        return {"name": name, "script": script, "out": out, "python": py,
                "argv": [rel(script), *flags, *quick, *shlex.split(extra or ""), "--out", rel(out)]}

    steps = {"quality": [step("quality", ROOT / "bench" / "quality_bench.py",
                              ["--datasets", args.datasets, *(["--runs-dir", rel(args.runs_dir)] if args.runs_dir else []),
                               *(["--reuse"] if args.reuse else [])], args.quality_args)]}
    speed = [s.strip() for s in args.speed.split(",") if s.strip()]
    unknown = set(speed) - set(SPEED_PARTS)
    if unknown:
        raise SystemExit(f"--speed has unknown part(s) {sorted(unknown)}; known: {', '.join(SPEED_PARTS)}")
    extras = {"retrieval": args.retrieval_args, "serving": args.serving_args, "ranker": args.ranker_args}
    steps["speed"] = [step(f"speed-{name}", ROOT / "bench" / f"{name}_bench.py", [], extras[name]) for name in speed]
    scale_script = Path(args.scale_script)
    scale_flags = []
    if not args.quick and scale_script.is_file() and "--sizes" in script_help(scale_script):
        scale_flags = ["--sizes", args.scale_sizes]
    steps["scale"] = [step("scale", scale_script, scale_flags, args.scale_args)]
    return steps


def script_help(script: Path) -> str:
    try:
        return subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def run_step(s: dict, timeout_s: float) -> dict:
    """Run one part in its own process; returns its record (status, markdown or error)."""
    command = shlex.join([s["python"], *s["argv"]])
    record = {"name": s["name"], "command": command, "date": now(), "commit": git_commit(),
              "load_start": load_average()}
    if not Path(s["script"]).is_file():
        log(f"{s['name']}: {rel(s['script'])} does not exist: reported as missing")
        record.update(status="missing", load_end=load_average(), wall_s=0.0,
                      error=f"{rel(s['script'])} does not exist (yet): this part was not run.")
        return record
    out = Path(s["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    err_path = out.with_suffix(".log")
    log(f"{s['name']}: {command}")
    started = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(err_path, "w") as err:
        try:
            proc = subprocess.run([sys.executable, *s["argv"]], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                  timeout=timeout_s, env=env)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout_s / 60:.0f} min"
    record.update(wall_s=time.time() - started, load_end=load_average(), exit=code, log=rel(err_path))
    text = out.read_text() if out.is_file() else ""
    tail = "\n".join(err_path.read_text(errors="replace").splitlines()[-40:])[-4000:]
    if code == 0 and text.strip():
        record.update(status="ok", markdown=text)
    else:
        # A part that wrote its tables and then failed (e.g. quality on one dataset) keeps them.
        record.update(status="failed", markdown=text, error=f"exit {code}; the end of its stderr ({rel(err_path)}):",
                      tail=tail)
    log(f"{s['name']}: {record['status']} in {record['wall_s']:.0f}s")
    return record


# --------------------------------------------------------------------------------------------
# The command line


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file beside it and a rename: readers see the old
    page or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="bench/make_benchmarks.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(SECTIONS),
                        help="sections to run: quality, speed, scale (default all); the others are kept")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: every part with its --quick (tiny sizes; seconds to a minute each)")
    parser.add_argument("--out", type=Path, help="the file to write (default bench/RESULTS.md; --quick: "
                        "runs/bench-quick-parts/RESULTS.md, so a smoke run never replaces real figures)")
    parser.add_argument("--parts-dir", type=Path, default=None,
                        help="where each part writes its markdown and stderr log (default runs/bench-parts, "
                        "--quick: runs/bench-quick-parts)")
    parser.add_argument("--datasets", default="ecomm,taobao", help="quality: datasets (default ecomm,taobao)")
    parser.add_argument("--runs-dir", type=Path, help="quality: parent of the run folders (quality_bench's default: runs/)")
    parser.add_argument("--reuse", action="store_true", help="quality: read existing run folders instead of training")
    parser.add_argument("--speed", default=",".join(SPEED_PARTS),
                        help="speed: which benches (default retrieval,serving,ranker)")
    parser.add_argument("--scale-sizes", default=SCALE_SIZES, help=f"scale: events per log (default {SCALE_SIZES})")
    parser.add_argument("--scale-script", default=str(ROOT / "bench" / "scale_bench.py"), help=argparse.SUPPRESS)
    for name in ("quality", "retrieval", "serving", "ranker", "scale"):
        parser.add_argument(f"--{name}-args", default="", metavar="FLAGS",
                            help=f"more flags for the {name} bench, one string (e.g. \"--repeats 1\")")
    parser.add_argument("--timeout", type=float, default=120, help="minutes per part before it is ended (120)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if set(parts) - set(SECTIONS) or not parts:
        raise SystemExit(f"--parts takes some of {', '.join(SECTIONS)}; got {args.parts!r}")
    if args.parts_dir is None:
        args.parts_dir = ROOT / "runs" / ("bench-quick-parts" if args.quick else "bench-parts")
    if args.out is None:
        args.out = ROOT / "runs" / "bench-quick-parts" / "RESULTS.md" if args.quick else ROOT / "bench" / "RESULTS.md"
    meta = {"date": now(), "commit": git_commit(), "machine": machine(),
            "command": shlex.join(["python", "bench/make_benchmarks.py", *argv])}
    steps = plan(args)
    sections = {name: text for name, text in read_sections(args.out).items() if name in SECTIONS}
    failed = False
    for name in SECTIONS:
        if name not in parts:
            continue
        log(f"section {name}")
        records = [run_step(s, args.timeout * 60) for s in steps[name]]
        failed |= any(r["status"] == "failed" for r in records)
        sections[name] = render_section(name, records, {**meta, "date": now()})
        # Written after every section, so an interrupted run keeps what it finished.
        full = {n: sections.get(n) or placeholder(n) for n in SECTIONS}
        write_atomic(args.out, render(full, {**meta, "date": now()}))
    log(f"wrote {rel(args.out)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
