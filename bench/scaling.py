"""Scaling curve: readings/s and alarm latency as mines are added (1, 10, 50, 100 simulated
mines), one engine worker process vs N workers.

For each mine count M and worker count W (every pair), a fresh database, broker and W
``minewatch worker`` processes given all M mines (+ one probe mine); once the workers own
every mine, each mine's MQTT gateway publishes its batches (P points per message) as fast as
QoS 1 allows, and the bench measures, with bench/ingest.py's pieces (mine files, publishers,
workers, probes):
  - readings/s: total readings / time from the first publish until PostgreSQL holds them all
    (evaluated *and* stored, not merely published);
  - alarm latency under that load: over-limit readings into the probe mine (not loaded), time
    until each alarm event reaches a city subscriber on mw/probe/events: p50/p99;
  - take_s: time from starting the workers until they own all mines (start-up/hand-out cost).
The load is a fixed number of readings per configuration (``--readings``), split evenly over
the mines, so every row does the same work: what changes is how it is spread (1 mine x 3,000
messages or 100 mines x 30 messages of P readings). A configuration that cannot store it all
within ``--drain-s`` (300 s) reports the rate so far with ``complete`` false (marked * in the
table), so the run stays bounded. A flat curve means adding mines costs
nothing beyond their readings; a falling one is per-mine overhead (sessions, services,
per-mine pools and upkeep, smaller batches per store write).
Baseline, per mine count in the same run: the publisher alone into the broker, no engine
subscribed (what the broker and this client move on this machine); ``ratio_vs_1_mine_*``
compares each row with the 1-mine row of the same worker count.

Live mines: until the load starts every mine's gateway sends one message every 30 s, and the
bench mines declare a 60 s poll (stale after 120 s), so no mine goes stale while the workers
take the others or while its messages wait in the broker queue under load. (With bench/
ingest.py's 1 s poll and silent mines, every point of every mine goes stale before the load
and clears during it: 2 alarm transitions per point, journaled and published, inside the
measured window; at 10 mines x 50 points that alone cut readings/s about tenfold here.)
Load readings carry source times after the keepalive's, and only they are counted.

Everything runs on this machine's cores (broker, PostgreSQL, publishers, workers), so more
workers than cores cannot add much. Each mine's service holds its own PostgreSQL pool
(1-4 connections), so the throwaway cluster started here allows 1,000 connections (with
MINEWATCH_DATABASE_URL, that server's max_connections must cover ~4 x mines).
Probes start 0.3 s after the publishers; ``probe_s`` and ``load_s`` in each row show whether
the probes ran within the load (in --quick runs the load is short).

Usage: python bench/scaling.py [--quick] [--mines 1,10,50,100] [--workers 1,2,4]
       [--points P] [--readings N] [--probes K]
(--quick: 1 and 10 mines, 1 and 2 workers, 50 points, 10,000 readings, 3 probes.)
Prints a table, then one JSON object on its last line: ``rows`` (one object per
configuration: mines, workers, points, readings, stored, complete, messages_per_mine,
readings_per_s (stored / load_s), load_s,
take_s, probes, probe_s, alarm_p50_ms, alarm_p99_ms, pg_connections_max: the most
connections the workers held at once), ``mines``, ``workers``, ``points``,
``readings``, and per configuration ``readings_per_s_{M}_mines_{W}w``,
``alarm_p50_ms_{M}_mines_{W}w``, ``alarm_p99_ms_{M}_mines_{W}w``, ``take_s_{M}_mines_{W}w``,
``ratio_vs_1_mine_{M}_mines_{W}w`` (when 1 mine is in the run), and per mine count
``publish_baseline_readings_per_s_{M}_mines``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is first on sys.path and bench/ingest.py would shadow the
# project's ingest package; bench/ingest.py is loaded below under the name bench_ingest.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import aiomqtt  # noqa: E402
import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from minewatch.broker import (  # noqa: E402
    ENGINE_USER,
    NODELAY,
    BrokerProcess,
    gateway_user,
    write_config,
)
from minewatch.mine import Mine  # noqa: E402
from minewatch.pgcluster import PgCluster, start_cluster  # noqa: E402
from minewatch.procs import free_port  # noqa: E402


def _bench_ingest() -> ModuleType:
    """bench/ingest.py under its own name (``ingest`` is the project's package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_ingest", Path(__file__).resolve().parent / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module
    spec.loader.exec_module(module)
    return module


bi = _bench_ingest()

MAX_CONNECTIONS = 1000
POLL_MS = 60_000  # the bench mines' declared poll period: stale after 2 polls = 120 s
KEEPALIVE_S = 30.0  # one message per mine this often until the load starts


def _restart_wide(cluster: PgCluster) -> None:
    """Restart the cluster with MAX_CONNECTIONS: minewatch.pgcluster passes
    max_connections=200 on the command line, which no configuration file can override."""
    cluster.stop()
    opts = (f"-p {cluster.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={cluster.directory} "
            f"-c max_connections={MAX_CONNECTIONS} -c max_wal_size=4GB "
            "-c checkpoint_timeout=15min")
    cmd = [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.directory / "data"), "-o", opts,
           "-l", str(cluster.directory / "server.log"), "-w", "-t", "60", "start"]
    if os.geteuid() == 0:  # the cluster belongs to postgres (see minewatch.pgcluster)
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    if out.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {out.stdout}{out.stderr}")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """MINEWATCH_DATABASE_URL, else a throwaway durable cluster allowing MAX_CONNECTIONS."""
    url = os.environ.get("MINEWATCH_DATABASE_URL")
    if url:
        yield url
        return
    directory = Path(tempfile.mkdtemp(prefix="minewatch-pg-"))
    cluster = None
    try:
        cluster = start_cluster(directory, free_port(), durable=True)
        _restart_wide(cluster)
        yield cluster.url
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


async def count_connections(admin: str, db: str, out: list[int], stop: asyncio.Event) -> None:
    """Sample the database's connections (all workers' pools) every 0.5 s until ``stop``."""
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        for _ in range(7200):  # an hour at most; a configuration ends well before
            cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                     (db,))
            out.append((await cur.fetchone())[0])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if stop.is_set():
                return


def mine_file(mine_id: str, points: int, location: str = "district_return") -> str:
    """bench/ingest.py's mine with a POLL_MS poll period (see keepalive)."""
    text = bi.mine_toml(mine_id, points, location)
    assert "poll_ms = 1000" in text
    return text.replace("poll_ms = 1000", f"poll_ms = {POLL_MS}")


