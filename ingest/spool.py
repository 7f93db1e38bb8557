"""Durable spool: an ordered operation log on local disk between the collectors and the store.

Why: the store (SQLite, or PostgreSQL across a network) can be down or slow, and the process
can be killed at any moment. Every record the service produces — reading batches, alarm and
command saves, journal events — is appended here first, on the event-loop thread, with an
unbuffered ``os.write``: once ``append_*`` returns, a SIGKILL loses nothing. A store writer
(``ingest/writer.py``) tails the log and applies it to the store in order, then persists a
checkpoint. After a crash or a store outage it resumes from the checkpoint; the store's writes
are idempotent (readings unique on (point_id, ts), alarms/commands upserted by id, journal
entries keyed), so replaying an op that was applied but not yet checkpointed is harmless.

On disk, ``directory`` holds numbered segment files ``<id>.seg`` and ``checkpoint.json``.
Each record is a 12-byte header followed by its payload::

    magic b"MW" | kind u8 | flags u8 (0) | payload length u32 | CRC32 u32     (little endian)

The CRC covers the first 8 header bytes and the payload, so a torn or garbled length is caught
as well. Kinds:

- 1 segment header (JSON): ``{"v", "segment", "created_at", "point_ids"}`` — the first
  record of every segment. Reading slots index into *this* list, so a segment written before
  a configuration change still decodes to the right point ids afterwards.
- 2 readings (binary, no JSON on the hot path): ``received_at f64 | drill u8 | 3 pad |
  n u32`` then ``ts f64[n] | value f64[n] | slot i32[n] | quality i8[n]`` (the 16-byte prefix
  keeps the float arrays 8-byte aligned within the payload).
- 3 alarm, 4 command, 5 journal (JSON, NaN allowed): each carries a unique ``key`` (uuid hex)
  that the writer passes to ``append_journal`` so a replayed op is never journaled twice.
- 6 dead letter (JSON): refused input, stored once by its ``key``.
- 7 incident (JSON): ``{"at", "record", "key"}``, an incident upserted by id where the newest
  ``updated_at`` wins, so a replay is harmless (its steps are journaled by separate ops).

Kind numbers are never reused or renumbered: a new kind takes the next number. (A reader
older than a kind stops at the first such record as if it were corrupt, so a spool must be
drained before downgrading past the version that added a kind.)

A new process never appends to an old segment: ``open`` scans the segments after the
checkpoint (CRC-checked), fixes each one's readable end at its last good record — a torn tail
left by a crash is counted and logged once, never fatal — and starts a fresh segment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from minewatch.store import ReadingRow

log = logging.getLogger("minewatch.ingest.spool")

MAGIC = b"MW"
HEADER = struct.Struct("<2sBBII")  # magic, kind, flags, payload length, crc32
READINGS_PREFIX = struct.Struct("<dB3xI")  # received_at, drill, n
KIND_SEGMENT, KIND_READINGS, KIND_ALARM, KIND_COMMAND, KIND_JOURNAL, KIND_DEAD = 1, 2, 3, 4, 5, 6
KIND_INCIDENT = 7
KIND_NAMES = {KIND_SEGMENT: "segment", KIND_READINGS: "readings", KIND_ALARM: "alarm",
              KIND_COMMAND: "command", KIND_JOURNAL: "journal", KIND_DEAD: "dead_letter",
              KIND_INCIDENT: "incident"}
JSON_KINDS = {"alarm": KIND_ALARM, "command": KIND_COMMAND, "journal": KIND_JOURNAL,
              "dead_letter": KIND_DEAD, "incident": KIND_INCIDENT}
SUFFIX = ".seg"
CHECKPOINT = "checkpoint.json"
CHECKPOINT_EVERY_S = 0.2  # at most this often within a segment (see Spool.commit)
MAX_PAYLOAD = 1 << 30  # a length beyond this is garbage, not a record
FORMAT_VERSION = 1

CorruptHandler = Callable[[int, int, str], None]  # segment, offset, reason


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A place in the log: segment id and byte offset within that segment's file."""

    segment: int
    offset: int


