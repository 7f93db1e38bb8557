"""Peer comparison (issue 10, item 5): gas over-limit detection, minewatch vs off-the-shelf.

The same detection built from off-the-shelf parts — Prometheus + Alertmanager (Debian
packages) and, when installed, Node-RED (npm) — against minewatch on identical input.

Why: the latency a team gets from the usual monitoring stack is the baseline minewatch's
alarm path has to beat (the regulation allows 2 s from over-limit to power cut).
Every pipeline gets the same input: the sample mine's simulated readings (the simulator model
of ``simulators/substation.py``), and at t0 one methane point switches from its normal
simulated level (0.1–0.4 %) to 1.80 %, above its power-cut limit. t0 is taken by the source
itself (simulator, exporter or gateway, wall clock) after a random wait, so the change falls at
a random phase of every poll, scrape and evaluation period; then the point returns to normal
before the next trial. Detection time = t0 → the alarm reaching the pipeline's consumer
(arrival time taken in this process):

- ``prometheus`` (1 s): an exporter process serving the same simulated readings (54 points:
  ``methane_percent`` per methane point, ``methane_cut_limit_percent``, ``mine_reading``),
  scrape and rule evaluation every 1 s, ``methane_percent >= on(point) group_left
  methane_cut_limit_percent`` with ``for: 0s``, Alertmanager ``group_wait: 0s`` → a webhook
  receiver in this process. A per-trial label on the point's series is in ``group_by``, so
  each trial is a fresh alert group (no group_interval wait). The trials are spread over
  ``--rounds`` fresh stacks: a start fixes the phase between scrape and evaluation (both
  placed by a hash), which shifts every detection of that stack; it is reported per round.
- ``prometheus_100ms``: the same with scrape and evaluation every 100 ms.
- ``prometheus_defaults`` (full runs only, few trials, one stack): common settings — scrape
  and evaluation 15 s (the packaged prometheus.yml), Alertmanager's defaults (group_wait 30 s).
- ``minewatch_modbus``: ``minewatch run`` with the sample mine; point 001A02 on a simulated
  Modbus substation polled every 500 ms; consumer: the wall screen's WebSocket ``/ws/alarms``
  (the ``power_cut_limit`` alarm raised; the power cut itself goes out before it).
- ``minewatch_mqtt``: the same service; point 004A01 on the sample mine's MQTT gateway S04,
  which publishes on change; consumer: the same WebSocket. The city feed (an MQTT subscriber
  on ``mw/demo/events``, city account) is timed beside both (``…_events_…`` keys).
- ``nodered`` (full runs, if ``MINEWATCH_NODE_RED`` or PATH has ``node-red``): the S04
  gateway alone on a private mosquitto; a flow ``mqtt in`` → edge-triggered threshold
  ``function`` (the same cut limits) → ``http request`` to the webhook receiver.

CPU per pipeline: utime + stime (``/proc/<pid>/stat``) of the pipeline's own processes —
exporter + prometheus + alertmanager; the minewatch service (with its simulated substations)
+ its mosquitto; node-red + gateway + mosquitto — in CPU seconds per wall minute while it
watches the mine with no alarm (``…_cpu_s_per_min``, 30 s before the trials), over the trial
window (``…_trials_cpu_s_per_min``: depends on how fast trials follow each other) and the CPU
per trial above the steady rate (``…_cpu_ms_per_trial``: detection and the return to normal;
for minewatch that includes the power cut with its records and the restore by hand).
Pipelines run one after the other.

Usage: python bench/peers.py [--quick] [--trials N] [--rounds R] [--defaults-trials N]
       [--no-node-red]
``--quick`` (CI smoke, < 90 s): 5 trials a pipeline, one Prometheus stack, no defaults run,
no Node-RED.
Last line: one JSON object with minewatch_mqtt_detect_p50_ms, minewatch_modbus_detect_p50_ms,
prometheus_detect_p50_ms (1 s settings), prometheus_100ms_detect_p50_ms, detect_ratio_mqtt and
detect_ratio_modbus (1 s peer p50 / minewatch p50), detect_ratio_mqtt_vs_100ms (100 ms peer
p50 / minewatch MQTT p50); per pipeline ``{name}_detect_p90_ms``, ``{name}_detect_max_ms``,
``{name}_cpu_s_per_min``, ``{name}_trials_cpu_s_per_min``, ``{name}_cpu_ms_per_trial``,
``{name}_cpu_by_process_s_per_min``, ``{name}_trials`` (null / 0 when skipped); ``target_*``
(the issue's targets met or not), ``{prometheus variant}_scrape_to_eval_offset_ms``,
``elapsed_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np

from minewatch.procs import (
    ROOT,
    ServiceProcess,
    free_port,
    proc_stat,
    start_service,
    stop_all,
)

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
OVER_LIMIT = 1.8  # % CH4, above the power-cut limit of every methane point used here
PROM_POINT = "001A02"  # return corner, cut 1.5 % (the same point as the Modbus run)
MODBUS_POINT = "001A02"
MQTT_POINT = "004A01"  # trolley loading point on the MQTT gateway S04, cut 0.5 %


# --- CPU of a set of processes --------------------------------------------------------------

def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime in seconds) of a live process, else None."""
    try:
        return proc_stat(pid)
    except OSError:
        return None


