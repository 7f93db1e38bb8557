"""Three engine workers share six mines behind one mosquitto and one PostgreSQL; one worker is
killed mid-run and every over-limit event still raises exactly one alarm."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from minewatch.broker import ENGINE_USER, BrokerProcess, write_config
from minewatch.mine import Mine, Thresholds
from minewatch.procs import ROOT, free_port
from simulators.mine import SimulatedMine

MINES = [f"m{i}" for i in range(6)]
ROUNDS = 3
TEMPLATE = """
[mine]
id = "{id}"
name = "测试煤矿{id}"

[[areas]]
id = "face"
name = "工作面"

[[substations]]
id = "S01"
name = "工作面网关"
protocol = "mqtt"
poll_ms = 200

[[relays]]
id = "001C01"
name = "工作面断电器"
substation = "S01"
coil = 0
area = "face"
feed = "001D01"

[[points]]
id = "001A01"
name = "工作面回风甲烷"
substation = "S01"
channel = 0
kind = "ch4"
location = "face_return"
area = "face"
baseline = 0.3

[[points]]
id = "001D01"
name = "工作面馈电"
substation = "S01"
channel = 1
kind = "feed"
area = "face"
"""


async def _owners(url: str) -> dict[str, list[str]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT to_regclass('engine_workers') IS NOT NULL")
        if not (await cur.fetchone())[0]:
            return {}
        cur = await conn.execute("SELECT worker_id, mines FROM engine_workers WHERE seen_at > "
                                 "now() - interval '3 seconds'")
        return {w: list(m) for w, m in await cur.fetchall()}


async def _wait_owned(url: str, workers: set[str], timeout: float) -> dict[str, list[str]]:
    """Until the mines are shared out evenly among ``workers``, each owned exactly once."""
    deadline = time.monotonic() + timeout
    owners: dict[str, list[str]] = {}
    share = len(MINES) // len(workers)
    while time.monotonic() < deadline:
        owners = {w: m for w, m in (await _owners(url)).items() if w in workers}
        owned = [m for ms in owners.values() for m in ms]
        if sorted(owned) == MINES and all(len(owners.get(w, [])) == share for w in workers):
            return owners
        await asyncio.sleep(0.3)
    raise AssertionError(f"mines not all owned by {workers} within {timeout}s: {owners}")


@pytest.mark.timeout(240)
async def test_killed_worker_mines_move_and_each_event_raises_one_alarm(pg_url, tmp_path):
    paths, mines = [], []
    for mine_id in MINES:
        path = tmp_path / f"{mine_id}.toml"
        path.write_text(TEMPLATE.format(id=mine_id), encoding="utf-8")
        paths.append(path)
        mines.append(Mine.load(path))
    cfg = write_config(Path(tempfile.mkdtemp(prefix="minewatch-mqtt-")), mines, free_port())
    broker = BrokerProcess(cfg)
    broker.start()
    data = tmp_path / "workers"
    procs: dict[str, subprocess.Popen] = {}
    sims = [SimulatedMine(m, Thresholds.load()) for m in mines]
    try:
        url = f"mqtt://{ENGINE_USER}:{cfg.password(ENGINE_USER)}@127.0.0.1:{cfg.port}"
        for n in range(3):
            wid = f"w{n}"
            args = [sys.executable, "-m", "minewatch.cli", "worker", "--database-url", pg_url,
                    "--broker-url", url, "--data-dir", str(data), "--worker-id", wid]
            for p in paths:
                args += ["--config", str(p)]
            procs[wid] = subprocess.Popen(args, cwd=ROOT, stdout=(tmp_path / f"{wid}.log").open(
                "w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for sim in sims:
            await sim.start(("127.0.0.1", cfg.port, cfg.credentials))
        owners = await _wait_owned(pg_url, set(procs), 60)
        # Partitioned: each mine has exactly one owner, and the load is shared.
        assert sorted(m for ms in owners.values() for m in ms) == MINES
        assert all(len(ms) == 2 for ms in owners.values()), owners

        victim = max(owners, key=lambda w: len(owners[w]))
        for rnd in range(ROUNDS):
            for sim in sims:
                await sim.inject("gas-overlimit", "001A01")
            await asyncio.sleep(2.0)
            if rnd == 1:  # kill a worker while its mines are over the limit
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(10)
                survivors = set(procs) - {victim}
                owners = await _wait_owned(pg_url, survivors, 30)
                assert all(len(ms) == 3 for ms in owners.values()), owners
                await asyncio.sleep(1.0)
            for sim in sims:
                await sim.inject("clear", "001A01")
            await asyncio.sleep(2.0)

        # Every mine: one raise per event, never two (the journal records each transition).
        deadline = time.monotonic() + 20
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT mine_id, count(*) FROM journal WHERE event = 'alarm_raised' "
                    "AND data->>'kind' = 'power_cut_limit' AND data->>'point_id' = '001A01' "
                    "GROUP BY mine_id")
                counts = dict(await cur.fetchall())
                cur = await conn.execute(
                    "SELECT mine_id, count(DISTINCT id) FROM alarms WHERE kind = "
                    "'power_cut_limit' GROUP BY mine_id")
                alarm_ids = dict(await cur.fetchall())
            if all(counts.get(m) == ROUNDS for m in MINES):
                break
            await asyncio.sleep(0.5)
        assert counts == dict.fromkeys(MINES, ROUNDS), counts
        # One alarm record per (point, kind) episode: re-raises re-arm it instead of doubling.
        assert alarm_ids == dict.fromkeys(MINES, 1), alarm_ids
        # The power was cut in every mine (commands verified by the feed sensor).
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT mine_id, count(*) FROM commands WHERE action = "
                                     "'cut' AND record->>'result' = 'verified' GROUP BY 1")
            cuts = dict(await cur.fetchall())
        assert set(cuts) == set(MINES)
    finally:
        for sim in sims:
            await sim.stop()
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
