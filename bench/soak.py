"""Soak: hours-long steady MQTT ingest with alarm probes; memory growth, latency drift and
counts in = counts stored.

``--workers`` engine workers (default 2; PostgreSQL store, a private mosquitto) take mines
publishing at a fixed rate for ``--minutes``; every ``--probe-every`` seconds an over-limit
reading goes into a probe mine and the time until its alarm reaches a city subscriber is
measured. The workers' RSS (summed) is sampled every 10 s. At the end the store must hold
exactly the readings published.

Usage: python bench/soak.py [--quick] [--minutes 30] [--rate 20000]
(--quick: 30 s at 2 000 readings/s, for the CI smoke check; the documented run is 30 minutes.)
Prints a table and a JSON object on its last line: rss_growth_mb, p99_first_ms, p99_last_ms,
p99_drift_ms, published, stored, lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # bench/ingest.py holds the shared pieces

import ingest as bi  # noqa: E402  (bench/ingest.py, not the ingest package)
from minewatch.broker import NODELAY, BrokerProcess, gateway_user, write_config  # noqa: E402
from minewatch.mine import Mine  # noqa: E402
from minewatch.pgcluster import database_url  # noqa: E402
from minewatch.procs import free_port, rss_mb  # noqa: E402

PROBE_POINTS = 200


def total_rss(workers: list) -> float:
    return sum(rss_mb(w.pid) for w in workers)


async def publisher(cfg, mine_id: str, ids: list[str], rate: float, until: float,
                    counter: list[int]) -> None:
    """One mine's gateway: batches of all its points, paced to ``rate`` readings/s."""
    user = gateway_user(mine_id, "S01")
    per_s = rate / len(ids)  # messages per second
    async with aiomqtt.Client("127.0.0.1", cfg.port, username=user, password=cfg.password(user),
                              identifier=f"soak-{mine_id}", max_inflight_messages=100,
                              socket_options=NODELAY) as c:
        seq, t0 = 0, time.monotonic()
        base = time.time() - 86400  # distinct, ordered timestamps (no replays)
        while time.monotonic() < until:
            due = t0 + seq / per_s
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await c.publish(f"mw/{mine_id}/S01/data",
                            bi.message(mine_id, ids, seq, base + seq * 0.001, 0.3), qos=1)
            seq += 1
            counter[0] += len(ids)


async def prober(cfg, until: float, every: float, out: list[tuple[float, float]]) -> None:
    """One probe every ``every`` s, rotating over the probe mine's points (a point raised
    again within a minute would be a chattering alarm and not be annunciated anew)."""
    k = 0
    while time.monotonic() < until:
        got = await bi.probe_latency(cfg, 1, first=k % PROBE_POINTS)
        out += [(time.monotonic(), x) for x in got]
        k += 1
        await asyncio.sleep(every)


async def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-soak-"))
    mines = [f"S{i}" for i in range(args.mines)]
    ids = bi.point_ids(args.points)
    paths = []
    for m in [*mines, bi.PROBE]:
        p = tmp / f"{m}.toml"
        p.write_text(bi.mine_toml(m, args.points) if m != bi.PROBE else
                     bi.mine_toml(m, PROBE_POINTS, "main_return"), encoding="utf-8")
        paths.append(p)
    with database_url(durable=True) as admin:
        db = f"mw_soak_{os.getpid()}"
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f"DROP DATABASE IF EXISTS {db}")
            await conn.execute(f"CREATE DATABASE {db}")
        pg = admin.rsplit("/", 1)[0] + "/" + db
        cfg = write_config(tmp / "mqtt", [Mine.load(p) for p in paths], free_port())
        broker = BrokerProcess(cfg)
        broker.start()
        workers = bi.start_workers(args.workers, paths, pg, f"mqtt://{bi.ENGINE_USER}:"
                                   f"{cfg.password(bi.ENGINE_USER)}@127.0.0.1:{cfg.port}",
                                   tmp / "data", tmp)
        try:
            deadline = time.monotonic() + 60
            while await bi.owned(pg) != {*mines, bi.PROBE}:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not take the mines")
                await asyncio.sleep(0.3)
            until = time.monotonic() + args.minutes * 60
            counter = [0]
            probes: list[tuple[float, float]] = []
            rss: list[tuple[float, float]] = [(0.0, total_rss(workers))]
            start = time.monotonic()

            async def sample() -> None:
                while time.monotonic() < until:
                    await asyncio.sleep(10 if not args.quick else 2)
                    rss.append((time.monotonic() - start, total_rss(workers)))
            await asyncio.gather(
                *(publisher(cfg, m, ids, args.rate / len(mines), until, counter)
                  for m in mines), prober(cfg, until, args.probe_every, probes), sample())
            published = counter[0]
            drain = time.monotonic() + 300
            while await bi.stored(pg, mines) < published and time.monotonic() < drain:
                await asyncio.sleep(1)
            stored = await bi.stored(pg, mines)
        finally:
            bi.stop_workers(workers)
            broker.stop()
    lat = [x for _, x in probes]
    third = max(1, len(lat) // 3)
    first, last = lat[:third] or [float("nan")], lat[-third:] or [float("nan")]
    return {"minutes": args.minutes, "rate": args.rate, "workers": args.workers,
            "published": published,
            "stored": stored, "lost": published - stored,
            "achieved_rate": round(published / (args.minutes * 60)),
            "rss_start_mb": round(rss[0][1], 1), "rss_end_mb": round(rss[-1][1], 1),
            "rss_growth_mb": round(rss[-1][1] - rss[min(1, len(rss) - 1)][1], 1),
            "probes": len(lat),
            "p99_first_ms": round(float(np.percentile(first, 99)), 2),
            "p99_last_ms": round(float(np.percentile(last, 99)), 2),
            "p99_drift_ms": round(float(np.percentile(last, 99) - np.percentile(first, 99)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=20_000.0, help="readings/s offered")
    ap.add_argument("--mines", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="engine worker processes")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--probe-every", type=float, default=5.0)
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.rate, args.mines, args.points, args.probe_every = 0.5, 2000, 2, 50, 2
        args.workers = 1
    res = run_sync(args)
    for k, v in res.items():
        print(f"{k:>16}: {v}")
    print(json.dumps(res))


def run_sync(args) -> dict:
    return asyncio.run(run(args))


if __name__ == "__main__":
    main()