def with_descendants(roots: dict[str, int]) -> dict[int, str]:
    """pid → name for ``roots`` (name → pid) and every descendant (named by its comm)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            children.setdefault(st[0], []).append(int(entry))
    out = {pid: name for name, pid in roots.items()}
    todo = list(roots.values())
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                with contextlib.suppress(OSError):
                    out[child] = Path(f"/proc/{child}/comm").read_text().strip()
                    todo.append(child)
    return out


Usage = tuple[dict[str, float], float]  # CPU seconds by process name, wall seconds


@dataclass
class CpuWindow:
    """CPU seconds used by the ``roots`` processes (name → pid) and their children (as of
    the start) between the start and ``stop``."""

    roots: dict[str, int]
    t0: float = 0.0
    names: dict[int, str] = field(default_factory=dict)
    start: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = with_descendants(self.roots)
        self.t0 = time.monotonic()
        self.start = {p: st[1] for p in self.names if (st := _stat(p)) is not None}

    def stop(self) -> Usage:
        used: dict[str, float] = {}
        for p, before in self.start.items():
            if (st := _stat(p)) is not None:
                used[self.names[p]] = used.get(self.names[p], 0.0) + st[1] - before
        return used, time.monotonic() - self.t0


def per_minute(windows: list[Usage]) -> float:
    """CPU seconds per wall minute over several windows."""
    return sum(sum(u.values()) for u, _ in windows) / (sum(w for _, w in windows) / 60.0)


def breakdown(windows: list[Usage]) -> dict[str, float]:
    """The same by process name."""
    minutes = sum(w for _, w in windows) / 60.0
    out: dict[str, float] = {}
    for used, _ in windows:
        for name, cpu in used.items():
            out[name] = out.get(name, 0.0) + cpu
    return {name: round(cpu / minutes, 3) for name, cpu in out.items()}


# --- process handling -------------------------------------------------------------------------

def _die_with_parent() -> None:
    """A child started here gets SIGTERM if this bench dies (even by SIGKILL)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Procs:
    """Processes started by this bench; all are stopped (by PID) in ``stop_all``."""

    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, args: list[str], log: Path) -> subprocess.Popen:
        p = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"},
                             preexec_fn=_die_with_parent)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        stop_all(self.procs)
        self.procs.clear()


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path,
              check: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if check(httpx.get(url, timeout=2)):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout}s:\n{log.read_text()[-2000:]}")


# --- the exporter (a subprocess: its CPU is the pipeline's) ------------------------------------

def run_exporter(port: int) -> None:
    """Serve the sample mine's simulated readings in the Prometheus text format.

    GET /metrics; POST /set?point=&value= (returns the change time); POST /clear?point=&trial=
    (back to the natural value, with the series' trial label set to ``trial``)."""
    from minewatch.mine import Mine, Thresholds, resolve_limits
    from simulators.substation import SimulatedSubstation

    mine, limits = Mine.load(), Thresholds.load()
    subs = [SimulatedSubstation(mine, s, limits) for s in mine.substations]
    cut = {p.id: resolve_limits(p, limits).cut for p in mine.points if p.kind == "ch4"}
    trial: dict[str, str] = {}
    lock = threading.Lock()

    def metrics() -> bytes:
        now = time.time()
        ch4, other = [], []
        with lock:
            for sub in subs:
                for ch in sub.channels.values():
                    p = ch.point
                    v = sub.value_of(ch, now)
                    if p.kind == "ch4":
                        extra = f',trial="{trial[p.id]}"' if p.id in trial else ""
                        ch4.append(f'methane_percent{{point="{p.id}",substation="{p.substation}"'
                                   f',location="{p.location}"{extra}}} {v:.4f}')
                    else:
                        other.append(f'mine_reading{{point="{p.id}",kind="{p.kind}",'
                                     f'substation="{p.substation}"}} {v:.4f}')
        limit_lines = [f'methane_cut_limit_percent{{point="{pid}"}} {c}'
                       for pid, c in cut.items() if not math.isnan(c)]
        return "\n".join(["# TYPE methane_percent gauge", *ch4,
                          "# TYPE methane_cut_limit_percent gauge", *limit_lines,
                          "# TYPE mine_reading gauge", *other, ""]).encode()

    def sub_of(point: str) -> SimulatedSubstation:
        return next(s for s in subs if any(c.point.id == point for c in s.channels.values()))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(metrics(), "text/plain; version=0.0.4")

        def do_POST(self) -> None:
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            with lock:
                sub = sub_of(q["point"])
                if url.path == "/set":
                    sub.set_override(q["point"], float(q["value"]))
                else:
                    sub.clear_override(q["point"])
                    trial[q["point"]] = q["trial"]
                at = time.time()
            self._send(json.dumps({"at": at}).encode(), "application/json")

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# --- the webhook receiver (Alertmanager's consumer) ---------------------------------------------