START = Position(0, 0)


@dataclass(slots=True)
class Readings:
    """One spooled reading batch, decoded zero-copy from the segment bytes."""

    point_ids: np.ndarray  # object array of the segment header's point ids
    slots: np.ndarray  # int32
    ts: np.ndarray  # float64
    values: np.ndarray  # float64, NaN/inf allowed
    quality: np.ndarray  # int8
    received_at: float
    drill: bool

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def ids(self) -> list[str]:
        return self.point_ids[self.slots].tolist()

    def rows(self) -> list[ReadingRow]:
        """Store rows; a non-finite value becomes None (NULL), a non-finite ts is dropped
        (it could never satisfy the (point_id, ts) key and would block the writer forever)."""
        slots, ts, values, quality = self.slots, self.ts, self.values, self.quality
        good_ts = np.isfinite(ts)
        if not good_ts.all():
            slots, ts, values, quality = (slots[good_ts], ts[good_ts], values[good_ts],
                                          quality[good_ts])
        vals = values.astype(object)
        vals[~np.isfinite(values)] = None
        n = int(slots.shape[0])
        return list(zip(self.point_ids[slots].tolist(), ts.tolist(), vals.tolist(),
                        quality.tolist(), repeat(self.received_at, n), repeat(self.drill, n),
                        strict=False))


@dataclass(slots=True)
class Op:
    """One record read back: ``end`` is where the checkpoint goes once it is applied."""

    kind: str  # "readings", "alarm", "command", "journal", "dead_letter", "incident"
    start: Position
    end: Position
    readings: Readings | None = None
    data: dict[str, Any] | None = None


@dataclass
class SpoolStats:
    appended_ops: int = 0
    applied_ops: int = 0
    pending_ops: int = 0  # appended (or found at open) and not yet checkpointed
    corrupt: int = 0  # torn or garbled records / unreadable segments found
    append_errors: int = 0
    segments_deleted: int = 0
    recovered_ops: int = 0  # ops found after the checkpoint at open (crash recovery)


def segment_path(directory: Path, seg: int) -> Path:
    return directory / f"{seg:012d}{SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    out = []
    for p in Path(directory).glob(f"*{SUFFIX}"):
        with contextlib.suppress(ValueError):
            out.append(int(p.stem))
    return sorted(out)


def _crc(head8: bytes, parts: list[Any]) -> int:
    c = zlib.crc32(head8)
    for p in parts:
        c = zlib.crc32(p, c)
    return c


def _record(kind: int, parts: list[Any]) -> list[Any]:
    """Header + payload parts, ready for ``os.writev`` (no copy of large arrays)."""
    length = sum(memoryview(p).nbytes for p in parts)
    head8 = HEADER.pack(MAGIC, kind, 0, length, 0)[:8]
    return [head8 + struct.pack("<I", _crc(head8, parts)), *parts]


def _decode_readings(payload: bytes, point_ids: np.ndarray) -> Readings:
    received_at, drill, n = READINGS_PREFIX.unpack_from(payload, 0)
    o = READINGS_PREFIX.size
    if o + 21 * n != len(payload):
        raise ValueError(f"readings payload of {len(payload)} bytes for {n} readings")
    ts = np.frombuffer(payload, np.float64, n, o)
    values = np.frombuffer(payload, np.float64, n, o + 8 * n)
    slots = np.frombuffer(payload, np.int32, n, o + 16 * n)
    quality = np.frombuffer(payload, np.int8, n, o + 20 * n)
    if n and (int(slots.min()) < 0 or int(slots.max()) >= len(point_ids)):
        raise ValueError("reading slot outside the segment's point list")
    return Readings(point_ids, slots, ts, values, quality, received_at, bool(drill))


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    return data if len(data) == n else b""


