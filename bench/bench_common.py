"""What every benchmark shares: the machine, the commit and the load average a figure was
measured with, and the fresh latency process. Standard library only, so that a parent process
(the scale bench's, make_benchmarks') can import it without TensorFlow."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LATENCY_WORKERS = Path(__file__).resolve().with_name("latency_workers.py")


def machine() -> dict:
    """CPU model, cores this process may use, Python version and total memory (GB)."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
                break
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": model, "cores": cores, "python": platform.python_version(), "mem_gb": memory_kb / 2**20}


def git_commit() -> str:
    """The short commit of the working tree, marked when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> str:
    """The 1/5/15-minute load averages, as the benches record them around a measurement."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run_latency_worker(kind: str, job: dict, folder: Path, timeout: int) -> dict:
    """Run `bench/latency_workers.py KIND JOB` in a fresh process, which imports TensorFlow and
    nothing of the project (it checks); return its RESULT line as a dict."""
    job_path = folder / "job.json"
    job_path.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, str(LATENCY_WORKERS), kind, str(job_path)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"latency worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if result["project_modules_loaded"]:
        raise RuntimeError(f"the latency worker imported {result['project_modules_loaded']}")
    return result