class Webhook:
    """Records when the first firing notification of each trial arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # trial label → first firing notification
        self.posts: dict[str, list[float]] = {}  # path → arrival of every POST
        self.cond = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with hook.cond:
                    hook.posts.setdefault(self.path, []).append(at)
                    hook.cond.notify_all()
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    for alert in json.loads(body)["alerts"]:
                        trial = alert["labels"].get("trial")
                        if alert["status"] == "firing" and trial is not None:
                            with hook.cond:
                                hook.arrivals.setdefault(trial, at)
                                hook.cond.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, trial: str, timeout: float) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: trial in self.arrivals, timeout):
                raise TimeoutError(f"no webhook notification for trial {trial} in {timeout}s")
            return self.arrivals[trial]

    def wait_post(self, path: str, after: float, timeout: float) -> float:
        """The first POST on ``path`` that arrived at or after ``after``."""
        def first() -> float | None:
            return next((t for t in self.posts.get(path, []) if t >= after), None)
        with self.cond:
            if not self.cond.wait_for(lambda: first() is not None, timeout):
                raise TimeoutError(f"no POST on {path} within {timeout}s")
            return first()  # type: ignore[return-value]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Prometheus + Alertmanager ------------------------------------------------------------------

@dataclass
class PromVariant:
    name: str
    scrape_s: float
    eval_s: float
    group_wait: str
    group_interval: str
    repeat_interval: str

    def dur(self, s: float) -> str:
        return f"{round(s * 1000)}ms"


VARIANTS = {
    "prometheus": PromVariant("prometheus", 1.0, 1.0, "0s", "1s", "1h"),
    "prometheus_100ms": PromVariant("prometheus_100ms", 0.1, 0.1, "0s", "100ms", "1h"),
    # Common settings: the packaged prometheus.yml (15 s) and Alertmanager's defaults.
    "prometheus_defaults": PromVariant("prometheus_defaults", 15.0, 15.0, "30s", "5m", "4h"),
}


def prometheus_configs(v: PromVariant, tmp: Path, exporter: int, am: int, hook: int) -> None:
    timeout = v.dur(min(v.scrape_s, 10.0))
    (tmp / "prometheus.yml").write_text(f"""global:
  scrape_interval: {v.dur(v.scrape_s)}
  scrape_timeout: {timeout}
  evaluation_interval: {v.dur(v.eval_s)}
rule_files: [{tmp / "rules.yml"}]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{am}"]
scrape_configs:
  - job_name: mine
    static_configs:
      - targets: ["127.0.0.1:{exporter}"]
""")
    (tmp / "rules.yml").write_text("""groups:
  - name: methane
    rules:
      - alert: MethaneOverCutLimit
        expr: methane_percent >= on(point) group_left methane_cut_limit_percent
        for: 0s
        labels:
          severity: critical
""")
    (tmp / "alertmanager.yml").write_text(f"""route:
  receiver: bench
  group_by: [alertname, point, trial]
  group_wait: {v.group_wait}
  group_interval: {v.group_interval}
  repeat_interval: {v.repeat_interval}
receivers:
  - name: bench
    webhook_configs:
      - url: http://127.0.0.1:{hook}/hook
""")


def _rfc3339(ts: str) -> float:
    """Prometheus' RFC 3339 timestamps carry nanoseconds; datetime takes microseconds."""
    head, _, frac = ts.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + \
        float(f"0.{frac or 0}")


def phase_offset(base: str, v: PromVariant) -> float | None:
    """Scrape start → next rule evaluation (ms), fixed for the life of one Prometheus: both
    are placed in their period by a hash (of the target, of the rule group)."""
    with contextlib.suppress(httpx.HTTPError, KeyError, IndexError, ValueError):
        scrape = httpx.get(f"{base}/api/v1/targets", timeout=5).json()[
            "data"]["activeTargets"][0]["lastScrape"]
        evaluation = httpx.get(f"{base}/api/v1/rules", timeout=5).json()[
            "data"]["groups"][0]["lastEvaluation"]
        return round(((_rfc3339(evaluation) - _rfc3339(scrape)) % v.eval_s) * 1000, 1)
    return None