def iter_ops(directory: Path, start: Position = START, limits: dict[int, int] | None = None,
             on_corrupt: CorruptHandler | None = None, decode: bool = True) -> Iterator[Op]:
    """Ops after ``start`` in log order, across segments.

    ``limits`` (segment id → readable end) restricts reading to the given segments and bytes —
    the live spool passes what it has appended, so a reader never sees a record being written.
    Without it every segment file is read to its end (decoding a spool offline, e.g. in tests).
    A torn or corrupt record ends that segment: ``on_corrupt`` is told, and reading goes on
    with the next segment. Safe to run in a worker thread: it only reads files.
    """
    directory = Path(directory)
    segs = sorted(limits) if limits is not None else list_segments(directory)
    for seg in segs:
        if seg < start.segment:
            continue
        limit = limits[seg] if limits is not None else None
        try:
            f = segment_path(directory, seg).open("rb", buffering=0)
        except FileNotFoundError:
            continue
        with f:
            if limit is None:
                limit = os.fstat(f.fileno()).st_size
            point_ids, offset, why = _read_segment_header(f, limit)
            if point_ids is None:
                if on_corrupt is not None:
                    on_corrupt(seg, 0, why)
                continue
            if seg == start.segment and start.offset > offset:
                offset = start.offset
                f.seek(offset)
            while offset < limit:
                got = _read_one(f, offset, limit)
                if isinstance(got, str):
                    if on_corrupt is not None:
                        on_corrupt(seg, offset, got)
                    break
                kind, payload = got
                end = offset + HEADER.size + len(payload)
                op = Op(KIND_NAMES.get(kind, "?"), Position(seg, offset), Position(seg, end))
                if decode:
                    try:
                        if kind == KIND_READINGS:
                            op.readings = _decode_readings(payload, point_ids)
                        else:
                            op.data = json.loads(payload)
                    except ValueError as exc:  # CRC held, so this is a writer bug; skip it
                        if on_corrupt is not None:
                            on_corrupt(seg, offset, f"undecodable {op.kind}: {exc}")
                        offset = end
                        continue
                yield op
                offset = end


def _read_one(f, offset: int, limit: int) -> tuple[int, bytes] | str:
    """The record at ``offset``: (kind, payload), or why it is not a whole good record."""
    if limit - offset < HEADER.size:
        return "short header (torn tail)"
    head = _read_exact(f, HEADER.size)
    if not head:
        return "short header (torn tail)"
    magic, kind, _flags, length, crc = HEADER.unpack(head)
    if magic != MAGIC or kind not in KIND_NAMES or kind == KIND_SEGMENT:
        return "bad magic or kind"
    if length > MAX_PAYLOAD or offset + HEADER.size + length > limit:
        return "short payload (torn tail)"
    payload = _read_exact(f, length)
    if not payload and length:
        return "short payload (torn tail)"
    if zlib.crc32(payload, zlib.crc32(head[:8])) != crc:
        return "CRC mismatch"
    return kind, payload


def _read_segment_header(f, limit: int) -> tuple[np.ndarray | None, int, str]:
    head = _read_exact(f, HEADER.size) if limit >= HEADER.size else b""
    if not head:
        return None, 0, "no segment header"
    magic, kind, _flags, length, crc = HEADER.unpack(head)
    if magic != MAGIC or kind != KIND_SEGMENT or HEADER.size + length > limit:
        return None, 0, "bad segment header"
    payload = _read_exact(f, length)
    if zlib.crc32(payload, zlib.crc32(head[:8])) != crc:
        return None, 0, "segment header CRC mismatch"
    try:
        ids = json.loads(payload)["point_ids"]
    except (ValueError, KeyError, TypeError):
        return None, 0, "undecodable segment header"
    arr = np.empty(len(ids), dtype=object)
    arr[:] = ids
    return arr, HEADER.size + length, ""


