"""Time-range query parameters shared by every route: one parser, one set of bounds."""

from __future__ import annotations

import math
import time

from fastapi import HTTPException

from minewatch.readings import parse_time

DAY = 86400
T_MIN, T_MAX = 0.0, 253_402_300_799.0  # 1970-01-01 … 9999-12-31T23:59:59Z


def parse_param(name: str, text: str | None) -> float | None:
    """ISO 8601 or epoch seconds → epoch seconds; a clear 422 naming the parameter."""
    if text is None:
        return None
    try:
        t = parse_time(text.strip())
    except (ValueError, OverflowError) as exc:
        raise HTTPException(422, f"{name}: not an ISO 8601 time or epoch seconds: {text!r}") \
            from exc
    if not math.isfinite(t):
        raise HTTPException(422, f"{name}: not a finite time")
    if not T_MIN <= t <= T_MAX:
        raise HTTPException(422, f"{name}: out of range (1970-01-01 … 9999-12-31)")
    return t


def period(t_from: str | None, t_to: str | None, max_span: float, default_span: float,
           what: str = "", *, to_pad: float = 0.0) -> tuple[float, float]:
    """A bounded [from, to): ``to`` defaults to now (+ ``to_pad``), ``from`` to ``to`` less
    ``default_span``; no request may span more than ``max_span`` seconds."""
    hi = parse_param("to", t_to)
    lo = parse_param("from", t_from)
    hi = time.time() + to_pad if hi is None else hi
    lo = max(T_MIN, hi - default_span) if lo is None else lo
    if lo >= hi:
        raise HTTPException(422, "from must be earlier than to")
    if hi - lo > max_span:
        raise HTTPException(422, f"time range too large{what} (max {max_span / DAY:g} days)")
    return lo, hi


def optional_period(t_from: str | None, t_to: str | None) -> tuple[float | None, float | None]:
    """Open-ended bounds (either may be absent), checked for order."""
    lo, hi = parse_param("from", t_from), parse_param("to", t_to)
    if lo is not None and hi is not None and lo >= hi:
        raise HTTPException(422, "from must be earlier than to")
    return lo, hi
