"""Regulators' statistics (监管统计) as pure functions: no I/O, no clock, no service.

What regulators look at (DOMAIN.md): the count and duration of over-limit events per point,
where the alarms of one point form **one event while the gap between the end of one and the
start of the next is ≤ 10 minutes** ("same point, gap > 10 min = new event"); the maximum
concentration; power cuts and how fast they came; sensor fault periods.

Conventions used throughout:

- An interval is ``(start, end)`` in epoch seconds; ``end is None`` means still open.
- A period is half-open ``[lo, hi)``. An open interval is counted up to ``until`` (normally
  ``hi``; the API passes ``min(hi, now)`` so time that has not happened yet is not counted).
- An event *belongs to* a period when it overlaps it; its duration in the period is clipped
  to the period bounds, so an event straddling a bound counts once, with the part inside.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from minewatch.records import AlarmRecord, CommandRecord

EVENT_GAP_S = 600.0  # same point, gap > 10 min = new event
OVER_LIMIT_KINDS = ("over_limit", "power_cut_limit")
FAULT_KINDS = ("fault", "stale")

Interval = tuple[float, float | None]


@dataclass(frozen=True)
class Event:
    """Merged alarms of one point: ``end`` None while the last of them is still open."""

    start: float
    end: float | None
    parts: int = 1

    @property
    def open(self) -> bool:
        return self.end is None


def merge_events(intervals: Iterable[Interval], gap_s: float = EVENT_GAP_S) -> list[Event]:
    """Merge intervals into events: the next one joins the current event when it starts no
    more than ``gap_s`` after the current event ends (a gap of exactly ``gap_s`` merges;
    overlapping or nested intervals always merge). An open interval keeps its event open,
    and every later interval joins it.
    """
    events: list[Event] = []
    for start, end in sorted(intervals, key=lambda iv: (iv[0], math.inf if iv[1] is None
                                                         else iv[1])):
        if end is not None and end < start:  # clock skew between source and server
            end = start
        if events:
            cur = events[-1]
            if cur.end is None or start - cur.end <= gap_s:
                new_end = None if cur.end is None or end is None else max(cur.end, end)
                events[-1] = Event(cur.start, new_end, cur.parts + 1)
                continue
        events.append(Event(start, end, 1))
    return events


def effective_end(end: float | None, until: float) -> float:
    """End of an interval for counting: an open one runs until ``until``."""
    return until if end is None else end


def overlaps(start: float, end: float | None, lo: float, hi: float, until: float) -> bool:
    """Does the interval overlap ``[lo, hi)``? A zero-length interval counts where it sits."""
    stop = max(start, effective_end(end, until))
    return start < hi and (stop > lo or start >= lo)


def clipped_duration(start: float, end: float | None, lo: float, hi: float,
                     until: float | None = None) -> float:
    """Seconds of ``[start, end)`` inside ``[lo, hi)``; an open interval runs to ``until``
    (default ``hi``) and never beyond ``hi``."""
    until = hi if until is None else until
    stop = min(effective_end(end, until), hi)
    return max(0.0, stop - max(start, lo))


def events_in_period(events: Iterable[Event], lo: float, hi: float,
                     until: float | None = None) -> list[tuple[Event, float]]:
    """The events overlapping ``[lo, hi)`` with their duration clipped to it."""
    until = hi if until is None else until
    return [(e, clipped_duration(e.start, e.end, lo, hi, until)) for e in events
            if overlaps(e.start, e.end, lo, hi, until)]


def union_duration(intervals: Iterable[Interval], lo: float, hi: float,
                   until: float | None = None) -> float:
    """Seconds of ``[lo, hi)`` covered by at least one interval (overlaps counted once)."""
    until = hi if until is None else until
    merged = merge_events(intervals, gap_s=0.0)
    return sum(clipped_duration(e.start, e.end, lo, hi, until) for e in merged)


def aligned_cover(lo: float, hi: float, widths: Sequence[int] = (3600, 60)
                  ) -> list[tuple[int, float, float]]:
    """Split ``[lo, hi)`` into segments ``(width, a, b)``: whole aligned buckets of the
    largest width that fit (rollups), the ragged ends with the next width down, and what is
    left below the smallest width as ``width 0`` (raw readings). Segments are disjoint,
    ordered, and cover ``[lo, hi)`` exactly."""
    if hi <= lo:
        return []
    if not widths:
        return [(0, lo, hi)]
    w, rest = widths[0], widths[1:]
    a = math.ceil(lo / w) * w
    b = math.floor(hi / w) * w
    if a >= b:
        return aligned_cover(lo, hi, rest)
    return [*aligned_cover(lo, a, rest), (w, float(a), float(b)), *aligned_cover(b, hi, rest)]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class PointStats:
    point_id: str
    over_limit_events: int = 0
    over_limit_s: float = 0.0
    open_events: int = 0
    power_cuts: int = 0
    cut_delays_s: list[float] = field(default_factory=list)
    fault_s: float = 0.0

    @property
    def mean_time_to_power_cut_s(self) -> float | None:
        return mean(self.cut_delays_s)

    @property
    def max_time_to_power_cut_s(self) -> float | None:
        return max(self.cut_delays_s) if self.cut_delays_s else None

    @property
    def sensor_fault_hours(self) -> float:
        return self.fault_s / 3600.0


def point_statistics(point_ids: Iterable[str], alarms: Iterable[AlarmRecord],
                     commands: Iterable[CommandRecord], lo: float, hi: float,
                     until: float | None = None, gap_s: float = EVENT_GAP_S
                     ) -> dict[str, PointStats]:
    """Per point, for the period ``[lo, hi)``:

    - over-limit events: over_limit / power_cut_limit alarms merged by :func:`merge_events`,
      counted when they overlap the period, durations clipped to it (open ones up to
      ``until``);
    - power cuts: cut commands issued in the period whose alarm is one of the point's;
    - time to power cut: for each of those commands with a ``sent_at``, seconds from its
      alarm's ``raised_at`` to ``sent_at``;
    - sensor fault time: union of fault and stale alarm intervals, clipped to the period.

    Drill alarms are ignored here whatever the caller passes. ``alarms`` should include those
    raised before ``lo`` that may reach into the period (and may merge with its events).
    """
    until = hi if until is None else until
    stats = {p: PointStats(p) for p in point_ids}
    over: dict[str, list[Interval]] = {}
    fault: dict[str, list[Interval]] = {}
    by_id: dict[str, AlarmRecord] = {}
    for a in alarms:
        if a.drill:
            continue
        by_id[a.id] = a
        if a.point_id not in stats:
            continue
        if a.kind in OVER_LIMIT_KINDS:
            over.setdefault(a.point_id, []).append((a.raised_at, a.cleared_at))
        elif a.kind in FAULT_KINDS:
            fault.setdefault(a.point_id, []).append((a.raised_at, a.cleared_at))
    for pid, intervals in over.items():
        found = events_in_period(merge_events(intervals, gap_s), lo, hi, until)
        st = stats[pid]
        st.over_limit_events = len(found)
        st.over_limit_s = sum(d for _, d in found)
        st.open_events = sum(1 for e, _ in found if e.open)
    for pid, intervals in fault.items():
        stats[pid].fault_s = union_duration(intervals, lo, hi, until)
    for c in commands:
        if c.action != "cut" or not (lo <= c.issued_at < hi):
            continue
        alarm = by_id.get(c.alarm_id or "")
        if alarm is None or alarm.point_id not in stats:
            continue
        st = stats[alarm.point_id]
        st.power_cuts += 1
        if c.sent_at is not None:
            st.cut_delays_s.append(max(0.0, c.sent_at - alarm.raised_at))
    return stats


def cut_delays(alarms: Iterable[AlarmRecord], commands: Iterable[CommandRecord],
               lo: float, hi: float) -> list[float]:
    """Alarm raised → command sent, seconds, for every cut command issued in ``[lo, hi)``
    that names a known (non-drill) alarm and was sent."""
    by_id = {a.id: a for a in alarms if not a.drill}
    out = []
    for c in commands:
        if c.action != "cut" or c.sent_at is None or not (lo <= c.issued_at < hi):
            continue
        alarm = by_id.get(c.alarm_id or "")
        if alarm is not None:
            out.append(max(0.0, c.sent_at - alarm.raised_at))
    return out
