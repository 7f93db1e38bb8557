"""The running service: wires collectors → engine → workflows → store and event bus.

This is the composition root (with ``cli``): the only module of the shared package that
imports the other packages. Data flows one way: a collector hands a batch to
``handle_batch``; the engine turns it into edge events; cut edges open relays *before*
anything is stored; then records are appended to the durable spool (``ingest/spool.py``) —
which a store writer task (``ingest/writer.py``) applies to the store, surviving crashes and
store outages — and published on the bus, which the API's WebSockets read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from alarms.engine import (
    ALARM_KINDS,
    CUT,
    FAULT,
    LIMIT_BITS,
    STALE,
    new_state,
    sweep_stale,
)
from alarms.incidents import AlarmInfo, Effect, Incident, IncidentBook, Layout
from alarms.integrity import (
    REASONS,
    integrity_message,
    integrity_state_for,
    reason_names,
)
from alarms.lifecycle import (
    AlarmBook,
    controls_from_journal,
    downwind_from_mine,
    places_from_mine,
)
from alarms.lockouts import (
    LOCK_FAN,
    LOCK_FAULT,
    LOCKOUT_EVENT,
    block_text,
    build_topology,
    journal_entries,
    latches_from_journal,
    lock_text,
    new_lockout_state,
    release,
)
from alarms.noise import NoiseControl, NoiseOutput, positions_from_mine
from alarms.rules import (
    RuleState,
    evaluate_locks,
    evaluate_thresholds,
    evaluate_window_rules,
)
from alarms.trend import (
    forecast_text,
    new_window,
    trend_figures,
    trend_message,
    trend_state_for,
)
from alarms.workflows import PowerCutWorkflow, RestoreRefused
from ingest.modbus import ModbusCollector
from ingest.mqtt import MqttLink
from ingest.mqtt_payload import PointInfo, Reject
from ingest.spool import Spool
from ingest.sqlite_store import SqliteStore
from ingest.writer import StoreWriter, WriterStats
from minewatch.auth import ensure_admin, load_secret
from minewatch.broker import ENGINE_USER, BrokerProcess, write_config
from minewatch.bus import EventBus
from minewatch.drills import DrillRunner
from minewatch.emergency import Emergency
from minewatch.events import HEARTBEAT_S, event
from minewatch.mine import Mine, Point, Relay, ResolvedLimits, Thresholds, resolve_limits
from minewatch.notify import Notification, Notifier
from minewatch.readings import Batch, Quality, iso
from minewatch.records import AlarmRecord, CommandRecord, IncidentRecord
from minewatch.settings import Settings
from minewatch.store import AlarmQuery, CommandQuery, IncidentQuery, Retention, Store
from minewatch.tuning import tune_malloc
from simulators.mine import SimulatedMine
from simulators.personnel import SimulatedPersonnel

log = logging.getLogger("minewatch.service")

KIND_BIT = {k: np.uint8(1 << i) for i, k in enumerate(ALARM_KINDS)}
ALARMING_LOCKS = int(LOCK_FAN | LOCK_FAULT)
# Journal events replayed at start to rebuild what is not in the alarm/command records.
CALIBRATION_DECLARED, CALIBRATION_ENDED = "calibration_declared", "calibration_ended"
RECOVERED_EVENTS = (LOCKOUT_EVENT, CALIBRATION_DECLARED, CALIBRATION_ENDED, "alarm_shelved",
                    "alarm_unshelved", "alarm_shelve_expired", "point_out_of_service",
                    "point_in_service")
FLOOD_SUBJECT = "FLOOD"
SUSPECT_ALL = (1 << len(REASONS)) - 1


@dataclass
class Counters:
    batches: int = 0
    readings: int = 0
    events: int = 0
    spool_errors: int = 0  # appends that failed (disk full, I/O error): records lost
    started_at: float = field(default_factory=time.time)
    writer: WriterStats = field(default_factory=WriterStats)  # updated by the store writer

    # The store counters live with the writer; these keep the health route's names.
    @property
    def stored(self) -> int:
        return self.writer.stored

    @property
    def duplicates(self) -> int:
        return self.writer.duplicates

    @property
    def store_errors(self) -> int:
        return self.writer.store_errors


def alarm_message(point: Point, kind: str, value: float, lim: ResolvedLimits,
                  unit: str, sensor_name: str) -> str:
    """What the dispatcher reads, in Chinese."""
    digits = 2 if point.kind in ("ch4", "co2", "wind") else 1

    def f(x: float) -> str:
        return "—" if not math.isfinite(x) else f"{x:.{digits}f}{unit}"

    if kind == "over_limit":
        label = "瓦斯超限" if point.kind == "ch4" else f"{sensor_name}超限"
        limit = "报警浓度" if point.kind in ("ch4", "co", "co2") else "报警值"
        return f"{label}: {point.name} {f(value)} ≥ {limit} {f(lim.alarm_hi)}"
    if kind == "power_cut_limit":
        return f"瓦斯超限断电: {point.name} {f(value)} ≥ 断电浓度 {f(lim.cut)}，已发出断电指令"
    if kind == "under_limit":
        if point.kind == "fan":
            return f"局部通风机停止运行: {point.name}"
        return f"{sensor_name}低限报警: {point.name} {f(value)} < {f(lim.alarm_lo)}"
    if kind == "fault":
        return f"传感器故障: {point.name}"
    if kind == "stale":
        return f"通讯中断/数据超时: {point.name}"
    return f"{kind}: {point.name}"


def open_store(settings: Settings, mine_id: str) -> Store:
    """PostgreSQL when a database URL is configured, else the embedded SQLite store."""
    retention = Retention(settings.retention_raw_days, settings.retention_rollup_days,
                          settings.retention_records_days)
    if settings.database_url:
        from ingest.pg_store import PostgresStore

        return PostgresStore(settings.database_url, mine_id, retention)
    return SqliteStore(settings.data_dir / "minewatch.db", retention)


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mine = Mine.load(settings.mine_config)
        if settings.poll_ms is not None:
            self.mine = self.mine.model_copy(update={"substations": [
                s.model_copy(update={"poll_ms": settings.poll_ms})
                for s in self.mine.substations]})
        self.limits = Thresholds.load(settings.thresholds)
        self.mine.validate_against(self.limits)
        self.points: list[Point] = list(self.mine.points)
        self.slot_of = {p.id: i for i, p in enumerate(self.points)}
        self.resolved = [resolve_limits(p, self.limits) for p in self.points]
        period = {s.id: s.poll_ms / 1000.0 for s in self.mine.substations}
        self.period = period
        stale_after = [self.limits.timing.stale_polls * period[p.substation] for p in self.points]
        r = self.resolved
        self.engine = new_state([x.alarm_hi for x in r], [x.alarm_lo for x in r],
                                [x.cut for x in r], [x.restore for x in r],
                                [x.deadband for x in r], stale_after)
        self.bus = EventBus()
        self.book = AlarmBook()
        self.store: Store = open_store(settings, self.mine.mine.id)
        self.jwt_secret = load_secret(settings.jwt_secret, settings.data_dir)
        self.power = PowerCutWorkflow(self.mine, self._write_relay, self._record_command,
                                      self._read_feed, self._verify_window)
        self.sim = SimulatedMine(self.mine, self.limits) if settings.simulate else None
        self.collectors: dict[str, ModbusCollector] = {}
        self.counters = Counters()
        self.upkeep: dict[str, Any] = {}
        self.spool = Spool(settings.data_dir / "spool", [p.id for p in self.points],
                           max_bytes=settings.spool_max_bytes,
                           segment_bytes=settings.spool_segment_bytes,
                           keep_applied=settings.spool_keep_applied,
                           fsync=settings.spool_fsync_ms > 0)
        self.writer = StoreWriter(self.spool, self.store, max_rows=settings.spool_batch_rows,
                                  fsync_interval=settings.spool_fsync_ms / 1000,
                                  stats=self.counters.writer)
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.ports: dict[str, int] = {}
        self.broker: BrokerProcess | None = None
        self.mqtt: MqttLink | None = None
        self.dead_letter_counts: dict[str, int] = {}
        # Interlocks (风电闭锁 / 甲烷电闭锁 / 故障闭锁), evaluated after every batch once armed:
        # before the first readings every point is stale and would lock every relay.
        self.locks_topo = build_topology(self.mine, self.slot_of, cut_limits=self.engine.cut)
        self.locks = new_lockout_state(self.locks_topo)
        self.lock_result = None
        self._locks_armed = False
        # Trend early warning (趋势预警) and sensor integrity (数据造假/异常) read a ring buffer
        # of recent samples per point; parameters from thresholds.toml.
        kinds = [p.kind for p in self.points]
        self.window = new_window(len(self.points), self.limits.window)
        self.trend = trend_state_for(kinds, self.engine.alarm_hi, self.limits.trend)
        self.integrity = integrity_state_for(kinds, [p.varies for p in self.points],
                                             *self._airflow_links(), table=self.limits.integrity,
                                             width=self.limits.window.size)
        self.rules = RuleState(self.engine, self.window, self.trend, self.integrity,
                               self.locks_topo, self.locks)
        # Noise control (ISA-18.2): delays and chattering on the engine's alarm edges, flood
        # detection per operator position over everything annunciated.
        self.noise = NoiseControl(len(self.points), self.limits.noise,
                                  position_of_slot=positions_from_mine(self.mine))
        self._edge_seen: dict[int, tuple[float, float]] = {}  # channel → (value, reading ts)
        self.flooding: dict[int, float] = {}  # operator position → flood start
        self.places = places_from_mine(self.mine)
        self.downwind = downwind_from_mine(self.mine)
        # Emergency workflows (incidents): power cut → evacuation → report chain → restore.
        self.emergency = Emergency.load(settings.emergency)
        pc = self.emergency.personnel
        self.personnel = SimulatedPersonnel(pc.people, pc.exit_per_s) \
            if pc.simulated and settings.simulate else None
        self.incidents = IncidentBook(
            self.emergency, Layout.from_mine(self.mine), f"I{int(time.time() * 1000):x}",
            people=self.personnel.count if self.personnel else None)
        self.notifier = Notifier(self.emergency, self._notified)
        self.drills = DrillRunner(self)
        tune_malloc()

    def _airflow_links(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Upstream / downstream slots and lags (in samples) from the mine file's ``upstream``."""
        n = len(self.points)
        up, down, lag = np.full(n, -1), np.full(n, -1), np.zeros(n, dtype=np.int64)
        for i, p in enumerate(self.points):
            if p.upstream is None:
                continue
            u = self.slot_of[p.upstream]
            up[i] = u
            if down[u] < 0:
                down[u] = i
            samples = round(p.lag_s / self.period[p.substation])
            lag[i] = min(samples, self.limits.window.size - 1)
        return up, down, lag

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        # Crash recovery first: what the last process spooled but did not store (alarms,
        # commands) must be in the store before the alarm book and relay states load from it.
        # Bounded, so a long backlog or a store outage does not delay monitoring.
        self.spool.open()
        self.writer.start()
        if not await self.writer.wait_idle(self.settings.spool_replay_wait_s):
            log.error("spool replay not finished within %.0f s (%d ops left); starting anyway",
                      self.settings.spool_replay_wait_s, self.spool.stats.pending_ops)
        try:  # after the spool opens: the first admin is journaled
            await self._ensure_admin()
        except Exception:  # monitoring starts anyway; logins wait for the store
            log.exception("could not check the admin user (store unavailable?)")
        await self._recover()
        self.power.restore_state(await self.store.commands(CommandQuery(limit=10_000)))
        broker = self._start_broker()
        if broker is not None:
            host, port, user, password = broker
            self.mqtt = MqttLink(self.mine.mine.id, self._mqtt_points(), host, port, user,
                                 password, self.handle_batch, self._dead_letter,
                                 self.settings.data_dir / "events")
            self._tasks += self.mqtt.start()
        if self.sim is not None:
            gateways = None
            if self.broker is not None:
                cfg = self.broker.config
                gateways = ("127.0.0.1", cfg.port, cfg.credentials)
            elif broker is not None and self.settings.broker_credentials is not None:
                creds = json.loads(self.settings.broker_credentials.read_text())
                gateways = (broker[0], broker[1], creds)
            self.ports = await self.sim.start(gateways)
        for sub in self.mine.substations:
            if sub.protocol != "modbus":
                continue
            port = self.ports.get(sub.id, sub.port)
            col = ModbusCollector(self.mine, sub, self.limits, self.slot_of, self.handle_batch,
                                  port=port)
            self.collectors[sub.id] = col
        for col in self.collectors.values():
            self._tasks.append(col.start())
        self._tasks.append(asyncio.create_task(self._supervise(), name="supervisor"))
        self._tasks.append(asyncio.create_task(self._upkeep(), name="store-upkeep"))
        if self.mqtt is not None:
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        await self._reassert_cuts()
        log.info("minewatch started: mine %s, %d points, %d substations",
                 self.mine.mine.id, len(self.points), len(self.collectors))

    async def _ensure_admin(self) -> None:
        if await ensure_admin(self.store, self.settings.admin_password, "minewatch"):
            self._journal("user_saved", "admin", {"role": "admin", "by": "setup"})

    async def _recover(self) -> None:
        """Rebuild the in-memory state after a restart: open alarms from the alarm records;
        shelves, out-of-service entries, interlock latches and declared calibration windows
        from the journal (they are not alarm records)."""
        open_alarms = await self.store.alarms(AlarmQuery(state="open", limit=100_000))
        rows = await self._journal_rows(RECOVERED_EVENTS)
        shelves, oos = controls_from_journal(rows, time.time())
        self.book.restore(open_alarms, shelves=shelves, out_of_service=oos)
        latches_from_journal(self.locks_topo, self.locks, rows)
        self._calibrations_from_journal(rows)
        self.incidents.restore(Incident.from_dict(r.data) for r in await self.store.incidents(
            IncidentQuery(state="open", limit=10_000)))
        for rec in open_alarms:  # the rules resume with the conditions still open
            slot = self.slot_of.get(rec.point_id)
            if slot is None or not rec.active:
                continue
            if rec.kind in KIND_BIT:
                self.engine.bits[slot] |= KIND_BIT[rec.kind]
                self.noise.resume(self.noise.channel(slot, ALARM_KINDS.index(rec.kind)))
            elif rec.kind == "trend":
                self.trend.active[slot] = True
            elif rec.kind == "suspect":
                # Any reason: the detectors recompute the mask at the next reading and clear
                # the alarm if none holds any more.
                self.integrity.reasons[slot] = SUSPECT_ALL

    async def _journal_rows(self, events: tuple[str, ...]) -> list[Any]:
        rows: list[Any] = []
        after, page = 0, 10_000
        while True:
            chunk = await self.store.journal(after, page, events)
            rows += chunk
            if len(chunk) < page:
                return rows
            after = chunk[-1].seq

    def _calibrations_from_journal(self, rows: list[Any]) -> None:
        now = time.time()
        for row in rows:
            if row.event == CALIBRATION_DECLARED:
                slot = self.slot_of.get(row.subject)
                end = row.data.get("end")
                if slot is not None and (end is None or end > now):
                    self.integrity.declare_calibration(
                        [slot], row.data["start"], math.inf if end is None else end)
            elif row.event == CALIBRATION_ENDED and row.subject in self.slot_of:
                self.integrity.declare_calibration([self.slot_of[row.subject]], math.nan,
                                                   math.nan)

    def _start_broker(self) -> tuple[str, int, str, str] | None:
        """The engine's broker: the configured one, else a private mosquitto (if installed)."""
        url = self.settings.broker_url
        if url:
            u = urlsplit(url)
            return u.hostname or "127.0.0.1", u.port or 1883, u.username or ENGINE_USER, \
                u.password or ""
        if not self.settings.embedded_broker:
            return None
        if shutil.which("mosquitto") is None:
            if any(s.protocol == "mqtt" for s in self.mine.substations):
                log.error("no MQTT broker configured and mosquitto is not installed: the MQTT "
                          "substations will raise stale alarms")
            return None
        from minewatch.procs import free_port

        directory = (self.settings.data_dir / "broker").resolve()
        creds_file = directory / "credentials.json"
        creds = json.loads(creds_file.read_text()) if creds_file.exists() else None
        cfg = write_config(directory, [self.mine], free_port(), creds)
        self.broker = BrokerProcess(cfg)
        self.broker.start()
        log.info("embedded mosquitto on 127.0.0.1:%d", cfg.port)
        return "127.0.0.1", cfg.port, ENGINE_USER, cfg.password(ENGINE_USER)

    def _mqtt_points(self) -> dict[str, PointInfo]:
        """Every point of the mine: the parser refuses one sent by the wrong substation as
        ``foreign_point`` (not merely unknown), and a Modbus substation's points are never
        accepted over MQTT because no MQTT gateway owns their substation."""
        out = {}
        for p in self.points:
            sensor = self.limits.sensors[p.kind]
            out[p.id] = PointInfo(self.slot_of[p.id], p.substation, sensor.unit,
                                  sensor.range_lo, sensor.range_hi)
        return out

    def _dead_letter(self, source: str, reject: Reject, payload: bytes) -> None:
        """Refused input is kept with its reason and counted; it never stops ingest."""
        self.dead_letter_counts[reject.reason] = self.dead_letter_counts.get(reject.reason,
                                                                             0) + 1
        raw = payload[:4096].decode("utf-8", "replace")
        if reject.item is not None:
            raw = json.dumps(reject.item, ensure_ascii=False, default=str)[:4096]
        self._spool_op("dead_letter", {"key": uuid.uuid4().hex, "at": time.time(),
                                       "source": source, "reason": reject.reason,
                                       "detail": reject.detail, "payload": raw})

    async def _heartbeat(self) -> None:
        while True:
            if self.mqtt is not None:
                self.mqtt.publish_event(self._event("heartbeat", summary=self.summary()))
            await asyncio.sleep(HEARTBEAT_S)

    def _event(self, kind: str, **body: Any) -> dict[str, Any]:
        return event(self.mine.mine.id, self.mine.mine.name, kind, **body)

    def summary(self) -> dict[str, Any]:
        ch4 = [i for i, p in enumerate(self.points) if p.kind == "ch4"]
        values = self.engine.value[ch4]
        best = int(np.nanargmax(values)) if np.isfinite(values).any() else None
        subs = self.substations_json()
        return {"points": len(self.points), "open_alarms": len(self.book.open),
                "unacked_alarms": sum(a.state.startswith("unack") for a in
                                      self.book.open.values()),
                "cut_relays": sum(self.power.relay_cut.values()),
                "max_ch4": None if best is None else float(values[best]),
                "max_ch4_point": None if best is None else self.points[ch4[best]].id,
                "stale_points": int(np.count_nonzero(self.engine.bits & STALE)),
                "substations_online": sum(s["online"] for s in subs),
                "substations": len(subs)}

    async def stop(self) -> None:
        for col in self.collectors.values():
            await col.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.notifier.close()
        if self.mqtt is not None:
            await self.mqtt.stop()
        await self.writer.stop(self.settings.spool_stop_timeout_s)
        self.spool.close()
        if self.sim is not None:
            await self.sim.stop()
        if self.broker is not None:
            self.broker.stop()
        await self.store.close()

    async def _reassert_cuts(self) -> None:
        """Fail safe across restarts: a relay recorded as cut is opened again at start."""
        for relay_id, is_cut in self.power.relay_cut.items():
            if is_cut:
                relay = self.mine.relay_by_id[relay_id]
                try:
                    await self._write_relay([relay], True)
                    self._journal("relay_reasserted", relay_id, {})
                except Exception as exc:
                    log.error("could not re-assert cut on %s: %s", relay_id, exc)

    # --- hot path ----------------------------------------------------------------------------
    async def handle_batch(self, batch: Batch) -> None:
        quality = self._calibration_flags(batch)
        events = evaluate_thresholds(self.rules, batch.slots, batch.ts, batch.values, quality,
                                     batch.received_at)
        self.counters.batches += 1
        self.counters.readings += len(batch)
        if len(events):
            await self._handle_events(events.rows(), batch.received_perf)
        if not self._locks_armed and np.isfinite(self.engine.seen).all():
            self._locks_armed = True  # every point has reported: nothing is stale by default
        if self._locks_armed:
            await self._evaluate_locks(batch.received_perf)
        trend, integrity = evaluate_window_rules(self.rules, batch.slots, batch.ts,
                                                 batch.values, quality)
        self._trend_changed(trend)
        self._integrity_changed(integrity)
        for cmd in self.power.check(time.time()):
            self._after_settle(cmd)
        try:
            drill = self.drills.slots[batch.slots]
            if drill.any():  # a drill's readings are stored flagged, the rest as they are
                for mask, flag in ((~drill, False), (drill, True)):
                    if mask.any():
                        self.spool.append_readings(batch.slots[mask], batch.ts[mask],
                                                   batch.values[mask], quality[mask],
                                                   batch.received_at, flag)
            else:
                self.spool.append_readings(batch.slots, batch.ts, batch.values, quality,
                                           batch.received_at)
        except Exception:
            self.counters.spool_errors += 1
            log.exception("spool append failed: %d readings not recorded", len(batch))
        if self.bus.wanted("live"):  # no wall screen open: no per-point JSON to build
            self.bus.publish("live", {"type": "readings", "points": [
                self.point_live(int(s)) for s in batch.slots]})

    def _calibration_flags(self, batch: Batch) -> np.ndarray:
        """Readings inside a declared calibration window (标校) are stored and judged as
        ``calibrating`` even if the substation did not flag them: no normal alarms from the
        calibration gas. Faults stay faults."""
        declared = self.integrity._declared
        if declared.size == 0:
            return batch.quality
        start = self.integrity.cal_start[batch.slots]
        end = self.integrity.cal_end[batch.slots]
        inside = (batch.ts >= start) & (batch.ts <= end) & (batch.quality == Quality.OK)
        if not inside.any():
            return batch.quality
        q = batch.quality.copy()
        q[inside] = Quality.CALIBRATING
        return q

    async def _handle_events(self, rows: list[tuple[int, str, bool, float, float]],
                             detected_perf: float | None) -> None:
        """Engine edges: cuts act on the raw edge at once; the alarm records follow the
        noise-controlled edges (delays, chattering), which never delay a power cut."""
        self.counters.events += len(rows)
        now = time.time()
        cut_points: list[tuple[Point, float]] = []
        n_kinds = len(ALARM_KINDS)
        for slot, kind, raised, value, ts in rows:
            k = ALARM_KINDS.index(kind)
            self._edge_seen[slot * n_kinds + k] = (value, ts)
            if kind == "power_cut_limit":
                if raised:
                    cut_points.append((self.points[slot], value))
                else:
                    self._journal("restore_permitted", self.points[slot].id, {"value": value})
        out = self.noise.step([r[0] for r in rows], [ALARM_KINDS.index(r[1]) for r in rows],
                              [r[2] for r in rows], now)
        changed = self._noise_changes(out)
        cuts = []
        for point, value in cut_points:
            rec = self.book.active(point.id, "power_cut_limit")
            cuts.append(self.power.cut(point, rec.id if rec else "", value, detected_perf))
        # Cut first: the writes go on the wire (each task runs to its first wait) before the
        # alarms are published, and publishing does not wait for the substation's reply.
        tasks = [asyncio.create_task(c) for c in cuts]
        if tasks:
            await asyncio.sleep(0)
        for rec, transition in changed:
            self._alarm_changed(rec, transition)
        if tasks:
            await asyncio.gather(*tasks)

    def _noise_changes(self, out: NoiseOutput) -> list[tuple[AlarmRecord, str]]:
        """Apply noise-controlled edges and chatter records to the alarm book (idempotent:
        an edge that matches the book's state changes nothing)."""
        changed: list[tuple[AlarmRecord, str]] = []
        for ch, raised, at, _since in out.edges.rows():
            changed += self._set_alarm(ch, raised, at)
        for ch, started, at, count in out.chatter.rows():
            slot, k = divmod(ch, len(ALARM_KINDS))
            point, kind = self.points[slot], ALARM_KINDS[k]
            self._journal("alarm_chattering" if started else "alarm_chatter_ended", point.id,
                          {"point_id": point.id, "kind": kind, "count": count, "at": at})
            # A chattering alarm stays on the screen (latched) until it is stable; at the
            # end it shows its real condition.
            cond = bool(self.noise.chatter.cond[ch])
            changed += self._set_alarm(ch, True if started else cond, at,
                                       chatter=count if started else None)
        self._flood_changed(out.flood)
        return changed

    def _set_alarm(self, ch: int, raised: bool, at: float,
                   chatter: int | None = None) -> list[tuple[AlarmRecord, str]]:
        slot, k = divmod(ch, len(ALARM_KINDS))
        point, kind = self.points[slot], ALARM_KINDS[k]
        current = self.book.active(point.id, kind)
        is_active = current is not None and current.active
        value, ts = self._edge_seen.get(ch, (float(self.engine.value[slot]), at))
        delay = self.noise.delay.on_delay[ch] if raised else self.noise.delay.off_delay[ch]
        if delay > 0 or chatter is not None or not math.isfinite(ts):
            ts = at  # decided by the clock, not by a reading
        if raised and not is_active:
            msg = self._message(point, kind, value)
            if chatter is not None:
                msg += f"（报警抖动：{self.limits.noise.chatter.window_s:.0f} 秒内 {chatter} 次，" \
                       "锁存显示直至稳定）"
            return [(self.book.raise_(point.id, kind, value, ts, msg), "raised")]
        if not raised and is_active:
            rec = self.book.clear(point.id, kind, ts)
            return [(rec, "returned")] if rec is not None else []
        return []

    def _message(self, point: Point, kind: str, value: float) -> str:
        sensor = self.limits.sensors[point.kind]
        return alarm_message(point, kind, value, self.resolved[self.slot_of[point.id]],
                             sensor.unit, sensor.name)

    def _alarm_changed(self, rec: AlarmRecord, transition: str) -> None:
        self._spool_op("alarm", {"at": rec.updated_at, "transition": transition,
                                 "record": rec.to_dict()})
        body = self.alarm_json(rec)
        self.bus.publish("alarms", {"type": "alarm", "transition": transition, "alarm": body})
        if self.mqtt is not None:
            self.mqtt.publish_event(self._event("alarm", transition=transition, alarm=body),
                                    alarm_id=rec.id)
        if transition not in ("raised", "returned"):
            return
        if transition == "raised" and rec.point_id in self.slot_of:
            self.drills.on_alarm(rec.point_id, rec.kind, rec.drill)
            inc, effects = self.incidents.on_alarm(AlarmInfo(
                rec.id, rec.point_id, rec.kind, rec.value, rec.raised_at, rec.drill), time.time())
            if inc is not None:
                self._incident_changed(inc, effects)
        if transition == "raised" and rec.annunciated and rec.kind not in ALARM_KINDS \
                and rec.kind != "alarm_flood":
            slot = self.slot_of.get(rec.point_id)
            pos = int(self.noise.position_of_channel[slot * len(ALARM_KINDS)]) \
                if slot is not None else 0
            self._flood_changed(self.noise.count([pos], [time.time()]))
        # Suppression by design: consequence alarms hide behind their active root alarm.
        for changed, how in self.book.update_suppression(self.places, self.downwind,
                                                         time.time(), trigger=rec):
            self._alarm_changed(changed, how)

    # --- workflow callbacks ------------------------------------------------------------------
    async def _write_relay(self, relays: list[Relay], cut: bool) -> None:
        """One coil request per substation (contiguous coils in one write), all concurrently."""
        by_sub: dict[str, list[int]] = {}
        for r in relays:
            by_sub.setdefault(r.substation, []).append(r.coil)
        results = await asyncio.gather(
            *(self._write_coils(sub, coils, cut) for sub, coils in by_sub.items()),
            return_exceptions=True)
        errors = [e for e in results if isinstance(e, BaseException)]
        if errors:
            raise errors[0]

    async def _write_coils(self, substation: str, coils: list[int], cut: bool) -> None:
        if substation in self.collectors:
            await self.collectors[substation].write_coils(coils, cut)
        elif self.mqtt is not None:
            await self.mqtt.write_coils(substation, coils, cut)
        else:
            raise RuntimeError(f"no link to substation {substation}")

    def _record_command(self, cmd: CommandRecord) -> None:
        self._spool_op("command", {"at": time.time(), "record": cmd.to_dict()})
        body = self.command_json(cmd)
        self.bus.publish("alarms", {"type": "command", "command": body})
        if self.mqtt is not None:
            self.mqtt.publish_event(self._event("command", command=body))
        for inc, effects in self.incidents.on_command(cmd, time.time()):
            self._incident_changed(inc, effects)

    # --- incidents -----------------------------------------------------------------------------
    def _incident_changed(self, inc: Incident, effects: list[Effect]) -> None:
        """Carry out a workflow's effects, then persist and push the incident."""
        self.drills.on_incident(inc.id, inc.drill)
        for e in effects:
            if e.kind == "journal":
                self._journal(e.target, inc.id, {**e.data, "incident": inc.id})
            elif e.kind == "notify":
                if e.target.startswith("area:") and self.personnel is not None:
                    self.personnel.evacuate(e.target[5:])
                self.notifier.send(inc.id, e.target, e.message, inc.drill)
            elif e.kind == "cut":
                relays = [self.mine.relay_by_id[r] for r in e.relays]
                task = asyncio.get_running_loop().create_task(self.power.cut_relays(
                    relays, f"{inc.title}: {e.message}", inc.root_alarm_id, None, force=True,
                    by="engine"))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        rec = IncidentRecord(inc.id, inc.kind, inc.state, inc.opened_at, inc.updated_at,
                             inc.drill, inc.to_dict())
        self._spool_op("incident", {"at": inc.updated_at, "record": rec.to_dict()})
        body = self.incident_json(inc)
        self.bus.publish("alarms", {"type": "incident", "incident": body})
        if self.mqtt is not None:
            self.mqtt.publish_event(self._event("incident", incident=body))

    def _notified(self, n: Notification) -> None:
        self._journal("notification_" + n.result, n.incident, n.to_dict())

    def incident_json(self, inc: Incident) -> dict[str, Any]:
        d = inc.to_dict()
        for k in ("opened_at", "closed_at", "updated_at"):
            d[k] = iso(d[k]) if d.get(k) is not None else None
        now = time.time()
        for st in d["steps"]:
            for k in ("deadline", "started_at", "done_at"):
                st[k] = iso(st[k]) if st.get(k) is not None else None
            dl = next(x.deadline for x in inc.steps if x.name == st["name"])
            st["remaining_s"] = round(dl - now, 1) if dl is not None and \
                st["state"] in ("active", "pending") else None
            if st["name"].startswith("evacuate:") and st["state"] != "done" and self.personnel:
                st["extra"]["people"] = self.personnel.count(st["extra"]["area"])
        d["area_names"] = {a: self.mine.area_by_id[a].name for a in inc.evac_areas
                           if a in self.mine.area_by_id}
        peak = dict(inc.peak)
        if peak.get("at") is not None:
            peak["at"] = iso(peak["at"])
        d["peak"] = peak
        return d

    async def restore_relay(self, relay_id: str, user: str, reason: str) -> CommandRecord:
        """Manual restore under the safety rules (RestoreRefused says why in Chinese)."""
        cmd = await self.power.restore(relay_id, user, reason, self.restore_blocker,
                                       self.relay_block(relay_id))
        if cmd.result != "failed":
            self.released(relay_id, user)
        return cmd

    async def restore_incident(self, incident_id: str, user: str, reason: str,
                               ) -> list[CommandRecord]:
        """Restore every still-cut relay of an incident's range: all or none (each relay is
        checked first, so a refusal leaves the range as it is)."""
        inc = self.incidents.incidents.get(incident_id)
        if inc is None:
            raise KeyError(incident_id)
        cut = [r for r in inc.relays + inc.wider_relays if self.power.relay_cut.get(r)]
        blocked = []
        for r in cut:
            why = [m for p in self.power.guards[r] if (m := self.restore_blocker(p.id))]
            if (b := self.relay_block(r)) is not None:
                why.append(b)
            blocked += why
        if blocked:
            raise RestoreRefused("拒绝复电: " + "; ".join(dict.fromkeys(blocked)))
        return [await self.restore_relay(r, user, reason) for r in cut]

    def _after_settle(self, cmd: CommandRecord) -> None:
        if cmd.result == "unverified" and cmd.action == "cut":
            relay = self.mine.relay_by_id[cmd.target]
            point = self.mine.point_by_id.get(relay.feed or "")
            if point is not None:
                rec = self.book.raise_(point.id, "cut_unverified", math.nan, time.time(),
                                       f"断电未确认（馈电异常）: {relay.name} {cmd.detail}")
                self._alarm_changed(rec, "raised")

    def _read_feed(self, point_id: str) -> tuple[float, int, float]:
        s = self.slot_of[point_id]
        return float(self.engine.value[s]), int(self.engine.quality[s]), float(self.engine.ts[s])

    def _verify_window(self, relay: Relay) -> float:
        return max(self.limits.timing.cut_verify_s, 2 * self.period[relay.substation])

    def restore_blocker(self, point_id: str) -> str | None:
        s = self.slot_of[point_id]
        point, lim = self.points[s], self.resolved[s]
        if self.engine.bits[s] & CUT:
            return (f"{point.name} 甲烷 {self.engine.value[s]:.2f}% 未降至复电浓度 "
                    f"{lim.restore:g}% 以下")
        q = int(self.engine.quality[s])
        if q != Quality.OK:
            return f"{point.name} 数据不可信（{Quality(q).label}）"
        return None

    # --- background --------------------------------------------------------------------------
    async def _supervise(self) -> None:
        """Stale sweep and command verification timeouts, a few times per poll period."""
        grace = float(self.engine.stale_after.max()) + 0.5
        await asyncio.sleep(grace)
        tick = min(0.25, min(self.period.values()) / 2)
        while True:
            now = time.time()
            events = sweep_stale(self.engine, now)
            if len(events):
                await self._handle_events(events.rows(), None)
            self._locks_armed = True
            await self._evaluate_locks(None)
            for rec, transition in self._noise_changes(self.noise.sweep(now)):
                self._alarm_changed(rec, transition)
            for rec, transition in self.book.expire_shelves(now):
                self._alarm_changed(rec, transition)
            self._incident_tick(now)
            for cmd in self.power.check(now):
                self._after_settle(cmd)
            self._system_alarm(
                "SPOOL", "spool_full", self.spool.full,
                f"本地数据缓存已满: {self.spool.bytes / 1e6:.1f} MB 超过上限 "
                f"{self.settings.spool_max_bytes / 1e6:.1f} MB，"
                "请检查数据库连接（数据仍在写入缓存）")
            await asyncio.sleep(tick)

    def _incident_tick(self, now: float) -> None:
        """Deadlines and escalation; the methane peak in each open incident's areas."""
        for inc, effects in self.incidents.tick(now):
            self._incident_changed(inc, effects)
        if not self.incidents.open_incidents():
            return
        for slot, p in enumerate(self.points):
            if p.kind == "ch4" and self.engine.quality[slot] == Quality.OK:
                self.incidents.observe_peak(p.id, float(self.engine.value[slot]),
                                            float(self.engine.ts[slot]))

    def _trend_changed(self, events) -> None:
        """Raise / clear ``trend`` (early warning with the forecast time to the limit)."""
        for slot, raised, value, ts, slope, fc in events.rows():
            point = self.points[slot]
            if raised:
                sensor = self.limits.sensors[point.kind]
                msg = "趋势预警: " + trend_message(point.name, slope, fc,
                                                  float(self.trend.limit[slot]), sensor.unit)
                self._alarm_changed(self.book.raise_(point.id, "trend", value, ts, msg),
                                    "raised")
            elif (rec := self.book.clear(point.id, "trend", ts)) is not None:
                self._alarm_changed(rec, "returned")

    def _integrity_changed(self, events) -> None:
        """Raise / update / clear ``suspect`` (数据异常) from the integrity reason masks."""
        for slot, raised, mask, prev, value, ts in events.rows():
            point = self.points[slot]
            up = self.points[int(self.integrity.up[slot])].name \
                if self.integrity.up[slot] >= 0 else None
            if raised:
                msg = f"数据异常: {point.name} " + integrity_message(mask, up)
                rec = self.book.raise_(point.id, "suspect", value, ts, msg)
                self._alarm_changed(rec, "raised")
                self._journal("integrity_reasons", point.id,
                              {"reasons": reason_names(mask), "before": reason_names(prev)})
            elif (rec := self.book.clear(point.id, "suspect", ts)) is not None:
                self._alarm_changed(rec, "returned")

    def _flood_changed(self, flood) -> None:
        """Alarm flood (ISA-18.2: > 10 alarms / 10 min per position): a system alarm that
        tells the dispatcher the list is grouped with root alarms first."""
        for pos, started, at, count, peak in flood.rows():
            self._journal("alarm_flood_started" if started else "alarm_flood_ended",
                          FLOOD_SUBJECT, {"position": pos, "at": at, "alarms": count,
                                          "peak": peak})
            if started:
                self.flooding[pos] = at
            else:
                self.flooding.pop(pos, None)
            window = self.limits.noise.flood.window_s / 60
            self._system_alarm(
                FLOOD_SUBJECT, "alarm_flood", bool(self.flooding),
                f"报警泛滥: {window:.0f} 分钟内超过 {self.limits.noise.flood.start_above} 条报警，"
                "列表已按事故分组，根报警在前")

    # --- calibration (标校) declarations ------------------------------------------------------
    def declare_calibration(self, point_id: str, user: str, reason: str, start: float,
                            end: float) -> dict[str, Any]:
        slot = self.slot_of[point_id]
        self.integrity.declare_calibration([slot], start, end)
        self._journal(CALIBRATION_DECLARED, point_id, {"point_id": point_id, "user": user,
                                                       "reason": reason, "start": start,
                                                       "end": end})
        return {"point_id": point_id, **(self.calibration_json(slot) or {})}

    def end_calibration(self, point_id: str, user: str, at: float) -> dict[str, Any]:
        slot = self.slot_of[point_id]
        before = self.calibration_json(slot)
        self.integrity.declare_calibration([slot], math.nan, math.nan)
        self._journal(CALIBRATION_ENDED, point_id, {"point_id": point_id, "user": user,
                                                    "at": at})
        return {"point_id": point_id, "ended_at": iso(at), "declared": before}

    def calibration_json(self, slot: int) -> dict[str, Any] | None:
        start, end = float(self.integrity.cal_start[slot]), float(self.integrity.cal_end[slot])
        if not math.isfinite(start):
            return None
        return {"start": iso(start), "end": iso(end) if math.isfinite(end) else None}

    def trend_json(self, slot: int) -> dict[str, Any]:
        slope, fc = trend_figures(self.trend, self.window, np.array([slot]))
        s, f = float(slope[0]), float(fc[0])
        unit = self.limits.sensors[self.points[slot].kind].unit
        return {"slope_per_min": s if math.isfinite(s) else None,
                "forecast_s": f if math.isfinite(f) else None,
                "forecast_text": forecast_text(f, float(self.trend.limit[slot]), unit),
                "active": bool(self.trend.active[slot])}

    async def _evaluate_locks(self, detected_perf: float | None) -> None:
        """Interlocks over the current engine state: a relay that becomes locked is cut at
        once and raises a ``lockout`` alarm; a 故障闭锁 that clears restores by itself."""
        res = evaluate_locks(self.rules)
        self.lock_result = res
        edges = res.edges
        if not len(edges):
            return
        for event_name, subject, data in journal_entries(self.locks_topo, edges):
            self._journal(event_name, subject, data)
        now = time.time()
        cuts = []
        for r, old, new in zip(edges.relays, edges.old, edges.new, strict=True):
            relay = self.mine.relay_by_id[self.locks_topo.relay_ids[int(r)]]
            # 甲烷电闭锁 only holds the relay off (its cut and alarm come from the methane
            # limit itself); 风电闭锁 and 故障闭锁 cut and raise a lockout alarm of their own.
            was, now_locked = int(old) & ALARMING_LOCKS, int(new) & ALARMING_LOCKS
            if now_locked and not was:
                rec = self.book.raise_(relay.id, "lockout", math.nan, now,
                                       f"{lock_text(now_locked)}: {relay.name} 已闭锁断电")
                self._alarm_changed(rec, "raised")
                cuts.append(self.power.cut_relays([relay], lock_text(now_locked), rec.id,
                                                  detected_perf))
            elif was and not now_locked:
                rec = self.book.clear(relay.id, "lockout", now)
                if rec is not None:
                    self._alarm_changed(rec, "returned")
            if res.auto_unlock[int(r)] and self.power.relay_cut.get(relay.id):
                cuts.append(self._auto_restore(relay.id))
        if cuts:
            await asyncio.gather(*cuts, return_exceptions=True)

    async def _auto_restore(self, relay_id: str) -> None:
        """故障闭锁 unlocks automatically when the sensors are normal again (DOMAIN.md)."""
        try:
            await self.power.restore(relay_id, "engine", "故障闭锁解除，自动复电",
                                     self.restore_blocker)
        except Exception as exc:  # refused (methane still high …) or substation down
            log.info("automatic restore of %s not done: %s", relay_id, exc)

    def relay_block(self, relay_id: str) -> str | None:
        """An interlock's reason to refuse energising ``relay_id`` now, or None."""
        res = self.lock_result
        i = self.locks_topo.relay_index.get(relay_id)
        if i is None:
            return None
        if res is None:  # just started: interlocks not evaluated over fresh readings yet
            return "系统启动中，闭锁状态尚未按最新数据评估，请稍后再复电"
        if res.restore_allowed[i]:
            return None
        return block_text(int(res.restore_block[i]))

    def released(self, relay_id: str, user: str) -> None:
        """A manual restore went out: clear the relay's interlock latch (journaled)."""
        i = self.locks_topo.relay_index.get(relay_id)
        if i is None or self.lock_result is None:
            return
        _, edges = release(self.locks, self.lock_result, [i])
        for event_name, subject, data in journal_entries(self.locks_topo, edges, by=user):
            self._journal(event_name, subject, data)
        if len(edges):
            rec = self.book.clear(relay_id, "lockout", time.time())
            if rec is not None:
                self._alarm_changed(rec, "returned")

    def _system_alarm(self, subject: str, kind: str, active: bool, message: str) -> None:
        """Alarms about minewatch itself (not a sensor): raised and cleared on a condition."""
        current = self.book.active(subject, kind)
        if active and (current is None or not current.active):
            self._alarm_changed(self.book.raise_(subject, kind, math.nan, time.time(), message),
                                "raised")
        elif not active and current is not None and current.active:
            rec = self.book.clear(subject, kind, time.time())
            if rec is not None:
                self._alarm_changed(rec, "returned")

    async def _upkeep(self) -> None:
        """Rollup refresh every few seconds, retention hourly; a store outage only logs."""
        last_retention = 0.0
        while True:
            await asyncio.sleep(self.settings.rollup_refresh_s)
            try:
                if time.time() - last_retention >= self.settings.retention_every_s:
                    self.upkeep = await self.store.maintain(time.time())
                    last_retention = time.time()
                elif hasattr(self.store, "refresh_rollups"):
                    await self.store.refresh_rollups()
            except Exception as exc:
                log.warning("store upkeep failed: %s", exc)

    # --- store writing (through the durable spool) ------------------------------------------
    def _spool_op(self, kind: str, data: dict[str, Any]) -> None:
        """Append an alarm/command/journal op; the writer stores it (keyed, so once)."""
        try:
            self.spool.append_op(kind, data)
        except Exception:
            self.counters.spool_errors += 1
            log.exception("spool append failed: %s op not recorded: %r", kind, data)

    def _journal(self, event: str, subject: str, data: dict[str, Any]) -> None:
        self._spool_op("journal", {"at": time.time(), "event": event, "subject": subject,
                                   "data": data})

    def store_health(self) -> dict[str, Any]:
        """Store writer and spool counters for /api/v1/health."""
        return {**self.writer.health(), "spool_errors": self.counters.spool_errors}

    # --- views (used by the API) -----------------------------------------------------------------
    def point_state(self, slot: int) -> str:
        bits = int(self.engine.bits[slot])
        if bits & CUT:
            return "cut"
        if bits & LIMIT_BITS:
            return "alarm"
        if bits & FAULT:
            return "fault"
        if bits & STALE or self.engine.quality[slot] == Quality.STALE:
            return "stale"
        if self.engine.quality[slot] == Quality.CALIBRATING:
            return "calibrating"
        return "normal"

    def point_live(self, slot: int) -> dict[str, Any]:
        v = float(self.engine.value[slot])
        ts = float(self.engine.ts[slot])
        return {"id": self.points[slot].id,
                "value": v if math.isfinite(v) else None,
                "ts": iso(ts) if math.isfinite(ts) else None,
                "quality": Quality(int(self.engine.quality[slot])).label,
                "state": self.point_state(slot)}

    def point_json(self, slot: int) -> dict[str, Any]:
        p, lim = self.points[slot], self.resolved[slot]
        sensor = self.limits.sensors[p.kind]
        loc_name = ""
        if p.kind == "ch4" and p.location in self.limits.methane:
            loc_name = self.limits.methane[p.location].name
        elif p.kind == "wind" and p.location in self.limits.wind:
            loc_name = self.limits.wind[p.location].name

        def num(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {**self.point_live(slot),
                "name": p.name, "kind": p.kind, "kind_name": sensor.name, "unit": sensor.unit,
                "location": p.location, "location_name": loc_name, "area": p.area,
                "area_name": self.mine.area_by_id[p.area].name, "substation": p.substation,
                "roadway": p.roadway, "at": p.at,
                "limits": {"alarm_hi": num(lim.alarm_hi), "alarm_lo": num(lim.alarm_lo),
                           "cut": num(lim.cut), "restore": num(lim.restore)},
                "relays": [r.id for r in self.mine.cut_relays(p)] if p.kind == "ch4" else [],
                "trend": self.trend_json(slot),
                "calibration": self.calibration_json(slot),
                "integrity": reason_names(int(self.integrity.reasons[slot]))}

    def alarm_json(self, rec: AlarmRecord) -> dict[str, Any]:
        d = rec.to_dict()
        for k in ("raised_at", "cleared_at", "acked_at", "updated_at", "shelved_at",
                  "shelved_until"):
            if k in d:
                d[k] = iso(d[k])
        for c in d.get("comments") or []:
            if isinstance(c, dict) and isinstance(c.get("at"), float | int):
                c["at"] = iso(c["at"])
        d["annunciated"] = rec.annunciated
        if not math.isfinite(d["value"]):
            d["value"] = None
        point = self.mine.point_by_id.get(rec.point_id)
        d["point_name"] = point.name if point else rec.point_id
        d["area"] = point.area if point else None
        return d

    def command_json(self, cmd: CommandRecord) -> dict[str, Any]:
        d = cmd.to_dict()
        for k in ("issued_at", "sent_at", "verified_at"):
            d[k] = iso(d[k])
        relay = self.mine.relay_by_id.get(cmd.target)
        d["target_name"] = relay.name if relay else cmd.target
        return d

    def _mqtt_substation_json(self, sub) -> dict[str, Any]:
        last = self.mqtt.last_seen.get(sub.id) if self.mqtt else None
        online = last is not None and time.time() - last < 2 * sub.poll_ms / 1000 + 0.5
        return {"id": sub.id, "name": sub.name, "poll_ms": sub.poll_ms, "protocol": "mqtt",
                "online": online, "port": None, "polls": 0, "failures": 0,
                "last_ok": iso(last) if last else None,
                "last_error": "" if self.mqtt else "no MQTT broker"}

    def substations_json(self) -> list[dict[str, Any]]:
        out = []
        for sub in self.mine.substations:
            if sub.protocol == "mqtt":
                out.append(self._mqtt_substation_json(sub))
                continue
            col = self.collectors.get(sub.id)
            st = col.stats if col else None
            out.append({"id": sub.id, "name": sub.name, "poll_ms": sub.poll_ms,
                        "online": bool(col and col.online), "port": col.port if col else None,
                        "polls": st.polls if st else 0, "failures": st.failures if st else 0,
                        "last_ok": iso(st.last_ok) if st and st.last_ok else None,
                        "last_error": st.last_error if st else ""})
        return out
