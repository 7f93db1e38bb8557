"""City command-center state (市煤矿安全应急指挥部): what every mine last told the city.

``CityState`` is pure (no I/O, injectable clock): feed it the events each mine publishes on
``mw/{mine}/events`` and the retained ``mw/{mine}/alarms/{id}`` messages (format in
``minewatch/events.py``) and ask it for per-mine tiles and a merged alarm feed.

Per mine it keeps: the name, when the last live message arrived (city clock) and the mine's own
``at`` of it, the last heartbeat summary, open alarms by id (an alarm whose state becomes
``cleared`` is dropped; a stale replay of an older state cannot bring it back), open incidents,
recent commands, and relays cut since the last heartbeat.

Incidents (``type: "incident"``, body = the mine's ``Service.incident_json``) are upserted by
id; an older state (by the incident's ``updated_at``) never overwrites a newer one, and a
closed incident leaves the open list for good (a stale replay of an open state cannot bring it
back). The view of an incident adds ``report_chain``: one row per ``report:<level>`` step with
who was notified (``to``), its state (pending = not yet notified, active = waiting for the
acknowledgement, done, overdue) and ``remaining_s`` counted down on the city clock from the
step's deadline. Opening and closing an incident, and a report level going overdue, are also
entries of the feed (``kind: "incident"``).

Double-blind drills (``type: "drill"``, published by a mine's ``DrillRunner`` when a drill is
aborted or finished and when its plan is revealed) are kept in a list across mines: upserted by
(mine, drill id), newest (by when the drill was armed) first, at most ``drills_size`` of them.
An update never goes back: one with a lower rank (armed < running < ended; revealed above
not revealed) or, at the same rank, an older ``at`` is ignored. The view of a drill has its
status, the mine's score (``passed`` and each step's ``marks``: measured seconds against the
limit), the commitment (and its short form) and, once revealed, the plan's site (``point``)
and scenario. Drills do not change a tile's status.

Tile status precedence (first that holds):
``no_data`` (no live message for ``quiet_after_s``: whatever else we last knew is out of date)
> ``incident`` (an open incident workflow) > ``power_cut`` (relays cut per the last heartbeat
or a cut command since, or an active ``power_cut_limit`` alarm) > ``alarm`` (an active, not
shelved alarm) > ``normal``. A quiet mine is itself an alarm: a synthetic city alarm
``{kind: "mine_quiet", message: "矿井数据中断: <name>"}`` is raised, and cleared when data
returns. Retained messages (replayed by the broker to a late subscriber) carry alarm state but
do not count as a sign of life.

Messages with a bad shape are counted by reason and ignored; nothing here raises on input.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minewatch.events import EVENT_VERSION, QUIET_AFTER_S
from minewatch.readings import iso, parse_time

STATUSES = ("normal", "alarm", "power_cut", "incident", "no_data")
ACTIVE_STATES = ("unack_active", "ack_active")
UNACK_STATES = ("unack_active", "unack_rtn")
CLOSED_INCIDENT_STATES = ("closed", "cleared", "resolved", "done", "cancelled")
CUT_RESULTS_EFFECTIVE = ("pending", "sent", "verified", "unverified")
RESTORE_RESULTS_EFFECTIVE = ("sent", "verified")
SUMMARY_NUMBERS = ("points", "open_alarms", "unacked_alarms", "cut_relays", "max_ch4",
                   "stale_points", "substations_online", "substations")
MAX_ID_LEN = 200
INCIDENT_KEYS = ("id", "kind", "title", "state", "drill", "opened_at", "closed_at",
                 "closed_by", "updated_at", "point_id", "point_name", "areas", "evac_areas",
                 "area_names", "relays", "wider_relays", "peak", "alarms")
REPORT_PREFIX = "report:"
FEED_SIZE = 500
DRILLS_SIZE = 50
DRILL_STATUS_RANK = {"armed": 0, "running": 1, "aborted": 2, "finished": 2}
DRILL_TIMES = ("armed_at", "started_at", "ended_at")
COMMITMENT_SHORT = 12
COMMANDS_PER_MINE = 20
TOMBSTONES = 5000
Sees = Callable[[str], bool]  # a user's jurisdiction: may they see this mine?


def everyone(_mine: str) -> bool:
    return True


class BadEvent(ValueError):
    """A message that does not have the shape of minewatch/events.py; ``reason`` is its key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ident(value: Any, reason: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN:
        raise BadEvent(reason)
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _time_of(value: Any) -> float | None:
    """Epoch seconds or an ISO 8601 string (the REST objects' time format) → epoch seconds."""
    n = _number(value)
    if n is not None:
        return n
    if isinstance(value, str):
        try:
            t = parse_time(value)
        except (ValueError, OverflowError):
            return None
        return t if math.isfinite(t) else None
    return None


@dataclass
class MineState:
    id: str
    name: str
    first_known: float  # city clock: when the city first heard of (or was told about) the mine
    url: str | None = None
    last_seen: float | None = None  # city clock: last live (not retained) message
    last_event_at: float | None = None  # the mine's own ``at`` of its last live event
    heartbeat: dict[str, Any] | None = None
    heartbeat_seen: float | None = None
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)  # open alarms by id
    tombstones: OrderedDict[str, float] = field(default_factory=OrderedDict)  # cleared id → t
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)  # open, by id
    incident_seen: dict[str, float] = field(default_factory=dict)  # id → city clock received
    closed_incidents: OrderedDict[str, float] = field(default_factory=OrderedDict)  # id → t
    commands: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    cut_since_hb: set[str] = field(default_factory=set)
    restored_since_hb: set[str] = field(default_factory=set)
    quiet: bool = False
    quiet_since: float | None = None
    messages: int = 0


