"""Engine evaluation time per batch with all rules on, vs the per-reading reference.

One batch = one reading per point (a full poll of every point, slots in substation/channel
order), through:
  alarms.engine.evaluate (thresholds with hysteresis, cut/restore, fault, stale)
  + alarms.trend.push (the W-sample ring buffer) + evaluate_trend (slope, time-to-limit
    forecast, trend bit with hysteresis)
  + alarms.integrity.evaluate_integrity (flat line, drop to fresh air, negative drift,
    upstream disagreement, calibration misuse).
Points are CH4 sensors (every rule applies) on airflows of three (face → corner → return:
upstream/downstream neighbours, 3-sample lag), all expected to vary, 1 % with a declared
calibration window; values wander around 0.05-0.6 % (alike along an airflow) with 0.005 %
noise, 0.05 % faulty readings.
Windows are filled first (W batches), then R batches are timed (median).

The per-reading reference (tests/reference_*.py) runs the same rules in the same process on
10k points with full windows; ``speedup_vs_reference`` = reference time per reading /
vectorized time per reading (both at 10k points).

glibc: by default every numpy temporary ≥ 128 kB is mmap'ed and unmapped again, and touching
the fresh pages costs ~0.2 ms per operation on 100k float64 here. The bench raises the mmap and
trim thresholds with mallopt (what the service should do at start, see the report) and also
runs the 100k case in a child process with the default allocator
(``ms_per_batch_100k_default_malloc``).

Usage: python bench/engine.py [--quick] [--window 60] [--no-mallopt] [--sizes 1000,10000]
Last line: one JSON object (ms_per_batch_1k, _10k, _100k, _1m (not in --quick),
speedup_vs_reference, per-stage figures at 100k, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the reference implementations live in tests/


import numpy as np  # noqa: E402

from alarms.engine import evaluate, new_state  # noqa: E402
from alarms.integrity import (  # noqa: E402
    DEFAULT_INTEGRITY,
    IntegrityParams,
    evaluate_integrity,
    integrity_state_for,
)
from alarms.trend import (  # noqa: E402
    DEFAULT_TREND,
    WindowParams,
    evaluate_trend,
    judged,
    new_window,
    push,
    trend_figures,
    trend_state_for,
)
from minewatch.readings import Quality  # noqa: E402
from minewatch.tuning import tune_malloc  # noqa: E402

T0 = 1_780_000_000.0
POLL_S = 0.5
LAG = 3
CH4 = dict(alarm_hi=1.0, alarm_lo=math.nan, cut=1.5, restore=1.0, deadband=0.0,
           stale_after=2 * POLL_S)


def layout(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Airflows of three consecutive slots: face → corner → return."""
    i = np.arange(n)
    up = np.where(i % 3 == 0, -1, i - 1)
    down = np.where((i % 3 == 2) | (i == n - 1), -1, i + 1)
    lag = np.where(up >= 0, LAG, 0)
    return up, down, lag


