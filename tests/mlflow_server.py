"""A real `mlflow server` for tests: free loopback port, SQLite backend, proxied artifacts.

The server needs the full `mlflow` package (pip install '.[ui]'); mlflow-skinny's server dies on
missing aiohttp/huey. Use the module-scoped fixture `mlflow_server` (it yields the http:// URI):
conftest.py imports it with `from mlflow_server import mlflow_server  # noqa: F401`.
"""
from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

START_TIMEOUT_S = 90.0  # the server imports a lot and spawns a uvicorn worker: ~15 s here


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            why = f"exited with code {proc.returncode}" if proc.poll() is not None else "timed out"
            raise RuntimeError(f"mlflow server at {url} {why} (it needs the full mlflow package: "
                               f"pip install '.[ui]'); end of its log:\n{tail}")
        time.sleep(0.25)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (uvicorn worker included), SIGKILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def run_mlflow_server(root: Path, timeout: float = START_TIMEOUT_S,
                      ui_for: str | None = None, port: int | None = None) -> Iterator[str]:
    """Start `mlflow server` with its store under `root`, yield its URI, stop it afterwards.
    ui_for: a store URI to show with `mlflow ui` instead (as a user views a local store)."""
    try:  # with mlflow-skinny alone the server's workers die and respawn until the timeout
        importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("`mlflow server` needs the full mlflow package, not only mlflow-skinny: "
                           "pip install '.[ui]'") from None
    port = port or free_port()      # a given port: the same server started again
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts"]
    if ui_for is not None:
        cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", ui_for]
    # No background job consumers (GenAI scorers): nothing to test here, 7 fewer processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = root / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=root, start_new_session=True)
    try:
        _wait_ready(url, proc, log, timeout)
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI (http://127.0.0.1:PORT) of a real MLflow tracking server, one per test module."""
    with run_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url
