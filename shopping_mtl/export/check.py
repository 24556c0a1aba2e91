"""Checking exports as TF Serving would load them (`python -m shopping_mtl check-export`): each
version in a fresh process that imports only TensorFlow, so this module imports none of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPLAY = Path(__file__).with_name("replay_warmup.py")  # run as a file: the package is never imported


def version_dirs(path: Path, every: bool) -> list[Path]:
    """The version folders DIR names: itself, its newest (or every) version, or those of each
    model folder under it. Hidden folders (exports in progress) are never picked."""
    def numbered(folder: Path) -> list[Path]:
        found = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
        return found if every else found[-1:]

    if (path / "saved_model.pb").is_file():
        return [path]
    if numbered(path):
        return numbered(path)
    out = []
    for model in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.extend(numbered(model))
    return out


def saved_model_cli() -> list[str]:
    beside = Path(sys.executable).with_name("saved_model_cli")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("saved_model_cli")
    return [found] if found else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def check(version: Path, timeout: int) -> tuple[bool, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    done = subprocess.run([sys.executable, str(REPLAY), str(version)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return False, f"  could not load: {done.stderr.strip().splitlines()[-1:] or ['no output']}"
    report = json.loads(lines[-1])
    show = subprocess.run([*saved_model_cli(), "show", "--all", "--dir", str(version)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    problems = list(report["problems"])
    if show.returncode != 0:
        problems.append(f"saved_model_cli show --all failed: {show.stderr.strip()[-300:]}")
    elif "serving_default" not in show.stdout:
        problems.append("saved_model_cli shows no serving_default signature")
    text = [f"  inputs:  {', '.join(f'{k} {v[0]}{v[1]}' for k, v in report['inputs'].items())}",
            f"  outputs: {', '.join(report['outputs'])}",
            f"  warmup requests replayed: {report['warmup_records']}, stock ops only: "
            f"{'yes' if not report['unregistered_ops'] else 'no'}, saved_model_cli: "
            f"{'ok' if show.returncode == 0 else 'FAILED'}"]
    text += [f"  PROBLEM: {p}" for p in problems]
    return not problems, "\n".join(text)
