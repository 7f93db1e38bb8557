"""Per-channel reference of the noise-control rules: the oracle for ``alarms/noise.py``.

Each function takes one channel's (or one position's) whole history in time order and returns
what the operator should have seen; ``until`` is the time of the final sweep.
"""

from __future__ import annotations

import math


def ref_delay(inputs: list[tuple[float, bool]], on: float, off: float,
              until: float) -> list[tuple[float, bool, float]]:
    """On/off-delay by runs: a run of one condition value that lasts at least its delay
    changes the output at run start + delay. Returns (at, raised, since)."""
    runs: list[tuple[float, bool]] = [(-math.inf, False)]
    for t, raw in inputs:
        if raw != runs[-1][1]:
            runs.append((t, raw))
    out, edges = False, []
    for i, (start, value) in enumerate(runs):
        end = runs[i + 1][0] if i + 1 < len(runs) else until
        delay = on if value else off
        if value != out and start + delay <= end:
            out = value
            edges.append((start + delay, value, start))
    return edges


def ref_chatter(edges: list[tuple[float, bool, float]], k: int, window: float, stable: float,
                critical: bool, until: float
                ) -> tuple[list[tuple[float, bool, float]], list[tuple[bool, float, int]]]:
    """Returns (annunciated (at, raised, since), records (started, at, count))."""
    acts: list[float] = []
    chattering, last_change, cond, shown, count = False, -math.inf, False, False, 0
    shown_edges, records = [], []

    def end_if_stable(now: float) -> None:
        nonlocal chattering, shown
        if chattering and last_change + stable <= now:
            chattering = False
            records.append((False, last_change + stable, count))
            if shown != cond:
                shown = cond
                shown_edges.append((last_change + stable, cond, last_change))

    for at, raised, since in edges:
        end_if_stable(at)
        if raised:
            acts.append(at)
            count += chattering
            if not chattering and len(acts) >= k and acts[-k] >= at - window:
                chattering, count = True, 1
                records.append((True, at, k))
        last_change, cond = at, raised
        if (not chattering or critical) and shown != raised:
            shown = raised
            shown_edges.append((at, raised, since))
    end_if_stable(until)
    return shown_edges, records


def ref_flood(times: list[float], window: float, start_above: int, end_below: int,
              until: float) -> list[tuple[bool, float, int, int]]:
    """Flood episodes of one position from its annunciated alarm times (sorted).
    Returns (started, at, alarms, peak)."""
    seen: list[float] = []
    flooding, alarms, peak, out = False, 0, 0, []

    def end_if_quiet(now: float) -> None:
        nonlocal flooding
        if flooding and len(seen) >= end_below:
            due = seen[-end_below] + window
            if due <= now:
                flooding = False
                out.append((False, due, alarms, peak))

    for t in times:
        end_if_quiet(t)
        seen.append(t)
        count = sum(1 for x in seen if x > t - window)
        if flooding:
            alarms += 1
            peak = max(peak, count)
        elif count > start_above:
            flooding, alarms, peak = True, count, count
            out.append((True, t, count, count))
    end_if_quiet(until)
    return out
