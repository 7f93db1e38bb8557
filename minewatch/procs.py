"""Start and stop a real ``minewatch run`` process on loopback (tests and benchmarks).

Network use is bounded: every wait has a deadline, and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
# The admin password of services started here (tests, benchmarks): loopback only.
ADMIN_PASSWORD = "local-test-admin"
_TOKENS: dict[str, str] = {}  # service URL → admin token


def auth_headers(url: str) -> dict[str, str]:
    """The Authorization header for a service started here (by its URL)."""
    token = _TOKENS.get(url.rstrip("/"))
    return {"Authorization": f"Bearer {token}"} if token else {}


def ws_url(url: str, path: str) -> str:
    """A WebSocket URL of a service started here, with its token."""
    token = _TOKENS.get(url.rstrip("/"), "")
    return url.replace("http", "ws", 1).rstrip("/") + path + f"?token={token}"


def login(url: str, user: str, password: str) -> str:
    r = httpx.post(url.rstrip("/") + "/api/v1/auth/token", timeout=10,
                   data={"username": user, "password": password})
    r.raise_for_status()
    return r.json()["access_token"]


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float]:
    """(parent pid, utime + stime of all threads in seconds) of a live process (benchmarks'
    CPU figures); OSError once it is gone."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop_all(procs: list[subprocess.Popen], sig: int = signal.SIGTERM,
             grace: float = 10.0) -> None:
    """Signal every process, then wait for each, killing those still alive after ``grace``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(sig)
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    url: str
    port: int
    data_dir: Path
    proc: subprocess.Popen
    log: Path

    def _headers(self, kw: dict[str, Any]) -> dict[str, Any]:
        return {**auth_headers(self.url), **kw.pop("headers", {})}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, headers=self._headers(kw), **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, headers=self._headers(kw), **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.delete(self.url + path, timeout=10, headers=self._headers(kw), **kw)

    def ws(self, path: str) -> str:
        return ws_url(self.url, path)

    @property
    def token(self) -> str:
        return _TOKENS[self.url]

    def inject(self, scenario: str, point: str, **kw: Any) -> dict:
        r = self.post("/api/v1/sim/scenarios", json={"scenario": scenario, "point": point, **kw})
        if r.status_code != 200:
            raise RuntimeError(f"inject {scenario} {point}: {r.status_code} {r.text}")
        return r.json()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0,
                 interval: float = 0.1) -> Any:
        """Poll ``predicate`` until it returns a truthy value (bounded); fail with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout}s; service log tail:\n"
                             + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_service(workdir: Path, *extra: str, port: int | None = None,
                  timeout: float = 30.0, data_dir: Path | None = None,
                  env: dict[str, str] | None = None) -> ServiceProcess:
    """``data_dir`` (default ``workdir/data-<port>``) lets a restart reuse a crashed
    process's data; ``env`` adds environment variables (e.g. ``MINEWATCH_*`` settings)."""
    port = port or free_port()
    data_dir = data_dir or workdir / f"data-{port}"
    log = workdir / f"service-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MINEWATCH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "minewatch.cli", "run", "--port", str(port), "--data-dir",
         str(data_dir), *extra], stdout=log.open("a"), stderr=subprocess.STDOUT, env=env,
        cwd=ROOT)
    svc = ServiceProcess(f"http://127.0.0.1:{port}", port, data_dir, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{log.read_text()}")
        try:
            h = svc.get("/api/v1/health")
            if h.status_code == 200 and all(s["online"] for s in h.json()["substations"]):
                _TOKENS[svc.url] = login(svc.url, "admin", env["MINEWATCH_ADMIN_PASSWORD"])
                return svc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"service did not become healthy:\n{log.read_text()}")
