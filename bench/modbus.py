"""Modbus ingest throughput: minewatch polling N simulated substations x 64 channels.

Issue 10, item 2 (the Modbus part): 200 substations x 64 channels polled every 1 s is
12,800 readings/s; how much CPU does the service spend on that, how late are its polls, and
how far can the poll period be shortened before the service no longer keeps up?

Set-up (all on 127.0.0.1, in a temporary directory removed at the end):
  - A generated mine file: substations S001..S<N>, each with 64 channels — 40 methane
    (10 coal_face, 10 district_return, 10 heading_face, 10 main_return: alarm, cut and
    alarm-only limits), 8 CO, 4 O2, 4 wind (conveyor limits), 4 temperature, 2 CO2 (points
    NNNA01..NNNA62), one smoke (NNND01) and one feed (NNND02) point, one area and one relay
    (NNNC01, coil 0, confirmed by the feed point) per substation. No roadways.
  - The simulated substations run in ``--sim-procs`` separate processes (this script with
    ``--simulator``), each serving its share of the substations with the project's
    ``simulators.substation.SimulatedSubstation`` (one pymodbus TCP server per substation on
    a free port). The bench subclass only (a) time-stamps every read that starts at register 0
    (the start of a poll) and (b) refreshes the channel model once per poll (on that read)
    instead of once per request, so the second span of a poll (registers 124-127) does not
    recompute all 64 channels; values stay current to the poll.
  - The service: ``minewatch run --no-simulate --config <the mine file with those ports>
    --poll-ms P`` (minewatch.procs.start_service; embedded SQLite store unless
    MINEWATCH_DATABASE_URL is set; no embedded broker: the mine has no MQTT substation), a
    fresh data directory for each poll period.

Measured per poll period P (1000 ms, then shorter: ``--periods``), after ``--warmup`` seconds,
over a ``--window`` of seconds:
  - polled readings/s: Δ(sum of the collectors' good polls, /api/v1/health) x 64 / Δt;
    engine readings/s (Δ ``readings``) and stored readings/s (Δ ``stored``: written to the
    store through the spool); ``stored_ratio`` = Δstored / Δreadings (the writer stores in
    chunks of up to 50k rows, so over a window this ratio is only indicative); ``store_lag_s``:
    seconds after the window's end until the store holds every reading the engine had taken
    in by then (polled every 0.2 s, at most 30 s; null if never);
  - poll timing, seen by the simulators (their own monotonic clock, shared by all processes):
    for each substation the interval between consecutive polls; lateness = interval − P,
    p50/p99/max in ms; ``on_time`` = share of intervals ≤ 1.5 P; ``poll_ratio`` = polls seen /
    polls due (substations x window / P). The stamps are taken when a simulator handles the
    request, so a starved simulator process adds its own delay (sim CPU is printed apart);
  - CPU: utime + stime of the service process (all its threads; /proc/<pid>/stat) over the
    window, as CPU seconds per second per 10k readings/s (``cpu_s_per_10k``), and the same
    for the simulator processes together (reported apart); the service's RSS at the end.
  "Keeps up" at P: poll_ratio ≥ 0.95, on_time ≥ 0.95 and store_lag_s ≤ 5. Periods run
  from the longest to the shortest and stop after the first one that does not keep up; the
  highest polled readings/s of a period that kept up is ``max_sustained_readings_per_s``.
Baseline, in the same run, against the same simulators before the service starts: a bare
pymodbus client loop in this process (one AsyncModbusTcpClient per substation, all
concurrent, each reading its 128 registers in the same two spans as the collector, as fast
as it can for ``--baseline-s``): readings/s that the wire, the simulators and one Python
process allow. ``ratio_to_baseline`` = max_sustained_readings_per_s / baseline (in --quick,
with only the 1 s period, it is merely the offered load's share of the baseline).

Everything shares this machine's cores (service, simulators, this script), so the figures
are only comparable between runs on the same machine under the same other load.

Usage: python bench/modbus.py [--quick] [--substations 200] [--periods 1000,500,250,100]
                              [--window 30] [--warmup 5] [--baseline-s 10] [--sim-procs 2]
(--quick, the CI smoke check, < 60 s: 20 substations, period 1000 ms only, 10 s window,
3 s baseline, one simulator process.)
Prints a table, then one JSON object on its last line:
  substations, channels, readings_target_per_s_1s (substations x channels),
  readings_per_s_1s (polled at 1 s), stored_per_s_1s, cpu_s_per_10k_readings (service, 1 s),
  sim_cpu_s_per_10k_readings (simulators, 1 s), poll_late_p50_ms, poll_late_p99_ms,
  poll_late_max_ms, poll_on_time_1s, poll_ratio_1s, store_lag_s_1s, keeps_up_1s, rss_mb
  (service at 1 s), max_sustained_readings_per_s (0 if not even 1 s kept up),
  max_sustained_period_ms (null then), baseline_readings_per_s, ratio_to_baseline, store
  (the service's store mode from /api/v1/health),
  periods_ms (the periods run), rows (one object per period: period_ms, readings_per_s,
  engine_per_s, stored_per_s, stored_ratio, store_lag_s, poll_ratio, on_time, late_p50_ms,
  late_p99_ms, late_max_ms, failures (failed polls), open_alarms (at the window's end: the
  simulated values stay normal, so anything open is stale or another sign of lateness),
  cpu_s_per_10k, sim_cpu_s_per_10k, cpu_cores (service CPU seconds per second), rss_mb,
  keeps_up, short_of: the criteria
  missed, of "unresponsive" (/api/v1/health unanswered for 30 s at the window's start or
  end: readings_per_s then counts the polls the simulators saw, the store figures are
  null), "polls", "on time", "store"),
  elapsed_s. Null where a period did not run (e.g. no 1 s row).
Always > 0 in --quick: substations, channels, readings_target_per_s_1s, readings_per_s_1s,
stored_per_s_1s, cpu_s_per_10k_readings, rss_mb, baseline_readings_per_s, elapsed_s;
> 0 when 1 s keeps up: max_sustained_readings_per_s, ratio_to_baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is first on sys.path and bench/ingest.py would shadow the
# project's ingest package (imported by the service modules).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from minewatch.procs import proc_stat, rss_mb, stop_all  # noqa: E402

CHANNELS = 64
ON_TIME_FACTOR = 1.5  # a poll is on time if it follows the previous one within 1.5 periods
KEEP_UP_POLLS = 0.95
KEEP_UP_ON_TIME = 0.95
KEEP_UP_STORE_LAG_S = 5.0  # everything taken in by the window's end is stored within 5 s
STORE_LAG_MAX_S = 30.0  # how long to wait for it at most

# channel layout of every substation: (kind, methane/wind location or "", count)
LAYOUT: list[tuple[str, str, int]] = [
    ("ch4", "coal_face", 10), ("ch4", "district_return", 10), ("ch4", "heading_face", 10),
    ("ch4", "main_return", 10), ("co", "", 8), ("o2", "", 4), ("wind", "conveyor", 4),
    ("temp", "", 4), ("co2", "", 2), ("smoke", "", 1), ("feed", "", 1),
]
assert sum(n for _, _, n in LAYOUT) == CHANNELS


# --- the mine file ------------------------------------------------------------------------------

def sub_id(i: int) -> str:
    return f"S{i:03d}"


def mine_toml(n_subs: int, ports: dict[str, int] | None = None, poll_ms: int = 1000) -> str:
    """The bench mine: ``n_subs`` substations x 64 channels (port 0 until the simulators
    have chosen theirs)."""
    out = ['[mine]\nid = "bench"\nname = "Modbus压测煤矿"\n']
    for i in range(1, n_subs + 1):
        out.append(f'[[areas]]\nid = "a{i:03d}"\nname = "区域{i:03d}"\n')
    for i in range(1, n_subs + 1):
        sid = sub_id(i)
        port = (ports or {}).get(sid, 0)
        out.append(f'[[substations]]\nid = "{sid}"\nname = "分站{i:03d}"\nhost = "127.0.0.1"\n'
                   f'port = {port}\ndevice_id = 1\npoll_ms = {poll_ms}\n')
        out.append(f'[[relays]]\nid = "{i:03d}C01"\nname = "断电器{i:03d}"\nsubstation = "{sid}"\n'
                   f'coil = 0\narea = "a{i:03d}"\nfeed = "{i:03d}D02"\n')
        channel, analog, switch = 0, 0, 0
        for kind, location, count in LAYOUT:
            for _ in range(count):
                if kind in ("smoke", "feed"):
                    switch += 1
                    pid = f"{i:03d}D{switch:02d}"
                else:
                    analog += 1
                    pid = f"{i:03d}A{analog:02d}"
                loc = f'location = "{location}"\n' if location else ""
                out.append(f'[[points]]\nid = "{pid}"\nname = "{kind}{channel}"\n'
                           f'substation = "{sid}"\nchannel = {channel}\nkind = "{kind}"\n'
                           f'{loc}area = "a{i:03d}"\n')
                channel += 1
    return "\n".join(out)


# --- the simulator processes (this script with --simulator) --------------------------------------

def simulator_main(config: Path, shard: int, shards: int) -> None:
    """Serve every ``shards``-th substation of ``config`` from ``shard``; print the ports as
    one JSON line, then answer ``stamps T0 T1`` on stdin with the poll times seen in that
    monotonic window (JSON, one line); exit at EOF."""
    import logging

    from minewatch.mine import Mine, Thresholds
    from simulators.substation import SimulatedSubstation

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    class BenchSubstation(SimulatedSubstation):
        def __init__(self, *a: Any) -> None:
            super().__init__(*a)
            self.stamps: deque[float] = deque(maxlen=50_000)
            self._fresh: list[int] = []

        async def _action(self, func_code, start_address, address, count, registers,
                          set_values):
            if func_code == 4:
                if address == 0 or not self._fresh:  # a poll starts: sample the model once
                    self.stamps.append(time.monotonic())
                    self.reads += 1
                    self._fresh = self.registers(time.time())
                registers[: len(self._fresh)] = self._fresh
                return None
            return await super()._action(func_code, start_address, address, count,
                                         registers, set_values)

    async def run() -> None:
        mine, limits = Mine.load(config), Thresholds.load()
        subs = [BenchSubstation(mine, s, limits)
                for k, s in enumerate(mine.substations) if k % shards == shard]
        ports = {s.sub.id: await s.start("127.0.0.1") for s in subs}
        sys.stdout.write(json.dumps(ports) + "\n")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            while line := await reader.readline():
                parts = line.decode().split()
                if parts[:1] == ["stamps"]:
                    t0, t1 = float(parts[1]), float(parts[2])
                    out = {s.sub.id: [t for t in s.stamps if t0 <= t <= t1] for s in subs}
                    sys.stdout.write(json.dumps(out) + "\n")
                    sys.stdout.flush()
        finally:
            for s in subs:
                await s.stop()

    asyncio.run(run())


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    """A child started here gets ``sig`` if this bench dies (even by SIGKILL)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG


