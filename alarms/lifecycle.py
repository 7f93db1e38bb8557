"""Alarm lifecycle (ISA-18.2): one record per occurrence, identity = point + kind.

    raise ──▶ unack_active ──ack──▶ ack_active ──clear──▶ cleared
                   │                                ▲
                 clear                              │
                   ▼                                │
              unack_rtn ───────────ack──────────────┘

While an alarm of a (point, kind) is not cleared, the same condition raising again re-arms it
(back to an active state) instead of opening a second alarm, so a condition never becomes
two alarms on the screen. Every transition returns the record so callers persist and journal it.

Annunciation controls (ISA-18.2 shelved / out of service / suppressed by design) are flags on
the record, orthogonal to ``state``: a shelved alarm keeps tracking its condition and its
acknowledgement, so when the shelf ends it is shown in the state it is really in.
- shelve: by an operator, with a reason and an expiry (at most ``max_shelve_s``), per point +
  kind so a chattering alarm that clears and raises again stays shelved; refused for the
  safety-critical kinds (methane ``power_cut_limit``, ``cut_unverified``).
- out of service: per point, during maintenance, with who/why; its alarms are recorded with
  ``out_of_service`` set and not annunciated (safety-critical kinds stay annunciated).
- suppressed by design: a consequence alarm (e.g. low wind after the heading's fan stopped, or
  methane downwind of an active methane alarm) while its root alarm is active.
- comments: appended with user and time, never edited.
Operations return ``(record, transition)`` pairs; the service journals them as
``alarm_{transition}`` (the point-level out-of-service audit as ``point_out_of_service`` /
``point_in_service``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from minewatch.records import AlarmRecord, OutOfService, Shelf

SEVERITY = {"trend": 3, "power_cut_limit": 1, "cut_unverified": 1, "spool_full": 1, "lockout": 1,
            "over_limit": 2, "under_limit": 2, "fault": 2, "stale": 2, "suspect": 2,
            "alarm_flood": 2}

# Alarms that must always reach the operator: never shelved, masked or suppressed. ``lockout``
# is the per-relay interlock alarm (风电闭锁/甲烷电闭锁/故障闭锁, alarms/lockouts.py).
SAFETY_CRITICAL = frozenset({"power_cut_limit", "cut_unverified", "lockout"})
MAX_SHELVE_S = 8 * 3600.0  # one shift: shelving is always time-limited (ISA-18.2)
MAX_COMMENT_CHARS = 2000

# Journal event names for the point-level out-of-service audit (records go as alarm_{transition}).
POINT_OUT_OF_SERVICE = "point_out_of_service"
POINT_IN_SERVICE = "point_in_service"

Change = tuple[AlarmRecord, str]  # (changed record, transition name to journal)


class AlarmError(ValueError):
    """An operator action that does not apply to the alarm (unknown id, wrong state)."""


# Subclasses so the API can answer with the right status; all are AlarmError.
class AlarmNotFound(AlarmError):
    """No open alarm with that id (unknown or already cleared): HTTP 404."""


class AlarmConflict(AlarmError):
    """The alarm or point is not in a state the action applies to: HTTP 409."""


class AlarmForbidden(AlarmError):
    """The rules forbid the action (shelving a safety-critical alarm): HTTP 403."""


class AlarmInvalid(AlarmError):
    """The request lacks a user/reason/text or has a bad expiry: HTTP 422."""


def _need(text: str | None, zh: str, en: str) -> str:
    if text is None or not str(text).strip():
        raise AlarmInvalid(f"{zh} / {en}")
    return str(text).strip()


class AlarmBook:
    def __init__(self, *, max_shelve_s: float = MAX_SHELVE_S) -> None:
        self.open: dict[str, AlarmRecord] = {}  # alarm id → not yet cleared
        self._by_key: dict[tuple[str, str], str] = {}  # (point, kind) → open alarm id
        self._seq = itertools.count(1)
        self._prefix = f"{int(time.time() * 1000):x}"
        self.max_shelve_s = max_shelve_s
        self.shelves: dict[tuple[str, str], Shelf] = {}  # (point, kind) → shelf
        self.out_of_service: dict[str, OutOfService] = {}  # point id → entry
        # Points and relays a running drill (双盲演练) drives: their alarms carry drill=True so
        # they never count in regulators' statistics; on screen they look like any other.
        self.drill_subjects: set[str] = set()

    def restore(self, records: list[AlarmRecord], *, shelves: Iterable[Shelf] = (),
                out_of_service: Iterable[OutOfService] = ()) -> None:
        """Recover open alarms (and shelves / out-of-service entries) after a restart.

        Shelves of open records are rebuilt from the records themselves; pass the ones
        recovered from the journal (``controls_from_journal``) to also keep shelves whose
        alarm has cleared since.
        """
        for rec in records:
            if rec.state != "cleared":
                self.open[rec.id] = rec
                self._by_key[(rec.point_id, rec.kind)] = rec.id
                if rec.shelved and rec.shelved_until is not None:
                    self.shelves.setdefault((rec.point_id, rec.kind), Shelf(
                        rec.point_id, rec.kind, rec.shelved_by or "", rec.shelve_reason or "",
                        rec.shelved_at or rec.updated_at, rec.shelved_until, rec.id))
        for shelf in shelves:
            self.shelves[(shelf.point_id, shelf.kind)] = shelf
        for entry in out_of_service:
            self.out_of_service[entry.point_id] = entry

    def active(self, point_id: str, kind: str) -> AlarmRecord | None:
        alarm_id = self._by_key.get((point_id, kind))
        return self.open.get(alarm_id) if alarm_id else None

    def raise_(self, point_id: str, kind: str, value: float, at: float, message: str,
               *, drill: bool = False) -> AlarmRecord:
        drill = drill or point_id in self.drill_subjects
        current = self.active(point_id, kind)
        if current is not None:
            state = "ack_active" if current.state in ("ack_active",) else "unack_active"
            rec = replace(current, state=state, value=value, cleared_at=None, updated_at=at,
                          message=message)
        else:
            rec = AlarmRecord(
                id=f"A{self._prefix}-{next(self._seq)}", point_id=point_id, kind=kind,
                severity=SEVERITY.get(kind, 3), state="unack_active", raised_at=at,
                value=value, message=message, drill=drill, updated_at=at)
        rec = self._masked(rec)
        self._keep(rec)
        return rec

    def _masked(self, rec: AlarmRecord) -> AlarmRecord:
        """Apply the point's out-of-service entry and the key's shelf to a (re)raised record."""
        if rec.kind in SAFETY_CRITICAL:
            return rec
        shelf = self.shelves.get((rec.point_id, rec.kind))
        if shelf is not None:
            rec = replace(rec, shelved=True, shelved_by=shelf.by, shelved_at=shelf.at,
                          shelved_until=shelf.until, shelve_reason=shelf.reason)
        if rec.point_id in self.out_of_service:
            rec = replace(rec, out_of_service=True)
        return rec

    def clear(self, point_id: str, kind: str, at: float) -> AlarmRecord | None:
        current = self.active(point_id, kind)
        if current is None or current.state in ("unack_rtn",):
            return None
        state = "cleared" if current.state == "ack_active" else "unack_rtn"
        rec = replace(current, state=state, cleared_at=at, updated_at=at)
        self._keep(rec)
        return rec

    def ack(self, alarm_id: str, user: str, at: float) -> AlarmRecord:
        current = self.open.get(alarm_id)
        if current is None:
            raise AlarmNotFound(f"alarm {alarm_id} is not open (unknown or already cleared)")
        if current.state == "ack_active":
            raise AlarmConflict(f"alarm {alarm_id} is already acknowledged")
        state = "ack_active" if current.state == "unack_active" else "cleared"
        rec = replace(current, state=state, acked_at=at, acked_by=user, updated_at=at)
        self._keep(rec)
        return rec

    def _get_open(self, alarm_id: str) -> AlarmRecord:
        current = self.open.get(alarm_id)
        if current is None:
            raise AlarmNotFound(f"报警 {alarm_id} 不存在或已关闭 / "
                             f"alarm {alarm_id} is not open (unknown or already cleared)")
        return current

    # --- shelving --------------------------------------------------------------------------
    def shelve(self, alarm_id: str, user: str, reason: str, until: float,
               at: float) -> Change:
        """Shelve an open alarm until ``until`` (its point + kind, also if it raises again)."""
        current = self._get_open(alarm_id)
        if current.kind in SAFETY_CRITICAL:
            raise AlarmForbidden(
                f"安全关键报警不能搁置（{current.kind}: 断电/闭锁类报警必须始终显示） / "
                f"safety-critical alarm {alarm_id} ({current.kind}) cannot be shelved")
        user = _need(user, "搁置须注明操作人", "shelving needs a user")
        reason = _need(reason, "搁置须注明原因", "shelving needs a reason")
        if not until > at:
            raise AlarmInvalid("搁置到期时间必须晚于当前时间 / shelve expiry must be in the future")
        if until - at > self.max_shelve_s:
            raise AlarmInvalid(f"搁置时间不能超过 {self.max_shelve_s / 3600:g} 小时 / "
                             f"shelving is limited to {self.max_shelve_s / 3600:g} h")
        if current.shelved:
            raise AlarmConflict(f"报警 {alarm_id} 已搁置 / alarm {alarm_id} is already shelved")
        shelf = Shelf(current.point_id, current.kind, user, reason, at, until, alarm_id)
        self.shelves[(current.point_id, current.kind)] = shelf
        rec = replace(current, shelved=True, shelved_by=user, shelved_at=at,
                      shelved_until=until, shelve_reason=reason, updated_at=at)
        self._keep(rec)
        return rec, "shelved"

    def unshelve(self, alarm_id: str, user: str, at: float) -> Change:
        """Take an open alarm off the shelf by hand: it is annunciated in its current state."""
        current = self._get_open(alarm_id)
        _need(user, "取消搁置须注明操作人", "unshelving needs a user")
        if not current.shelved:
            raise AlarmConflict(f"报警 {alarm_id} 未搁置 / alarm {alarm_id} is not shelved")
        self.shelves.pop((current.point_id, current.kind), None)
        rec = self._unshelved(current, at)
        self._keep(rec)
        return rec, "unshelved"

    def unshelve_point(self, point_id: str, kind: str, user: str,
                       at: float) -> tuple[Shelf, Change | None]:
        """Remove a shelf by point + kind, also when its alarm has cleared meanwhile.

        Returns the removed shelf and the changed open record, if any. With no open record
        the service journals ``alarm_unshelved`` itself with the shelf as data.
        """
        _need(user, "取消搁置须注明操作人", "unshelving needs a user")
        shelf = self.shelves.pop((point_id, kind), None)
        if shelf is None:
            raise AlarmConflict(f"{point_id} {kind} 未搁置 / {point_id} {kind} is not shelved")
        current = self.active(point_id, kind)
        if current is None or not current.shelved:
            return shelf, None
        rec = self._unshelved(current, at)
        self._keep(rec)
        return shelf, (rec, "unshelved")

    def expire_shelves(self, now: float) -> list[Change]:
        """Take off every shelf whose expiry has come; returns the changed open records.

        A shelf whose alarm has cleared goes silently: its end is ``shelved_until``, already
        in the journaled ``alarm_shelved`` record.
        """
        changed: list[Change] = []
        for key, shelf in list(self.shelves.items()):
            if shelf.until > now:
                continue
            del self.shelves[key]
            current = self.active(*key)
            if current is not None and current.shelved:
                rec = self._unshelved(current, now)
                self._keep(rec)
                changed.append((rec, "shelve_expired"))
        return changed

    @staticmethod
    def _unshelved(rec: AlarmRecord, at: float) -> AlarmRecord:
        return replace(rec, shelved=False, shelved_by=None, shelved_at=None,
                       shelved_until=None, shelve_reason=None, updated_at=at)

    # --- out of service ----------------------------------------------------------------------
    def set_out_of_service(self, point_id: str, user: str, reason: str, at: float,
                           until: float | None = None) -> tuple[OutOfService, list[Change]]:
        """Take a point out of service (maintenance). Its alarms are still recorded.

        Returns the audit entry (journal it as ``point_out_of_service``) and the open records
        of the point that stop being annunciated (safety-critical kinds never do).
        """
        user = _need(user, "停用须注明操作人", "out of service needs a user")
        reason = _need(reason, "停用须注明原因", "out of service needs a reason")
        if point_id in self.out_of_service:
            raise AlarmConflict(
                f"测点 {point_id} 已停用 / point {point_id} is already out of service")
        if until is not None and not until > at:
            raise AlarmInvalid("计划恢复时间必须晚于当前时间 / planned end must be in the future")
        entry = OutOfService(point_id, user, reason, at, until)
        self.out_of_service[point_id] = entry
        changed = []
        for rec in self._records_of(point_id):
            if rec.kind in SAFETY_CRITICAL or rec.out_of_service:
                continue
            new = replace(rec, out_of_service=True, updated_at=at)
            self._keep(new)
            changed.append((new, "out_of_service"))
        return entry, changed

    def return_to_service(self, point_id: str, user: str,
                          at: float) -> tuple[OutOfService, list[Change]]:
        """Put a point back in service; its open alarms are annunciated again.

        Returns the closed audit entry (``ended_at``/``ended_by`` in the journal data as
        ``point_in_service``) and the changed records.
        """
        user = _need(user, "恢复须注明操作人", "return to service needs a user")
        entry = self.out_of_service.pop(point_id, None)
        if entry is None:
            raise AlarmConflict(f"测点 {point_id} 未停用 / point {point_id} is not out of service")
        changed = []
        for rec in self._records_of(point_id):
            if rec.out_of_service:
                new = replace(rec, out_of_service=False, updated_at=at)
                self._keep(new)
                changed.append((new, "in_service"))
        return replace(entry, ended_at=at, ended_by=user), changed

    def overdue_out_of_service(self, now: float) -> list[OutOfService]:
        """Entries past their planned end (a reminder: returning to service stays manual)."""
        return [e for e in self.out_of_service.values() if e.until is not None and e.until <= now]

    def _records_of(self, point_id: str) -> list[AlarmRecord]:
        return [r for r in self.open.values() if r.point_id == point_id]

    # --- suppression by design -------------------------------------------------------------
    def update_suppression(self, places: Mapping[str, PointPlace],
                           downwind: Mapping[str, Collection[str]], at: float,
                           rules: Iterable[SuppressionRule] | None = None,
                           trigger: AlarmRecord | None = None) -> list[Change]:
        """Recompute ``suppressed`` for every open alarm; returns the records that changed.

        Alarms are visited oldest first and only active, unsuppressed alarms act as roots, so
        two alarms never hide each other and the root stays on the screen. ``trigger``: the
        alarm whose change calls for this; if no rule can involve it, nothing can change.
        """
        rules = tuple(DESIGN_SUPPRESSION if rules is None else rules)
        # Only alarms some rule could hide, or that could hide others (by sensor kind and
        # alarm kind), take part: an alarm storm of other kinds (e.g. every point stale at
        # once) must not cost O(n²) — neither per change nor over the storm.
        hideable = frozenset((pk, ak) for r in rules for pk in r.point_kinds
                             for ak in r.alarm_kinds if ak not in SAFETY_CRITICAL)
        hiding = frozenset((pk, ak) for r in rules for pk in r.root_point_kinds
                           for ak in r.root_alarm_kinds)

        def role(rec: AlarmRecord) -> tuple[PointPlace | None, bool, bool]:
            place = places.get(rec.point_id)
            if place is None:
                return None, False, False
            key = (place.kind, rec.kind)
            return place, key in hideable, key in hiding

        if trigger is not None and not any(role(trigger)[1:]):
            return []
        roots: list[tuple[str, PointPlace, str]] = []
        changed: list[Change] = []
        involved = [(r, *role(r)) for r in self.open.values()]
        involved = [x for x in involved if x[2] or x[3]]
        for rec, place, can_hide, can_root in sorted(involved,
                                                     key=lambda x: (x[0].raised_at, x[0].id)):
            assert place is not None
            root = None
            if can_hide and roots:
                root = suppressing_root(place, rec.kind, roots, downwind, rules)
            if root is None and rec.active and can_root:
                roots.append((rec.id, place, rec.kind))
            if (root is not None) != rec.suppressed or root != rec.suppressed_by:
                new = replace(rec, suppressed=root is not None, suppressed_by=root,
                              updated_at=at)
                self._keep(new)
                changed.append((new, "suppressed" if root else "unsuppressed"))
        return changed

    # --- comments ----------------------------------------------------------------------------
    def comment(self, alarm_id: str, user: str, text: str, at: float) -> Change:
        """Append a comment to an open alarm (for a cleared one use ``add_comment``)."""
        rec, transition = add_comment(self._get_open(alarm_id), user, text, at)
        self._keep(rec)
        return rec, transition

    def _keep(self, rec: AlarmRecord) -> None:
        key = (rec.point_id, rec.kind)
        if rec.state == "cleared":
            self.open.pop(rec.id, None)
            if self._by_key.get(key) == rec.id:
                del self._by_key[key]
        else:
            self.open[rec.id] = rec
            self._by_key[key] = rec.id


def add_comment(rec: AlarmRecord, user: str, text: str, at: float) -> Change:
    """A copy of ``rec`` with the comment appended (works on stored, cleared records too)."""
    user = _need(user, "备注须注明操作人", "a comment needs a user")
    text = _need(text, "备注内容不能为空", "a comment needs text")
    if len(text) > MAX_COMMENT_CHARS:
        raise AlarmInvalid(f"备注不能超过 {MAX_COMMENT_CHARS} 字 / "
                         f"a comment is limited to {MAX_COMMENT_CHARS} characters")
    comments = [*rec.comments, {"at": at, "user": user, "text": text}]
    return replace(rec, comments=comments, updated_at=at), "commented"


def screen_order(records: Iterable[AlarmRecord]) -> list[AlarmRecord]:
    """Order for the alarm screen (e.g. during a flood): root alarms first.

    Annunciated alarms by severity, unacknowledged before acknowledged, active before
    returned, newest first; each is followed by the alarms it suppresses; hidden ones
    (shelved, out of service, orphaned suppressed) come last.
    """
    recs = list(records)

    def rank(r: AlarmRecord) -> tuple:
        return (r.severity, r.state not in ("unack_active", "unack_rtn"), not r.active,
                -r.raised_at, r.id)

    children: dict[str, list[AlarmRecord]] = {}
    for r in recs:
        if r.suppressed and r.suppressed_by:
            children.setdefault(r.suppressed_by, []).append(r)
    out: list[AlarmRecord] = []
    for r in sorted((r for r in recs if r.annunciated), key=rank):
        out.append(r)
        out += sorted(children.pop(r.id, []), key=rank)
    placed = {r.id for r in out}
    out += sorted((r for r in recs if r.id not in placed), key=rank)
    return out


# --- suppression by design ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PointPlace:
    """Where a point is, for deciding upstream/downstream: area, sensor kind, roadway position."""

    area: str
    kind: str  # sensor kind (ch4, fan, wind, ...)
    roadway: str | None = None
    at: float = 0.5  # position along the roadway, in the direction of the air


@dataclass(frozen=True, slots=True)
class SuppressionRule:
    """While a root alarm (sensor kind + alarm kinds) is active, hide consequence alarms.

    Consequences are alarms of ``point_kinds`` × ``alarm_kinds`` in the root's area and, with
    ``downwind``, in the areas downwind of it. With ``upstream_only`` a consequence in the same
    area must be on the same roadway and further along the air (a larger ``at``).
    """

    root_point_kinds: frozenset[str]
    root_alarm_kinds: frozenset[str]
    point_kinds: frozenset[str]
    alarm_kinds: frozenset[str]
    downwind: bool = False
    upstream_only: bool = False


DESIGN_SUPPRESSION: tuple[SuppressionRule, ...] = (
    # The heading's local fan stopped (or its switch sensor failed): low wind in the heading
    # is its consequence, the fan alarm is the root the operator acts on.
    SuppressionRule(frozenset({"fan"}), frozenset({"under_limit", "fault", "stale"}),
                    frozenset({"wind"}), frozenset({"under_limit"})),
    # Methane over the alarm limit travels with the air: the same gas raises every sensor
    # downstream. Only the plain over-limit alarms are hidden; power-cut alarms never are.
    SuppressionRule(frozenset({"ch4"}), frozenset({"over_limit", "power_cut_limit"}),
                    frozenset({"ch4"}), frozenset({"over_limit"}), downwind=True,
                    upstream_only=True),
)


def suppressing_root(place: PointPlace, alarm_kind: str,
                     roots: Iterable[tuple[str, PointPlace, str]],
                     downwind: Mapping[str, Collection[str]],
                     rules: Iterable[SuppressionRule] = DESIGN_SUPPRESSION) -> str | None:
    """The id of the active root alarm that suppresses an alarm at ``place``, or None.

    ``roots`` are (alarm id, place, alarm kind) of active, unsuppressed alarms; ``downwind``
    maps an area to the areas on its return air (``Area.downwind`` in the mine file).
    """
    if alarm_kind in SAFETY_CRITICAL:
        return None
    rules = tuple(rules)
    for root_id, root, root_kind in roots:
        for rule in rules:
            if (root.kind not in rule.root_point_kinds or root_kind not in rule.root_alarm_kinds
                    or place.kind not in rule.point_kinds or alarm_kind not in rule.alarm_kinds):
                continue
            if place.area == root.area:
                if not rule.upstream_only or (
                        place.roadway is not None and place.roadway == root.roadway
                        and place.at > root.at):
                    return root_id
            elif rule.downwind and place.area in downwind.get(root.area, ()):
                return root_id
    return None


def places_from_mine(mine: Any) -> dict[str, PointPlace]:
    """Point id → place, from a ``minewatch.mine.Mine``."""
    return {p.id: PointPlace(p.area, p.kind, p.roadway, p.at) for p in mine.points}


def downwind_from_mine(mine: Any) -> dict[str, frozenset[str]]:
    return {a.id: frozenset(a.downwind) for a in mine.areas}


# --- recovery of shelves and out-of-service entries from the journal ---------------------------


def controls_from_journal(rows: Iterable[Any], now: float | None = None,
                          ) -> tuple[list[Shelf], list[OutOfService]]:
    """Replay journal rows (``JournalRow`` or dicts with at/event/data) into the shelves and
    out-of-service entries in force, for ``AlarmBook.restore`` after a restart."""
    shelves: dict[tuple[str, str], Shelf] = {}
    oos: dict[str, OutOfService] = {}
    for row in rows:
        event, data = _field(row, "event"), _field(row, "data") or {}
        point, kind = data.get("point_id"), data.get("kind")
        if event == "alarm_shelved" and data.get("shelved_until") is not None:
            shelves[(point, kind)] = Shelf(point, kind, data.get("shelved_by") or "",
                                           data.get("shelve_reason") or "",
                                           data.get("shelved_at") or _field(row, "at"),
                                           data["shelved_until"], data.get("id"))
        elif event in ("alarm_unshelved", "alarm_shelve_expired"):
            shelves.pop((point, kind), None)
        elif event == POINT_OUT_OF_SERVICE:
            oos[point] = OutOfService.from_dict(data)
        elif event == POINT_IN_SERVICE:
            oos.pop(point, None)
    live = [s for s in shelves.values() if now is None or s.until > now]
    return live, list(oos.values())


def _field(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)

