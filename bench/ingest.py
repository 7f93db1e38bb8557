"""Sustained ingest through broker → engine workers → store, with 1, 2 and 4 workers.

M mines, one MQTT gateway each with P methane points. The bench publishes every mine's
batches as fast as QoS 1 allows (one message = one poll of P readings), and measures
  - readings/s: total readings / time from the first publish until PostgreSQL holds them all
    (so the figure is what is evaluated *and* stored, not what was merely published);
  - alarm latency under that load: a probe mine (not loaded) gets an over-limit reading at t0;
    t1 is when its alarm event reaches a city subscriber on mw/{mine}/events.
The baseline printed beside the worker runs is the publisher alone into the broker with no
engine subscribed (what the broker and this client can move on this machine).
Starts its own mosquitto and PostgreSQL unless MINEWATCH_DATABASE_URL is set.

Usage: python bench/ingest.py [--quick] [--mines M] [--points P] [--messages N] [--profile DIR]
(--profile: the 1-worker run only, sampled by py-spy; prints the functions with the most
samples — what the "profile before/after" in the README comes from.)
Last line: JSON with readings_per_s_1w, readings_per_s_2w, readings_per_s_4w, alarm_p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import numpy as np
import psycopg

from minewatch.broker import (
    CITY_USER,
    ENGINE_USER,
    NODELAY,
    BrokerProcess,
    gateway_user,
    write_config,
)
from minewatch.mine import Mine
from minewatch.pgcluster import database_url
from minewatch.procs import ROOT, free_port, stop_all

PROBE = "probe"


def mine_toml(mine_id: str, points: int, location: str = "district_return") -> str:
    out = [f'[mine]\nid = "{mine_id}"\nname = "压测煤矿{mine_id}"\n',
           '[[areas]]\nid = "face"\nname = "工作面"\n',
           '[[substations]]\nid = "S01"\nname = "网关"\nprotocol = "mqtt"\npoll_ms = 1000\n',
           '[[relays]]\nid = "001C01"\nname = "断电器"\nsubstation = "S01"\ncoil = 0\n'
           'area = "face"\nfeed = "001D01"\n',
           '[[points]]\nid = "001D01"\nname = "馈电"\nsubstation = "S01"\nchannel = 0\n'
           'kind = "feed"\narea = "face"\n']
    for i in range(points):
        pid = f"001{chr(ord('A') + i // 99)}{i % 99 + 1:02d}"
        out.append(f'[[points]]\nid = "{pid}"\nname = "甲烷{i}"\nsubstation = "S01"\n'
                   f'channel = {i + 1}\nkind = "ch4"\nlocation = "{location}"\n'
                   f'area = "face"\n')
    return "\n".join(out)


def point_ids(points: int) -> list[str]:
    return [f"001{chr(ord('A') + i // 99)}{i % 99 + 1:02d}" for i in range(points)]


def message(mine_id: str, ids: list[str], seq: int, ts: float, value: float) -> bytes:
    return json.dumps({"mine": mine_id, "substation": "S01", "seq": seq, "sent_at": ts,
                       "readings": [{"point": p, "ts": ts, "value": value} for p in ids]}
                      ).encode()


async def publish_all(cfg, mines: list[str], ids: list[str], n: int, t_base: float) -> float:
    async def one(mine_id: str) -> None:
        user = gateway_user(mine_id, "S01")
        async with aiomqtt.Client("127.0.0.1", cfg.port, username=user,
                                  password=cfg.password(user), identifier=f"bench-{mine_id}",
                                  max_inflight_messages=100, socket_options=NODELAY) as c:
            for k in range(n):
                await c.publish(f"mw/{mine_id}/S01/data",
                                message(mine_id, ids, k, t_base + k * 0.01, 0.3), qos=1)
    t = time.perf_counter()
    await asyncio.gather(*(one(m) for m in mines))
    return time.perf_counter() - t


async def stored(url: str, mines: list[str]) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regclass('readings') IS NOT NULL")
        if not (await cur.fetchone())[0]:
            return 0
        cur = await conn.execute("SELECT count(*) FROM readings WHERE mine_id = ANY(%s)",
                                 (mines,))
        return (await cur.fetchone())[0]


async def owned(url: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regclass('engine_workers') IS NOT NULL")
        if not (await cur.fetchone())[0]:
            return set()
        cur = await conn.execute("SELECT mines FROM engine_workers WHERE seen_at > "
                                 "now() - interval '3 seconds'")
        return {m for (ms,) in await cur.fetchall() for m in ms}


async def probe_latency(cfg, probes: int, first: int = 0) -> list[float]:
    """Over-limit readings into the probe mine (its points ``first`` … ``first + probes - 1``);
    time until each alarm event reaches the city."""
    out: list[float] = []
    user = gateway_user(PROBE, "S01")
    async with aiomqtt.Client("127.0.0.1", cfg.port, username=CITY_USER,
                              password=cfg.password(CITY_USER), socket_options=NODELAY) as city, \
            aiomqtt.Client("127.0.0.1", cfg.port, username=user,
                           password=cfg.password(user), socket_options=NODELAY) as gw:
        await city.subscribe(f"mw/{PROBE}/events", qos=1)
        seq = 10_000_000 + 2 * first
        # One point per probe: the same point raised again within a minute would be a
        # chattering alarm (latched, not annunciated anew) and would hold its off-delay.
        for point in point_ids(first + probes)[first:]:
            seq += 2
            t0 = time.time()
            await gw.publish(f"mw/{PROBE}/S01/data",
                             message(PROBE, [point], seq, t0, 2.0), qos=1)
            deadline = time.monotonic() + 10
            async for msg in city.messages:
                ev = json.loads(msg.payload)
                if ev.get("type") == "alarm" and ev["transition"] == "raised" and \
                        ev["alarm"]["kind"] == "over_limit":
                    out.append((time.time() - t0) * 1000)
                    break
                if time.monotonic() > deadline:
                    break
            await gw.publish(f"mw/{PROBE}/S01/data",
                             message(PROBE, [point], seq + 1, time.time(), 0.2), qos=1)
            await asyncio.sleep(0.3)
    return out


def start_workers(n: int, paths: list[Path], pg: str, broker_url: str, data: Path,
                  logs: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        args = [sys.executable, "-m", "minewatch.cli", "worker", "--database-url", pg,
                "--broker-url", broker_url, "--data-dir", str(data), "--worker-id", f"b{i}",
                "--log-level", "WARNING"]
        for p in paths:
            args += ["--config", str(p)]
        procs.append(subprocess.Popen(args, cwd=ROOT, stdout=(logs / f"w{i}.log").open("w"),
                                      stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    stop_all(procs, signal.SIGINT, grace=20)


async def run_config(workers: int, args, tmp: Path, admin_url: str) -> dict:
    load_mines = [f"L{i}" for i in range(args.mines)]
    all_mines = [*load_mines, PROBE]
    run_dir = tmp / f"run{workers}"
    run_dir.mkdir()
    paths = []
    for m in all_mines:
        p = run_dir / f"{m}.toml"
        # The probe point is alarm-only (main return): the bench has no gateway to ack cuts.
        p.write_text(mine_toml(m, args.points) if m != PROBE else
                     mine_toml(m, args.probes, "main_return"), encoding="utf-8")
        paths.append(p)
    db = f"mw_ingest_{workers}_{os.getpid()}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f"DROP DATABASE IF EXISTS {db}")
        await conn.execute(f"CREATE DATABASE {db}")
    pg = admin_url.rsplit("/", 1)[0] + "/" + db
    cfg = write_config(Path(tempfile.mkdtemp(prefix="minewatch-mqtt-")),
                       [Mine.load(p) for p in paths], free_port())
    broker = BrokerProcess(cfg)
    broker.start()
    procs = start_workers(workers, paths, pg, f"mqtt://{ENGINE_USER}:"
                          f"{cfg.password(ENGINE_USER)}@127.0.0.1:{cfg.port}", run_dir / "data",
                          run_dir)
    try:
        deadline = time.monotonic() + 60
        while await owned(pg) != set(all_mines):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not take all mines")
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)
        ids = point_ids(args.points)
        total = args.mines * args.points * args.messages
        t_base = time.time() - 3600
        spy = profile_start(procs[0].pid, args.profile, workers) if args.profile else None
        t0 = time.perf_counter()
        pub = asyncio.create_task(publish_all(cfg, load_mines, ids, args.messages, t_base))
        await asyncio.sleep(0.3)
        probes = asyncio.create_task(probe_latency(cfg, args.probes))
        deadline = time.monotonic() + 600
        while (n := await stored(pg, load_mines)) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n} of {total} readings stored")
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
        if spy is not None:
            profile_stop(spy)
        await pub
        latency = await probes
    finally:
        stop_workers(procs)
        broker.stop()
        shutil.rmtree(cfg.directory, ignore_errors=True)
    return {"readings_per_s": total / elapsed, "elapsed_s": elapsed, "readings": total,
            "alarm_ms": latency}


async def baseline(args, tmp: Path) -> float:
    """The publisher alone: messages into the broker, nobody consuming."""
    mines = [f"L{i}" for i in range(args.mines)]
    cfg = write_config(Path(tempfile.mkdtemp(prefix="minewatch-mqtt-")),
                       [_mine(tmp, m) for m in mines], free_port())
    broker = BrokerProcess(cfg)
    broker.start()
    try:
        took = await publish_all(cfg, mines, point_ids(args.points), args.messages,
                                 time.time() - 3600)
    finally:
        broker.stop()
        shutil.rmtree(cfg.directory, ignore_errors=True)
    return args.mines * args.points * args.messages / took


def profile_start(pid: int, out_dir: Path, workers: int) -> subprocess.Popen:
    """py-spy samples worker ``pid`` (collapsed stacks, idle frames left out) until stopped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                             str(pid), "--rate", "200", "--format", "raw", "-o",
                             str(out_dir / f"ingest-{workers}w.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_stop(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()


IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)",
               "EpollSelector.select (selectors.py:468)")