@dataclass
class Simulators:
    """The simulator processes started here; ``stop`` ends them by PID."""

    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, config: Path, shards: int, logs: Path, timeout: float = 60.0
              ) -> dict[str, int]:
        for k in range(shards):
            self.procs.append(subprocess.Popen(
                [sys.executable, __file__, "--simulator", str(config), "--shard", str(k),
                 "--shards", str(shards)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=(logs / f"sim{k}.log").open("w"), text=True, cwd=Path(__file__).parents[1],
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent))
        ports: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        for p in self.procs:
            ports.update(json.loads(self._line(p, deadline)))
        return ports

    @staticmethod
    def _line(p: subprocess.Popen, deadline: float) -> str:
        import select

        assert p.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], 0.5)
            if ready:
                line = p.stdout.readline()
                if not line:
                    break
                return line
            if p.poll() is not None:
                break
        raise RuntimeError(f"simulator {p.pid} did not answer (exit code {p.poll()})")

    def stamps(self, t0: float, t1: float, timeout: float = 30.0) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        deadline = time.monotonic() + timeout
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(f"stamps {t0!r} {t1!r}\n")
            p.stdin.flush()
        for p in self.procs:
            out.update(json.loads(self._line(p, deadline)))
        return out

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()
        stop_all(self.procs)
        for p in self.procs:
            if p.stdout is not None:
                p.stdout.close()
        self.procs.clear()


