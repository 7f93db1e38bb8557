"""A throwaway PostgreSQL cluster on a loopback port (tests, benchmarks, CI).

Debian's ``initdb`` refuses to run as root, so as root the cluster directory is owned by the
``postgres`` user and the server runs as it (``runuser``). Without systemd: ``pg_ctl`` starts
the server directly. Used when no MINEWATCH_DATABASE_URL / MINEWATCH_TEST_DATABASE_URL is given.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """PostgreSQL server binaries are not installed (scripts/setup.sh test installs them)."""


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresUnavailable("PostgreSQL server binaries not found (apt-get install postgresql)")


@dataclass
class PgCluster:
    directory: Path
    port: int
    bindir: Path
    durable: bool = False  # fsync and synchronous commit on (benchmarks); off for tests

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, *cmd: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    def stop(self) -> None:
        subprocess.run(self._as_owner(str(self.bindir / "pg_ctl"), "-D", str(self.directory /
                                      "data"), "-m", "immediate", "stop"),
                       capture_output=True, timeout=60)

    def restart(self) -> None:
        self.stop()
        self._start()

    def start(self) -> None:
        """Start the stopped cluster again (pg_ctl -w: returns once it accepts connections)."""
        self._start()

    def _start(self) -> None:
        data = self.directory / "data"
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories={self.directory} -c max_connections=200 "
                "-c max_wal_size=4GB -c checkpoint_timeout=15min")
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        out = subprocess.run(self._as_owner(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
            str(self.directory / "server.log"), "-w", "-t", "60", "start"),
            capture_output=True, text=True, timeout=90)
        if out.returncode != 0:
            log = (self.directory / "server.log")
            raise RuntimeError(f"pg_ctl start failed: {out.stdout}{out.stderr}\n"
                               f"{log.read_text() if log.exists() else ''}")


def start_cluster(directory: Path, port: int, *, durable: bool = False) -> PgCluster:
    """initdb (trust auth on loopback) and start; the caller stops it.

    As root, ``directory`` is handed to the postgres user, so its parent must be traversable
    by others (e.g. a fresh ``tempfile.mkdtemp()`` under /tmp, not a private subfolder).
    """
    bindir = _bindir()
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    cluster = PgCluster(directory, port, bindir, durable)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        out = subprocess.run(cluster._as_owner(
            str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8"), capture_output=True, text=True,
            timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stdout}{out.stderr}")
    cluster._start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                               capture_output=True)
        if ready.returncode == 0:
            return cluster
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not become ready")


@contextmanager
def database_url(env: str = "MINEWATCH_DATABASE_URL", *, durable: bool = False
                 ) -> Iterator[str]:
    """The server named by ``$env``, else a throwaway cluster for the duration (stopped and
    removed after). Its own top-level temp dir: the server runs as postgres and must reach it.
    """
    url = os.environ.get(env)
    if url:
        yield url
        return
    from minewatch.procs import free_port

    directory = Path(tempfile.mkdtemp(prefix="minewatch-pg-"))
    cluster = start_cluster(directory, free_port(), durable=durable)
    try:
        yield cluster.url
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
