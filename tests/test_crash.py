"""Nothing lost across a SIGKILL: a real service is killed mid-stream and restarted.

For the last part of the run the store is held locked from outside (a store outage), so
the killed process leaves a real backlog in the spool. Every reading it spooled must end up
stored exactly once after the restart, and the spool must cover the time up to the kill (an
append that returned is on disk). The spool keeps applied segments here
(``MINEWATCH_SPOOL_KEEP_APPLIED``) so the test can decode everything the first process
recorded, whether its writer had applied it or not.

The backend is a parameter: ``Backend`` carries the extra CLI arguments, how to block the
store's writes and how to read the stored reading keys back, so a PostgreSQL case is one more
entry.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest.spool import CHECKPOINT, Position, iter_ops, list_segments, segment_path
from minewatch.procs import ServiceProcess, free_port, start_service

RUN_S = 3.0
OUTAGE_S = 1.5  # the last part of the run, with the store's writes blocked
POLL_MS = "50"
Key = tuple[str, float]


@dataclass(frozen=True)
class Backend:
    name: str
    args: tuple[str, ...]
    # data_dir → a context in which the service's reading writes cannot commit
    block_writes: Callable[[Path], AbstractContextManager[None]]
    # data_dir → (total rows, distinct (point_id, ts), keys); keys rounded to µs
    read: Callable[[Path], tuple[int, int, set[Key]]]


def _read_sqlite(data_dir: Path) -> tuple[int, int, set[Key]]:
    db = sqlite3.connect(data_dir / "minewatch.db")
    try:
        total, distinct = db.execute(
            "SELECT count(*), count(DISTINCT point_id || '@' || ts) FROM readings").fetchone()
        keys = {(p, round(t, 6)) for p, t in db.execute("SELECT point_id, ts FROM readings")}
    finally:
        db.close()
    return total, distinct, keys


@contextmanager
def _lock_sqlite(data_dir: Path) -> Iterator[None]:
    """Hold SQLite's write lock: the service's writer waits on it (busy timeout), then fails."""
    db = sqlite3.connect(data_dir / "minewatch.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


BACKENDS = [Backend("sqlite", (), _lock_sqlite, _read_sqlite)]


def _spooled(spool_dir: Path, segments: list[int]) -> tuple[list[Key], float]:
    """Reading keys in the given segments, and the latest receive time among them."""
    limits = {s: segment_path(spool_dir, s).stat().st_size for s in segments}
    keys: list[Key] = []
    last = 0.0
    for op in iter_ops(spool_dir, limits=limits):
        if op.readings is not None:
            keys += [(p, round(t, 6)) for p, t in
                     zip(op.readings.ids(), op.readings.ts.tolist(), strict=True)]
            last = max(last, op.readings.received_at)
    return keys, last


def _pending_readings(spool_dir: Path, segments: list[int]) -> int:
    """Readings after the killed process's checkpoint: what the restart must replay."""
    cp = Position(0, 0)
    if (spool_dir / CHECKPOINT).exists():
        d = json.loads((spool_dir / CHECKPOINT).read_text())
        cp = Position(d["segment"], d["offset"])
    limits = {s: segment_path(spool_dir, s).stat().st_size for s in segments}
    return sum(len(op.readings) for op in iter_ops(spool_dir, cp, limits)
               if op.readings is not None)


def crash_and_recover(tmp_path: Path, backend: Backend) -> None:
    env = {"MINEWATCH_SPOOL_KEEP_APPLIED": "1"}
    args = ("--poll-ms", POLL_MS, *backend.args)
    port = free_port()
    data_dir = tmp_path / "data"
    spool_dir = data_dir / "spool"
    svc = start_service(tmp_path, *args, port=port, data_dir=data_dir, env=env)
    try:
        time.sleep(RUN_S - OUTAGE_S)
        assert svc.get("/api/v1/health").json()["stored"] > 0
        with backend.block_writes(data_dir):
            time.sleep(OUTAGE_S)
            killed_at = time.time()
            svc.proc.kill()
            svc.proc.wait(10)
    finally:
        svc.stop()

    segments = list_segments(spool_dir)
    spooled, last_received = _spooled(spool_dir, segments)
    pending = _pending_readings(spool_dir, segments)
    # ~940 readings/s for RUN_S seconds, and the spool reaches the moment of the kill.
    assert len(spooled) > 0.5 * RUN_S * 940
    assert len(set(spooled)) == len(spooled)
    assert killed_at - 0.2 <= last_received <= killed_at
    assert pending > 0.5 * OUTAGE_S * 940  # the outage left a backlog to replay

    svc2: ServiceProcess = start_service(tmp_path, *args, port=port, data_dir=data_dir,
                                         env=env)
    try:
        # Caught up: the writer applies in order, so once stored + duplicates covers the
        # replayed backlog plus every reading the new process had received at t0, the backlog
        # is in the store. (Uses only the fields /api/v1/health has always had.)
        t0_readings = svc2.get("/api/v1/health").json()["readings"]

        def caught_up() -> bool:
            h = svc2.get("/api/v1/health").json()
            return h["stored"] + h["duplicates"] >= pending + t0_readings

        svc2.wait_for(caught_up, timeout=20)
        health = svc2.get("/api/v1/health").json()
        assert health["store_errors"] == 0
    finally:
        svc2.stop()
    assert svc2.proc.returncode is not None

    total, distinct, stored = backend.read(data_dir)
    assert total == distinct  # each (point_id, ts) once
    missing = set(spooled) - stored
    assert not missing, f"{len(missing)} spooled readings not stored, e.g. {sorted(missing)[:5]}"
    before_kill = [t for _, t in stored if t <= killed_at]
    assert killed_at - max(before_kill) <= 0.2
    # The graceful stop drained the writer: the checkpoint is at the end of the spool.
    assert "store writer stopped with" not in svc2.log.read_text()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_sigkill_loses_no_spooled_reading(tmp_path: Path, backend: Backend):
    crash_and_recover(tmp_path, backend)