# --- process figures ------------------------------------------------------------------------------

def cpu_s(pid: int) -> float:
    """utime + stime (all threads) of a live process, in seconds."""
    return proc_stat(pid)[1]


# --- baseline: a bare client loop ---------------------------------------------------------------

async def baseline(ports: dict[str, int], seconds: float) -> float:
    """Readings/s of one process reading every substation's 128 registers (two spans, as the
    collector does) in a tight loop per substation, all substations concurrently."""
    from pymodbus.client import AsyncModbusTcpClient

    from minewatch.registers import REGS_PER_CHANNEL, read_spans

    spans = read_spans(CHANNELS)
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=5, retries=0)
               for p in ports.values()]
    polls = [0]

    async def loop(c: AsyncModbusTcpClient, until: float) -> None:
        while time.monotonic() < until:
            regs = 0
            for address, count in spans:
                rr = await c.read_input_registers(address, count=count, device_id=1)
                if rr.isError():
                    raise RuntimeError(f"baseline read failed: {rr}")
                regs += len(rr.registers)
            if regs == CHANNELS * REGS_PER_CHANNEL:
                polls[0] += 1

    try:
        for c in clients:
            if not await c.connect():
                raise RuntimeError("baseline client cannot connect")
        await asyncio.gather(*(loop(c, time.monotonic() + 0.5) for c in clients))  # warm up
        polls[0] = 0
        t0 = time.monotonic()
        await asyncio.gather(*(loop(c, t0 + seconds) for c in clients))
        took = time.monotonic() - t0
    finally:
        for c in clients:
            c.close()
    return polls[0] * CHANNELS / took


