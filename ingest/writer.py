"""Store writer: tails the durable spool and applies it to the store, in order.

Why a separate task over a log rather than writes from the hot path: the store may be slow or
down (PostgreSQL restarting, a full disk), and the service must keep alarming and cutting
power meanwhile. The writer reads from the spool's checkpoint, applies ops in the order they
were appended — consecutive reading batches as one ``write_readings`` call, alarm and command
saves each with their journal entry, incident upserts on their own — and moves the
checkpoint only after the store call returned. On a store error it backs off (0.2 s doubling
to 5 s) and retries from the checkpoint, so nothing is skipped. An op applied but not
checkpointed (crash, error between two calls) is applied again: readings count as
duplicates, journal keys are not doubled, an incident upsert never goes back in time.

Reading and decoding the spool happen in a worker thread so a large replay after an outage
does not stall the event loop (the hot path's latency target is a few milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ingest.spool import Op, Position, Spool
from minewatch.records import AlarmRecord, CommandRecord, DeadLetter, IncidentRecord
from minewatch.store import ReadingRow, Store

log = logging.getLogger("minewatch.ingest.writer")


@dataclass
class WriterStats:
    stored: int = 0  # readings inserted
    duplicates: int = 0  # readings already in the store (replays after a crash or an error)
    journal_duplicates: int = 0  # journal keys already present (replayed ops)
    applied_ops: int = 0
    store_errors: int = 0
    consecutive_errors: int = 0
    sync_errors: int = 0
    last_error: str = ""
    last_error_at: float | None = None
    last_applied_at: float | None = None


@dataclass
class _Chunk:
    """What one store call applies: a run of reading batches, or one JSON op."""

    end: Position
    ops: int
    rows: list[ReadingRow] | None = None
    op: Op | None = None


class StoreWriter:
    def __init__(self, spool: Spool, store: Store, *, max_rows: int = 50_000,
                 fsync_interval: float = 0.1, backoff_min: float = 0.2,
                 backoff_max: float = 5.0, stats: WriterStats | None = None) -> None:
        self.spool = spool
        self.store = store
        self.max_rows = max_rows
        self.fsync_interval = fsync_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stats = stats if stats is not None else WriterStats()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing readable is left to apply
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._sync_task: asyncio.Task | None = None
        spool.add_listener(self._on_append)

    def _on_append(self) -> None:
        self._idle.clear()
        self._wake.set()

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start tailing; the first pass replays whatever the last process left (recovery)."""
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="store-writer")
        if self.fsync_interval > 0 and self.spool.fsync:
            self._sync_task = asyncio.create_task(self._sync_loop(), name="spool-fsync")

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until everything appended so far is in the store (or ``timeout``)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout: float = 10.0) -> bool:
        """Apply what can be applied within ``timeout``; the rest stays in the spool for the
        next start. Returns True when everything was applied."""
        self._stopping = True
        self._wake.set()
        drained = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                drained = False
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                log.warning("store writer stopped with %d ops not applied; they stay in the "
                            "spool and are replayed at the next start",
                            self.spool.stats.pending_ops)
            self._task = None
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        if self.spool.fsync:
            await asyncio.to_thread(self.spool.sync)
        return drained

    # --- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.backoff_min
        while True:
            self._wake.clear()
            try:
                await self._apply_pending()
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if self.stats.consecutive_errors:
                log.warning("store writes resumed after %d failed attempts",
                            self.stats.consecutive_errors)
                self.stats.consecutive_errors = 0
            delay = self.backoff_min
            if self._wake.is_set():
                continue  # appended while we were writing
            self._idle.set()
            if self._stopping:
                return
            await self._wake.wait()

    def _failed(self, exc: Exception) -> None:
        self.stats.store_errors += 1
        self.stats.consecutive_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self.stats.last_error_at = time.time()
        if self.stats.consecutive_errors == 1:
            log.error("store write failed; ops stay in the spool and are retried", exc_info=exc)
        else:
            log.warning("store write failed again (%d in a row, %d ops waiting): %s",
                        self.stats.consecutive_errors, self.spool.stats.pending_ops,
                        self.stats.last_error)

    async def _apply_pending(self) -> None:
        """Apply everything readable after the checkpoint, one store call at a time."""
        while True:
            chunk = await asyncio.to_thread(self._collect, self.spool.read_from())
            if chunk is None:
                return
            if chunk.rows is not None:
                res = await self.store.write_readings(chunk.rows)
                self.stats.stored += res.inserted
                self.stats.duplicates += res.duplicates
            else:
                assert chunk.op is not None
                await self._apply_op(chunk.op)
            self.spool.commit(chunk.end, chunk.ops)
            self.stats.applied_ops += chunk.ops
            self.stats.last_applied_at = time.time()

    def _collect(self, ops: Iterator[Op]) -> _Chunk | None:
        """Worker thread: the next run of reading batches (≤ max_rows) or the next JSON op."""
        rows: list[ReadingRow] = []
        n, end = 0, None
        try:
            for op in ops:
                if op.readings is not None:
                    if n and len(rows) + len(op.readings) > self.max_rows:
                        break
                    rows.extend(op.readings.rows())
                    n, end = n + 1, op.end
                    continue
                if n:
                    break
                return _Chunk(op.end, 1, op=op)
        finally:
            close = getattr(ops, "close", None)
            if close is not None:
                close()
        return _Chunk(end, n, rows=rows) if end is not None else None

    async def _apply_op(self, op: Op) -> None:
        d: dict[str, Any] = op.data or {}
        if op.kind == "alarm":
            rec = AlarmRecord.from_dict(d["record"])
            await self.store.save_alarm(rec)
            row = await self.store.append_journal(d["at"], f"alarm_{d['transition']}", rec.id,
                                                  rec.to_dict(), key=d["key"])
        elif op.kind == "command":
            cmd = CommandRecord.from_dict(d["record"])
            await self.store.save_command(cmd)
            row = await self.store.append_journal(d["at"], f"command_{cmd.result}", cmd.id,
                                                  cmd.to_dict(), key=d["key"])
        elif op.kind == "journal":
            row = await self.store.append_journal(d["at"], d["event"], d["subject"],
                                                  d.get("data") or {}, key=d["key"])
        elif op.kind == "dead_letter":
            await self.store.save_dead_letter(DeadLetter(
                d["key"], d["at"], d["source"], d["reason"], d["detail"], d["payload"]))
            return
        elif op.kind == "incident":
            # No journal row: the service journals the incident's steps as their own ops.
            # Idempotent: an upsert where the newest ``updated_at`` wins.
            await self.store.save_incident(IncidentRecord.from_dict(d["record"]))
            return
        else:
            log.error("spool op of unknown kind %r at %s skipped", op.kind, op.start)
            return
        if row is None:
            self.stats.journal_duplicates += 1

    async def _sync_loop(self) -> None:
        """fsync the spool every ``fsync_interval`` (power loss; a crash needs no fsync)."""
        while True:
            await asyncio.sleep(self.fsync_interval)
            if self.spool.needs_sync:
                try:
                    await asyncio.to_thread(self.spool.sync)
                except OSError as exc:
                    self.stats.sync_errors += 1
                    log.error("spool fsync failed: %s", exc)

    # --- health --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        sp, st = self.spool, self.stats
        return {
            "stored": st.stored,
            "duplicates": st.duplicates,
            "journal_duplicates": st.journal_duplicates,
            "store_errors": st.store_errors,
            "store_last_error": st.last_error,
            "store_last_error_at": st.last_error_at,
            "store_applied_ops": st.applied_ops,
            "store_backlog_ops": sp.stats.pending_ops,
            "store_backlog_bytes": sp.backlog_bytes,
            "store_caught_up": self._idle.is_set(),
            "spool_bytes": sp.bytes,
            "spool_segments": sp.segments,
            "spool_full": sp.full,
            "spool_corrupt": sp.stats.corrupt,
            "spool_append_errors": sp.stats.append_errors,
            "spool_recovered_ops": sp.stats.recovered_ops,
            "spool_sync_errors": st.sync_errors,
        }
