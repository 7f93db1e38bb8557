"""Modbus TCP collector: polls one substation at its poll period and writes its relay coils.

A substation that stops answering never crashes the collector: the error is logged and
counted, the connection is retried with capped exponential backoff, and the engine's stale
sweep turns the silence into an alarm (fail safe). Polls are scheduled at a fixed rate from a
monotonic clock so a slow read does not drift the cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from minewatch.mine import Mine, Substation, Thresholds
from minewatch.readings import Batch
from minewatch.registers import decode, read_spans

log = logging.getLogger("minewatch.ingest.modbus")

BatchHandler = Callable[[Batch], Awaitable[None]]


class SubstationError(RuntimeError):
    """The substation did not answer or answered with a Modbus exception."""


@dataclass
class CollectorStats:
    polls: int = 0
    failures: int = 0
    reconnects: int = 0
    last_ok: float | None = None  # epoch seconds of the last good poll
    last_error: str = ""


class ModbusCollector:
    def __init__(self, mine: Mine, sub: Substation, limits: Thresholds,
                 slot_of: dict[str, int], on_batch: BatchHandler, *,
                 port: int | None = None) -> None:
        self.sub = sub
        self.host = sub.host
        self.port = port if port is not None else sub.port
        self.period = sub.poll_ms / 1000.0
        self.on_batch = on_batch
        points = mine.points_of(sub.id)
        self.n_channels = max(p.channel for p in points) + 1
        # Channels without a configured point are read but dropped.
        self._channels = np.array([p.channel for p in points], dtype=np.int64)
        self._slots = np.array([slot_of[p.id] for p in points], dtype=np.int64)
        scales = np.ones(self.n_channels)
        lo = np.full(self.n_channels, -np.inf)
        hi = np.full(self.n_channels, np.inf)
        for p in points:
            s = limits.sensors[p.kind]
            scales[p.channel], lo[p.channel], hi[p.channel] = s.scale, s.range_lo, s.range_hi
        self._scales, self._lo, self._hi = scales, lo, hi
        self._spans = read_spans(self.n_channels)
        self.client: AsyncModbusTcpClient | None = None
        self.stats = CollectorStats()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one request in flight per connection

    @property
    def online(self) -> bool:
        last = self.stats.last_ok
        return last is not None and time.time() - last < 2 * self.period + 0.5

    async def _connect(self) -> AsyncModbusTcpClient:
        if self.client is not None and self.client.connected:
            return self.client
        if self.client is not None:
            self.client.close()
        self.client = AsyncModbusTcpClient(self.host, port=self.port, timeout=max(
            0.2, min(1.0, self.period)), retries=0, reconnect_delay=0)
        if not await self.client.connect():
            raise SubstationError(f"cannot connect to {self.host}:{self.port}")
        self.stats.reconnects += 1
        return self.client

    async def poll_once(self) -> Batch:
        async with self._lock:
            client = await self._connect()
            registers: list[int] = []
            for address, count in self._spans:
                try:
                    rr = await client.read_input_registers(address, count=count,
                                                           device_id=self.sub.device_id)
                except (TimeoutError, ModbusException, OSError) as exc:
                    client.close()
                    raise SubstationError(f"read failed: {exc!r}") from exc
                if rr.isError():
                    raise SubstationError(f"modbus error response {rr}")
                registers.extend(rr.registers)
        received_perf = time.perf_counter()
        received_at = time.time()
        values, quality = decode(registers, self._scales, self._lo, self._hi)
        n = self._slots.size
        return Batch(self._slots, np.full(n, received_at), values[self._channels],
                     quality[self._channels], received_at, received_perf)

    async def write_coils(self, coils: list[int], value: bool) -> None:
        """Set the given coils; each run of consecutive coils goes out as one request."""
        runs: list[list[int]] = []
        for c in sorted(set(coils)):
            if runs and c == runs[-1][-1] + 1:
                runs[-1].append(c)
            else:
                runs.append([c])
        async with self._lock:
            client = await self._connect()
            for run in runs:
                try:
                    if len(run) == 1:
                        rr = await client.write_coil(run[0], value, device_id=self.sub.device_id)
                    else:
                        rr = await client.write_coils(run[0], [value] * len(run),
                                                      device_id=self.sub.device_id)
                except (TimeoutError, ModbusException, OSError) as exc:
                    client.close()
                    raise SubstationError(f"coil write failed: {exc!r}") from exc
                if rr.isError():
                    raise SubstationError(f"modbus error response {rr}")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        backoff = self.period
        while True:
            try:
                batch = await self.poll_once()
            except SubstationError as exc:
                self.stats.failures += 1
                if self.stats.last_error != str(exc):
                    log.warning("substation %s: %s", self.sub.id, exc)
                self.stats.last_error = str(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max(5.0, self.period))
                next_at = loop.time()
                continue
            backoff = self.period
            self.stats.polls += 1
            self.stats.last_ok = batch.received_at
            self.stats.last_error = ""
            try:
                await self.on_batch(batch)
            except Exception:  # a handler bug must not stop polling a safety system
                log.exception("substation %s: batch handler failed", self.sub.id)
            next_at += self.period
            delay = next_at - loop.time()
            if delay < 0:  # overran the cycle: resynchronise instead of bursting
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    def start(self) -> asyncio.Task:
        self._task = asyncio.create_task(self.run(), name=f"collector-{self.sub.id}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            self.client.close()