# --- one poll period against the service ----------------------------------------------------------

def health(svc: Any, attempts: int = 3) -> dict[str, Any]:
    """/api/v1/health (public); a service too busy to answer within 10 s gets 3 tries."""
    for attempt in range(attempts):
        try:
            r = svc.get("/api/v1/health")
            r.raise_for_status()
            return r.json()
        except httpx.TimeoutException:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def start_service(workdir: Path, config: Path, period_ms: int, timeout: float) -> Any:
    """``minewatch run --no-simulate`` on the bench mine (as minewatch.procs.start_service,
    but killed with this bench if it dies); returns once every substation is online."""
    from minewatch.procs import ADMIN_PASSWORD, ROOT, ServiceProcess, free_port

    port = free_port()
    log = workdir / "service.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MINEWATCH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MINEWATCH_EMBEDDED_BROKER": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "minewatch.cli", "run", "--port", str(port), "--data-dir",
             str(workdir / "data"), "--config", str(config), "--no-simulate", "--poll-ms",
             str(period_ms), "--log-level", "WARNING"], stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=ROOT, preexec_fn=lambda: _die_with_parent(signal.SIGKILL))
    svc = ServiceProcess(f"http://127.0.0.1:{port}", port, workdir / "data", proc, log)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited with {proc.returncode}:\n"
                                   f"{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                h = svc.get("/api/v1/health")
                if h.status_code == 200 and all(s["online"] for s in h.json()["substations"]):
                    return svc
            time.sleep(0.5)
        raise RuntimeError(f"service not healthy within {timeout:g} s:\n"
                           f"{log.read_text()[-3000:]}")
    except BaseException:
        svc.stop()
        raise


def try_health(svc: Any) -> dict[str, Any] | None:
    """/api/v1/health, or None when the service does not answer (after the retries)."""
    with contextlib.suppress(httpx.HTTPError):
        return health(svc)
    return None