def prometheus_round(v: PromVariant, trials: int, idle_s: float, hook: Webhook, tmp: Path,
                     first_trial: int) -> dict[str, Any]:
    """One fresh exporter + Alertmanager + Prometheus and ``trials`` detections."""
    work = Path(tempfile.mkdtemp(prefix=f"{v.name}-", dir=tmp))
    exp_port, am_port, prom_port = free_port(), free_port(), free_port()
    prometheus_configs(v, work, exp_port, am_port, hook.port)
    procs = Procs()
    try:
        exp = procs.start([sys.executable, str(Path(__file__).resolve()), "--exporter-port",
                           str(exp_port)], work / "exporter.log")
        am = procs.start([ALERTMANAGER, f"--config.file={work / 'alertmanager.yml'}",
                          f"--storage.path={work / 'am'}",
                          f"--web.listen-address=127.0.0.1:{am_port}",
                          "--cluster.listen-address=", "--log.level=warn"],
                         work / "alertmanager.log")
        prom = procs.start([PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
                            f"--storage.tsdb.path={work / 'tsdb'}",
                            "--storage.tsdb.retention.time=1h",
                            f"--web.listen-address=127.0.0.1:{prom_port}",
                            "--log.level=warn"], work / "prometheus.log")
        exporter, base = f"http://127.0.0.1:{exp_port}", f"http://127.0.0.1:{prom_port}"
        wait_http(f"{exporter}/metrics", 30, exp, work / "exporter.log")
        wait_http(f"http://127.0.0.1:{am_port}/-/ready", 30, am, work / "alertmanager.log")
        wait_http(f"{base}/-/ready", 30, prom, work / "prometheus.log")

        def scraped(r: httpx.Response) -> bool:
            res = r.json()["data"]["result"]
            return bool(res) and res[0]["value"][1] == "1"
        # The first scrape lands within one period (at the target's hashed offset).
        wait_http(f"{base}/api/v1/query?query=up", v.scrape_s + 30, prom,
                  work / "prometheus.log", scraped)
        pids = {"exporter": exp.pid, "alertmanager": am.pid, "prometheus": prom.pid}
        idle = CpuWindow(pids)
        time.sleep(idle_s)
        idle_cpu = idle.stop()
        window = CpuWindow(pids)
        lat: list[float] = []
        for k in range(first_trial, first_trial + trials):
            trial = f"{v.name}-{k}"
            # A new trial label: a fresh series (normal value) and so a fresh alert group.
            httpx.post(f"{exporter}/clear", params={"point": PROM_POINT, "trial": trial},
                       timeout=5)
            # The normal series is scraped at least once, then a random phase.
            time.sleep(v.scrape_s + random.uniform(0, v.scrape_s))
            t0 = httpx.post(f"{exporter}/set", params={"point": PROM_POINT,
                                                       "value": OVER_LIMIT},
                            timeout=5).json()["at"]
            budget = v.scrape_s + v.eval_s + 2 * (30.0 if v.group_wait == "30s" else 0) + 10
            lat.append((hook.wait(trial, budget) - t0) * 1000)
        cpu = window.stop()
        offset = phase_offset(base, v)
        return {"ms": lat, "busy": [cpu], "idle": [idle_cpu], "offset_ms": offset}
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def run_prometheus(v: PromVariant, trials: int, rounds: int, idle_s: float, hook: Webhook,
                   tmp: Path) -> dict[str, Any]:
    """``trials`` detections spread over ``rounds`` fresh stacks: each start places scrape and
    evaluation at a new phase to each other, which shifts every detection of that round."""
    rounds = max(1, min(rounds, trials))
    per = [trials // rounds + (1 if i < trials % rounds else 0) for i in range(rounds)]
    out: dict[str, Any] = {"ms": [], "busy": [], "idle": [], "offset_ms": [],
                           "round_p50_ms": []}
    first = 1
    for n in per:
        r = prometheus_round(v, n, idle_s / rounds, hook, tmp, first)
        first += n
        out["ms"] += r["ms"]
        out["busy"] += r["busy"]
        out["idle"] += r["idle"]
        out["offset_ms"].append(r["offset_ms"])
        out["round_p50_ms"].append(pct(r["ms"], 50))
    return out


# --- minewatch ------------------------------------------------------------------------------------

@dataclass
class Consumers:
    """The wall screen's WebSocket and the city's MQTT events feed, recording raised
    power_cut_limit alarms per point with their arrival time (and, from the WebSocket, when
    they return: methane below the restore limit, so the bench need not poll the REST API)."""

    ws: dict[str, list[float]] = field(default_factory=dict)
    events: dict[str, list[float]] = field(default_factory=dict)
    returned: dict[str, list[float]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def _match(msg: dict, transition: str = "raised") -> str | None:
        if msg.get("type") == "alarm" and msg.get("transition") == transition and \
                msg["alarm"]["kind"] == "power_cut_limit":
            return msg["alarm"]["point_id"]
        return None

    async def run_ws(self, url: str, ready: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        async with connect(url) as ws:
            await ws.recv()  # snapshot
            ready.set()
            async for raw in ws:
                at = time.time()
                msg = json.loads(raw)
                if (p := self._match(msg)) is not None:
                    self.ws.setdefault(p, []).append(at)
                    self.changed.set()
                elif (p := self._match(msg, "returned")) is not None:
                    self.returned.setdefault(p, []).append(at)
                    self.changed.set()

    async def run_events(self, port: int, password: str, ready: asyncio.Event) -> None:
        import aiomqtt

        from minewatch.broker import CITY_USER, NODELAY

        async with aiomqtt.Client("127.0.0.1", port, username=CITY_USER, password=password,
                                  socket_options=NODELAY) as city:
            await city.subscribe("mw/demo/events", qos=1)
            ready.set()
            async for msg in city.messages:
                at = time.time()
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    if (p := self._match(json.loads(msg.payload))) is not None:
                        self.events.setdefault(p, []).append(at)
                        self.changed.set()


async def first_after(cons: Consumers, store: dict[str, list[float]], point: str, t0: float,
                      timeout: float) -> float | None:
    """The first arrival for ``point`` at or after ``t0`` (waits on the consumers' signal)."""
    deadline = time.monotonic() + timeout
    while True:
        cons.changed.clear()
        hits = [t for t in store.get(point, []) if t >= t0]
        if hits:
            return hits[0]
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cons.changed.wait(), left)


async def reset_point(svc: ServiceProcess, cons: Consumers, point: str,
                      relays: list[str]) -> None:
    """Gas back to normal, wait for the engine to see it (the power-cut alarm returns on the
    WebSocket), restore the range by hand (retried while an interlock still refuses)."""
    t = time.time()
    await asyncio.to_thread(svc.inject, "clear", point)
    if await first_after(cons, cons.returned, point, t, 10) is None:
        raise TimeoutError(f"the power_cut_limit alarm of {point} did not return")
    for r in relays:
        deadline = time.monotonic() + 10
        while True:
            resp = await asyncio.to_thread(svc.post, f"/api/v1/relays/{r}/restore",
                                           json={"user": "bench", "reason": "peer bench"})
            if resp.status_code == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"restore {r}: {resp.status_code} {resp.text}")
            await asyncio.sleep(0.1)


async def minewatch_trials(svc: ServiceProcess, cons: Consumers, point: str, trials: int,
                           poll_s: float, idle_s: float, pids: dict[str, int]
                           ) -> dict[str, Any]:
    relays = (await asyncio.to_thread(svc.get, f"/api/v1/points/{point}")).json()["relays"]
    idle = CpuWindow(pids)
    await asyncio.sleep(idle_s)
    idle_cpu = idle.stop()
    window = CpuWindow(pids)
    ws_ms: list[float] = []
    ev_ms: list[float] = []
    for _ in range(trials):
        await asyncio.sleep(random.uniform(0, poll_s))
        inj = await asyncio.to_thread(svc.inject, "gas-overlimit", point, value=OVER_LIMIT)
        t0 = inj["at"]
        t_ws = await first_after(cons, cons.ws, point, t0, 10)
        if t_ws is None:
            raise TimeoutError(f"no power_cut_limit alarm for {point} on /ws/alarms")
        ws_ms.append((t_ws - t0) * 1000)
        t_ev = await first_after(cons, cons.events, point, t0, 5)
        if t_ev is not None:
            ev_ms.append((t_ev - t0) * 1000)
        await reset_point(svc, cons, point, relays)
    used = window.stop()
    return {"ms": ws_ms, "events_ms": ev_ms, "busy": [used], "idle": [idle_cpu]}


async def run_minewatch_async(svc: ServiceProcess, trials: int, idle_s: float
                              ) -> dict[str, dict[str, Any]]:
    health = svc.get("/api/v1/health").json()
    creds = json.loads((svc.data_dir / "broker" / "credentials.json").read_text())
    subs = {s["id"]: s for s in svc.get("/api/v1/substations").json()}
    pids = {"minewatch": svc.proc.pid}
    cons = Consumers()
    ws_ready, ev_ready = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(cons.run_ws(svc.ws("/ws/alarms"), ws_ready)),
             asyncio.create_task(cons.run_events(health["broker"]["port"], creds["city"],
                                                 ev_ready))]
    try:
        await asyncio.wait_for(asyncio.gather(ws_ready.wait(), ev_ready.wait()), 15)
        await asyncio.sleep(1.0)
        out = {}
        for name, point in (("minewatch_modbus", MODBUS_POINT), ("minewatch_mqtt", MQTT_POINT)):
            sub = svc.get(f"/api/v1/points/{point}").json()["substation"]
            out[name] = await minewatch_trials(svc, cons, point, trials,
                                               subs[sub]["poll_ms"] / 1000, idle_s, pids)
            out[name]["poll_ms"] = subs[sub]["poll_ms"]
        return out
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def run_minewatch(trials: int, idle_s: float, tmp: Path) -> dict[str, dict[str, Any]]:
    svc = start_service(tmp, "--log-level", "WARNING", timeout=60)
    try:
        return asyncio.run(run_minewatch_async(svc, trials, idle_s))
    finally:
        svc.stop()