class Spool:
    """The append side (event-loop thread) and bookkeeping of one spool directory.

    Appends go to the live segment; ``sync`` (from a worker thread, every ~100 ms) fsyncs it
    for power loss. The store writer reads with ``readable()`` + ``iter_ops`` and calls
    ``commit`` after each successful store call.
    """

    def __init__(self, directory: Path, point_ids: list[str], *, max_bytes: int = 1 << 30,
                 segment_bytes: int = 16 << 20, keep_applied: bool = False,
                 fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.point_ids = list(point_ids)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.keep_applied = keep_applied  # keep applied segments (tests, forensics)
        self.fsync = fsync
        self.stats = SpoolStats()
        self.full = False
        self.checkpoint = START
        self._saved, self._saved_at = START, 0.0
        self._ends: dict[int, int] = {}  # segment → readable end (live: appended bytes)
        self._sizes: dict[int, int] = {}  # segment → bytes on disk
        self._total = 0  # sum of _sizes, kept up to date for the per-append full check
        self._live = -1
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._listeners: list[Callable[[], None]] = []
        self._dirty = False
        self._dir_dirty = False
        self._list_lock = threading.Lock()  # sealed fds handed to the sync thread
        self._sync_lock = threading.Lock()  # held during sync; close waits for it
        self._sealed: list[int] = []
        self._corrupt_seen: set[tuple[int, int]] = set()

    # --- lifecycle -----------------------------------------------------------------------
    def open(self) -> None:
        """Load the checkpoint, scan what was not applied (crash recovery), start a segment."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.checkpoint = self._load_checkpoint()
        self._saved, self._saved_at = self.checkpoint, time.monotonic()
        for seg in list_segments(self.directory):
            size = segment_path(self.directory, seg).stat().st_size
            self._sizes[seg] = self._ends[seg] = size
            self._total += size
        for seg in [s for s in self._ends if s >= self.checkpoint.segment]:
            good, pending = self._scan(seg)  # CRC-check once; fix the readable end
            self._ends[seg] = good
            self.stats.pending_ops += pending
        self.stats.recovered_ops = self.stats.pending_ops
        if self.stats.pending_ops:
            log.warning("spool: %d ops after checkpoint %s to replay", self.stats.pending_ops,
                        self.checkpoint)
        self._new_segment()
        self._check_full()

    def close(self) -> None:
        if self.checkpoint != self._saved:
            self._save_checkpoint(self.checkpoint)
        with self._sync_lock:
            if self.fsync:
                self._sync_locked()
            with self._list_lock:
                sealed, self._sealed = self._sealed, []
            for fd in sealed:
                os.close(fd)
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def _lock(self) -> None:
        """One process per spool: two appenders would interleave and both replay."""
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"spool {self.directory} is in use by another process "
                               "(another minewatch with the same data directory?)") from None
        self._lock_fd = fd

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called after every append (the writer sets its wake-up event)."""
        self._listeners.append(callback)

    # --- appends (event-loop thread) -----------------------------------------------------------
    def append_readings(self, slots: np.ndarray, ts: np.ndarray, values: np.ndarray,
                        quality: np.ndarray, received_at: float, drill: bool = False) -> None:
        n = len(slots)
        arrays = [np.ascontiguousarray(ts, dtype=np.float64),
                  np.ascontiguousarray(values, dtype=np.float64),
                  np.ascontiguousarray(slots, dtype=np.int32),
                  np.ascontiguousarray(quality, dtype=np.int8)]
        if any(a.shape != (n,) for a in arrays):
            raise ValueError("readings arrays differ in length")
        parts = [READINGS_PREFIX.pack(received_at, 1 if drill else 0, n), *arrays]
        self._append(KIND_READINGS, parts)

    def append_op(self, kind: str, data: dict[str, Any]) -> str:
        """Append a JSON op (a ``JSON_KINDS`` name); returns its idempotency key."""
        key = data.setdefault("key", uuid.uuid4().hex)
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        self._append(JSON_KINDS[kind], [payload])
        return key

    def _append(self, kind: int, parts: list[Any]) -> None:
        if self._fd is None:
            raise RuntimeError("spool is not open")
        if self._ends[self._live] >= self.segment_bytes:
            self._rotate()
        rec = _record(kind, parts)
        size = sum(memoryview(p).nbytes for p in rec)
        self._write(rec, size)
        self._ends[self._live] += size
        self._sizes[self._live] += size
        self._total += size
        self._dirty = True
        self.stats.appended_ops += 1
        self.stats.pending_ops += 1
        if not self.full and self._total > self.max_bytes:
            self._check_full()
        for cb in self._listeners:
            cb()

    def _write(self, rec: list[Any], size: int) -> None:
        """All or nothing: a partial write (disk full) is cut back so the log stays clean."""
        assert self._fd is not None
        try:
            n = os.writev(self._fd, rec)
            if n < size:  # regular files rarely write short; finish or fail
                flat = b"".join(bytes(memoryview(p)) for p in rec)
                while n < size:
                    n += os.write(self._fd, flat[n:])
        except OSError:
            self.stats.append_errors += 1
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._ends[self._live])
            raise

    def _new_segment(self) -> None:
        """Create the next segment with its header; on failure nothing changes."""
        # Never reuse an id at or below the checkpoint's: the reader would skip it.
        seg = max(max(self._ends, default=0), self.checkpoint.segment) + 1
        path = segment_path(self.directory, seg)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     0o644)
        header = json.dumps({"v": FORMAT_VERSION, "segment": seg, "created_at": time.time(),
                             "point_ids": self.point_ids}, ensure_ascii=False).encode()
        rec = _record(KIND_SEGMENT, [header])
        size = sum(len(p) for p in rec)
        try:
            if os.writev(fd, rec) != size:
                raise OSError(errno.ENOSPC, "short write of a segment header")
        except OSError:
            self.stats.append_errors += 1
            os.close(fd)
            path.unlink(missing_ok=True)  # a headerless segment would be unreadable
            raise
        self._fd, self._live = fd, seg
        self._ends[seg] = self._sizes[seg] = size
        self._total += size
        self._dirty = self._dir_dirty = True

    def _rotate(self) -> None:
        old = self._fd
        assert old is not None
        self._new_segment()
        if self.fsync:
            with self._list_lock:
                self._sealed.append(old)  # the sync thread fsyncs and closes it
        else:
            os.close(old)

    # --- durability (worker thread) ------------------------------------------------------------
    @property
    def needs_sync(self) -> bool:
        return self._dirty or self._dir_dirty or bool(self._sealed)

    def sync(self) -> None:
        """fsync what was appended since the last call (power loss); run it off the loop."""
        with self._sync_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        with self._list_lock:
            sealed, self._sealed = self._sealed, []
        for fd in sealed:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = self._fd
        if self._dirty and fd is not None:
            self._dirty = False
            os.fsync(fd)
        if self._dir_dirty:
            self._dir_dirty = False
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    # --- reading and checkpoints (writer) --------------------------------------------------------
    def readable(self) -> dict[int, int]:
        """Snapshot of segment → readable end from the checkpoint on (take it on the loop)."""
        return {s: e for s, e in self._ends.items() if s >= self.checkpoint.segment}

    def read_from(self, position: Position | None = None) -> Iterator[Op]:
        """Ops after ``position`` (default: the checkpoint) that have been appended so far."""
        pos = self.checkpoint if position is None else position
        limits = {s: e for s, e in self._ends.items() if s >= pos.segment}
        return iter_ops(self.directory, pos, limits, self._corrupt)

    def commit(self, position: Position, ops: int) -> None:
        """Everything before ``position`` is in the store: persist it, drop applied segments."""
        # A checkpoint at the end of a sealed segment moves to the next one, so the sealed
        # segment can go at once.
        while (position.segment != self._live and position.segment in self._ends
               and position.offset >= self._ends[position.segment]):
            later = [s for s in self._ends if s > position.segment]
            if not later:
                break
            position = Position(min(later), 0)
        self.checkpoint = position
        self.stats.applied_ops += ops
        self.stats.pending_ops = max(0, self.stats.pending_ops - ops)
        # The checkpoint file only shortens a restart's replay (the replay itself is
        # idempotent), so within a segment it is written at most every CHECKPOINT_EVERY_S; a
        # new segment is saved at once, before the applied segments are deleted.
        now = time.monotonic()
        if position.segment != self._saved.segment or now - self._saved_at >= \
                CHECKPOINT_EVERY_S:
            self._save_checkpoint(position)
        if not self.keep_applied:
            for seg in [s for s in self._ends if s < position.segment and s != self._live]:
                try:
                    segment_path(self.directory, seg).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.error("spool: cannot delete applied segment %d: %s", seg, exc)
                    continue
                self._total -= self._sizes.pop(seg)
                del self._ends[seg]
                self.stats.segments_deleted += 1
                self._dir_dirty = True
        if self.full:
            self._check_full()

    def _save_checkpoint(self, pos: Position) -> None:
        self._saved, self._saved_at = pos, time.monotonic()
        tmp = self.directory / (CHECKPOINT + ".tmp")
        tmp.write_text(json.dumps({"segment": pos.segment, "offset": pos.offset,
                                   "at": time.time()}))
        os.replace(tmp, self.directory / CHECKPOINT)

    def _load_checkpoint(self) -> Position:
        path = self.directory / CHECKPOINT
        try:
            d = json.loads(path.read_text())
            return Position(int(d["segment"]), int(d["offset"]))
        except FileNotFoundError:
            return START
        except (ValueError, KeyError, TypeError) as exc:
            # Replaying from the oldest segment is safe: the store's writes are idempotent.
            log.error("spool: unreadable checkpoint (%s); replaying from the oldest segment",
                      exc)
            return START

    def _scan(self, seg: int) -> tuple[int, int]:
        """(end of the last good record, ops at or after the checkpoint) of a segment."""
        size = self._sizes[seg]
        with segment_path(self.directory, seg).open("rb", buffering=0) as f:
            ids, offset, why = _read_segment_header(f, size)
            if ids is None:
                self._corrupt(seg, 0, why)
                return 0, 0
            pending = 0
            while offset < size:
                got = _read_one(f, offset, size)
                if isinstance(got, str):
                    self._corrupt(seg, offset, got)
                    break
                if Position(seg, offset) >= self.checkpoint:
                    pending += 1
                offset += HEADER.size + len(got[1])
        return offset, pending

    def _corrupt(self, seg: int, offset: int, why: str) -> None:
        if (seg, offset) in self._corrupt_seen:
            return
        self._corrupt_seen.add((seg, offset))
        self.stats.corrupt += 1
        log.error("spool: segment %d offset %d: %s; replay of that segment ends there",
                  seg, offset, why)

    # --- accounting ------------------------------------------------------------------------------
    @property
    def bytes(self) -> int:
        """Bytes of segment files on disk."""
        return self._total

    @property
    def backlog_bytes(self) -> int:
        """Bytes appended and not yet applied (roughly: includes segment headers)."""
        cp = self.checkpoint
        return max(0, sum(e for s, e in self._ends.items() if s >= cp.segment)
                   - (cp.offset if cp.segment in self._ends else 0))

    @property
    def segments(self) -> int:
        return len(self._sizes)

    def _check_full(self) -> None:
        over = self.bytes > self.max_bytes
        if over and not self.full:
            # Keep appending: losing safety records is worse than filling the disk further.
            log.error("spool full: %d bytes on disk > limit %d; the store is not keeping up",
                      self.bytes, self.max_bytes)
        elif self.full and not over:
            log.warning("spool back under its limit: %d bytes", self.bytes)
        self.full = over
