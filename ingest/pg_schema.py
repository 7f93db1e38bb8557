"""PostgreSQL schema: detection of TimescaleDB and a small versioned migration runner.

Why a small runner rather than Alembic: the schema is plain SQL with no ORM models to diff,
and one migration must branch on what the server offers (hypertable and continuous aggregates
with TimescaleDB, declarative partitioning and service-maintained rollup tables without).
Each migration runs in its own transaction under an advisory lock (several engine workers may
start at once), and is recorded in ``schema_migrations`` with the storage mode it ran in.

Modes:
- ``timescaledb``: extension present with the Timescale licence: hypertable, compression,
  retention policy, continuous aggregates (1 min, 5 min, 1 h) refreshed by policies.
- ``timescaledb-apache``: hypertable and retention only (Apache build: no compression, no
  continuous aggregates); rollup tables maintained by the service, as in native mode.
- ``postgres-native``: ``readings`` range-partitioned by day, partitions created ahead and
  dropped by retention; rollup tables maintained by the service.
Queries read ``readings``, ``readings_1m``, ``readings_5m`` and ``readings_1h`` with the same
columns in every mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from minewatch.store import Retention

log = logging.getLogger("minewatch.ingest.pg")

MIGRATION_LOCK = 0x6D77_0001  # pg_advisory_xact_lock key ("mw" 1)
ROLLUPS = {"1m": "1 minute", "5m": "5 minutes", "1h": "1 hour"}
TIMESCALE = "timescaledb"
TIMESCALE_APACHE = "timescaledb-apache"
NATIVE = "postgres-native"


async def detect_mode(conn: psycopg.AsyncConnection) -> str:
    """Use TimescaleDB when the server has it; say which licence; else native partitioning."""
    cur = await conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if await cur.fetchone() is None:
        return NATIVE
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        cur = await conn.execute("SELECT current_setting('timescaledb.license', true)")
        row = await cur.fetchone()
    except psycopg.Error as exc:  # listed but not loadable (shared_preload_libraries)
        log.warning("timescaledb is available but cannot be used (%s); native mode", exc)
        await conn.rollback()
        return NATIVE
    return TIMESCALE if row and row[0] == "timescale" else TIMESCALE_APACHE


def _readings_table(mode: str) -> str:
    # Ids are ASCII codes: the "C" collation makes key comparisons byte compares, which made
    # bulk inserts into the primary key ~20 % faster than a locale collation.
    ddl = """
    CREATE TABLE readings (
        mine_id text COLLATE "C" NOT NULL,
        point_id text COLLATE "C" NOT NULL,
        ts timestamptz NOT NULL,
        value double precision,
        quality smallint NOT NULL,
        received_at timestamptz NOT NULL,
        drill boolean NOT NULL DEFAULT false,
        PRIMARY KEY (mine_id, point_id, ts)
    )"""
    if mode == NATIVE:
        return ddl + " PARTITION BY RANGE (ts);"
    return ddl + ";\nSELECT create_hypertable('readings', 'ts', " \
                 "chunk_time_interval => INTERVAL '1 day');"


def _rollup_tables(mode: str, retention: Retention) -> str:
    """Rollups: a continuous aggregate with full TimescaleDB, a plain table otherwise."""
    parts = []
    for name, width in ROLLUPS.items():
        if mode == TIMESCALE:
            parts.append(f"""
            CREATE MATERIALIZED VIEW readings_{name} WITH (timescaledb.continuous) AS
            SELECT mine_id, point_id, time_bucket(INTERVAL '{width}', ts) AS bucket,
                   min(value) AS vmin, max(value) AS vmax, sum(value) AS vsum,
                   count(value) AS n, last(value, ts) AS vlast
            FROM readings WHERE NOT drill AND quality IN (0, 3) AND value IS NOT NULL
            GROUP BY 1, 2, 3 WITH NO DATA;
            SELECT add_continuous_aggregate_policy('readings_{name}',
                start_offset => INTERVAL '3 days', end_offset => INTERVAL '{width}',
                schedule_interval => INTERVAL '1 minute');
            SELECT add_retention_policy('readings_{name}',
                INTERVAL '{int(retention.rollup_days)} days');""")
        else:
            parts.append(f"""
            CREATE TABLE readings_{name} (
                mine_id text COLLATE "C" NOT NULL,
                point_id text COLLATE "C" NOT NULL,
                bucket timestamptz NOT NULL,
                vmin double precision, vmax double precision, vsum double precision,
                n bigint NOT NULL, vlast double precision,
                PRIMARY KEY (mine_id, point_id, bucket)
            );""")
    return "\n".join(parts)


def _policies(mode: str, retention: Retention) -> str:
    if mode == TIMESCALE:
        return f"""
        ALTER TABLE readings SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'mine_id, point_id',
            timescaledb.compress_orderby = 'ts');
        SELECT add_compression_policy('readings', INTERVAL '7 days');
        SELECT add_retention_policy('readings', INTERVAL '{int(retention.raw_days)} days');"""
    if mode == TIMESCALE_APACHE:
        return f"SELECT add_retention_policy('readings', " \
               f"INTERVAL '{int(retention.raw_days)} days');"
    return ""


def _v1(mode: str, retention: Retention) -> str:
    return f"""
    {_readings_table(mode)}
    {_rollup_tables(mode, retention)}
    {_policies(mode, retention)}
    CREATE TABLE rollup_dirty (
        mine_id text PRIMARY KEY,
        dirty_from timestamptz NOT NULL,
        dirty_to timestamptz NOT NULL
    );
    CREATE TABLE alarms (
        mine_id text NOT NULL,
        id text NOT NULL,
        point_id text NOT NULL,
        kind text NOT NULL,
        state text NOT NULL,
        raised_at double precision NOT NULL,
        drill boolean NOT NULL DEFAULT false,
        record jsonb NOT NULL,
        PRIMARY KEY (mine_id, id)
    );
    CREATE INDEX alarms_raised ON alarms (mine_id, raised_at);
    CREATE INDEX alarms_point ON alarms (mine_id, point_id, raised_at);
    CREATE INDEX alarms_open ON alarms (mine_id) WHERE state <> 'cleared';
    CREATE TABLE commands (
        mine_id text NOT NULL,
        id text NOT NULL,
        issued_at double precision NOT NULL,
        action text NOT NULL,
        target text NOT NULL,
        alarm_id text,
        record jsonb NOT NULL,
        PRIMARY KEY (mine_id, id)
    );
    CREATE INDEX commands_issued ON commands (mine_id, issued_at);
    CREATE TABLE journal (
        mine_id text NOT NULL,
        seq bigint NOT NULL,
        at double precision NOT NULL,
        event text NOT NULL,
        subject text NOT NULL,
        data jsonb NOT NULL,
        data_text text NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL,
        key text NOT NULL,
        PRIMARY KEY (mine_id, seq),
        UNIQUE (mine_id, key)
    );
    CREATE TABLE journal_anchor (
        mine_id text PRIMARY KEY,
        seq bigint NOT NULL,
        hash text NOT NULL
    );
    -- The journal is append-only: updates and deletes are refused at the database, except the
    -- retention job, which prunes the oldest rows under `minewatch.journal_prune = on`.
    CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND current_setting('minewatch.journal_prune', true) = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'journal is append-only (% refused)', TG_OP;
    END $$;
    CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
        FOR EACH ROW EXECUTE FUNCTION journal_append_only();
    """


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: Callable[[str, Retention], str]


def _v2(mode: str, retention: Retention) -> str:
    return """
    CREATE TABLE dead_letters (
        mine_id text NOT NULL,
        key text NOT NULL,
        at double precision NOT NULL,
        source text NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL,
        payload text NOT NULL,
        PRIMARY KEY (mine_id, key)
    );
    CREATE INDEX dead_letters_at ON dead_letters (mine_id, at);
    """


def _v3(mode: str, retention: Retention) -> str:
    # ``data`` (jsonb) is there to be queried; ``data_text`` is the exact JSON that was saved
    # and what the store reads back: jsonb reorders keys and re-spells numbers (1e20 comes back
    # as an integer), as with the journal's data/data_text.
    return """
    CREATE TABLE incidents (
        mine_id text NOT NULL,
        id text NOT NULL,
        kind text NOT NULL,
        state text NOT NULL,
        opened_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        drill boolean NOT NULL DEFAULT false,
        data jsonb NOT NULL,
        data_text text NOT NULL,
        PRIMARY KEY (mine_id, id)
    );
    CREATE INDEX incidents_opened ON incidents (mine_id, opened_at);
    CREATE INDEX incidents_open ON incidents (mine_id) WHERE state = 'open';
    """


def _v4(mode: str, retention: Retention) -> str:
    # Users belong to the installation (a regulator sees several mines), so no mine_id.
    return """
    CREATE TABLE users (
        name text PRIMARY KEY,
        role text NOT NULL,
        password_hash text NOT NULL,
        mines jsonb NOT NULL,
        created_at double precision NOT NULL,
        disabled boolean NOT NULL DEFAULT false
    );
    """


MIGRATIONS: list[Migration] = [
    Migration(1, "readings, rollups, alarms, commands, journal", _v1),
    Migration(2, "dead letters (refused input with its reason)", _v2),
    Migration(3, "incidents (workflow runs, upserted by id, newest update wins)", _v3),
    Migration(4, "users (hashed passwords, role, jurisdiction)", _v4),
]


async def migrate(conn: psycopg.AsyncConnection, mode: str, retention: Retention,
                  migrations: list[Migration] = MIGRATIONS) -> list[int]:
    """Apply pending migrations in order; returns the versions applied now."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL, mode text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""")
    applied: list[int] = []
    for m in sorted(migrations, key=lambda m: m.version):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur = await conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s",
                                     (m.version,))
            if await cur.fetchone():
                continue
            await conn.execute(m.sql(mode, retention))  # type: ignore[arg-type]
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, mode) VALUES (%s, %s, %s)",
                (m.version, m.name, mode))
            applied.append(m.version)
            log.info("applied migration %d (%s) in %s mode", m.version, m.name, mode)
    return applied