def profile_top(path: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, self %, inclusive %) of the busy samples in a collapsed-stack file (py-spy
    counts threads blocked in C as active: pool threads waiting for work and the event loop
    waiting in select are left out)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack.endswith(IDLE_LEAVES):
            continue
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0] + ")"
                  for f in stack.split(";")]
        k = int(count)
        total += k
        own[frames[-1]] = own.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
    top = sorted(own, key=own.get, reverse=True)[:n]  # type: ignore[arg-type]
    return [(f, 100 * own[f] / total, 100 * incl[f] / total) for f in top]


def _mine(tmp: Path, mine_id: str) -> Mine:
    p = tmp / f"base-{mine_id}.toml"
    p.write_text(mine_toml(mine_id, 1), encoding="utf-8")
    return Mine.load(p)


async def main_async(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-bench-"))
    try:
        with database_url(durable=True) as admin:
            res = {"baseline_publish_readings_per_s": await baseline(args, tmp)}
            for w in args.workers:
                res[w] = await run_config(w, args, tmp, admin)
            return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small load (under a minute)")
    ap.add_argument("--mines", type=int, default=8)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--messages", type=int, default=400, help="messages per mine")
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--profile", type=Path, help="py-spy the 1-worker run into this directory "
                    "(collapsed stacks) and print the top functions; runs 1 worker only")
    args = ap.parse_args()
    args.workers = [1] if args.profile else [1, 2, 4]
    if args.quick:
        args.mines, args.points, args.messages, args.probes = 4, 50, 40, 5
    res = asyncio.run(main_async(args))
    print(f"{'workers':<9}{'readings/s':>12}{'elapsed s':>11}{'alarm p50 ms':>14}"
          f"{'alarm p99 ms':>14}")
    for w in args.workers:
        r = res[w]
        lat = r["alarm_ms"] or [float("nan")]
        print(f"{w:<9}{r['readings_per_s']:>12,.0f}{r['elapsed_s']:>11.1f}"
              f"{np.percentile(lat, 50):>14.1f}{np.percentile(lat, 99):>14.1f}")
    base = res["baseline_publish_readings_per_s"]
    print(f"baseline: publisher alone into the broker {base:,.0f} readings/s; "
          f"{args.mines} mines x {args.points} points x {args.messages} messages")
    all_lat = [x for w in args.workers for x in res[w]["alarm_ms"]]
    out = {f"readings_per_s_{w}w": round(res[w]["readings_per_s"]) for w in args.workers}
    out.update({
        "alarm_p50_ms": round(float(np.percentile(all_lat, 50)), 2) if all_lat else None,
        "alarm_p99_ms": round(float(np.percentile(all_lat, 99)), 2) if all_lat else None,
        **{f"alarm_p99_ms_{w}w": round(float(np.percentile(res[w]["alarm_ms"], 99)), 2)
           for w in args.workers if res[w]["alarm_ms"]},
        "baseline_publish_readings_per_s": round(base),
        "ratio_1w_vs_publish_baseline": round(res[1]["readings_per_s"] / base, 3),
        "mines": args.mines, "points": args.points, "messages": args.messages,
    })
    if args.profile:
        print(f"\nprofile of the worker (py-spy, {args.profile / 'ingest-1w.txt'}):")
        print(f"{'self %':>7}{'incl %':>8}  function")
        for f, own, incl in profile_top(args.profile / "ingest-1w.txt"):
            print(f"{own:>7.1f}{incl:>8.1f}  {f}")
    print(json.dumps(out))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
