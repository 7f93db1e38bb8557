"""Engine workers for a city: many mines, N worker processes, one broker, one database.

Partitioning: each mine is evaluated by exactly one worker at a time. A worker owns a mine
while it holds the mine's PostgreSQL session advisory lock (``pg_try_advisory_lock``) on its
lease connection; a worker that dies (even by SIGKILL) loses its connection, the database
releases its locks at once, and the surviving workers pick the mines up on their next tick
(1 s). Each worker aims at a fair share, ceil(mines / live workers), using a heartbeat table
to count live workers, and hands a mine back when it holds more than its share so load
rebalances after a worker rejoins.

Why not a plain shared subscription (``$share/engine/mw/+/+/data``): mosquitto hands each
message to any member of the group, so one mine's readings would be spread over all workers
and its alarm state (hysteresis, stale timers, lockouts) split between processes. Instead the
owner of a mine subscribes ``mw/{mine}/+/data`` on the *mine's* persistent MQTT session
(client id ``minewatch-{mine}``, QoS 1, clean session off): while a mine changes hands the
broker queues its readings for that session, and the new owner receives them — nothing is
lost in the gap. The new owner recovers the mine's state as after a restart: it replays the
mine's spool (shared data directory on one host), loads open alarms and relay states from the
store, and re-asserts cuts, so an over-limit condition that outlives its worker stays one
alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

from minewatch.mine import Mine
from minewatch.service import Service
from minewatch.settings import Settings

log = logging.getLogger("minewatch.worker")

TICK_S = 1.0
SCHEMA_LOCK = 0x6D77_0002
ALIVE_S = 3.0
LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS engine_workers (
    worker_id text PRIMARY KEY,
    seen_at timestamptz NOT NULL,
    mines text[] NOT NULL DEFAULT '{}'
)"""


def lease_key(mine_id: str) -> int:
    """A stable 63-bit advisory-lock key per mine."""
    return zlib.crc32(f"minewatch-mine:{mine_id}".encode()) | (0x6D77 << 32)


@dataclass
class Owned:
    mine: Mine
    service: Service
    since: float


class Worker:
    def __init__(self, worker_id: str, configs: list[Path], base: Settings) -> None:
        if not base.database_url or not base.broker_url:
            raise ValueError("a worker needs a database URL and a broker URL")
        self.worker_id = worker_id
        self.base = base
        self.mines = {m.mine.id: (m, path) for path in configs if (m := Mine.load(path))}
        self.owned: dict[str, Owned] = {}
        self._last_release = 0.0

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self.base.database_url, autocommit=True)
        # Workers start together: CREATE TABLE IF NOT EXISTS is not safe against a concurrent
        # twin (duplicate pg_type), so the schema is created under a transaction lock.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await conn.execute(LEASE_SCHEMA)
        return conn

    async def run(self) -> None:
        conn = await self._connect()
        try:
            while True:
                try:
                    await self._tick(conn)
                except psycopg.OperationalError as exc:
                    # Lost the lease connection: our locks are gone, so must our mines be.
                    log.error("lease connection lost (%s): releasing all mines", exc)
                    await self._release_all()
                    await asyncio.sleep(TICK_S)
                    with contextlib.suppress(psycopg.Error):
                        conn = await self._connect()
                    continue
                await asyncio.sleep(TICK_S)
        finally:
            await self._release_all()
            with contextlib.suppress(psycopg.Error):
                await conn.execute("DELETE FROM engine_workers WHERE worker_id = %s",
                                   (self.worker_id,))
                await conn.close()

    async def _tick(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(
            "INSERT INTO engine_workers VALUES (%s, now(), %s) ON CONFLICT (worker_id) DO "
            "UPDATE SET seen_at = now(), mines = excluded.mines",
            (self.worker_id, sorted(self.owned)))
        cur = await conn.execute("SELECT count(*) FROM engine_workers WHERE seen_at > "
                                 "now() - make_interval(secs => %s)", (ALIVE_S,))
        alive = max(1, (await cur.fetchone())[0])
        share = math.ceil(len(self.mines) / alive)
        # Spread first choices so workers starting together do not race for the same mines.
        order = sorted(self.mines, key=lambda m: zlib.crc32(f"{self.worker_id}:{m}".encode()))
        for mine_id in order:
            if len(self.owned) >= share:
                break
            if mine_id in self.owned:
                continue
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lease_key(mine_id),))
            if (await cur.fetchone())[0]:
                await self._take(conn, mine_id)
        if len(self.owned) > share and time.monotonic() - self._last_release > 5 * TICK_S:
            mine_id = max(self.owned, key=lambda m: self.owned[m].since)
            await self._release(mine_id, conn)
            self._last_release = time.monotonic()

    async def _take(self, conn: psycopg.AsyncConnection, mine_id: str) -> None:
        mine, path = self.mines[mine_id]
        settings = self.base.model_copy(update={
            "mine_config": path, "data_dir": self.base.data_dir / mine_id,
            "simulate": False, "embedded_broker": False})
        service = Service(settings)
        try:
            await service.start()
        except Exception:
            log.exception("worker %s could not start mine %s", self.worker_id, mine_id)
            with contextlib.suppress(Exception):
                await service.stop()
            await conn.execute("SELECT pg_advisory_unlock(%s)", (lease_key(mine_id),))
            return
        self.owned[mine_id] = Owned(mine, service, time.time())
        log.info("worker %s took mine %s (%d owned)", self.worker_id, mine_id, len(self.owned))

    async def _release(self, mine_id: str, conn: psycopg.AsyncConnection | None) -> None:
        owned = self.owned.pop(mine_id)
        with contextlib.suppress(Exception):
            await owned.service.stop()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(%s)", (lease_key(mine_id),))
        log.info("worker %s released mine %s", self.worker_id, mine_id)

    async def _release_all(self) -> None:
        for mine_id in list(self.owned):
            await self._release(mine_id, None)


def default_worker_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"
