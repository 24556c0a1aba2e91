"""Shared fixtures: fixed seeds, and small datasets written under tmp_path from plain text."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import shopping_mtl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from shopping_mtl.config import load_config, merge
from shopping_mtl.pipeline import run_stage
from shopping_mtl.run_state import RunState
from tools import synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory):
    """Every run the tests start is tracked in a store under the session's tmp folder, never in
    the project's own mlflow.db (subprocesses inherit the variable)."""
    folder = tmp_path_factory.mktemp("mlflow")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    yield folder
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(autouse=True)
def fixed_seeds():
    random.seed(0)
    np.random.seed(0)
    yield


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


CSV_SPEC = """\
name: tiny
root: .
events:
  paths: [events.csv]
  delimiter: ","
  header: false
  columns: [user_id, item_id, behavior, timestamp]
  timestamp_format: unix
  behaviors: {pv: click, fav: save, cart: save, buy: purchase}
items:
  paths: [items.csv]
  header: true
  key: item_id
  types: {category: string, price: float}
"""

DAY = 86400
T0 = 1_700_006_400  # 2023-11-15 00:00:00 UTC


def event_lines(rows) -> str:
    return "".join(f"{u},{i},{b},{t}\n" for u, i, b, t in rows)


def tiny_rows():
    """Three users over four days: train = days 0-1, validation = day 2, test = day 3."""
    return [
        ("u1", "a", "pv", T0 + 10), ("u1", "b", "pv", T0 + 20), ("u1", "a", "buy", T0 + DAY + 5),
        ("u2", "b", "pv", T0 + 30), ("u2", "c", "fav", T0 + DAY + 40), ("u2", "b", "cart", T0 + 2 * DAY + 1),
        ("u3", "c", "pv", T0 + 2 * DAY + 50),
        ("u1", "c", "pv", T0 + 3 * DAY + 1), ("u1", "a", "buy", T0 + 3 * DAY + 2),
        ("u2", "d", "fav", T0 + 3 * DAY + 3), ("u3", "a", "pv", T0 + 3 * DAY + 4),
    ]


@pytest.fixture
def tiny_dataset(tmp_path):
    """A CSV dataset of tiny_rows() with an item table; returns the spec path."""
    (tmp_path / "events.csv").write_text(event_lines(tiny_rows()))
    (tmp_path / "items.csv").write_text("item_id,category,price\na,c1,10.0\nb,c1,5.5\nc,c2,100\nd,c2,1\n")
    return write_spec(tmp_path, CSV_SPEC)