class Mine:
    """Vectorized state for n CH4 points and the batches to feed it."""

    def __init__(self, n: int, width: int, seed: int = 1) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.engine = new_state(*(np.full(n, CH4[k]) for k in
                                  ("alarm_hi", "alarm_lo", "cut", "restore", "deadband",
                                   "stale_after")))
        self.win = new_window(n, WindowParams(size=width, reset_gap_s=60.0))
        self.trend = trend_state_for(["ch4"] * n, self.engine.alarm_hi)
        up, down, lag = layout(n)
        self.integrity = integrity_state_for(["ch4"] * n, np.ones(n, bool), up, down, lag,
                                             width=width)
        cal = np.flatnonzero(self.rng.random(n) < 0.01)
        self.integrity.declare_calibration(cal, T0, T0 + 600.0)
        # One airflow reads alike: the corner a little higher, the return a little lower.
        face = np.repeat(self.rng.uniform(0.05, 0.5, -(-n // 3)), 3)[:n]
        offset = np.tile([0.0, 0.08, -0.03], -(-n // 3))[:n]
        self.base = face + offset + self.rng.uniform(-0.02, 0.02, n)
        self.slots = np.arange(n)
        self.k = 0

    def batch(self):
        self.k += 1
        self.base += self.rng.normal(0, 0.0005, self.n)
        values = self.base + self.rng.normal(0, 0.005, self.n)
        quality = np.zeros(self.n, np.int8)
        quality[self.rng.random(self.n) < 0.0005] = Quality.FAULT
        ts = np.full(self.n, T0 + self.k * POLL_S)
        return self.slots, ts, values, quality, T0 + self.k * POLL_S

    def step(self, slots, ts, values, quality, received) -> list[float]:
        """All rules on one batch; returns the stage times in seconds."""
        t0 = time.perf_counter()
        evaluate(self.engine, slots, ts, values, quality, received)
        t1 = time.perf_counter()
        valid = judged(values, quality)
        accepted = push(self.win, slots, ts, values, valid)
        t2 = time.perf_counter()
        evaluate_trend(self.trend, self.win, slots)
        t3 = time.perf_counter()
        evaluate_integrity(self.integrity, self.win, slots, ts, quality, accepted)
        t4 = time.perf_counter()
        return [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0]


def measure(n: int, width: int, repeats: int, shuffled: bool = False) -> dict:
    mine = Mine(n, width)
    if shuffled:
        mine.slots = mine.rng.permutation(n)
    for _ in range(width + 2):  # fill the windows
        mine.step(*mine.batch())
    batches = [mine.batch() for _ in range(repeats)]
    stages = np.array([mine.step(*b) for b in batches]) * 1e3
    med = np.median(stages, axis=0)
    t = time.perf_counter()
    trend_figures(mine.trend, mine.win)
    figures_ms = (time.perf_counter() - t) * 1e3
    return {"engine": med[0], "push": med[1], "trend": med[2], "integrity": med[3],
            "total": med[4], "p90": float(np.percentile(stages[:, 4], 90)),
            "figures": figures_ms}


def reference_ms_per_reading(n: int, width: int, batches: int) -> float:
    """The per-reading reference of the same rules, windows pre-filled, per reading."""
    from tests.reference_engine import ReferenceEngine
    from tests.reference_integrity import ReferenceIntegrity
    from tests.reference_trend import ReferenceTrend, RefWindow

    mine = Mine(n, width)
    up, down, lag = layout(n)
    tp, ip = DEFAULT_TREND["ch4"], DEFAULT_INTEGRITY["ch4"]
    engine = ReferenceEngine([dict(CH4) for _ in range(n)])
    win = RefWindow(n, width, 60.0)
    trend = ReferenceTrend(win, [dict(rate=tp.rate_per_min, horizon=tp.horizon_s,
                                      hysteresis=tp.hysteresis, min_samples=tp.min_samples,
                                      limit=1.0) for _ in range(n)])
    params = {f: getattr(ip, f) for f in IntegrityParams.__slots__}
    integrity = ReferenceIntegrity(win, [dict(params, expects_noise=True, up=int(up[i]),
                                              down=int(down[i]), lag=int(lag[i]))
                                         for i in range(n)])
    for i in range(n):  # full windows, as in the vectorized measurement
        p = win.slots[i]
        p.cells = deque(((T0 - (width - j) * POLL_S, float(mine.base[i])) for j in
                         range(width)), maxlen=width)
        p.last_ts = p.last_vts = T0 - POLL_S
        p.last_valid, p.last_value = True, float(mine.base[i])
    elapsed = 0.0
    for _ in range(batches):
        slots, ts, values, quality, received = mine.batch()
        rows = list(zip(slots.tolist(), ts.tolist(), values.tolist(), quality.tolist(),
                        judged(values, quality).tolist(), strict=True))
        t = time.perf_counter()
        for s, tt, v, q, ok in rows:
            engine.apply(s, tt, v, q, received)
            if win.push(s, tt, v, ok):
                integrity.observe(s, tt, v, ok, q)
        trend.evaluate(slots.tolist())
        integrity.evaluate()
        elapsed += time.perf_counter() - t
    return elapsed * 1e3 / (batches * n)


def default_malloc_100k(width: int) -> float | None:
    out = subprocess.run([sys.executable, __file__, "--no-mallopt", "--sizes", "100000",
                          "--no-reference", "--window", str(width)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1]).get("ms_per_batch_100k")


KEYS = {1_000: "1k", 10_000: "10k", 100_000: "100k", 1_000_000: "1m"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1k, 10k, 100k only (< 1 min)")
    ap.add_argument("--window", type=int, default=60, help="ring-buffer samples per point")
    ap.add_argument("--sizes", help="comma-separated point counts (overrides --quick)")
    ap.add_argument("--no-mallopt", action="store_true", help="glibc's default allocator")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()
    tuned = False if args.no_mallopt else tune_malloc()
    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes else
             [1_000, 10_000, 100_000] + ([] if args.quick else [1_000_000]))

    result: dict[str, float | int | bool] = {"window": args.window, "mallopt": tuned}
    print(f"window {args.window} samples/point, mallopt {'on' if tuned else 'off'}; "
          "ms per batch of one reading per point (median)")
    print(f"{'points':>9} {'engine':>8} {'push':>8} {'trend':>8} {'integr.':>8} "
          f"{'total':>8} {'p90':>8} {'ns/pt':>7}")
    for n in sizes:
        repeats = 10 if n >= 1_000_000 else 40
        m = measure(n, args.window, repeats)
        print(f"{n:>9} {m['engine']:8.3f} {m['push']:8.3f} {m['trend']:8.3f} "
              f"{m['integrity']:8.3f} {m['total']:8.3f} {m['p90']:8.3f} "
              f"{m['total'] * 1e6 / n:7.1f}")
        key = KEYS.get(n, str(n))
        result[f"ms_per_batch_{key}"] = round(m["total"], 4)
        if n == 100_000 or len(sizes) == 1:
            for stage in ("engine", "push", "trend", "integrity", "figures"):
                result[f"{stage}_ms_{key}"] = round(m[stage], 4)
            result[f"p90_ms_{key}"] = round(m["p90"], 4)
    if 100_000 in sizes and not args.no_reference:
        s = measure(100_000, args.window, 10, shuffled=True)
        print(f"100k points in shuffled slot order (gathers instead of slices): "
              f"{s['total']:.3f} ms")
        result["ms_per_batch_100k_shuffled"] = round(s["total"], 4)
        if tuned:
            d = default_malloc_100k(args.window)
            if d is not None:
                print(f"100k points with glibc's default malloc thresholds: {d:.3f} ms")
                result["ms_per_batch_100k_default_malloc"] = d
    if not args.no_reference:
        n_ref = 10_000
        vec = measure(n_ref, args.window, 40)["total"] / n_ref
        ref = reference_ms_per_reading(n_ref, args.window, 2)
        result["reference_us_per_reading"] = round(ref * 1e3, 3)
        result["vectorized_us_per_reading"] = round(vec * 1e3, 5)
        result["speedup_vs_reference"] = round(ref / vec, 1)
        print(f"reference (per reading, {n_ref} points): {ref * 1e3:.2f} µs/reading; "
              f"vectorized {vec * 1e6:.1f} ns/reading; speedup {ref / vec:.0f}×")
    result.update(state_bytes_per_point(args.window))
    print(f"state per point: window {result['window_bytes_per_point']} B, trend "
          f"{result['trend_bytes_per_point']} B, integrity {result['integrity_bytes_per_point']} B"
          f" (engine v0 {result['engine_bytes_per_point']} B)")
    print(json.dumps(result))


def state_bytes_per_point(width: int, n: int = 3000) -> dict[str, int]:
    mine = Mine(n, width)

    def size(obj) -> int:
        arrays = (getattr(obj, f) for f in obj.__slots__)
        return round(sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)) / n)

    return {"window_bytes_per_point": size(mine.win), "trend_bytes_per_point": size(mine.trend),
            "integrity_bytes_per_point": size(mine.integrity),
            "engine_bytes_per_point": size(mine.engine)}


if __name__ == "__main__":
    main()
