"""Shared fixtures: a real minewatch service process on loopback with its simulated mine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    url: str
    port: int
    data_dir: Path
    proc: subprocess.Popen
    log: Path

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, **kw)

    def inject(self, scenario: str, point: str, **kw) -> dict:
        r = self.post("/api/v1/sim/scenarios", json={"scenario": scenario, "point": point, **kw})
        assert r.status_code == 200, r.text
        return r.json()

    def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.1):
        """Poll ``predicate`` until it returns a truthy value (bounded); fail with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout}s; service log tail:\n"
                             + self.log.read_text()[-3000:])


def start_service(tmp: Path, *extra: str) -> RunningService:
    port = free_port()
    data_dir = tmp / f"data-{port}"
    log = tmp / f"service-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "minewatch.cli", "run", "--port", str(port), "--data-dir",
         str(data_dir), *extra], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
        cwd=ROOT)
    svc = RunningService(f"http://127.0.0.1:{port}", port, data_dir, proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{log.read_text()}")
        try:
            h = svc.get("/api/v1/health")
            if h.status_code == 200 and all(s["online"] for s in h.json()["substations"]):
                return svc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"service did not become healthy:\n{log.read_text()}")


def stop_service(svc: RunningService) -> None:
    if svc.proc.poll() is None:
        svc.proc.send_signal(signal.SIGINT)
        try:
            svc.proc.wait(15)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait(5)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningService]:
    svc = start_service(tmp_path)
    try:
        yield svc
    finally:
        stop_service(svc)


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory) -> Iterator[RunningService]:
    """One service for read-only tests of a module."""
    svc = start_service(tmp_path_factory.mktemp("svc"))
    try:
        yield svc
    finally:
        stop_service(svc)
