"""Detection-to-action latency of a running minewatch on its simulated Modbus mine.

For each injection the simulator switches a methane point above its power-cut limit at t0
(server clock, recorded by the simulator), and we measure
  (a) cut:  t0 → the last relay coil of the point's power-cut range written on the simulator,
  (b) ws:   t0 → the power_cut_limit alarm received by a WebSocket client (this process),
  (c) processing: collector received the over-limit reading → coil write sent (in-process).
Injections start at a random phase of the poll cycle, so (a) and (b) include the wait for the
next poll (uniform over one poll period): the regulation limit is 2 s, DESIGN.md aims at
one poll period + 20 ms. The baseline printed beside them is the poll period itself.

Usage: python bench/latency.py [--quick] [--injections N] [--point 001A02]
Last line: one JSON object with cut_p50_ms, cut_p99_ms, ws_p50_ms, ws_p99_ms,
processing_p99_ms, poll_period_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect

from minewatch.procs import ServiceProcess, start_service


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2)


async def wait_alarm(ws, point: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no power_cut_limit alarm for {point}")
        msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        if (msg.get("type") == "alarm" and msg["transition"] == "raised"
                and msg["alarm"]["kind"] == "power_cut_limit"
                and msg["alarm"]["point_id"] == point):
            return time.time()


async def measure(svc: ServiceProcess, point: str, n: int, poll_s: float) -> dict:
    relays = svc.get(f"/api/v1/points/{point}").json()["relays"]
    cut_ms, ws_ms, proc_ms = [], [], []
    async with connect(svc.ws("/ws/alarms")) as ws:
        await ws.recv()  # snapshot
        for _ in range(n):
            await asyncio.sleep(random.uniform(0, poll_s))
            inj = await asyncio.to_thread(svc.inject, "gas-overlimit", point)
            t0 = inj["at"]
            t_ws = await wait_alarm(ws, point, timeout=5)
            ws_ms.append((t_ws - t0) * 1000)

            def cut_done():
                states = {r["relay"]: r for r in svc.get("/api/v1/sim").json()["relays"]}
                if all(states[r]["open"] for r in relays):
                    return max(states[r]["changed_at"] for r in relays)
                return None
            t_cut = await asyncio.to_thread(svc.wait_for, cut_done, 5, 0.02)
            cut_ms.append((t_cut - t0) * 1000)
            cmds = await asyncio.to_thread(lambda: svc.get("/api/v1/commands",
                                                           params={"limit": 20}).json())
            mine = [c for c in cmds if c["action"] == "cut" and c["target"] in relays
                    and c["sent_latency_ms"] is not None][: len(relays)]
            proc_ms.append(max(c["sent_latency_ms"] for c in mine))
            # Back to normal: clear the gas, wait for the engine to see it, restore by hand.
            await asyncio.to_thread(svc.inject, "clear", point)
            await asyncio.to_thread(svc.wait_for, lambda: svc.get(
                f"/api/v1/points/{point}").json()["state"] == "normal", 5, 0.05)
            for r in relays:
                resp = await asyncio.to_thread(svc.post, f"/api/v1/relays/{r}/restore",
                                               json={"user": "bench", "reason": "bench"})
                if resp.status_code != 200:
                    raise RuntimeError(f"restore {r}: {resp.text}")
    return {"cut": cut_ms, "ws": ws_ms, "processing": proc_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 injections (under a minute)")
    ap.add_argument("--injections", type=int, default=100)
    ap.add_argument("--point", default="001A02")
    args = ap.parse_args()
    n = 10 if args.quick else args.injections
    with tempfile.TemporaryDirectory() as tmp:
        svc = start_service(Path(tmp))
        try:
            subs = svc.get("/api/v1/substations").json()
            point = svc.get(f"/api/v1/points/{args.point}").json()
            poll_ms = next(s["poll_ms"] for s in subs if s["id"] == point["substation"])
            res = asyncio.run(measure(svc, args.point, n, poll_ms / 1000))
        finally:
            svc.stop()
    out = {
        "injections": n,
        "poll_period_ms": poll_ms,
        "cut_p50_ms": pct(res["cut"], 50), "cut_p99_ms": pct(res["cut"], 99),
        "cut_max_ms": round(max(res["cut"]), 2),
        "ws_p50_ms": pct(res["ws"], 50), "ws_p99_ms": pct(res["ws"], 99),
        "processing_p50_ms": pct(res["processing"], 50),
        "processing_p99_ms": pct(res["processing"], 99),
        "regulation_limit_ms": 2000,
        "cut_p99_vs_poll_period": round(pct(res["cut"], 99) / poll_ms, 3),
        "cut_p99_vs_regulation": round(pct(res["cut"], 99) / 2000, 3),
    }
    print(f"{'measure':<14}{'p50 ms':>10}{'p99 ms':>10}")
    for k in ("cut", "ws", "processing"):
        print(f"{k:<14}{pct(res[k], 50):>10}{pct(res[k], 99):>10}")
    print(f"poll period {poll_ms} ms; regulation limit 2000 ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
