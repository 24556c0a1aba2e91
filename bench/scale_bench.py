#!/usr/bin/env python
"""Scale benchmark: SYNTHETIC logs of 10^5, 10^6 and 10^7 events through the pipeline's stages,
with the wall time and the peak memory of every stage, the slope of cost against size, and the
issue's target beside each figure.

Target (the issue): 10^7 synthetic events through the pipeline (one epoch of each model) in at
most 30 minutes with a peak memory of at most 8 GB on the 2-core machine, every cost growing no
faster than linearly with the number of events (log-log slope <= 1.0).

What runs, per size:
1. A SYNTHETIC log (`python -m tools.synthetic generate`, seed `--seed`), written once into
   `--data-dir` and reused by later runs. Its time is reported but is not a stage.
2. A fresh child process (`bench/scale_worker.py`), so that memory figures start clean, runs
   the stages with `pipeline.run_stage` as `train.py` runs them: `data, retrieval, candidates,
   ranking`, and `export` with `--export` (a config stage: without it no SavedModel is
   written). Config overrides (each in the report; `--set KEY=VALUE` adds or replaces some,
   `--set stages=[...]` picks other stages): `retrieval.epochs=1`,
   `retrieval.early_stopping=val_loss` (a fixed single epoch needs no validation-list
   objective), `ranking.epochs=1`, `ranking.compare_single_task=false` (three more rankers),
   `evaluation.bootstrap_resamples=0` (no intervals; the lists are still scored),
   `tracking.enabled=false`. The baselines stage is left out: it only scores the null models
   (the candidates and ranking stages compute their sources themselves).
3. Per stage: its wall time (the pipeline's own `state.timings`), its peak RSS (a thread of the
   child reads /proc/self/statm every 50 ms; also read at every stage boundary), the RSS at
   its end, and the peak of TensorFlow's CPU allocator during it (`get_memory_info`, reset at
   every boundary), where TensorFlow reports it. Only stage boundaries are metered: nothing of
   the project is patched or wrapped. "Above start" subtracts the RSS after the imports, before
   the data stage (Python, TensorFlow, pandas: about 0.7 GB). The process's peak is the
   kernel's (`ru_maxrss` of the child, its `VmHWM`) or the parent's 50 ms polls, whichever is
   larger.
4. Limits: the parent polls the child's VmRSS every 50 ms and ends it when it passes
   `--max-memory-gb` (default 16; 0: no cap) or runs longer than `--timeout` minutes (default
   45), first asking it (SIGUSR1, faulthandler) to print its Python stack into its log. Such a
   size is reported as "over limit" with the stage it was in, the time and the memory it had
   reached. `--dump-every S` also asks for a stack every S seconds: a poor man's profiler.
5. Slopes: least-squares fit of log(cost) against log(events) over the sizes that finished,
   per stage and in total, for wall time, peak RSS and peak RSS above the start; plus the slope
   between consecutive sizes. <= 1.0 is no faster than linear.

Usage:
  python bench/scale_bench.py                                    # 1e5, 1e6, 1e7 (up to ~1.5 h)
  python bench/scale_bench.py --sizes 100000,1000000 --data-dir /tmp/scale-data --out /tmp/scale.md
  python bench/scale_bench.py --sizes 10000000 --max-memory-gb 12 --timeout 45 --dump-every 60 \\
      --data-dir /tmp/scale-data --work-dir /tmp/scale-work --out /tmp/scale-1e7.md
  python bench/scale_bench.py --sizes 1000000 --set ranking.extra_days=1 --export
  python bench/scale_bench.py --quick --out /tmp/x.md            # smoke run, 2k and 5k events
  TF_ONEDNN_USE_SYSTEM_ALLOCATOR=true python bench/scale_bench.py --sizes 10000000   # TensorFlow's
      # allocator gives memory back (README.md, "Data larger than memory"); the report says so
  python bench/scale_bench.py --from-json /tmp/a.json --from-json /tmp/b.json --out /tmp/all.md

Only the standard library is imported here (the report is `bench/scale_report.py`, stdlib
too): this parent never imports TensorFlow or the project, so its own memory does not move
while a child is measured, and `--help` answers at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import git_commit, load_average, machine
from scale_report import GB, process_peak_gb, render

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("scale_worker.py")
FULL_SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (2_000, 5_000)
BENCH_OVERRIDES = {
    "stages": ["data", "retrieval", "candidates", "ranking"],
    "tracking": {"enabled": False},
    "evaluation": {"bootstrap_resamples": 0},
    "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
    "ranking": {"epochs": 1, "compare_single_task": False},
}
POLL_S = 0.05
# Environment variables that choose TensorFlow's CPU allocator: the children inherit them, and
# the report says which were set (the system allocator gives memory back; see README.md).
ALLOCATOR_VARIABLES = ("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "TF_ENABLE_ONEDNN_OPTS")


def status_kb(field: str, pid: int) -> int | None:
    """A `kB` field of /proc/PID/status (VmRSS), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


