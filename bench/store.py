"""Store throughput and regulator history-query latency, embedded SQLite vs PostgreSQL.

1. Writes: N readings (1M by default) through the store interface in batches of 10k
   (`write_readings`: SQLite executemany in one transaction; PostgreSQL binary COPY into a
   staging table + INSERT … ON CONFLICT DO NOTHING). Baseline measured in the same run: the
   same rows through a plain parameterised INSERT per row (psycopg executemany, SQLite one
   statement per row), on a sample.
2. History: a data set of D days of 1 Hz data for P points (30 × 100 = 259M rows by default,
   generated inside each database), then repeated 24-hour raw history queries for one random
   point through the store interface (`history`, 86 400 rows each): p50/p99.

Starts its own throwaway PostgreSQL (durable: fsync on) unless MINEWATCH_DATABASE_URL is set.
Usage: python bench/store.py [--quick] [--rows N] [--days D] [--points P] [--queries Q]
Last line: one JSON object (embedded_rows_per_s, postgres_rows_per_s, history_p99_ms per
backend, …).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is first on sys.path and bench/ingest.py would shadow the
# project's ingest package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time

import numpy as np
import psycopg

from ingest.pg_store import PostgresStore
from ingest.sqlite_store import SqliteStore
from minewatch.pgcluster import database_url
from minewatch.store import HistoryQuery

T0 = 1_780_000_000.0  # 2026-05-28, far from "now": retention does not run here
BATCH = 10_000


def rows_for(n: int, points: int, start: float) -> list[tuple]:
    rng = np.random.default_rng(1)
    values = rng.uniform(0.0, 1.2, n).round(2).tolist()
    return [(f"P{i % points:03d}", start + (i // points), values[i], 0, start + (i // points),
             False) for i in range(n)][:n]


async def write_rate(store, rows: list[tuple]) -> float:
    t = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        await store.write_readings(rows[i:i + BATCH])
    return len(rows) / (time.perf_counter() - t)


def sqlite_baseline(path: Path, rows: list[tuple]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    t = time.perf_counter()
    for r in rows:
        db.execute("INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?)", r)
    rate = len(rows) / (time.perf_counter() - t)
    db.close()
    return rate


async def pg_partitions(url: str, t_from: float, t_to: float) -> None:
    store = PostgresStore(url, "demo")
    await store.open()
    await store.ensure_partitions(set(range(int(t_from // 86400), int(t_to // 86400) + 1)))
    await store.close()


async def pg_baseline(url: str, rows: list[tuple]) -> float:
    await pg_partitions(url, min(r[1] for r in rows), max(r[1] for r in rows))
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        t = time.perf_counter()
        for i in range(0, len(rows), 1000):
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO readings VALUES ('demo', %s, to_timestamp(%s), %s, %s, "
                    "to_timestamp(%s), %s) ON CONFLICT DO NOTHING", rows[i:i + 1000])
        return len(rows) / (time.perf_counter() - t)


def fill_sqlite(path: Path, days: float, points: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    n = int(days * 86400)
    for p in range(points):
        db.execute("BEGIN")
        db.execute(
            "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
            "INSERT INTO readings SELECT ?, ? + i, (i % 100) / 100.0, 0, ? + i, 0 FROM s",
            (n - 1, f"H{p:03d}", T0, T0))
        db.execute("COMMIT")
    db.close()


async def fill_pg(url: str, days: float, points: int) -> None:
    await pg_partitions(url, T0, T0 + days * 86400)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for d in range(int(np.ceil(days))):
            day_s = min(86400, int(days * 86400) - d * 86400)
            start = T0 + d * 86400
            await conn.execute(
                "INSERT INTO readings SELECT 'demo', 'H' || lpad(p::text, 3, '0'), "
                "to_timestamp(%s + s), (s %% 100) / 100.0, 0, to_timestamp(%s + s), false "
                "FROM generate_series(0, %s) p, generate_series(0, %s) s",
                (start, start, points - 1, day_s - 1))
        await conn.execute("VACUUM ANALYZE readings")


async def query_latency(store, days: float, points: int, queries: int) -> list[float]:
    rng = random.Random(2)
    out = []
    span = max(0.0, days * 86400 - 86400)
    for _ in range(queries):
        point = f"H{rng.randrange(points):03d}"
        start = T0 + rng.uniform(0, span)
        t = time.perf_counter()
        rows = await store.history(HistoryQuery((point,), start, start + 86400, "raw",
                                                limit=100_000))
        out.append((time.perf_counter() - t) * 1000)
        assert len(rows) >= min(86400, int(days * 86400)) - 1, len(rows)
    return out


async def run_backend(name: str, make, args, rows, sample, baseline) -> dict:
    res: dict = {}
    store = make("write")
    await store.open()
    res["rows_per_s"] = await write_rate(store, rows)
    await store.close()
    store = make("baseline")
    await store.open()  # creates the schema the baseline inserts into
    await store.close()
    res["baseline_rows_per_s"] = await baseline(sample)
    store = make("history")
    await store.open()
    try:
        t = time.perf_counter()
        if name == "embedded":
            await asyncio.to_thread(fill_sqlite, store.path, args.days, args.points)
        else:
            await fill_pg(store.url, args.days, args.points)
        res["fill_s"] = time.perf_counter() - t
        lat = await query_latency(store, args.days, args.points, args.queries)
    finally:
        await store.close()
    res["history_p50_ms"] = float(np.percentile(lat, 50))
    res["history_p99_ms"] = float(np.percentile(lat, 99))
    return res


async def main_async(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-bench-"))
    try:
        with database_url(durable=True) as admin:
            return await _run(args, tmp, admin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _run(args, tmp: Path, admin: str) -> dict:
    dbs = {}
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        for role in ("write", "baseline", "history"):
            name = f"mw_bench_{role}_{os.getpid()}"
            await conn.execute(f"DROP DATABASE IF EXISTS {name}")
            await conn.execute(f"CREATE DATABASE {name}")
            dbs[role] = admin.rsplit("/", 1)[0] + "/" + name
    rows = rows_for(args.rows, 100, T0)
    sample = rows[: max(10_000, args.rows // 20)]
    sample = [(p, ts + 10 * 86400, *rest) for p, ts, *rest in sample]
    emb = await run_backend(
        "embedded", lambda role: SqliteStore(tmp / f"{role}.sqlite"), args, rows, sample,
        lambda s: asyncio.to_thread(sqlite_baseline, tmp / "baseline.sqlite", s))
    pg = await run_backend(
        "postgres", lambda role: PostgresStore(dbs[role], "demo"), args, rows, sample,
        lambda s: pg_baseline(dbs["baseline"], s))
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        for url in dbs.values():
            await conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]}")
    return {"embedded": emb, "postgres": pg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="100k writes, 1.2 days x 10 points, 10 queries (under a minute)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.days, args.points, args.queries = 100_000, 1.2, 10, 10
    res = asyncio.run(main_async(args))
    emb, pg = res["embedded"], res["postgres"]
    print(f"{'backend':<10}{'rows/s':>12}{'baseline':>12}{'ratio':>8}{'fill s':>9}"
          f"{'q p50 ms':>10}{'q p99 ms':>10}")
    for name, r in res.items():
        print(f"{name:<10}{r['rows_per_s']:>12,.0f}{r['baseline_rows_per_s']:>12,.0f}"
              f"{r['rows_per_s'] / r['baseline_rows_per_s']:>8.1f}{r['fill_s']:>9.1f}"
              f"{r['history_p50_ms']:>10.1f}{r['history_p99_ms']:>10.1f}")
    print(f"data set: {args.days} days x {args.points} points at 1 Hz "
          f"({int(args.days * 86400 * args.points):,} rows); writes: {args.rows:,} rows")
    out = {
        "rows": args.rows, "days": args.days, "points": args.points, "queries": args.queries,
        "embedded_rows_per_s": round(emb["rows_per_s"]),
        "postgres_rows_per_s": round(pg["rows_per_s"]),
        "embedded_baseline_rows_per_s": round(emb["baseline_rows_per_s"]),
        "postgres_baseline_rows_per_s": round(pg["baseline_rows_per_s"]),
        "embedded_write_ratio_vs_baseline": round(emb["rows_per_s"] /
                                                  emb["baseline_rows_per_s"], 2),
        "postgres_write_ratio_vs_baseline": round(pg["rows_per_s"] / pg["baseline_rows_per_s"],
                                                  2),
        "embedded_history_p50_ms": round(emb["history_p50_ms"], 2),
        "embedded_history_p99_ms": round(emb["history_p99_ms"], 2),
        "postgres_history_p50_ms": round(pg["history_p50_ms"], 2),
        "postgres_history_p99_ms": round(pg["history_p99_ms"], 2),
        "history_p99_ms": {"embedded": round(emb["history_p99_ms"], 2),
                           "postgres": round(pg["history_p99_ms"], 2)},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