def tiny_log():
    """600 events of 40 users over 60 items (6 categories, prices) in five days, and the items."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 600
    events = pd.DataFrame({
        "user_id": [f"u{i}" for i in rng.integers(0, 40, n)],
        "item_id": [f"i{i}" for i in rng.integers(0, 60, n)],
        "event": rng.choice(["click", "save", "purchase"], n, p=[0.8, 0.15, 0.05]),
        "timestamp": pd.to_datetime(1_700_000_000 + np.sort(rng.integers(0, 5 * 86400, n)), unit="s", utc=True),
    })
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(60)], "category": [f"c{i % 6}" for i in range(60)],
                          "price": rng.uniform(1, 100, 60)})
    return events, items


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a project command in a fresh interpreter, capturing its output."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def staged_state(folder: Path, **overrides):
    """A small synthetic log (8,000 events) through the data, retrieval (one epoch) and
    candidates stages, run folder under `folder`; `overrides` merge into the config."""
    spec = synthetic.generate(folder / "data", 8_000, seed=2)
    config = load_config(overrides=merge({"run_dir": str(folder / "run"), "data": {"dataset": str(spec)},
                                          "tracking": {"enabled": False}, "stages": ["data", "retrieval", "candidates"],
                                          "retrieval": {"epochs": 1, "early_stopping": "val_loss"},
                                          "evaluation": {"bootstrap_resamples": 0}}, overrides))
    state = RunState(config=config, run_dir=folder / "run")
    state.run_dir.mkdir()
    for name in ("data", "retrieval", "candidates"):
        run_stage(name, state)
    return state


class BackgroundCli:
    """A project command started in a fresh interpreter as `run_cli` runs one, but in the
    background, its output to files in `folder`: a module starts its longest command, which
    asserts no timing, as it begins and runs its other tests meanwhile (the two cores do both)."""

    def __init__(self, folder: Path, *args: str, cwd: Path = ROOT):
        self.folder, self.args = folder, [sys.executable, *args]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(folder / "stdout.txt", "w") as stdout, open(folder / "stderr.txt", "w") as stderr:
            self.process = subprocess.Popen(self.args, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True)

    def result(self, timeout: int = 600) -> subprocess.CompletedProcess:
        """Waits for the command; what `run_cli` would have returned."""
        self.process.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.args, self.process.returncode, (self.folder / "stdout.txt").read_text(),
                                           (self.folder / "stderr.txt").read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def start_early(request, fixture: str) -> None:
    """For a module-scoped autouse fixture: sets up `fixture` as the module begins, when a
    selected test of the module uses it (so its background command runs meanwhile)."""
    if any(fixture in item.fixturenames for item in request.session.items if item.module is request.module):
        request.getfixturevalue(fixture)


class _FreshProcess:
    """`tests/serve_fresh.py --serve`: one process that imports only TensorFlow, started at the
    first request of the session and asked for every answer after it (a model server loads
    many exports too), so a test pays for the request, not for importing TensorFlow again."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.stderr = None

    def ask(self, export_dir, requests_path, outputs_path, timeout: int = 300) -> None:
        if self.process is None or self.process.poll() is not None:
            self.stderr = tempfile.TemporaryFile("w+")
            self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "serve_fresh.py"), "--serve"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                            text=True)
        process = self.process
        process.stdin.write(f"{export_dir}\t{requests_path}\t{outputs_path}\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        reply = process.stdout.readline() if ready else ""
        if reply.startswith("ok"):
            return
        if not reply:  # died or hung: the next request starts a new process
            self.stop()
            self.stderr.seek(0)
            raise AssertionError(f"serve_fresh.py ended or gave no answer in {timeout}s; its stderr:\n"
                                 f"{self.stderr.read()[-3000:]}")
        raise AssertionError(json.loads(reply.split(" ", 1)[1])[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None


_FRESH = _FreshProcess()
atexit.register(_FRESH.stop)


def pytest_sessionfinish(session, exitstatus):
    _FRESH.stop()


def serve_fresh(export_dir, request: dict, tmp_path: Path, name: str) -> dict[str, np.ndarray]:
    """The export's answer to `request` (named arrays) from a process that imports only
    TensorFlow (`tests/serve_fresh.py`), never this one."""
    requests, outputs = tmp_path / f"{name}-request.npz", tmp_path / f"{name}-outputs.npz"
    np.savez(requests, **request)
    _FRESH.ask(export_dir, requests, outputs)
    with np.load(outputs) as answer:
        return {k: answer[k] for k in answer.files}


@contextlib.contextmanager
def stand_in_server(export_dir, model: str = "recommend"):
    """`tests/serving_stand_in.py` over `export_dir` (a version folder): yields the gRPC and the
    REST address; killed on exit."""
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "serving_stand_in.py"), str(export_dir), model],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        line = server.stdout.readline() if ready else ""
        assert line, "the stand-in server did not start"
        grpc_port, rest_port = line.split()
        yield f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"
    finally:
        server.kill()
        server.wait(timeout=30)


def run_client(client: str, server: str, *args: str) -> subprocess.CompletedProcess:
    """`examples/<client>_recommend.py --server SERVER ARGS` (client: grpc or rest)."""
    return subprocess.run([sys.executable, str(ROOT / "examples" / f"{client}_recommend.py"), "--server", server,
                           *args], capture_output=True, text=True, timeout=120)
