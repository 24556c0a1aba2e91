"""A real `mlflow server` for tests: a free localhost port, a SQLite store and an artifact folder
under the test's tmp_path, started in its own process group and killed in teardown.

    from mlflow_server import mlflow_db_template, mlflow_server  # noqa: F401  (fixtures)

    def test_something(mlflow_server, monkeypatch):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)

or, outside pytest, `with MlflowServer(folder) as server: ...`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with its store and artifacts under `folder`.

    Args:
        folder: holds `srv.db` (runs, registry), `artifacts/` (proxied artifact uploads) and
            `server.log` (the server's output, shown when it fails to start).
        startup_timeout_s: how long to wait for `/health` to answer.
        seed_db: an empty, already migrated store (`mlflow_db_template`) copied to `srv.db`, so
            the server skips creating its tables (seconds on a busy machine).
    """

    def __init__(self, folder: Path, startup_timeout_s: float = 60.0, seed_db: Path | None = None):
        self.folder = Path(folder)
        self.seed_db = seed_db
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "MlflowServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.seed_db is not None:
            shutil.copyfile(self.seed_db, self.folder / "srv.db")
        self._log = open(self.folder / "server.log", "wb")
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1",  # one worker: the machine has 2 cores
            "--backend-store-uri", f"sqlite:///{self.folder / 'srv.db'}",
            # Artifacts are proxied: clients upload through the server (mlflow-artifacts:/ URIs),
            # so the test exercises the same path as a remote server.
            "--artifacts-destination", str(self.folder / "artifacts"),
        ]
        env = dict(os.environ)
        env.pop("MLFLOW_TRACKING_URI", None)
        # No background job runner (its consumers are eight more processes on a 2-core machine).
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        # Own process group, so teardown can stop the server and the workers it forks.
        self.process = subprocess.Popen(command, cwd=self.folder, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n"
                                   f"{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer /health within {self.startup_timeout_s}s:"
                           f"\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 10 s."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def api(self, endpoint: str, body: dict | None = None) -> dict:
        """Call the REST API (`runs/get?run_id=...` with GET, `runs/search` with a POST body)."""
        url = f"{self.url}/api/2.0/mlflow/{endpoint}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def create_store(path: Path) -> Path:
    """An empty SQLite tracking store at `path`, its tables created (what MLflow does on first
    use of a new database: about 2-3 s of migrations here)."""
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """One migrated, empty SQLite store per test session; copy it instead of migrating again."""
    return create_store(tmp_path_factory.mktemp("mlflow_template") / "template.db")


@pytest.fixture
def mlflow_server(tmp_path, mlflow_db_template):
    """A running `MlflowServer` under `tmp_path/mlflow_server`, stopped after the test."""
    with MlflowServer(tmp_path / "mlflow_server", seed_db=mlflow_db_template) as server:
        yield server