class CityState:
    def __init__(self, *, quiet_after_s: float = QUIET_AFTER_S,
                 clock: Callable[[], float] = time.time,
                 mine_urls: dict[str, str] | None = None, feed_size: int = FEED_SIZE,
                 commands_per_mine: int = COMMANDS_PER_MINE,
                 drills_size: int = DRILLS_SIZE) -> None:
        self.quiet_after_s = float(quiet_after_s)
        self.clock = clock
        self.mine_urls = dict(mine_urls or {})
        self.commands_per_mine = commands_per_mine
        self.drills_size = drills_size
        self.mines: dict[str, MineState] = {}
        self.drill_list: dict[tuple[str, str], dict[str, Any]] = {}  # (mine, id) → as kept
        self.drills_version = 0  # bumped when the drill list changes
        self.feed_entries: deque[dict[str, Any]] = deque(maxlen=feed_size)
        self.seq = 0  # of the last feed entry
        self.version = 0  # bumped on every change a viewer could see
        self.messages = 0
        self.accepted = 0
        self.malformed = 0
        self.malformed_reasons: Counter[str] = Counter()
        self.unknown_types: Counter[str] = Counter()
        now = clock()
        for mine_id in self.mine_urls:
            self.mines[mine_id] = MineState(mine_id, mine_id, now, url=self.mine_urls[mine_id])

    def listening(self) -> None:
        """The city starts listening now: a configured mine never heard from counts as quiet
        from here, not from when the state was built (start-up, e.g. the user store, may take
        a while)."""
        now = self.clock()
        for m in self.mines.values():
            if m.last_seen is None:
                m.first_known = now

    # --- input -------------------------------------------------------------------------------
    def ingest_message(self, topic: str, payload: bytes | bytearray | str | None,
                       retained: bool = False) -> bool:
        """One MQTT message (``mw/{mine}/events`` or ``mw/{mine}/alarms/{id}``)."""
        self.messages += 1
        try:
            parts = topic.split("/")
            if len(parts) < 3 or parts[0] != "mw" or not parts[1]:
                raise BadEvent("topic")
            mine_id = parts[1]
            if parts[2] == "events" and len(parts) == 3:
                self._event(self._decode(payload, allow_empty=False), mine_id, retained)
            elif parts[2] == "alarms" and len(parts) >= 4 and all(parts[3:]):
                self._retained_alarm(mine_id, "/".join(parts[3:]),
                                     self._decode(payload, allow_empty=True), retained)
            else:
                raise BadEvent("topic")
        except BadEvent as exc:
            return self._bad(exc.reason)
        except Exception:  # a shape we did not foresee: count it, never crash the feed
            return self._bad("unexpected")
        self.accepted += 1
        return True

    def ingest(self, event: Any, *, retained: bool = False) -> bool:
        """One event dict as published on ``mw/{mine}/events``; False if it was malformed."""
        self.messages += 1
        try:
            if not isinstance(event, dict):
                raise BadEvent("not_object")
            self._event(event, None, retained)
        except BadEvent as exc:
            return self._bad(exc.reason)
        except Exception:
            return self._bad("unexpected")
        self.accepted += 1
        return True

    def _bad(self, reason: str) -> bool:
        self.malformed += 1
        self.malformed_reasons[reason] += 1
        return False

    @staticmethod
    def _decode(payload: bytes | bytearray | str | None, *, allow_empty: bool) -> Any:
        if payload is None or len(payload) == 0:
            if allow_empty:
                return None
            raise BadEvent("empty")
        try:
            return json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadEvent("json") from exc

    def _envelope(self, ev: Any, topic_mine: str | None) -> tuple[str, str | None, float]:
        if not isinstance(ev, dict):
            raise BadEvent("not_object")
        if ev.get("v") != EVENT_VERSION or isinstance(ev.get("v"), bool):
            raise BadEvent("version")
        mine_id = _ident(ev.get("mine"), "mine")
        if topic_mine is not None and mine_id != topic_mine:
            raise BadEvent("mine_mismatch")
        name = ev.get("mine_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_ID_LEN):
            raise BadEvent("mine_name")
        at = _number(ev.get("at"))
        if at is None:
            raise BadEvent("at")
        _ident(ev.get("type"), "type")
        return mine_id, name or None, at

    def _mine(self, mine_id: str, name: str | None) -> MineState:
        m = self.mines.get(mine_id)
        if m is None:
            m = MineState(mine_id, name or mine_id, self.clock(), url=self.mine_urls.get(mine_id))
            self.mines[mine_id] = m
        elif name and name != m.name:
            m.name = name
        return m

    def _event(self, ev: Any, topic_mine: str | None, retained: bool) -> None:
        mine_id, name, at = self._envelope(ev, topic_mine)
        kind = ev["type"]
        # Validate the body before touching any state, so a bad event changes nothing.
        if kind == "alarm":
            transition = ev.get("transition")
            if transition is not None and not isinstance(transition, str):
                raise BadEvent("transition")
            alarm = self._check_alarm(ev.get("alarm"))
        elif kind == "command":
            command = ev.get("command")
            if not isinstance(command, dict):
                raise BadEvent("command")
            _ident(command.get("id"), "command_id")
        elif kind == "heartbeat":
            summary = self._check_summary(ev.get("summary"))
        elif kind == "incident":
            incident = self._check_incident(ev.get("incident"))
        elif kind == "drill":
            drill = self._check_drill(ev)
        m = self._mine(mine_id, name)
        now = self.clock()
        if not retained:
            m.last_seen = now
            m.last_event_at = at
            m.messages += 1
            self._resume(m, now)
        if kind == "alarm":
            self._apply_alarm(m, alarm, transition or "update", at)
        elif kind == "command":
            self._apply_command(m, command)
        elif kind == "heartbeat":
            m.heartbeat = summary
            m.heartbeat_seen = now
            m.cut_since_hb.clear()
            m.restored_since_hb.clear()
        elif kind == "incident":
            self._apply_incident(m, incident, at)
        elif kind == "drill":
            self._apply_drill(m, drill, at)
        else:
            self.unknown_types[kind] += 1
        self.version += 1

    def _retained_alarm(self, mine_id: str, alarm_id: str, payload: Any, retained: bool) -> None:
        """``mw/{mine}/alarms/{id}``: the full alarm event, or the bare alarm object; an empty
        payload (retained message deleted) drops the alarm."""
        if len(alarm_id) > MAX_ID_LEN:
            raise BadEvent("alarm_id")
        if payload is None:
            m = self.mines.get(mine_id)
            if m is not None and m.alarms.pop(alarm_id, None) is not None:
                self.version += 1
            return
        if isinstance(payload, dict) and "type" in payload:
            if payload.get("type") != "alarm":
                raise BadEvent("type")
            alarm = payload.get("alarm")
            if not isinstance(alarm, dict) or alarm.get("id") != alarm_id:
                raise BadEvent("alarm_id")
            self._event(payload, mine_id, retained)
            return
        alarm = self._check_alarm(payload)
        if alarm["id"] != alarm_id:
            raise BadEvent("alarm_id")
        m = self._mine(mine_id, None)
        at = _time_of(alarm.get("updated_at")) or _time_of(alarm.get("raised_at")) or self.clock()
        self._apply_alarm(m, alarm, "retained" if retained else "update", at)
        self.version += 1

    @staticmethod
    def _check_alarm(alarm: Any) -> dict[str, Any]:
        if not isinstance(alarm, dict):
            raise BadEvent("alarm")
        _ident(alarm.get("id"), "alarm_id")
        _ident(alarm.get("state"), "alarm_state")
        for key in ("kind", "message", "point_id", "point_name"):
            if alarm.get(key) is not None and not isinstance(alarm.get(key), str):
                raise BadEvent(f"alarm_{key}")
        sev = alarm.get("severity")
        if sev is not None and (isinstance(sev, bool) or not isinstance(sev, int)):
            raise BadEvent("alarm_severity")
        return alarm

    @staticmethod
    def _check_incident(incident: Any) -> dict[str, Any]:
        if not isinstance(incident, dict):
            raise BadEvent("incident")
        _ident(incident.get("id"), "incident_id")
        state = incident.get("state", incident.get("status"))
        if state is not None and not isinstance(state, str):
            raise BadEvent("incident_state")
        for key in ("title", "kind", "point_id", "point_name"):
            if incident.get(key) is not None and not isinstance(incident.get(key), str):
                raise BadEvent(f"incident_{key}")
        steps = incident.get("steps")
        if steps is not None:
            if not isinstance(steps, list):
                raise BadEvent("incident_steps")
            for st in steps:
                if not isinstance(st, dict) or not isinstance(st.get("name"), str) \
                        or not isinstance(st.get("state"), str):
                    raise BadEvent("incident_steps")
                if st.get("extra") is not None and not isinstance(st.get("extra"), dict):
                    raise BadEvent("incident_steps")
        return incident

    @staticmethod
    def _check_drill(ev: dict[str, Any]) -> dict[str, Any]:
        """The body of a drill event, normalised: the drill's fields, ``passed`` (None when not
        told), ``scenario_name`` and ``marks``."""
        d = ev.get("drill")
        if not isinstance(d, dict):
            raise BadEvent("drill")
        out: dict[str, Any] = {"id": _ident(d.get("id"), "drill_id"),
                               "status": d.get("status")}
        if not isinstance(out["status"], str) or out["status"] not in DRILL_STATUS_RANK:
            raise BadEvent("drill_status")
        for key in ("commitment", "armed_by", "ended_by", "abort_reason", "incident"):
            v = d.get(key)
            if v is not None and (not isinstance(v, str) or len(v) > 500):
                raise BadEvent(f"drill_{key}")
            out[key] = v or None
        for key in DRILL_TIMES:
            v = d.get(key)
            if v is not None and _time_of(v) is None:
                raise BadEvent(f"drill_{key}")
            out[key] = _time_of(v)
        revealed = d.get("revealed", False)
        if not isinstance(revealed, bool):
            raise BadEvent("drill_revealed")
        plan = d.get("plan")
        if plan is not None:
            if not isinstance(plan, dict):
                raise BadEvent("drill_plan")
            for key in ("mine", "scenario", "point"):
                if plan.get(key) is not None and not isinstance(plan.get(key), str):
                    raise BadEvent("drill_plan")
        points = d.get("points") or []
        if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
            raise BadEvent("drill_points")
        out.update(revealed=revealed and plan is not None, plan=plan if revealed else None,
                   points=list(points))
        passed = ev.get("passed")
        if passed is not None and not isinstance(passed, bool):
            raise BadEvent("drill_passed")
        name = ev.get("scenario_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_ID_LEN):
            raise BadEvent("drill_scenario_name")
        marks = ev.get("marks")
        if marks is None:
            marks = []
        if not isinstance(marks, list):
            raise BadEvent("drill_marks")
        rows = []
        for mk in marks:
            if not isinstance(mk, dict) or not isinstance(mk.get("step"), str) \
                    or not isinstance(mk.get("passed"), bool) \
                    or (mk.get("title") is not None and not isinstance(mk.get("title"), str)):
                raise BadEvent("drill_marks")
            nums = {}
            for key in ("seconds", "limit_s"):
                v = mk.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise BadEvent("drill_marks")
                nums[key] = _number(v)  # NaN / inf: not measured
            rows.append({"step": mk["step"], "title": mk.get("title") or mk["step"], **nums,
                         "passed": mk["passed"]})
        out.update(passed=passed, scenario_name=name or None, marks=rows)
        return out

    @staticmethod
    def _check_summary(summary: Any) -> dict[str, Any]:
        if not isinstance(summary, dict):
            raise BadEvent("summary")
        out = dict(summary)
        for key in SUMMARY_NUMBERS:
            if key in summary and summary[key] is not None:
                v = _number(summary[key])
                if v is None or (v < 0 and key != "max_ch4"):
                    raise BadEvent(f"summary_{key}")
                out[key] = v
        return out

    # --- state changes -----------------------------------------------------------------------
    def _apply_alarm(self, m: MineState, alarm: dict[str, Any], transition: str,
                     at: float) -> None:
        aid = alarm["id"]
        updated = _time_of(alarm.get("updated_at"))
        prev = m.alarms.get(aid)
        if prev is not None:
            prev_updated = _time_of(prev.get("updated_at"))
            if updated is not None and prev_updated is not None and updated < prev_updated:
                return  # an older state replayed (e.g. a queued message after the retained one)
            if prev.get("state") == alarm["state"] and \
                    prev.get("updated_at") == alarm.get("updated_at"):
                return  # the same state again (the retained copy replayed on resubscribe)
        elif aid in m.tombstones and (updated is None or updated <= m.tombstones[aid]):
            return  # cleared already; do not resurrect it from a stale replay
        if alarm["state"] == "cleared":
            m.alarms.pop(aid, None)
            m.tombstones[aid] = updated if updated is not None else math.inf
            m.tombstones.move_to_end(aid)
            while len(m.tombstones) > TOMBSTONES:
                m.tombstones.popitem(last=False)
            if prev is None:
                return  # cleared before we ever saw it open: nothing to tell
        else:
            m.tombstones.pop(aid, None)
            m.alarms[aid] = dict(alarm)
        self._feed(m, alarm, transition, at)

    def _apply_command(self, m: MineState, cmd: dict[str, Any]) -> None:
        m.commands[cmd["id"]] = dict(cmd)
        m.commands.move_to_end(cmd["id"])
        while len(m.commands) > self.commands_per_mine:
            m.commands.popitem(last=False)
        target, result = cmd.get("target"), cmd.get("result")
        if not isinstance(target, str):
            return
        if cmd.get("action") == "cut" and result in CUT_RESULTS_EFFECTIVE:
            m.cut_since_hb.add(target)
            m.restored_since_hb.discard(target)
        elif cmd.get("action") == "restore" and result in RESTORE_RESULTS_EFFECTIVE:
            m.restored_since_hb.add(target)
            m.cut_since_hb.discard(target)

    def _apply_incident(self, m: MineState, incident: dict[str, Any], at: float) -> None:
        iid = incident["id"]
        updated = _time_of(incident.get("updated_at"))
        prev = m.incidents.get(iid)
        if prev is not None:
            prev_updated = _time_of(prev.get("updated_at"))
            if updated is not None and prev_updated is not None and updated < prev_updated:
                return  # an older state delivered late
        elif iid in m.closed_incidents and (updated is None
                                            or updated <= m.closed_incidents[iid]):
            return  # closed already; a stale replay must not reopen it
        state = incident.get("state", incident.get("status"))
        if isinstance(state, str) and state in CLOSED_INCIDENT_STATES:
            m.incidents.pop(iid, None)
            m.incident_seen.pop(iid, None)
            m.closed_incidents[iid] = updated if updated is not None else math.inf
            m.closed_incidents.move_to_end(iid)
            while len(m.closed_incidents) > TOMBSTONES:
                m.closed_incidents.popitem(last=False)
            if prev is not None:  # closed before we ever saw it open: nothing to tell
                self._feed_incident(m, incident, "incident_closed", at)
            return
        m.closed_incidents.pop(iid, None)
        m.incidents[iid] = dict(incident)
        m.incident_seen[iid] = self.clock()
        if prev is None:
            self._feed_incident(m, incident, "incident_opened", at)
            return
        before = {st.get("name"): st.get("state") for st in prev.get("steps") or []}
        for st in incident.get("steps") or []:
            if st["name"].startswith(REPORT_PREFIX) and st["state"] == "overdue" \
                    and before.get(st["name"]) != "overdue":
                extra = st.get("extra") or {}
                title = _level_title(st)
                who = extra.get("to") if isinstance(extra.get("to"), str) else ""
                self._feed_incident(m, incident, "report_overdue", at,
                                    f"汇报超时未确认: {title}{f'（{who}）' if who else ''}")

    def _apply_drill(self, m: MineState, drill: dict[str, Any], at: float) -> None:
        key = (m.id, drill["id"])
        rank = (DRILL_STATUS_RANK[drill["status"]], drill["revealed"])
        prev = self.drill_list.get(key)
        if prev is not None:
            if (rank, at) < (prev["rank"], prev["at"]):
                return  # an older state delivered late: a drill never goes back
            if rank == prev["rank"] and at == prev["at"] and drill == prev["drill"]:
                return  # the same message again
        self.drill_list[key] = {"drill": drill, "rank": rank, "at": at,
                                "received": self.clock(),
                                "order": prev["order"] if prev else self.drills_version + 1}
        self.drills_version += 1
        while len(self.drill_list) > self.drills_size:
            del self.drill_list[min(self.drill_list, key=lambda k: self._drill_key(
                self.drill_list[k]))]

    @staticmethod
    def _drill_key(kept: dict[str, Any]) -> tuple[float, int]:
        """Newest = armed (or started) last; the order first heard of as the tie-break."""
        d = kept["drill"]
        t = d["armed_at"] if d["armed_at"] is not None else d["started_at"]
        return (t if t is not None else kept["at"], kept["order"])

    def _feed(self, m: MineState, alarm: dict[str, Any], transition: str, at: float) -> None:
        self.seq += 1
        self.feed_entries.append({
            "seq": self.seq, "at": iso(at), "mine": m.id, "mine_name": m.name,
            "transition": transition, "id": alarm.get("id"), "kind": alarm.get("kind"),
            "severity": alarm.get("severity"), "state": alarm.get("state"),
            "message": alarm.get("message") or "", "point_id": alarm.get("point_id"),
            "point_name": alarm.get("point_name"), "value": _number(alarm.get("value")),
            "raised_at": alarm.get("raised_at"), "drill": bool(alarm.get("drill")),
            "synthetic": bool(alarm.get("synthetic"))})

    def _feed_incident(self, m: MineState, inc: dict[str, Any], transition: str, at: float,
                       detail: str = "") -> None:
        title = inc.get("title") or inc.get("kind") or "事件"
        closed = transition == "incident_closed"
        message = f"{title} · {detail}" if detail else title
        peak = inc.get("peak") if isinstance(inc.get("peak"), dict) else {}
        self.seq += 1
        self.feed_entries.append({
            "seq": self.seq, "at": iso(at), "mine": m.id, "mine_name": m.name,
            "transition": transition, "id": inc["id"], "kind": "incident",
            "severity": 3 if closed else 1, "state": "closed" if closed else "open",
            "message": message, "point_id": inc.get("point_id"),
            "point_name": inc.get("point_name"), "value": _number(peak.get("value")),
            "raised_at": inc.get("opened_at"), "drill": bool(inc.get("drill")),
            "synthetic": False})

    def _quiet_alarm(self, m: MineState, state: str) -> dict[str, Any]:
        since = m.quiet_since if m.quiet_since is not None else self.clock()
        return {"id": f"{m.id}:mine_quiet", "kind": "mine_quiet", "severity": 1, "state": state,
                "message": (f"矿井数据中断: {m.name}" if state != "cleared"
                            else f"矿井数据恢复: {m.name}"),
                "point_id": None, "point_name": None, "value": None, "raised_at": iso(since),
                "updated_at": iso(since), "drill": False, "synthetic": True}

    def _resume(self, m: MineState, now: float) -> None:
        if m.quiet:
            m.quiet = False
            self._feed(m, self._quiet_alarm(m, "cleared"), "cleared", now)
            m.quiet_since = None

    def tick(self) -> bool:
        """Mark mines with no live message for ``quiet_after_s`` as quiet (raising the
        synthetic ``mine_quiet`` alarm). True if anything changed."""
        now = self.clock()
        changed = False
        for m in self.mines.values():
            ref = m.last_seen if m.last_seen is not None else m.first_known
            if not m.quiet and now - ref > self.quiet_after_s:
                m.quiet = True
                m.quiet_since = ref + self.quiet_after_s
                self._feed(m, self._quiet_alarm(m, "unack_active"), "raised", now)
                changed = True
        if changed:
            self.version += 1
        return changed

    # --- views -------------------------------------------------------------------------------
    def _cut_relays(self, m: MineState) -> int:
        hb = int(m.heartbeat.get("cut_relays") or 0) if m.heartbeat else 0
        return max(len(m.cut_since_hb), hb - len(m.restored_since_hb))

    def status(self, m: MineState) -> str:
        if m.quiet:
            return "no_data"
        return self._known_status(m)

    def _known_status(self, m: MineState) -> str:
        if m.incidents:
            return "incident"
        active = [a for a in m.alarms.values() if a.get("state") in ACTIVE_STATES]
        if self._cut_relays(m) > 0 or any(a.get("kind") == "power_cut_limit" for a in active):
            return "power_cut"
        if active:
            return "alarm"
        return "normal"

    def tile(self, mine_id: str) -> dict[str, Any] | None:
        m = self.mines.get(mine_id)
        if m is None:
            return None
        now = self.clock()
        hb = m.heartbeat or {}
        open_alarms = [a for a in m.alarms.values() if a.get("state") != "cleared"]
        unacked = sum(1 for a in open_alarms if a.get("state") in UNACK_STATES)
        top = sorted((a for a in open_alarms if a.get("state") in ACTIVE_STATES),
                     key=lambda a: (a.get("severity") or 9, -(_time_of(a.get("raised_at")) or 0)))
        return {
            "mine": m.id, "name": m.name, "status": self.status(m),
            "last_known_status": self._known_status(m),
            "max_ch4": _number(hb.get("max_ch4")), "max_ch4_point": hb.get("max_ch4_point"),
            "open_alarms": len(open_alarms) + (1 if m.quiet else 0),
            "unacked": unacked + (1 if m.quiet else 0),
            "cut_relays": self._cut_relays(m), "incidents": len(m.incidents),
            "open_incidents": self._incidents_of(m, now),
            "last_seen": iso(m.last_seen), "last_event_at": iso(m.last_event_at),
            "age_s": None if m.last_seen is None else round(max(0.0, now - m.last_seen), 1),
            "quiet": m.quiet, "quiet_since": iso(m.quiet_since),
            "top_alarm": top[0].get("message") if top else None,
            "summary": m.heartbeat, "heartbeat_at": iso(m.heartbeat_seen),
            "messages": m.messages, "url": m.url}

    def tiles(self, sees: Sees = everyone) -> list[dict[str, Any]]:
        self.tick()
        return [t for t in (self.tile(i) for i in sorted(self.mines) if sees(i))
                if t is not None]

    def open_alarms(self, mine_id: str | None = None, sees: Sees = everyone
                    ) -> list[dict[str, Any]]:
        """Open alarms (with the synthetic quiet alarms), newest first."""
        self.tick()
        out = []
        for m in self.mines.values():
            if (mine_id is not None and m.id != mine_id) or not sees(m.id):
                continue
            alarms = list(m.alarms.values())
            if m.quiet:
                alarms.append(self._quiet_alarm(m, "unack_active"))
            out += [{**a, "mine": m.id, "mine_name": m.name} for a in alarms]
        out.sort(key=lambda a: _time_of(a.get("raised_at")) or 0, reverse=True)
        return out

    def mine_detail(self, mine_id: str) -> dict[str, Any] | None:
        tile = self.tile(mine_id)
        if tile is None:
            return None
        m = self.mines[mine_id]
        return {**tile, "alarms": self.open_alarms(mine_id),
                "commands": list(reversed(m.commands.values())), "drills": self.drills(mine_id)}

    def drill_view(self, mine_id: str, kept: dict[str, Any]) -> dict[str, Any]:
        """What the city shows of one drill (times as ISO 8601)."""
        d = kept["drill"]
        m = self.mines.get(mine_id)
        plan = d["plan"] or {}
        started, ended = d["started_at"], d["ended_at"]
        commit = d["commitment"] or ""
        return {
            "id": d["id"], "mine": mine_id, "mine_name": m.name if m else mine_id,
            "status": d["status"], "ended": d["status"] in ("aborted", "finished"),
            "scenario": plan.get("scenario") if d["revealed"] else None,
            "scenario_name": d["scenario_name"], "passed": d["passed"], "marks": d["marks"],
            "marks_passed": sum(1 for mk in d["marks"] if mk["passed"]),
            "commitment": d["commitment"], "commitment_short": commit[:COMMITMENT_SHORT] or None,
            "revealed": d["revealed"], "point": plan.get("point") if d["revealed"] else None,
            "plan": d["plan"], "points": d["points"],
            **{k: iso(d[k]) for k in DRILL_TIMES},
            "duration_s": None if started is None or ended is None
            else round(max(0.0, ended - started), 1),
            "armed_by": d["armed_by"], "ended_by": d["ended_by"],
            "abort_reason": d["abort_reason"], "incident": d["incident"],
            "updated_at": iso(kept["at"]), "received_at": iso(kept["received"]),
            "url": m.url if m else None}

    def drills(self, mine_id: str | None = None, limit: int | None = None,
               sees: Sees = everyone) -> list[dict[str, Any]]:
        """Drills across mines (or of one), newest first."""
        keys = sorted((k for k in self.drill_list
                       if (mine_id is None or k[0] == mine_id) and sees(k[0])),
                      key=lambda k: self._drill_key(self.drill_list[k]), reverse=True)
        return [self.drill_view(k[0], self.drill_list[k]) for k in keys[:limit]]

    def _incidents_of(self, m: MineState, now: float) -> list[dict[str, Any]]:
        views = [self.incident_view(m, inc, now) for inc in m.incidents.values()]
        views.sort(key=lambda v: _time_of(v.get("opened_at")) or 0, reverse=True)
        return views

    def incident_view(self, m: MineState, inc: dict[str, Any], now: float) -> dict[str, Any]:
        """What the city shows of one open incident: the mine's fields, its steps with the
        time left counted on the city clock, and the report chain."""
        elapsed = max(0.0, now - m.incident_seen.get(inc["id"], now))
        steps = []
        for st in inc.get("steps") or []:
            deadline = _time_of(st.get("deadline"))
            if deadline is not None:
                remaining = deadline - now
            elif _number(st.get("remaining_s")) is not None:
                remaining = _number(st.get("remaining_s")) - elapsed  # type: ignore[operator]
            else:
                remaining = None
            if st.get("state") not in ("active", "pending", "overdue"):
                remaining = None
            steps.append({**st, "remaining_s": None if remaining is None
                          else round(remaining, 1)})
        chain = []
        for st in steps:
            if not st["name"].startswith(REPORT_PREFIX):
                continue
            extra = st.get("extra") or {}
            remaining = st["remaining_s"]
            chain.append({
                "name": st["name"], "level": extra.get("level") or st["name"][len(REPORT_PREFIX):],
                "title": _level_title(st), "to": extra.get("to") or None, "state": st["state"],
                "overdue": st["state"] == "overdue" or (st["state"] == "active"
                                                        and remaining is not None
                                                        and remaining < 0),
                "deadline": st.get("deadline"), "started_at": st.get("started_at"),
                "done_at": st.get("done_at"), "by": st.get("by"),
                "late": bool(extra.get("late")), "escalated_to": extra.get("escalated_to"),
                "remaining_s": remaining})
        opened = _time_of(inc.get("opened_at"))
        view = {k: inc.get(k) for k in INCIDENT_KEYS}
        view["state"] = view["state"] or "open"
        view["drill"] = bool(view["drill"])
        view.update({"mine": m.id, "mine_name": m.name, "steps": steps, "report_chain": chain,
                     "report_done": sum(1 for r in chain if r["state"] == "done"),
                     "report_overdue": sum(1 for r in chain if r["overdue"]),
                     "age_s": None if opened is None else round(max(0.0, now - opened), 1),
                     "stale": m.quiet, "url": m.url})
        return view

    def incidents(self, mine_id: str | None = None, sees: Sees = everyone
                  ) -> list[dict[str, Any]]:
        """Open incidents across mines (or of one), newest first."""
        self.tick()
        now = self.clock()
        out = []
        for m in self.mines.values():
            if (mine_id is None or m.id == mine_id) and sees(m.id):
                out += self._incidents_of(m, now)
        out.sort(key=lambda v: _time_of(v.get("opened_at")) or 0, reverse=True)
        return out

    def feed(self, limit: int = 100, after_seq: int = 0, sees: Sees = everyone
             ) -> list[dict[str, Any]]:
        """Alarm transitions across mines (those ``sees`` admits), newest first, at most
        ``limit``."""
        self.tick()
        out = []
        for e in reversed(self.feed_entries):
            if e["seq"] <= after_seq or len(out) >= limit:
                break
            if sees(e["mine"]):
                out.append(e)
        return out

    def counters(self) -> dict[str, Any]:
        return {"messages": self.messages, "accepted": self.accepted,
                "malformed": self.malformed, "malformed_reasons": dict(self.malformed_reasons),
                "unknown_types": dict(self.unknown_types), "mines": len(self.mines),
                "quiet_mines": sum(1 for m in self.mines.values() if m.quiet),
                "open_incidents": sum(len(m.incidents) for m in self.mines.values()),
                "drills": len(self.drill_list)}


def _level_title(step: dict[str, Any]) -> str:
    """``汇报: 县煤矿安全应急指挥部`` → ``县煤矿安全应急指挥部`` (the level's name)."""
    title = step.get("title")
    if isinstance(title, str) and title:
        return title.split(":", 1)[1].strip() if title.startswith("汇报") and ":" in title \
            else title
    return str(step.get("name", ""))[len(REPORT_PREFIX):]
