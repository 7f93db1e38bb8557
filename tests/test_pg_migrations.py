"""The migration runner and the native-partitioning fallback on a real PostgreSQL server."""

from __future__ import annotations

import asyncio

import psycopg

from ingest.pg_schema import MIGRATIONS, NATIVE, Migration, detect_mode, migrate
from ingest.pg_store import PostgresStore
from minewatch.records import IncidentRecord
from minewatch.store import IncidentQuery, Retention

T0 = 1_790_006_400.0


async def test_migrations_apply_once_even_with_concurrent_workers(pg_url):
    stores = [PostgresStore(pg_url, f"mine{i}") for i in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        assert {s.mode for s in stores} == {NATIVE}
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT version, mode FROM schema_migrations ORDER BY 1")
            assert await cur.fetchall() == [(m.version, NATIVE) for m in MIGRATIONS]
            # Running again applies nothing; a new migration is applied exactly once.
            assert await migrate(conn, NATIVE, Retention()) == []
            nxt = MIGRATIONS[-1].version + 1
            extra = [*MIGRATIONS, Migration(nxt, "test column",
                                            lambda mode, r: "ALTER TABLE alarms ADD x int")]
            results = await asyncio.gather(*(migrate(conn2, NATIVE, Retention(), extra)
                                             for conn2 in [conn]))
            assert results == [[nxt]]
            assert await migrate(conn, NATIVE, Retention(), extra) == []
    finally:
        for s in stores:
            await s.close()


async def test_a_database_at_version_2_is_upgraded_with_the_incidents_table(pg_url):
    assert [m.version for m in MIGRATIONS[:3]] == [1, 2, 3]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        # A database as the release before incidents left it, with a dead letter in it.
        assert await migrate(conn, NATIVE, Retention(), MIGRATIONS[:2]) == [1, 2]
        await conn.execute("INSERT INTO dead_letters VALUES ('demo', 'k1', 1, 's', 'r', 'd', "
                           "'p')")
        cur = await conn.execute("SELECT to_regclass('incidents') IS NULL")
        assert (await cur.fetchone())[0]
    store = PostgresStore(pg_url, "demo")
    await store.open()  # applies migration 3 (and any later ones)
    try:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY 1")
            assert [r[0] for r in await cur.fetchall()] == [m.version for m in MIGRATIONS]
            cur = await conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'incidents' ORDER BY 1")
            assert [r[0] for r in await cur.fetchall()] == [
                "incidents_open", "incidents_opened", "incidents_pkey"]
            assert await migrate(conn, NATIVE, Retention()) == []
        assert len(await store.dead_letters(None, None, 10)) == 1
        inc = IncidentRecord("I1", "gas_overlimit", "open", T0, T0, False, {"k": "断电"})
        await store.save_incident(inc)
        assert await store.incidents(IncidentQuery()) == [inc]
    finally:
        await store.close()


async def test_without_timescaledb_readings_are_range_partitioned_by_day(pg_url):
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        assert (await cur.fetchone())[0] == 0  # this machine has no TimescaleDB package
        assert await detect_mode(conn) == NATIVE
    store = PostgresStore(pg_url, "demo", Retention(raw_days=7))
    await store.open()
    try:
        rows = [("001A01", T0 + d * 86400 + i, 0.1, 0, T0, False) for d in range(3)
                for i in range(5)]
        assert (await store.write_readings(rows)).inserted == 15
        await store.maintain(T0 + 2 * 86400)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'readings'::regclass ORDER BY 1")
            names = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute("SELECT count(*) FROM readings_p20260921")
            assert (await cur.fetchone())[0] == 5
        # Three days with data plus partitions created ahead of "now".
        assert names[:3] == ["readings_p20260921", "readings_p20260922", "readings_p20260923"]
        assert len(names) >= 5
        # Retention drops whole partitions past the horizon.
        done = await store.maintain(T0 + 8.5 * 86400)
        assert "readings_p20260921" in done["partitions_dropped"]
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT count(*) FROM readings")
            assert (await cur.fetchone())[0] == 5  # only the 2026-09-23 rows remain
    finally:
        await store.close()