def run_child(argv: list[str], log_path: Path, timeout_s: float, cap_kb: int | None,
              dump_every: float | None, say) -> dict:
    """Run `python ARGV` from the repository root, its output in `log_path`, polling its RSS; end
    it at the time or memory limit (stack dump first). Returns wall, peaks and how it ended."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    started = time.monotonic()
    max_rss_kb, over, reached = 0, None, {}
    next_dump = started + dump_every if dump_every else None
    next_note = started + 60
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = status_kb("VmRSS", proc.pid) or 0
            max_rss_kb, now = max(max_rss_kb, rss), time.monotonic()
            over = "memory" if cap_kb and rss > cap_kb else "time" if now - started > timeout_s else None
            if over:
                reached = {"elapsed_s": now - started, "rss_kb": rss}
                say(f"over limit ({over}): {rss / (GB / 1024):.2f} GB after {now - started:.0f}s; "
                    "dumping the stack and ending the child")
                try:
                    proc.send_signal(signal.SIGUSR1)
                    time.sleep(1.5)
                    proc.kill()
                except ProcessLookupError:
                    pass
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            if next_dump and now >= next_dump:
                proc.send_signal(signal.SIGUSR1)
                next_dump = now + dump_every
            if now >= next_note:
                say(f"  ... {now - started:.0f}s, RSS {rss / (GB / 1024):.2f} GB")
                next_note = now + 60
            time.sleep(POLL_S)
    except BaseException:
        proc.kill()
        os.wait4(proc.pid, 0)
        raise
    return {"wall_s": time.monotonic() - started, "returncode": os.waitstatus_to_exitcode(status),
            "ru_maxrss_kb": rusage.ru_maxrss if rusage else 0, "polled_max_rss_kb": max_rss_kb,
            "over_limit": over, "reached": reached}


def read_progress(path: Path) -> dict:
    """What a child's progress lines say: the ready record, the finished stages, the stage it
    was in, its error and the last figures (all that is left of a child that failed or was
    ended)."""
    out = {"ready": None, "stages": {}, "open": None, "error": None, "figures": {}}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        event = record.pop("event", None)
        if event == "ready":
            out["ready"] = record
        elif event == "start":
            out["open"] = record["stage"]
        elif event == "end":
            out["open"] = None
            out["stages"][record.pop("stage")] = record
        elif event == "error":
            out["error"] = record
        elif event == "figures":
            out["figures"] = record["figures"]
    return out


def last_stack(log_path: Path, frames: int = 14) -> list[str]:
    """The Python frames of the last faulthandler dump in a child's log, innermost first."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    at = text.rfind("most recent call first")
    lines = []
    for line in text[at:].splitlines()[1:] if at >= 0 else []:
        match = re.match(r'\s+File "(.+)", line (\d+) in (\S+)', line)
        if not match:
            break
        file = match.group(1)
        short = file.split("/site-packages/")[-1] if "/site-packages/" in file else os.path.relpath(file, ROOT)
        lines.append(f"{match.group(3)} ({short}:{match.group(2)})")
    return lines[:frames]


def synthetic_log(n_events: int, args, data_dir: Path, work_dir: Path, say) -> tuple[Path, dict]:
    """The log's spec, generated (written aside, then renamed into place) unless cached."""
    folder = data_dir / f"synthetic-{n_events}-seed{args.seed}"
    if (folder / "spec.yaml").is_file():
        say(f"{n_events:,} events: reusing {folder}")
        return folder / "spec.yaml", {"cached": True}
    say(f"{n_events:,} events: generating {folder}")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log_path = work_dir / f"{n_events}.generate.log"
    gen = run_child(["-m", "tools.synthetic", "generate", "--events", str(n_events), "--seed", str(args.seed),
                     "--out", str(partial), "--quiet"], log_path, 3600, None, None, say)
    if gen["returncode"] != 0 or not (partial / "spec.yaml").is_file():
        raise RuntimeError(f"generating {n_events} events failed; see {log_path}")
    os.replace(partial, folder)
    return folder / "spec.yaml", {"cached": False, "wall_s": gen["wall_s"], "peak_kb": gen["ru_maxrss_kb"]}