# --- Node-RED (optional: an install from npm, found by MINEWATCH_NODE_RED or on PATH) ----------

def run_gateway(control_port: int, broker_port: int, creds_file: str) -> None:
    """The sample mine's MQTT gateway S04 alone (publish-on-change, as in ``minewatch run``),
    with POST /set?point=&value= and /clear?point= (returning the change time)."""
    from minewatch.broker import gateway_user
    from minewatch.mine import Mine, Thresholds
    from simulators.mqtt_gateway import MqttGateway
    from simulators.substation import SimulatedSubstation

    async def main() -> None:
        mine, limits = Mine.load(), Thresholds.load()
        sub = next(s for s in mine.substations if s.protocol == "mqtt")
        model = SimulatedSubstation(mine, sub, limits)
        creds = json.loads(Path(creds_file).read_text())
        user = gateway_user(mine.mine.id, sub.id)
        MqttGateway(model, mine.mine.id, "127.0.0.1", broker_port, user, creds[user]).start()
        loop = asyncio.get_running_loop()

        async def change(point: str, value: float | None) -> float:
            if value is None:
                model.clear_override(point)
            else:
                model.set_override(point, value)
            return time.time()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                value = float(q["value"]) if url.path == "/set" else None
                at = asyncio.run_coroutine_threadsafe(change(q["point"], value), loop).result(5)
                body = json.dumps({"at": at}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", control_port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        await asyncio.Event().wait()

    asyncio.run(main())


NODE_RED_FUNCTION = """// Edge-triggered threshold per methane point (the mine's cut limits).
const limits = LIMITS;
const over = context.get("over") || {};
const alerts = [];
for (const r of msg.payload.readings || []) {
    const limit = limits[r.point];
    if (limit === undefined || r.value === null) continue;
    const now = r.value >= limit;
    if (now && !over[r.point]) alerts.push({point: r.point, value: r.value, ts: r.ts});
    over[r.point] = now;
}
context.set("over", over);
if (alerts.length === 0) return null;
msg.payload = {alerts: alerts};
return msg;
"""


def node_red_binary() -> str | None:
    return os.environ.get("MINEWATCH_NODE_RED") or shutil.which("node-red")


def node_red_files(work: Path, broker_port: int, password: str, hook: int,
                   limits: dict[str, float]) -> None:
    from minewatch.broker import ENGINE_USER

    flows = [
        {"id": "tab1", "type": "tab", "label": "methane"},
        {"id": "broker1", "type": "mqtt-broker", "name": "mine", "broker": "127.0.0.1",
         "port": str(broker_port), "clientid": "nodered-peer", "autoConnect": True,
         "usetls": False, "protocolVersion": "4", "keepalive": "60", "cleansession": True},
        {"id": "in1", "type": "mqtt in", "z": "tab1", "name": "S04 data",
         "topic": "mw/demo/S04/data", "qos": "1", "datatype": "json", "broker": "broker1",
         "nl": False, "rap": True, "rh": 0, "inputs": 0, "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "name": "methane >= cut limit",
         "func": NODE_RED_FUNCTION.replace("LIMITS", json.dumps(limits)), "outputs": 1,
         "wires": [["http1"]]},
        {"id": "http1", "type": "http request", "z": "tab1", "name": "alarm webhook",
         "method": "POST", "ret": "txt", "url": f"http://127.0.0.1:{hook}/nodered",
         "wires": [[]]},
    ]
    (work / "flows.json").write_text(json.dumps(flows, indent=1))
    (work / "flows_cred.json").write_text(json.dumps(
        {"broker1": {"user": ENGINE_USER, "password": password}}))
    (work / "settings.js").write_text("""module.exports = {
    flowFile: "flows.json",
    credentialSecret: false,
    uiHost: "127.0.0.1",
    diagnostics: {enabled: false, ui: false},
    telemetry: {enabled: false},
    externalModules: {autoInstall: false, palette: {allowInstall: false}},
    logging: {console: {level: "info", metrics: false, audit: false}},
};
""")


def run_node_red(binary: str, trials: int, idle_s: float, hook: Webhook,
                 tmp: Path) -> dict[str, Any]:
    from minewatch.broker import ENGINE_USER, BrokerProcess, write_config
    from minewatch.mine import Mine, Thresholds, resolve_limits

    work = Path(tempfile.mkdtemp(prefix="nodered-", dir=tmp))
    mine, limits = Mine.load(), Thresholds.load()
    s04 = next(s.id for s in mine.substations if s.protocol == "mqtt")
    cut = {p.id: resolve_limits(p, limits).cut for p in mine.points
           if p.substation == s04 and p.kind == "ch4"}
    broker = BrokerProcess(write_config(work / "broker", [mine], free_port()))
    procs = Procs()
    try:
        broker.start()
        cfg = broker.config
        node_red_files(work, cfg.port, cfg.password(ENGINE_USER), hook.port,
                       {k: v for k, v in cut.items() if not math.isnan(v)})
        log = work / "node-red.log"
        node = procs.start([binary, "--userDir", str(work), "--settings",
                            str(work / "settings.js"), "--port", str(free_port())], log)
        deadline = time.monotonic() + 90
        while "Connected to broker" not in log.read_text():
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Node-RED did not connect:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        ctl_port = free_port()
        gw = procs.start([sys.executable, str(Path(__file__).resolve()), "--gateway",
                          str(ctl_port), str(cfg.port), str(cfg.directory / "credentials.json")],
                         work / "gateway.log")
        control = f"http://127.0.0.1:{ctl_port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{control}/clear", params={"point": MQTT_POINT}, timeout=2)
                break
            if gw.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway: {(work / 'gateway.log').read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(1.0)
        assert broker.proc is not None
        pids = {"node-red": node.pid, "gateway": gw.pid, "mosquitto": broker.proc.pid}
        idle = CpuWindow(pids)
        time.sleep(idle_s)
        idle_cpu = idle.stop()
        window = CpuWindow(pids)
        lat: list[float] = []
        for _ in range(trials):
            time.sleep(0.3 + random.uniform(0, 0.5))  # the normal value went out; any phase
            t0 = httpx.post(f"{control}/set", params={"point": MQTT_POINT,
                                                      "value": OVER_LIMIT}, timeout=5).json()["at"]
            lat.append((hook.wait_post("/nodered", t0, 10) - t0) * 1000)
            httpx.post(f"{control}/clear", params={"point": MQTT_POINT}, timeout=5)
        used = window.stop()
        return {"ms": lat, "busy": [used], "idle": [idle_cpu]}
    finally:
        procs.stop_all()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


# --- report ---------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)), 2) if values else None


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="minewatch-peers-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


PIPELINES = [
    ("minewatch_mqtt", "minewatch MQTT 发布即送 → /ws/alarms"),
    ("minewatch_modbus", "minewatch Modbus 500 ms → /ws/alarms"),
    ("nodered", "Node-RED MQTT threshold flow → webhook"),
    ("prometheus_100ms", "Prometheus+AM 100 ms → webhook"),
    ("prometheus", "Prometheus+AM 1 s → webhook"),
    ("prometheus_defaults", "Prometheus+AM 15 s, group_wait 30 s"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few trials, no defaults run (< 90 s)")
    ap.add_argument("--trials", type=int, default=50, help="trials per fast pipeline")
    ap.add_argument("--rounds", type=int, default=5,
                    help="fresh Prometheus stacks the fast peers' trials are spread over")
    ap.add_argument("--defaults-trials", type=int, default=3,
                    help="trials of the 15 s / group_wait 30 s run (~50 s each)")
    ap.add_argument("--no-node-red", action="store_true", help="skip the Node-RED peer")
    ap.add_argument("--exporter-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--gateway", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.exporter_port:
        run_exporter(args.exporter_port)
        return
    if args.gateway:
        run_gateway(int(args.gateway[0]), int(args.gateway[1]), args.gateway[2])
        return
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C: every finally block stops its processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for exe in (PROMETHEUS, ALERTMANAGER):
        if not Path(exe).exists():
            sys.exit(f"{exe} is missing: apt-get install prometheus prometheus-alertmanager")
    trials = 5 if args.quick else args.trials
    rounds = 1 if args.quick else args.rounds
    defaults_trials = 0 if args.quick else args.defaults_trials
    idle_s = 2.0 if args.quick else 30.0
    started, load_start = time.monotonic(), os.getloadavg()[0]
    res: dict[str, dict[str, Any]] = {}
    took: dict[str, float] = {}
    hook = Webhook()
    try:
        with workdir() as tmp:
            for name in ("prometheus", "prometheus_100ms"):
                t = time.monotonic()
                res[name] = run_prometheus(VARIANTS[name], trials, rounds, idle_s, hook, tmp)
                took[name] = time.monotonic() - t
            t = time.monotonic()
            res.update(run_minewatch(trials, idle_s, tmp))
            took["minewatch"] = time.monotonic() - t
            node_red = None if args.quick or args.no_node_red else node_red_binary()
            if node_red:
                t = time.monotonic()
                res["nodered"] = run_node_red(node_red, trials, idle_s, hook, tmp)
                took["nodered"] = time.monotonic() - t
            if defaults_trials:
                t = time.monotonic()
                res["prometheus_defaults"] = run_prometheus(
                    VARIANTS["prometheus_defaults"], defaults_trials, 1, idle_s, hook, tmp)
                took["prometheus_defaults"] = time.monotonic() - t
    finally:
        hook.close()
    elapsed = time.monotonic() - started

    out: dict[str, Any] = {}
    print(f"{'pipeline':<40}{'n':>4}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}"
          f"{'CPU s/min':>11}{'in trials':>11}{'ms/trial':>10}")
    for name, label in PIPELINES:
        r = res.get(name)
        ms = r["ms"] if r else []
        out[f"{name}_detect_p50_ms"] = pct(ms, 50)
        out[f"{name}_detect_p90_ms"] = pct(ms, 90)
        out[f"{name}_detect_max_ms"] = round(max(ms), 2) if ms else None
        out[f"{name}_trials"] = len(ms)
        if r is None:
            for key in ("cpu_s_per_min", "trials_cpu_s_per_min", "cpu_ms_per_trial",
                        "cpu_by_process_s_per_min"):
                out[f"{name}_{key}"] = None
            why = "--quick: ~50 s a trial" if name == "prometheus_defaults" else \
                "--quick, --no-node-red or no node-red (MINEWATCH_NODE_RED)"
            print(f"{label:<40}  skipped ({why})")
            continue
        r["cpu"], busy = per_minute(r["idle"]), per_minute(r["busy"])
        busy_wall = sum(w for _, w in r["busy"])
        extra = sum(sum(u.values()) for u, _ in r["busy"]) - r["cpu"] / 60 * busy_wall
        out[f"{name}_cpu_s_per_min"] = round(r["cpu"], 3)
        out[f"{name}_trials_cpu_s_per_min"] = round(busy, 3)
        out[f"{name}_cpu_ms_per_trial"] = round(extra / len(ms) * 1000, 1)
        out[f"{name}_cpu_by_process_s_per_min"] = breakdown(r["idle"])
        print(f"{label:<40}{len(ms):>4}{pct(ms, 50):>9.1f}{pct(ms, 90):>9.1f}"
              f"{max(ms):>9.1f}{r['cpu']:>11.2f}{busy:>11.2f}"
              f"{out[f'{name}_cpu_ms_per_trial']:>10.1f}")
    print("CPU s/min: the pipeline's processes watching the mine with no alarm; in trials: "
          "over the trial window; ms/trial: CPU above that steady rate per trial "
          "(detection and the return to normal)")
    for name, _ in PIPELINES:
        if name in res:
            print(f"  steady CPU s/min by process, {name}: "
                  f"{out[f'{name}_cpu_by_process_s_per_min']}")
    ev = res["minewatch_mqtt"]["events_ms"]
    ev_mb = res["minewatch_modbus"]["events_ms"]
    print(f"city feed (MQTT mw/demo/events): MQTT path p50 {pct(ev, 50)} ms, "
          f"Modbus path p50 {pct(ev_mb, 50)} ms")
    out.update({
        "minewatch_mqtt_events_detect_p50_ms": pct(ev, 50),
        "minewatch_mqtt_events_detect_p90_ms": pct(ev, 90),
        "minewatch_modbus_events_detect_p50_ms": pct(ev_mb, 50),
        "minewatch_modbus_poll_ms": res["minewatch_modbus"]["poll_ms"],
    })
    p1, p100 = out["prometheus_detect_p50_ms"], out["prometheus_100ms_detect_p50_ms"]
    mq, mb = out["minewatch_mqtt_detect_p50_ms"], out["minewatch_modbus_detect_p50_ms"]
    out["detect_ratio_mqtt"] = round(p1 / mq, 2)
    out["detect_ratio_modbus"] = round(p1 / mb, 2)
    out["detect_ratio_mqtt_vs_100ms"] = round(p100 / mq, 2)
    out["target_mqtt_20x_vs_1s"] = out["detect_ratio_mqtt"] >= 20
    out["target_mqtt_5x_vs_100ms"] = out["detect_ratio_mqtt_vs_100ms"] >= 5
    out["target_mqtt_cpu_below_prometheus"] = (
        out["minewatch_mqtt_cpu_s_per_min"] < min(out["prometheus_cpu_s_per_min"],
                                                  out["prometheus_100ms_cpu_s_per_min"]))
    for name in ("prometheus", "prometheus_100ms", "prometheus_defaults"):
        if name in res:
            out[f"{name}_scrape_to_eval_offset_ms"] = res[name]["offset_ms"]
            out[f"{name}_round_p50_ms"] = res[name]["round_p50_ms"]
            print(f"{name}: scrape→evaluation offset per round {res[name]['offset_ms']} ms, "
                  f"p50 per round {res[name]['round_p50_ms']} ms")
    out["quick"] = args.quick
    out["elapsed_s"] = round(elapsed, 1)
    out["phase_s"] = {k: round(v, 1) for k, v in took.items()}
    out["loadavg_1m_start_end"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    print(f"ratios (Prometheus 1 s p50 / minewatch p50): MQTT {out['detect_ratio_mqtt']}x, "
          f"Modbus {out['detect_ratio_modbus']}x; 100 ms peer / MQTT "
          f"{out['detect_ratio_mqtt_vs_100ms']}x; {elapsed:.0f} s, load average "
          f"{load_start:.2f} → {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