def run_period(period_ms: int, config: Path, sims: Simulators, n_subs: int, args: Any,
               tmp: Path) -> dict[str, Any]:
    workdir = tmp / f"svc-{period_ms}"
    workdir.mkdir()
    svc = start_service(workdir, config, period_ms, args.start_timeout)
    try:
        pid = svc.proc.pid
        time.sleep(args.warmup)
        period = period_ms / 1000
        h0, c0, s0 = try_health(svc), cpu_s(pid), sum(cpu_s(p) for p in sims.pids)
        t0 = time.monotonic()
        time.sleep(args.window)
        h1, c1, s1 = try_health(svc), cpu_s(pid), sum(cpu_s(p) for p in sims.pids)
        t1 = time.monotonic()
        rss = rss_mb(pid)
        stamps = sims.stamps(t0, t1)
        # The writer stores in chunks (up to MINEWATCH_SPOOL_BATCH_ROWS): the store keeps pace
        # if what the engine had taken in by the window's end is stored soon after.
        store_lag = None
        while h1 is not None and (lag := time.monotonic() - t1) < STORE_LAG_MAX_S:
            h = try_health(svc)
            if h is None:
                break
            if h["stored"] >= h1["readings"]:
                store_lag = lag
                break
            time.sleep(0.2)
    finally:
        svc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    dt = t1 - t0
    intervals = np.concatenate([np.diff(np.asarray(v)) for v in stamps.values()
                                if len(v) > 1] or [np.zeros(0)])
    late_ms = (intervals - period) * 1000
    seen = sum(len(v) for v in stamps.values())
    poll_ratio = seen / (n_subs * dt / period)
    on_time = float(np.mean(intervals <= ON_TIME_FACTOR * period)) if intervals.size else 0.0
    row: dict[str, Any] = {"period_ms": period_ms}
    if h0 is not None and h1 is not None:
        def delta(key: str) -> int:
            return sum(s[key] for s in h1["substations"]) - \
                sum(s[key] for s in h0["substations"])

        polled = delta("polls") * CHANNELS / dt
        engine = (h1["readings"] - h0["readings"]) / dt
        stored = (h1["stored"] - h0["stored"]) / dt
        row.update(readings_per_s=polled, engine_per_s=engine, stored_per_s=stored,
                   stored_ratio=stored / engine if engine > 0 else 0.0,
                   failures=delta("failures"), open_alarms=h1["open_alarms"],
                   store=h1["store"])
    else:  # no answer within 30 s: polls as the simulators saw them
        polled = seen * CHANNELS / dt
        row.update(readings_per_s=polled, engine_per_s=None, stored_per_s=None,
                   stored_ratio=None, failures=None, open_alarms=None, store=None)
    per_10k = polled / 10_000
    row.update({
        "poll_ratio": poll_ratio, "on_time": on_time,
        "late_p50_ms": float(np.percentile(late_ms, 50)) if late_ms.size else None,
        "late_p99_ms": float(np.percentile(late_ms, 99)) if late_ms.size else None,
        "late_max_ms": float(late_ms.max()) if late_ms.size else None,
        "cpu_cores": (c1 - c0) / dt,
        "cpu_s_per_10k": (c1 - c0) / dt / per_10k if per_10k else None,
        "sim_cpu_s_per_10k": (s1 - s0) / dt / per_10k if per_10k else None,
        "rss_mb": rss, "store_lag_s": store_lag,
    })
    row["short_of"] = [what for what, ok in (
        ("unresponsive", h0 is not None and h1 is not None),
        ("polls", poll_ratio >= KEEP_UP_POLLS), ("on time", on_time >= KEEP_UP_ON_TIME),
        ("store", store_lag is not None and store_lag <= KEEP_UP_STORE_LAG_S)) if not ok]
    row["keeps_up"] = not row["short_of"]
    return row


# --- main ---------------------------------------------------------------------------------------

def _rounded(x: Any, digits: int = 2) -> Any:
    return round(x, digits) if isinstance(x, float) else x


def bench(args: Any) -> dict[str, Any]:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-bench-modbus-"))
    sims = Simulators()
    rows: list[dict[str, Any]] = []
    try:
        raw = tmp / "mine-sim.toml"
        raw.write_text(mine_toml(args.substations), encoding="utf-8")
        ports = sims.start(raw, args.sim_procs, tmp)
        if len(ports) != args.substations:
            raise RuntimeError(f"simulators serve {len(ports)} of {args.substations} substations")
        config = tmp / "mine.toml"
        config.write_text(mine_toml(args.substations, ports), encoding="utf-8")
        base = asyncio.run(baseline(ports, args.baseline_s))
        for period_ms in args.periods:
            row = run_period(period_ms, config, sims, args.substations, args, tmp)
            rows.append(row)
            print(f"# {period_ms} ms: {row['readings_per_s']:,.0f} readings/s, keeps up: "
                  f"{row['keeps_up']}", file=sys.stderr, flush=True)
            if not row["keeps_up"]:
                break
    finally:
        sims.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"baseline": base, "rows": rows, "elapsed_s": time.monotonic() - started}


