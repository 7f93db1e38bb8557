"""Shared fixtures: a real minewatch service process on loopback with its simulated mine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from minewatch.procs import ROOT, ServiceProcess, start_service

ARTIFACTS = ROOT / "artifacts"
RunningService = ServiceProcess
__all__ = ["ARTIFACTS", "ROOT", "RunningService"]


@pytest.fixture(params=["sqlite", "postgres"])
def service(request, tmp_path: Path) -> Iterator[ServiceProcess]:
    """A running service on each backend: the embedded store and a real PostgreSQL."""
    extra = ()
    if request.param == "postgres":
        extra = ("--database-url", request.getfixturevalue("pg_url"))
    svc = start_service(tmp_path, *extra)
    try:
        health = svc.get("/api/v1/health").json()
        assert health["store"] == ("sqlite" if request.param == "sqlite" else "postgres-native")
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory) -> Iterator[ServiceProcess]:
    """One service (embedded store) for the read-only tests of a module."""
    svc = start_service(tmp_path_factory.mktemp("svc"))
    try:
        yield svc
    finally:
        svc.stop()


# --- PostgreSQL ------------------------------------------------------------------------------
# A real server: MINEWATCH_TEST_DATABASE_URL when given, else a throwaway cluster started here
# (scripts/setup.sh test installs PostgreSQL). A missing server fails the tests, never skips.

@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    from minewatch.pgcluster import database_url

    with database_url("MINEWATCH_TEST_DATABASE_URL") as url:
        yield url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    import uuid

    import psycopg

    name = f"mw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = pg_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> dict:
    """How to build a store of each backend: the same tests run against both."""
    if request.param == "sqlite":
        return {"name": "sqlite", "path": tmp_path / "store.sqlite"}
    return {"name": "postgres", "url": request.getfixturevalue("pg_url")}


def make_store(backend: dict, mine_id: str = "demo", retention=None):
    from ingest.pg_store import PostgresStore
    from ingest.sqlite_store import SqliteStore

    if backend["name"] == "sqlite":
        return SqliteStore(backend["path"], retention)
    return PostgresStore(backend["url"], mine_id, retention)


@pytest.fixture
async def store(backend):
    """An opened store of each backend (see ``backend``)."""
    s = make_store(backend)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
