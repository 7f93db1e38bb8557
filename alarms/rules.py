"""All per-batch alarm rules composed in the one order the service runs them (pure).

Thresholds (alarms.engine) first, because the power-cut edge must leave before anything else
is computed; then the batch goes into the trend window, and trend and sensor-integrity
detectors read the window; interlocks (alarms.lockouts) read the engine's state after the
batch. Having the order in one function means the service, ``bench/engine.py`` and the
combined property test (tests/test_rules_property.py) run exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alarms.engine import EngineState, Events, evaluate
from alarms.integrity import IntegrityEvents, IntegrityState, evaluate_integrity
from alarms.lockouts import LockoutResult, LockoutState, LockoutTopology, evaluate_lockouts
from alarms.trend import TrendEvents, TrendState, Window, evaluate_trend, judged, push


@dataclass(slots=True)
class RuleState:
    engine: EngineState
    window: Window
    trend: TrendState
    integrity: IntegrityState
    topology: LockoutTopology | None = None
    locks: LockoutState | None = None


@dataclass(slots=True)
class RuleEvents:
    thresholds: Events
    trend: TrendEvents
    integrity: IntegrityEvents
    locks: LockoutResult | None


def evaluate_thresholds(state: RuleState, slots, ts, values, quality,
                        received_at: float | None = None) -> Events:
    """Stage 1: the safety-critical threshold edges (the caller acts on cuts at once)."""
    return evaluate(state.engine, slots, ts, values, quality, received_at)


def evaluate_window_rules(state: RuleState, slots, ts, values, quality,
                          ) -> tuple[TrendEvents, IntegrityEvents]:
    """Stage 2: push the batch into the window, then trend and integrity over it."""
    values = np.asarray(values, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.int8)
    accepted = push(state.window, slots, ts, values, judged(values, quality))
    trend = evaluate_trend(state.trend, state.window, slots)
    integrity = evaluate_integrity(state.integrity, state.window, slots, ts, quality, accepted)
    return trend, integrity


def evaluate_locks(state: RuleState) -> LockoutResult | None:
    """Stage 3: interlocks over the engine state (None when no topology is configured)."""
    if state.topology is None or state.locks is None:
        return None
    e = state.engine
    return evaluate_lockouts(state.topology, state.locks, e.value, e.quality, e.bits,
                             e.restore)


def evaluate_rules(state: RuleState, slots, ts, values, quality,
                   received_at: float | None = None, *, locks: bool = True) -> RuleEvents:
    """Every rule on one batch, in service order."""
    thresholds = evaluate_thresholds(state, slots, ts, values, quality, received_at)
    trend, integrity = evaluate_window_rules(state, slots, ts, values, quality)
    return RuleEvents(thresholds, trend, integrity, evaluate_locks(state) if locks else None)