def report(args: Any, res: dict[str, Any]) -> dict[str, Any]:
    rows, base = res["rows"], res["baseline"]
    store = next((r["store"] for r in rows if r["store"]), None)
    print(f"{args.substations} substations x {CHANNELS} channels "
          f"({args.substations * CHANNELS:,} points), window {args.window:g} s, "
          f"store {store or '?'}")
    print(f"{'period ms':>9}{'polled/s':>10}{'stored/s':>10}{'polls':>7}{'on time':>8}"
          f"{'late p50':>9}{'late p99':>9}{'late max':>9}{'store lag':>10}{'cores':>7}"
          f"{'cpu/10k':>8}{'sim/10k':>8}{'RSS MB':>8}  keeps up")

    def f(x: Any, spec: str) -> str:
        return format(x, spec) if x is not None else format("—", spec.split(".")[0])

    for r in rows:
        print(f"{r['period_ms']:>9}{r['readings_per_s']:>10,.0f}{f(r['stored_per_s'], '>10,.0f')}"
              f"{r['poll_ratio']:>7.0%}{r['on_time']:>8.0%}{f(r['late_p50_ms'], '>9.1f')}"
              f"{f(r['late_p99_ms'], '>9.1f')}{f(r['late_max_ms'], '>9.1f')}"
              f"{f(r['store_lag_s'], '>10.1f')}{r['cpu_cores']:>7.2f}"
              f"{f(r['cpu_s_per_10k'], '>8.3f')}{f(r['sim_cpu_s_per_10k'], '>8.3f')}"
              f"{r['rss_mb']:>8.0f}  "
              f"{'yes' if r['keeps_up'] else 'no: ' + ', '.join(r['short_of'])}")
    kept = [r for r in rows if r["keeps_up"]]
    best = max(kept, key=lambda r: r["readings_per_s"]) if kept else None
    sustained = best["readings_per_s"] if best else 0.0
    print(f"baseline: bare pymodbus client loop, same simulators: {base:,.0f} readings/s; "
          f"highest sustained by the service: {sustained:,.0f} readings/s "
          f"({sustained / base:.1%} of baseline)" if base else "baseline: no reads")
    print("late: poll interval - period (ms); store lag: s until the window's readings are "
          "stored; cpu/10k: CPU s per s per 10k readings/s polled (service process; sim/10k: "
          "the simulators)")
    one = next((r for r in rows if r["period_ms"] == 1000), None)
    out: dict[str, Any] = {
        "substations": args.substations, "channels": CHANNELS,
        "readings_target_per_s_1s": args.substations * CHANNELS,
        "readings_per_s_1s": one and one["readings_per_s"],
        "stored_per_s_1s": one and one["stored_per_s"],
        "cpu_s_per_10k_readings": one and one["cpu_s_per_10k"],
        "sim_cpu_s_per_10k_readings": one and one["sim_cpu_s_per_10k"],
        "poll_late_p50_ms": one and one["late_p50_ms"],
        "poll_late_p99_ms": one and one["late_p99_ms"],
        "poll_late_max_ms": one and one["late_max_ms"],
        "poll_on_time_1s": one and one["on_time"],
        "poll_ratio_1s": one and one["poll_ratio"],
        "store_lag_s_1s": one and one["store_lag_s"],
        "keeps_up_1s": one and one["keeps_up"],
        "rss_mb": one and one["rss_mb"],
        "max_sustained_readings_per_s": sustained,
        "max_sustained_period_ms": best["period_ms"] if best else None,
        "baseline_readings_per_s": base,
        "ratio_to_baseline": sustained / base if base else None,
        "store": store,
        "periods_ms": [r["period_ms"] for r in rows],
        "rows": [{k: _rounded(v, 4 if k in ("stored_ratio", "poll_ratio", "on_time",
                                             "cpu_s_per_10k", "sim_cpu_s_per_10k") else 2)
                  for k, v in r.items() if k != "store"} for r in rows],
        "elapsed_s": res["elapsed_s"],
    }
    return {k: _rounded(v, 4 if k in ("cpu_s_per_10k_readings", "sim_cpu_s_per_10k_readings",
                                      "ratio_to_baseline", "poll_on_time_1s", "poll_ratio_1s")
                        else 2) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke check (< 60 s)")
    ap.add_argument("--substations", type=int, default=200)
    ap.add_argument("--periods", default="1000,500,250,100",
                    help="poll periods in ms, comma-separated (run longest first)")
    ap.add_argument("--window", type=float, default=30.0, help="measured seconds per period")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    ap.add_argument("--baseline-s", type=float, default=10.0)
    ap.add_argument("--sim-procs", type=int, default=2, help="simulator processes")
    ap.add_argument("--start-timeout", type=float, default=180.0,
                    help="seconds for the service to start and see every substation")
    ap.add_argument("--simulator", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.simulator is not None:
        simulator_main(args.simulator, args.shard, args.shards)
        return
    if args.quick:
        args.substations, args.periods, args.window, args.warmup = 20, "1000", 10.0, 3.0
        args.baseline_s, args.sim_procs = 3.0, 1
    args.periods = sorted({int(p) for p in str(args.periods).split(",")}, reverse=True)
    if not 1 <= args.substations <= 999 or min(args.periods) < 50 or args.sim_procs < 1:
        ap.error("1-999 substations, periods >= 50 ms, at least one simulator process")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: finally blocks run
    res = bench(args)
    out = report(args, res)
    print(json.dumps(out))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
