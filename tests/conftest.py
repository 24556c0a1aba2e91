"""Shared fixtures: fixed seeds, and small datasets written under tmp_path from plain text."""

from __future__ import annotations

import os
import random
import subprocess
import sys
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