def bench_size(n_events: int, args, data_dir: Path, work_dir: Path, say) -> dict:
    """Generate (or reuse) the log, run the stages in a child, return everything measured."""
    row = {"events": n_events, "load_start": os.getloadavg()}
    spec, row["generation"] = synthetic_log(n_events, args, data_dir, work_dir, say)
    run_dir, log_path = work_dir / f"run-{n_events}", work_dir / f"{n_events}.log"
    shutil.rmtree(run_dir, ignore_errors=True)
    job = {"spec": str(spec), "run_dir": str(run_dir), "overrides": BENCH_OVERRIDES, "set": args.set,
           "export": args.export, "progress": str(work_dir / f"{n_events}.progress.jsonl"),
           "result": str(work_dir / f"{n_events}.result.json")}
    for path in (job["progress"], job["result"]):
        Path(path).unlink(missing_ok=True)
    job_path = work_dir / f"{n_events}.job.json"
    job_path.write_text(json.dumps(job))
    say(f"{n_events:,} events: the stages in a fresh process (log {log_path})")
    cap_kb = int(args.max_memory_gb * GB / 1024) if args.max_memory_gb else None
    row["child"] = run_child([str(WORKER), str(job_path)], log_path, args.timeout * 60, cap_kb, args.dump_every, say)
    row.update(load_end=os.getloadavg(), log=str(log_path))
    progress = read_progress(Path(job["progress"]))
    row["ready"] = progress["ready"]
    if row["child"]["returncode"] == 0 and Path(job["result"]).is_file():
        row.update(status="ok", result=json.loads(Path(job["result"]).read_text()))
    else:
        over = row["child"]["over_limit"]
        row["status"] = f"over limit ({over})" if over else f"failed (exit {row['child']['returncode']})"
        row["partial"] = {"stages": progress["stages"], "figures": progress["figures"], "error": progress["error"],
                          "open": progress["open"], "baseline_kb": (progress["ready"] or {}).get("baseline_kb"),
                          "stack": last_stack(log_path),
                          "log_tail": log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else ""}
    say(f"{n_events:,} events: {row['status']} in {row['child']['wall_s']:.0f}s, peak RSS {process_peak_gb(row):.2f} GB")
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/scale_bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help="events per synthetic log, comma-separated "
                        f"(default {','.join(map(str, FULL_SIZES))}; 1e6 works too)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic logs (0)")
    parser.add_argument("--data-dir", type=Path, help="cache of the synthetic logs (default: a temp dir)")
    parser.add_argument("--work-dir", type=Path, help="run folders and child logs (default: a temp dir)")
    parser.add_argument("--timeout", type=float, help="minutes per size before the run is ended (45)")
    parser.add_argument("--max-memory-gb", type=float, default=16.0,
                        help="end a run whose RSS passes this many GB (2^30 bytes); 0: no cap (16)")
    parser.add_argument("--dump-every", type=float, help="seconds between Python stack dumps into the "
                        "child's log (off)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="another config override, as train.py --set (repeatable; stages=[...] picks the stages)")
    parser.add_argument("--export", action="store_true", help="run the export stage too (the SavedModels)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (2k, 5k events)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--from-json", type=Path, action="append", metavar="FILE",
                        help="run nothing: the report of earlier --json files, their sizes merged "
                        "(repeatable; the header is the first file's)")
    return parser


def child_meta(rows: list[dict]) -> dict:
    """TensorFlow's version and the stages, as the children said."""
    ready = [r.get("ready") or {} for r in rows]
    ready = [x for x in ready if x]
    return {"tf": ready[0].get("tf", "?") if ready else "?", "stages": ready[0].get("stages") if ready else None}


def rerender(args) -> int:
    """The report of saved --json files, sizes merged (a later file's size replaces an earlier
    one's)."""
    saved = [json.loads(path.read_text()) for path in args.from_json]
    meta, rows = dict(saved[0]["meta"]), {}
    for data in saved:
        rows.update({row["events"]: row for row in data["rows"]})
    if len(saved) > 1:
        for key in ("command", "date", "commit", "load_start", "load_end", "cap"):
            meta[key] = " ; ".join(dict.fromkeys(str(d["meta"][key]) for d in saved))
        meta["timeout_min"] = max(d["meta"]["timeout_min"] for d in saved)
    rows = [rows[n] for n in sorted(rows)]
    meta.update(child_meta(rows))
    write_report(render(meta, rows), args.out)
    return 0


def write_report(text: str, out: Path | None) -> None:
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def parse_size(text: str) -> int:
    value = float(text)
    if value < 1 or value != int(value):
        raise SystemExit(f"--sizes: {text!r} is not a positive whole number of events")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.from_json:
        return rerender(args)
    sizes = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()}) if args.sizes else \
        list(QUICK_SIZES if args.quick else FULL_SIZES)
    args.timeout = args.timeout or (5.0 if args.quick else 45.0)

    def say(message: str) -> None:
        print(f"[scale_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    overrides = [f"{k}={json.dumps(v)}" if not isinstance(v, dict) else
                 ", ".join(f"{k}.{a}={json.dumps(b)}" for a, b in v.items()) for k, v in BENCH_OVERRIDES.items()]
    meta = {"command": "python bench/scale_bench.py " + shlex.join(argv),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **machine(), "commit": git_commit(), "load_start": load_average(), "export": args.export,
            "overrides": ", ".join(overrides + args.set + ["the export stage added (--export)"] * args.export),
            "timeout_min": args.timeout,
            "cap": f"RSS cap {args.max_memory_gb:g} GB" if args.max_memory_gb else "no RSS cap",
            "environment": ", ".join(f"{n}={os.environ[n]}" for n in ALLOCATOR_VARIABLES if n in os.environ)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        work_dir, data_dir = args.work_dir or Path(tmp) / "work", args.data_dir or Path(tmp) / "data"
        work_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            rows.append(bench_size(n, args, data_dir, work_dir, say))
    meta["load_end"] = load_average()
    meta.update(child_meta(rows))
    write_report(render(meta, rows), args.out)
    if args.out:
        say(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    return 1 if any(r["status"].startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