async def keepalive(cfg: Any, mine_id: str, points: int, value: float, ts0: float,
                    stop: asyncio.Event) -> None:
    """The mine's gateway at its poll rate before the load, so no mine goes stale while the
    workers take the others (a real mine publishes all along). Timestamps from ``ts0`` on,
    older than the load's, so no load reading is a replay."""
    user = gateway_user(mine_id, "S01")
    ids = bi.point_ids(points)
    async with aiomqtt.Client("127.0.0.1", cfg.port, username=user,
                              password=cfg.password(user), identifier=f"keep-{mine_id}",
                              socket_options=NODELAY) as c:
        for k in range(100_000):
            await c.publish(f"mw/{mine_id}/S01/data",
                            bi.message(mine_id, ids, k, ts0 + k * KEEPALIVE_S, value), qos=1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), KEEPALIVE_S)
            if stop.is_set():
                return


async def stored_since(url: str, mines: list[str], t_from: float) -> int:
    """Readings of ``mines`` stored with a source time from ``t_from`` on (the load's)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regclass('readings') IS NOT NULL")
        if not (await cur.fetchone())[0]:
            return 0
        cur = await conn.execute("SELECT count(*) FROM readings WHERE mine_id = ANY(%s) "
                                 "AND ts >= to_timestamp(%s)", (mines, t_from))
        return (await cur.fetchone())[0]


async def run_one(mines: int, workers: int, args: argparse.Namespace, tmp: Path,
                  admin: str) -> dict[str, Any]:
    load = [f"L{i}" for i in range(mines)]
    run_dir = tmp / f"m{mines}w{workers}"
    run_dir.mkdir()
    paths = []
    for m in [*load, bi.PROBE]:
        p = run_dir / f"{m}.toml"
        # The probe points are alarm-only (main return): the bench has no gateway to ack cuts.
        p.write_text(mine_file(m, args.points) if m != bi.PROBE else
                     mine_file(m, args.probes, "main_return"), encoding="utf-8")
        paths.append(p)
    messages = max(1, round(args.readings / (mines * args.points)))
    total = mines * args.points * messages
    db = f"mw_scale_{mines}_{workers}_{os.getpid()}"
    pg = admin.rsplit("/", 1)[0] + "/" + db
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS {db}")
        await conn.execute(f"CREATE DATABASE {db}")
    cfg = write_config(run_dir / "mqtt", [Mine.load(p) for p in paths], free_port())
    broker = BrokerProcess(cfg)
    procs: list[Any] = []
    conns: list[int] = []
    stop, warm = asyncio.Event(), asyncio.Event()
    sampler = asyncio.create_task(count_connections(admin, db, conns, stop))
    keep: list[asyncio.Task] = []
    try:
        broker.start()
        ts_keep = time.time() - 7200
        keep = [asyncio.create_task(keepalive(cfg, m, args.points, 0.3, ts_keep, warm))
                for m in load]
        keep.append(asyncio.create_task(keepalive(cfg, bi.PROBE, args.probes, 0.2, ts_keep,
                                                  warm)))
        t_start = time.perf_counter()
        procs = bi.start_workers(workers, paths, pg, f"mqtt://{ENGINE_USER}:"
                                 f"{cfg.password(ENGINE_USER)}@127.0.0.1:{cfg.port}",
                                 run_dir / "data", run_dir)
        deadline = time.monotonic() + 60 + 2 * mines
        while await bi.owned(pg) != {*load, bi.PROBE}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} worker(s) did not take all {mines} mines")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited; see {run_dir}/w*.log")
            await asyncio.sleep(0.3)
        take_s = time.perf_counter() - t_start
        await asyncio.sleep(1.0)
        warm.set()
        await asyncio.gather(*keep)
        ids = bi.point_ids(args.points)
        t_base = time.time() - 3600
        t0 = time.perf_counter()
        pub = asyncio.create_task(bi.publish_all(cfg, load, ids, messages, t_base))
        await asyncio.sleep(0.3)
        t_probe = time.perf_counter()
        done: dict[str, float] = {}
        probes = asyncio.create_task(bi.probe_latency(cfg, args.probes))
        probes.add_done_callback(lambda _: done.__setitem__("probe", time.perf_counter()))
        deadline = time.monotonic() + args.drain_s
        while (n := await stored_since(pg, load, t_base)) < total and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        load_s = time.perf_counter() - t0
        if n < total:  # too slow to store it all in time: the rate so far, marked incomplete
            pub.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pub
        latency = await probes
    finally:
        stop.set()
        warm.set()
        for task in keep:
            task.cancel()
        await asyncio.gather(*keep, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sampler, 5)
        bi.stop_workers(procs)
        broker.stop()
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f"DROP DATABASE IF EXISTS {db}")
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"mines": mines, "workers": workers, "points": args.points, "readings": total,
            "stored": n, "complete": n >= total,
            "messages_per_mine": messages, "readings_per_s": round(n / load_s),
            "load_s": round(load_s, 2), "take_s": round(take_s, 2), "probes": len(latency),
            "probe_s": round(done.get("probe", time.perf_counter()) - t_probe, 2),
            "alarm_p50_ms": pct(latency, 50), "alarm_p99_ms": pct(latency, 99),
            "pg_connections_max": max(conns, default=0)}


async def publish_baseline(mines: int, args: argparse.Namespace, tmp: Path) -> float:
    """The publisher alone into the broker (bench/ingest.py's baseline) for this mine count."""
    messages = max(1, round(args.readings / (mines * args.points)))
    ns = argparse.Namespace(mines=mines, points=args.points, messages=messages)
    return await bi.baseline(ns, tmp)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-scaling-"))
    res: dict[str, Any] = {"rows": [], "baseline": {}}
    try:
        with postgres() as admin:
            for mines in args.mines:
                res["baseline"][mines] = await publish_baseline(mines, args, tmp)
                for workers in args.workers:
                    row = await run_one(mines, workers, args, tmp, admin)
                    res["rows"].append(row)
                    print(f"  {mines} mines, {workers} worker(s): "
                          f"{row['readings_per_s']:,} readings/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def report(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    rows = res["rows"]
    one = {r["workers"]: r["readings_per_s"] for r in rows if r["mines"] == 1}
    print(f"{'mines':>6}{'workers':>8}{'msgs/mine':>10}{'readings/s':>12}{'vs 1 mine':>10}"
          f"{'load s':>8}{'take s':>8}{'alarm p50':>10}{'p99 ms':>8}{'probes':>7}"
          f"{'pg conns':>9}{'publish-only/s':>16}")
    out: dict[str, Any] = {"rows": rows, "mines": args.mines, "workers": args.workers,
                           "points": args.points, "readings": args.readings}
    for r in rows:
        key = f"{r['mines']}_mines_{r['workers']}w"
        out[f"readings_per_s_{key}"] = r["readings_per_s"]
        out[f"take_s_{key}"] = r["take_s"]
        if r["alarm_p99_ms"] is not None:
            out[f"alarm_p50_ms_{key}"] = r["alarm_p50_ms"]
            out[f"alarm_p99_ms_{key}"] = r["alarm_p99_ms"]
        ratio = r["readings_per_s"] / one[r["workers"]] if r["workers"] in one else None
        if ratio is not None:
            out[f"ratio_vs_1_mine_{key}"] = round(ratio, 3)
        base = res["baseline"][r["mines"]]
        print(f"{r['mines']:>6}{r['workers']:>8}{r['messages_per_mine']:>10}"
              f"{r['readings_per_s']:>11,}{' ' if r['complete'] else '*'}"
              f"{_fmt(ratio, '.2f'):>10}{r['load_s']:>8.1f}{r['take_s']:>8.1f}"
              f"{_fmt(r['alarm_p50_ms'], '.1f'):>10}{_fmt(r['alarm_p99_ms'], '.1f'):>8}"
              f"{r['probes']:>7}{r['pg_connections_max']:>9}{base:>16,.0f}")
    for mines, base in res["baseline"].items():
        out[f"publish_baseline_readings_per_s_{mines}_mines"] = round(base)
    print(f"{args.points} points per mine, {args.readings:,} readings per configuration "
          "split over the mines; readings/s = stored in PostgreSQL; alarm = probe mine's "
          "over-limit → city subscriber, under that load; publish-only = baseline, no engine"
          + ("" if all(r["complete"] for r in rows) else
             f"; * = not all stored within {args.drain_s:g} s, rate so far"))
    return out


def int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma list of positive integers")
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 and 10 mines, 1 and 2 workers, small load (CI smoke, ~1 min)")
    ap.add_argument("--mines", type=int_list, default=[1, 10, 50, 100])
    ap.add_argument("--workers", type=int_list, default=[1, 2, 4])
    ap.add_argument("--points", type=int, default=100, help="points per mine (<= 2,000)")
    ap.add_argument("--readings", type=int, default=300_000, help="per configuration")
    ap.add_argument("--probes", type=int, default=10, help="probe alarms per configuration")
    ap.add_argument("--drain-s", type=float, default=300.0,
                    help="longest wait for the store to hold a configuration's readings; "
                         "a slower row reports the rate so far and complete=false")
    args = ap.parse_args()
    if args.quick:
        args.mines, args.workers, args.points, args.readings, args.probes, args.drain_s = \
            [1, 10], [1, 2], 50, 10_000, 3, 60.0
    if not (1 <= args.points <= 2000 and args.readings >= 1 and 1 <= args.probes <= 2000):
        ap.error("need 1 <= points <= 2000, readings >= 1, 1 <= probes <= 2000")
    res = asyncio.run(main_async(args))
    print(json.dumps(report(args, res)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
