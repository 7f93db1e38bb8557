"""Regulator history/rollup queries over 30 days of data for 1,000 points: PostgreSQL with the
service's rollup tables, the embedded store, and a plain GROUP BY over raw readings.

The data set (both backends, generated inside each database):
  - P points (1,000) of one mine for D days (30), raw readings every ``--period`` seconds
    (60 s). 1 Hz for 30 d x 1,000 points would be 2.6 billion rows, which this 2-core
    machine cannot build in a benchmark run; one reading per minute still fills *every*
    1 min, 5 min and 1 h bucket, so the PostgreSQL rollup tables hold exactly the rows a 1 Hz
    installation has (1,000 points x 30 d: 43.2M / 8.64M / 720k).
  - A dense recent window: the first ``--dense-points`` points (20) at 1 Hz for the last
    ``--dense-days`` days (2). The raw-history and 1-minute queries read these, so they return
    what a 1 Hz sensor really has (a 24 h raw history is 86,400 rows).
  - Values are a deterministic function of (point, second); about 0.1 % of readings are
    quality ``fault`` (excluded from rollups); 3 cleared over-limit alarms per point (the
    rollup answer counts alarms per bucket).
  - Filled the way the service fills it: day partitions created by the store, each day of
    readings inserted with generate_series and its rollup range marked dirty as
    ``write_readings`` does, then the store's own ``maintain(end of that day)`` (rollup
    refresh, partitions ahead, retention), day after day; alarms through ``save_alarm``;
    then VACUUM ANALYZE (what autovacuum does later). The embedded store (SQLite) has no
    rollup tables: it computes rollups at query time, so it gets the raw readings only.

Queries, as the regulators' API issues them through the store interface (``history`` with the
API's page of at most 10,000 rows and its cursor, rollup ranges widened to whole buckets),
each for a random point and a random window (same sequence for every backend):
  history_24h    raw, 24 h of a dense point (86,400 rows = 9 pages)
  rollup_1m_24h  1-minute rollup, 24 h of a dense point (1,440 buckets over 1 Hz raw)
  rollup_5m_7d   5-minute rollup, 7 days of any point (2,016 buckets)
  rollup_30d     1-hour rollup, 30 days of any point (720 buckets)
  stats_24h      the statistics endpoint's maxima (``api.regulators._max_values``: 1 h rollups,
                 ragged ends from 1 min rollups and raw) for all points, a random
                 non-aligned 24 h period (its default span)
Spans are capped to the data set's span (--quick: 2 days). Timed at the store interface: the
HTTP layer's JSON/CSV encoding of the rows is not included.

Baseline, in the same run on the same PostgreSQL data: the same answers from ``readings``
with a plain SQL GROUP BY (min, max, avg, last, count, alarms per bucket; max per point for
the statistic) — what a team without rollup tables would write; ``*_speedup`` = baseline
p50 / PostgreSQL p50. Every answer kind is checked equal across the three (PostgreSQL store,
embedded store, baseline) before timing. Mind the density: the baseline (and the embedded
store) scan raw rows, so on the 60 s part of the data they scan 60x fewer rows than at
1 Hz; the rollup-table queries do not depend on raw density. rollup_1m_24h runs on 1 Hz data
and shows the ratio at real density.

Starts its own throwaway PostgreSQL (durable) unless MINEWATCH_DATABASE_URL is set; a
database ``mw_query_<pid>`` is created there and dropped at the end.
Usage: python bench/query.py [--quick] [--points P] [--days D] [--period S] [--queries Q]
(--quick: 50 points x 2 days, 2 dense points x 1 day, 5 queries: the CI smoke check.)
Prints a table, then one JSON object on its last line:
  points, days, raw_period_s, dense_points, dense_days, rows (raw rows per backend),
  rollup_rows_1m / _5m / _1h, alarms, queries, pg_mode, pg_fill_s, embedded_fill_s,
  pg_refresh_raw_rows_per_s (raw rows rolled up per second of the store's maintain);
  {pg,embedded}_{history_24h,rollup_1m_24h,rollup_5m_7d,rollup_30d,stats_24h}_{p50,p99}_ms;
  baseline_{rollup_1m_24h,rollup_5m_7d,rollup_30d,stats_24h}_{p50,p99}_ms;
  rollup_speedup (30 d 1 h rollup: baseline p50 / pg p50), rollup_1m_24h_speedup,
  rollup_5m_7d_speedup, stats_24h_speedup; answers_match (true, else the script fails).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is first on sys.path and bench/ingest.py would shadow the
# project's ingest package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from api.regulators import _max_values  # noqa: E402  (the statistics endpoint's maxima)
from ingest.pg_schema import ROLLUPS, TIMESCALE  # noqa: E402
from ingest.pg_store import PostgresStore  # noqa: E402
from ingest.sqlite_store import SqliteStore  # noqa: E402
from minewatch.pgcluster import database_url  # noqa: E402
from minewatch.records import AlarmRecord  # noqa: E402
from minewatch.store import RESOLUTION_S, HistoryQuery  # noqa: E402

DAY = 86400
T0 = 1_779_926_400  # 2026-05-28 00:00 UTC: day-aligned, far from now (retention stays idle)
MINE = "demo"
API_PAGE = 10_000  # the regulators' API returns at most 10,000 rows per request
MAX_PAGES = 1_000
ALARMS_PER_POINT = 3
# value and quality of point p at second s after T0, the same in both SQL dialects
# ({mod}: "%%" for psycopg, "%" for sqlite3).
VALUE_SQL = "((s * 37 + {p} * 11) {mod} 97) / 100.0"
QUALITY_SQL = "CASE WHEN (s * 7 + {p}) {mod} 1009 = 0 THEN 1 ELSE 0 END"

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Shape:
    points: int
    days: int
    period: int
    dense_points: int
    dense_days: int

    @property
    def end(self) -> int:
        return T0 + self.days * DAY

    @property
    def dense_from(self) -> int:
        return self.end - self.dense_days * DAY

    @property
    def rows(self) -> int:
        return (self.points * self.days * DAY // self.period
                + self.dense_points * self.dense_days * (DAY - DAY // self.period))

    def alarm_count(self) -> int:
        return self.points * ALARMS_PER_POINT


def pid(p: int) -> str:
    return f"H{p:04d}"


@dataclass(frozen=True)
class Kind:
    name: str
    resolution: str
    span_s: int
    dense: bool  # drawn from the dense (1 Hz) points and window
    label: str


KINDS = [
    Kind("history_24h", "raw", DAY, True, "raw 24 h, 1 point"),
    Kind("rollup_1m_24h", "1m", DAY, True, "1 min rollup 24 h, 1 point"),
    Kind("rollup_5m_7d", "5m", 7 * DAY, False, "5 min rollup 7 d, 1 point"),
    Kind("rollup_30d", "1h", 30 * DAY, False, "1 h rollup 30 d, 1 point"),
    Kind("stats_24h", "stats", DAY, False, "statistic maxima 24 h, all points"),
]
BASELINE_KINDS = [k for k in KINDS if k.resolution != "raw"]

Query = tuple[str | None, float, float]  # point (None = all points), from, to


def plan(kind: Kind, shape: Shape, n: int, seed: int) -> list[Query]:
    """n random (point, from, to) for one kind; the same for every backend."""
    rng = random.Random(f"{seed}-{kind.name}")
    lo_bound = shape.dense_from if kind.dense else T0
    span = min(kind.span_s, shape.end - lo_bound)
    out: list[Query] = []
    for _ in range(n):
        point = None if kind.resolution == "stats" else pid(
            rng.randrange(shape.dense_points if kind.dense else shape.points))
        start = lo_bound + rng.uniform(0, shape.end - lo_bound - span)
        # a statistics period is typed by a person to the second, not aligned to buckets
        start = math.floor(start) if kind.resolution == "stats" else round(start)
        lo, hi = float(start), float(start + span)
        width = RESOLUTION_S.get(kind.resolution, 0)
        if width:  # the API widens rollup ranges to whole buckets
            lo, hi = math.floor(lo / width) * width, math.ceil(hi / width) * width
        out.append((point, lo, hi))
    return out


# --- filling ---------------------------------------------------------------------------------
def alarm_records(shape: Shape) -> list[AlarmRecord]:
    rng = random.Random(7)
    out = []
    for p in range(shape.points):
        for k in range(ALARMS_PER_POINT):
            at = T0 + rng.uniform(0, shape.days * DAY - 1000)
            out.append(AlarmRecord(
                id=f"A{p:04d}-{k}", point_id=pid(p), kind="over_limit", severity=2,
                state="cleared", raised_at=at, value=1.2, message="甲烷超限",
                cleared_at=at + rng.uniform(60, 900), acked_at=at + 30, acked_by="bench",
                updated_at=at + 900))
    return out


def _pg_insert(points: range, start_s: int, end_s: int, step: int) -> tuple[str, dict]:
    sql = ("INSERT INTO readings SELECT %(mine)s, 'H' || lpad(p::text, 4, '0'), "
           "to_timestamp(%(t0)s::float8 + s), " + VALUE_SQL.format(p="p", mod="%%") + ", "
           + QUALITY_SQL.format(p="p", mod="%%") + ", to_timestamp(%(t0)s::float8 + s), false "
           "FROM generate_series(%(p0)s::int, %(p1)s::int) p, "
           "generate_series(%(s0)s::int, %(s1)s::int, %(step)s::int) s")
    return sql, {"mine": MINE, "t0": T0, "p0": points.start, "p1": points.stop - 1,
                 "s0": start_s, "s1": end_s - 1, "step": step}


async def fill_pg(store: PostgresStore, shape: Shape) -> dict[str, float]:
    """Day by day: insert, mark the rollup range dirty (as write_readings does), maintain."""
    first = T0 // DAY
    await store.ensure_partitions(set(range(first, first + shape.days)))
    insert_s = refresh_s = 0.0
    async with await psycopg.AsyncConnection.connect(store.url, autocommit=True) as conn:
        for d in range(shape.days):
            s0, s1 = d * DAY, (d + 1) * DAY
            dense = T0 + s0 >= shape.dense_from
            t = time.perf_counter()
            async with conn.transaction():
                coarse_from = shape.dense_points if dense else 0
                if coarse_from < shape.points:
                    await conn.execute(*_pg_insert(range(coarse_from, shape.points), s0, s1,
                                                   shape.period))
                if dense and shape.dense_points:
                    await conn.execute(*_pg_insert(range(shape.dense_points), s0, s1, 1))
                if store.mode != TIMESCALE:  # the statement write_readings runs
                    await conn.execute(
                        "INSERT INTO rollup_dirty VALUES (%s, to_timestamp(%s), "
                        "to_timestamp(%s)) ON CONFLICT (mine_id) DO UPDATE SET "
                        "dirty_from = least(rollup_dirty.dirty_from, excluded.dirty_from), "
                        "dirty_to = greatest(rollup_dirty.dirty_to, excluded.dirty_to)",
                        (MINE, T0 + s0, T0 + s1 - 1))
            t1 = time.perf_counter()
            await store.maintain(T0 + s1)  # the service's upkeep at the end of that day
            insert_s += t1 - t
            refresh_s += time.perf_counter() - t1
        if store.mode == TIMESCALE:  # continuous aggregates: what their policies would do
            for name in ROLLUPS:
                t = time.perf_counter()
                await conn.execute(f"CALL refresh_continuous_aggregate('readings_{name}', "
                                   "NULL, NULL)")
                refresh_s += time.perf_counter() - t
        t = time.perf_counter()
        for rec in alarm_records(shape):
            await store.save_alarm(rec)
        await conn.execute("VACUUM ANALYZE")
        other_s = time.perf_counter() - t
    return {"insert_s": insert_s, "refresh_s": refresh_s, "other_s": other_s}


def fill_sqlite(path: Path, shape: Shape) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        gen = ("WITH RECURSIVE g(s) AS (SELECT ? UNION ALL SELECT s + ? FROM g WHERE s + ? < ?) "
               "INSERT INTO readings SELECT ?, ? + s, " + VALUE_SQL.format(p="?", mod="%") + ", "
               + QUALITY_SQL.format(p="?", mod="%") + ", ? + s, 0 FROM g")
        dense_s = shape.dense_from - T0
        for p in range(shape.points):
            coarse_end = dense_s if p < shape.dense_points else shape.days * DAY
            db.execute("BEGIN")
            if coarse_end > 0:
                db.execute(gen, (0, shape.period, shape.period, coarse_end, pid(p), T0, p, p,
                                 T0))
            if p < shape.dense_points and shape.dense_days:
                db.execute(gen, (dense_s, 1, 1, shape.days * DAY, pid(p), T0, p, p, T0))
            db.execute("COMMIT")
    finally:
        db.close()


async def fill_embedded(store: SqliteStore, shape: Shape) -> float:
    t = time.perf_counter()
    await asyncio.to_thread(fill_sqlite, store.path, shape)
    await store.open()
    for rec in alarm_records(shape):
        await store.save_alarm(rec)
    await store.maintain(float(shape.end))  # the service's upkeep (retention: nothing is old)
    return time.perf_counter() - t


# --- answers ---------------------------------------------------------------------------------
async def api_history(store: Any, q: HistoryQuery) -> list[Row]:
    """All pages of one history request, as a client following next_cursor gets them."""
    rows: list[Row] = []
    after = None
    for _ in range(MAX_PAGES):
        page = await store.history(replace(q, limit=API_PAGE + 1, after=after))
        rows += page[:API_PAGE]
        if len(page) <= API_PAGE:
            return rows
        after = (float(page[API_PAGE - 1][1]), page[API_PAGE - 1][0])
    raise RuntimeError("history: more pages than MAX_PAGES")


def store_runner(store: Any, ids: list[str]) -> Callable[[Kind, Query], Awaitable[Any]]:
    svc = SimpleNamespace(store=store, settings=SimpleNamespace(rollup_refresh_s=10.0))

    async def run(kind: Kind, q: Query) -> Any:
        point, lo, hi = q
        if kind.resolution == "stats":
            best, _ = await _max_values(svc, ids, lo, hi)  # type: ignore[arg-type]
            return best
        return await api_history(store, HistoryQuery((point,), lo, hi, kind.resolution))
    return run


def baseline_runner(conn: psycopg.AsyncConnection) -> Callable[[Kind, Query], Awaitable[Any]]:
    """The same answers from raw readings with a plain GROUP BY (no rollup tables)."""
    async def run(kind: Kind, q: Query) -> Any:
        point, lo, hi = q
        where = ("mine_id = %(mine)s AND ts >= to_timestamp(%(lo)s) AND ts < to_timestamp(%(hi)s)"
                 " AND NOT drill AND quality IN (0, 3) AND value IS NOT NULL")
        args = {"mine": MINE, "lo": lo, "hi": hi, "point": point}
        if kind.resolution == "stats":
            cur = await conn.execute(f"SELECT point_id, max(value) FROM readings WHERE {where} "
                                     "GROUP BY point_id", args)
            return dict(await cur.fetchall())
        width = RESOLUTION_S[kind.resolution]
        cur = await conn.execute(
            f"""SELECT g.point_id, extract(epoch FROM g.b)::float8, g.vmin, g.vmax, g.vavg,
                       g.vlast, g.n,
                       (SELECT count(*) FROM alarms a WHERE a.mine_id = %(mine)s
                        AND a.point_id = g.point_id AND NOT a.drill
                        AND a.raised_at >= extract(epoch FROM g.b)
                        AND a.raised_at < extract(epoch FROM g.b) + {width})
                FROM (SELECT point_id,
                             date_bin(INTERVAL '{width} seconds', ts, TIMESTAMPTZ '2000-01-01') b,
                             min(value) vmin, max(value) vmax, avg(value) vavg,
                             (array_agg(value ORDER BY ts DESC))[1] vlast, count(value) n
                      FROM readings WHERE {where} AND point_id = %(point)s
                      GROUP BY 1, 2) g
                ORDER BY 2, 1""", args)
        return [tuple(r) for r in await cur.fetchall()]
    return run


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9,
                                                                abs_tol=1e-12)
    return a == b


async def timed(run: Callable[[Kind, Query], Awaitable[Any]], kind: Kind,
                queries: list[Query]) -> tuple[list[float], Any]:
    """The first query once untimed (warm-up; its answer is cross-checked), then all timed."""
    first = await run(kind, queries[0])
    out = []
    for q in queries:
        t = time.perf_counter()
        await run(kind, q)
        out.append((time.perf_counter() - t) * 1000)
    return out, first


# --- run -------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, shape: Shape, tmp: Path, admin: str) -> dict[str, Any]:
    db = f"mw_query_{os.getpid()}"
    url = admin.rsplit("/", 1)[0] + "/" + db
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS {db}")
        await conn.execute(f"CREATE DATABASE {db}")
    pg = PostgresStore(url, MINE)
    emb = SqliteStore(tmp / "embedded.sqlite")
    try:
        await pg.open()
        await emb.open()  # creates the schema the fill writes into
        await emb.close()
        emb = SqliteStore(tmp / "embedded.sqlite")
        t = time.perf_counter()

        async def pg_timed() -> tuple[dict[str, float], float]:
            parts = await fill_pg(pg, shape)
            return parts, time.perf_counter() - t
        (pg_parts, pg_fill_s), emb_fill_s = await asyncio.gather(
            pg_timed(), fill_embedded(emb, shape))
        return await measure(args, shape, pg, emb, url, pg_parts, pg_fill_s, emb_fill_s)
    finally:
        await emb.close()
        await pg.close()
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f"DROP DATABASE IF EXISTS {db}")


async def measure(args: argparse.Namespace, shape: Shape, pg: PostgresStore, emb: SqliteStore,
                  url: str, pg_parts: dict[str, float], pg_fill_s: float,
                  emb_fill_s: float) -> dict[str, Any]:
    ids = [pid(p) for p in range(shape.points)]
    res: dict[str, Any] = {"pg_mode": pg.mode, "pg_parts": pg_parts, "pg_fill_s": pg_fill_s,
                           "embedded_fill_s": emb_fill_s, "lat": {}, "answer_rows": {}}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        counts = {}
        for name in ROLLUPS:
            cur = await conn.execute(f"SELECT count(*) FROM readings_{name}")
            counts[name] = (await cur.fetchone())[0]
        res["rollup_rows"] = counts
        runners = {"pg": store_runner(pg, ids), "embedded": store_runner(emb, ids),
                   "baseline": baseline_runner(conn)}
        for kind in KINDS:
            n = args.stat_queries if kind.resolution == "stats" else args.queries
            queries = plan(kind, shape, n, args.seed)
            answers = {}
            for backend, runner in runners.items():
                if backend == "baseline" and kind not in BASELINE_KINDS:
                    continue
                lat, answers[backend] = await timed(runner, kind, queries)
                res["lat"][(backend, kind.name)] = lat
            ref = answers["pg"]
            for backend, answer in answers.items():
                if not same(ref, answer):
                    raise AssertionError(f"{kind.name}: {backend} answers differently from the "
                                         f"PostgreSQL store for {queries[0]}")
            res["answer_rows"][kind.name] = len(ref)
            if kind.name == "history_24h" and len(ref) != min(DAY, shape.dense_days * DAY):
                raise AssertionError(f"history_24h returned {len(ref)} rows")
    return res


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def report(args: argparse.Namespace, shape: Shape, res: dict[str, Any]) -> dict[str, Any]:
    lat = res["lat"]
    rr = res["rollup_rows"]
    print(f"data set: {shape.points} points x {shape.days} days, raw every {shape.period} s, "
          f"{shape.dense_points} points at 1 Hz for the last {shape.dense_days} day(s): "
          f"{shape.rows:,} raw rows per backend; PostgreSQL ({res['pg_mode']}) rollup rows "
          f"1m {rr['1m']:,} / 5m {rr['5m']:,} / 1h {rr['1h']:,}; "
          f"{shape.alarm_count():,} alarms")
    parts = res["pg_parts"]
    print(f"fill: PostgreSQL {res['pg_fill_s']:.1f} s (insert {parts['insert_s']:.1f}, "
          f"maintain/rollups {parts['refresh_s']:.1f}, alarms+analyze {parts['other_s']:.1f}); "
          f"embedded {res['embedded_fill_s']:.1f} s (in parallel)")
    print(f"{'query':<36}{'rows':>7}{'pg p50':>9}{'p99':>8}{'emb p50':>9}{'p99':>8}"
          f"{'base p50':>10}{'p99':>8}{'speedup':>9}")
    out: dict[str, Any] = {
        "points": shape.points, "days": shape.days, "raw_period_s": shape.period,
        "dense_points": shape.dense_points, "dense_days": shape.dense_days,
        "rows": shape.rows, "rollup_rows_1m": rr["1m"], "rollup_rows_5m": rr["5m"],
        "rollup_rows_1h": rr["1h"], "alarms": shape.alarm_count(), "queries": args.queries,
        "stat_queries": args.stat_queries, "pg_mode": res["pg_mode"],
        "pg_fill_s": round(res["pg_fill_s"], 1), "embedded_fill_s":
            round(res["embedded_fill_s"], 1),
        "pg_refresh_raw_rows_per_s": round(shape.rows / parts["refresh_s"])
        if parts["refresh_s"] > 0 else None,
    }
    for kind in KINDS:
        cells = []
        for backend, width in (("pg", 9), ("embedded", 9), ("baseline", 10)):
            if (backend, kind.name) not in lat:
                cells.append(f"{'-':>{width}}{'-':>8}")
                continue
            p50, p99 = pct(lat[backend, kind.name], 50), pct(lat[backend, kind.name], 99)
            out[f"{backend}_{kind.name}_p50_ms"] = p50
            out[f"{backend}_{kind.name}_p99_ms"] = p99
            cells.append(f"{p50:>{width}.1f}{p99:>8.1f}")
        speed = ""
        if ("baseline", kind.name) in lat:
            ratio = out[f"baseline_{kind.name}_p50_ms"] / max(out[f"pg_{kind.name}_p50_ms"],
                                                              1e-3)
            key = "rollup_speedup" if kind.name == "rollup_30d" else f"{kind.name}_speedup"
            out[key] = round(ratio, 2)
            speed = f"{ratio:>8.1f}x"
        print(f"{kind.label:<36}{res['answer_rows'][kind.name]:>7}{''.join(cells)}{speed}")
    print(f"ms per answer (all pages); {args.queries} queries per kind "
          f"({args.stat_queries} for the statistic); answers equal across pg, embedded and "
          "baseline; speedup = baseline p50 / pg p50")
    print(f"density: baseline and embedded scan raw rows, on the {shape.period} s part of the "
          f"data {shape.period}x fewer than at 1 Hz; 1 min rollup 24 h runs on 1 Hz data")
    out["answers_match"] = True
    return out


async def main_async(args: argparse.Namespace, shape: Shape) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-query-"))
    try:
        with database_url(durable=True) as admin:
            res = await run(args, shape, tmp, admin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="50 points x 2 days, 2 dense points x 1 day, 5 queries (CI smoke)")
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--period", type=int, default=60, help="raw sample period, s (divides 60)")
    ap.add_argument("--dense-points", type=int, default=20, help="points at 1 Hz recently")
    ap.add_argument("--dense-days", type=int, default=2, help="days at 1 Hz (the last ones)")
    ap.add_argument("--queries", type=int, default=100, help="per query kind")
    ap.add_argument("--stat-queries", type=int, default=10, help="mine-wide statistic runs")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.quick:
        args.points, args.days, args.dense_points, args.dense_days = 50, 2, 2, 1
        args.queries, args.stat_queries = 5, 2
    if not (args.points >= 1 and args.days >= 1 and 1 <= args.dense_points <= args.points
            and 1 <= args.dense_days <= args.days and args.period >= 1 and 60 % args.period == 0
            and args.queries >= 1 and args.stat_queries >= 1):
        ap.error("need points >= 1, days >= 1, 1 <= dense-points <= points, "
                 "1 <= dense-days <= days, a period dividing 60 s, queries >= 1")
    shape = Shape(args.points, args.days, args.period, args.dense_points, args.dense_days)
    res = asyncio.run(main_async(args, shape))
    print(json.dumps(report(args, shape, res)))


if __name__ == "__main__":
    main()
