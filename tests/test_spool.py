"""The durable spool: record round trip, checkpoints, torn tails, rotation, old segments."""

from __future__ import annotations

import math
import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from ingest.spool import (
    CHECKPOINT,
    HEADER,
    Position,
    Spool,
    iter_ops,
    list_segments,
    segment_path,
)

IDS = ["001A01", "001A02", "001A03", "002D01"]


def _spool(d: Path, ids: list[str] = IDS, **kw) -> Spool:
    s = Spool(d, ids, fsync=kw.pop("fsync", False), **kw)
    s.open()
    return s


def _batch(s: Spool, t: float, slots=(0, 1, 2, 3), values=None, drill=False) -> None:
    n = len(slots)
    vals = np.arange(n, dtype=np.float64) * 0.1 + t if values is None else np.asarray(values)
    s.append_readings(np.asarray(slots, dtype=np.int64), np.full(n, t), vals,
                      np.zeros(n, dtype=np.int8), t + 0.01, drill)


def _rows(ops) -> list[tuple]:
    return [r for op in ops if op.readings is not None for r in op.readings.rows()]


def test_readings_and_json_ops_round_trip_in_order(tmp_path):
    s = _spool(tmp_path)
    _batch(s, 100.0, values=[0.5, math.nan, math.inf, 1.25])
    key = s.append_op("alarm", {"at": 100.0, "transition": "raised",
                               "record": {"id": "A1", "value": math.nan}})
    s.append_op("journal", {"at": 101.0, "event": "restore_permitted", "subject": "001A02",
                            "data": {"value": 0.4}})
    _batch(s, 102.0, slots=(3,), drill=True)
    ops = list(s.read_from())
    assert [o.kind for o in ops] == ["readings", "alarm", "journal", "readings"]
    assert ops[0].readings.rows() == [
        ("001A01", 100.0, 0.5, 0, 100.01, False), ("001A02", 100.0, None, 0, 100.01, False),
        ("001A03", 100.0, None, 0, 100.01, False), ("002D01", 100.0, 1.25, 0, 100.01, False)]
    assert ops[0].readings.slots.dtype == np.int32 and ops[0].readings.quality.dtype == np.int8
    assert ops[1].data["key"] == key and len(key) == 32
    assert math.isnan(ops[1].data["record"]["value"])
    assert ops[2].data["data"] == {"value": 0.4} and ops[2].data["key"] != key
    assert ops[3].readings.rows() == [("002D01", 102.0, 0.1 * 0 + 102.0, 0, 102.01, True)]
    # Positions chain: each op starts where the previous ended.
    assert all(a.end == b.start for a, b in pairwise(ops))
    assert s.stats.pending_ops == 4
    s.close()


def test_readings_are_binary_not_json(tmp_path):
    s = _spool(tmp_path)
    before = s.bytes
    _batch(s, 100.0, slots=list(range(4)) * 25)  # 100 readings
    assert s.bytes - before == HEADER.size + 16 + 21 * 100
    s.close()


def test_checkpoint_survives_reopen_and_only_the_rest_is_replayed(tmp_path):
    s = _spool(tmp_path)
    for t in range(5):
        _batch(s, float(t))
    ops = list(s.read_from())
    s.commit(ops[2].end, 3)
    assert s.stats.pending_ops == 2
    s.close()
    assert (tmp_path / CHECKPOINT).exists()
    s = _spool(tmp_path)
    assert s.checkpoint == ops[2].end
    assert s.stats.pending_ops == 2 and s.stats.recovered_ops == 2
    assert [r[1] for r in _rows(s.read_from())] == [3.0] * 4 + [4.0] * 4
    _batch(s, 5.0)  # appends go to a new segment after the old one
    assert [r[1] for r in _rows(s.read_from())][-4:] == [5.0] * 4
    assert len(list_segments(tmp_path)) == 2
    s.close()


def test_unreadable_checkpoint_replays_everything(tmp_path):
    s = _spool(tmp_path)
    _batch(s, 1.0)
    [op] = s.read_from()
    s.commit(op.end, 1)
    s.close()
    (tmp_path / CHECKPOINT).write_text("")  # e.g. lost in a power cut
    s = _spool(tmp_path)
    assert s.checkpoint == Position(0, 0)
    assert [r[1] for r in _rows(s.read_from())] == [1.0] * 4  # replayed; store is idempotent
    s.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_torn_tail_ends_replay_cleanly_and_appends_go_on(tmp_path, damage):
    s = _spool(tmp_path)
    for t in range(3):
        _batch(s, float(t))
    s.append_op("journal", {"at": 3.0, "event": "e", "subject": "s", "data": {}})
    s.close()
    [seg] = list_segments(tmp_path)
    path = segment_path(tmp_path, seg)
    size = path.stat().st_size
    if damage == "truncate":  # a crash in the middle of the last record
        os.truncate(path, size - 7)
    elif damage == "garbage":  # half a header of junk after the last good record
        with path.open("ab") as f:
            f.write(b"MW\x02\x00\xff")
    else:  # a bit flip inside the last record: CRC mismatch
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x40
        path.write_bytes(bytes(data))
    s = _spool(tmp_path)
    assert s.stats.corrupt == 1
    expect_last = 3 if damage == "garbage" else 2  # the journal op survives junk after it
    assert s.stats.pending_ops == expect_last + 1
    ops = list(s.read_from())
    assert [r[1] for r in _rows(ops)] == [float(t) for t in range(3) for _ in range(4)]
    assert len(ops) == expect_last + 1
    _batch(s, 10.0)
    s.append_op("journal", {"at": 11.0, "event": "after", "subject": "s", "data": {}})
    ops = list(s.read_from())
    assert ops[-2].readings.rows()[0][1] == 10.0 and ops[-1].data["event"] == "after"
    assert s.stats.corrupt == 1  # reported once, not on every read
    # Applying past the torn segment drops it.
    s.commit(ops[-1].end, len(ops))
    assert list_segments(tmp_path) == [seg + 1]
    s.close()
    # Offline decoding (no limits) stops at the damage as well, and tells.
    seen: list[tuple[int, int, str]] = []
    list(iter_ops(tmp_path, on_corrupt=lambda *a: seen.append(a)))
    assert seen == []  # the damaged segment is gone


def test_segments_rotate_and_applied_ones_are_deleted(tmp_path):
    s = _spool(tmp_path, segment_bytes=4096)
    for t in range(200):
        _batch(s, float(t), slots=list(range(4)) * 5)  # 20 readings, 448 bytes a batch
    segs = list_segments(tmp_path)
    assert len(segs) > 10
    assert s.segments == len(segs)
    assert s.bytes == sum(segment_path(tmp_path, x).stat().st_size for x in segs)
    ops = list(s.read_from())
    assert [op.readings.ts[0] for op in ops] == [float(t) for t in range(200)]
    s.commit(ops[99].end, 100)
    left = list_segments(tmp_path)
    assert left[0] == ops[99].end.segment or left[0] == ops[100].start.segment
    assert len(left) < len(segs)
    assert [op.readings.ts[0] for op in s.read_from()] == [float(t) for t in range(100, 200)]
    s.commit(ops[-1].end, 100)
    assert list_segments(tmp_path) == [s._live]
    assert s.stats.pending_ops == 0 and s.backlog_bytes < 4096 + 600
    s.close()


def test_keep_applied_keeps_segments(tmp_path):
    s = _spool(tmp_path, segment_bytes=4096, keep_applied=True)
    for t in range(50):
        _batch(s, float(t), slots=list(range(4)) * 5)
    ops = list(s.read_from())
    s.commit(ops[-1].end, len(ops))
    assert list(s.read_from()) == []
    assert len(list(iter_ops(tmp_path))) == 50  # offline decoding still sees them all
    s.close()


def test_old_segments_decode_with_their_own_point_list(tmp_path):
    s = _spool(tmp_path, ["P1", "P2", "P3"])
    _batch(s, 1.0, slots=(0, 2))
    s.close()
    # The configuration changed: a point removed, others reordered.
    s = _spool(tmp_path, ["P3", "P9", "P1"])
    _batch(s, 2.0, slots=(0, 1))
    rows = _rows(s.read_from())
    assert [(r[0], r[1]) for r in rows] == [("P1", 1.0), ("P3", 1.0), ("P3", 2.0), ("P9", 2.0)]
    s.close()


def test_full_flag_set_over_the_limit_and_appends_go_on(tmp_path, caplog):
    s = _spool(tmp_path, max_bytes=3000)
    for t in range(10):
        _batch(s, float(t), slots=list(range(4)) * 5)
    assert s.full
    assert "spool full" in caplog.text
    assert len(list(s.read_from())) == 10  # nothing refused
    ops = list(s.read_from())
    s.commit(ops[-1].end, 10)
    s.close()


def test_fsync_mode_syncs_and_closes_sealed_segments(tmp_path):
    s = _spool(tmp_path, segment_bytes=4096, fsync=True)
    for t in range(30):
        _batch(s, float(t), slots=list(range(4)) * 5)
    assert s.needs_sync and s._sealed
    s.sync()
    assert not s.needs_sync and not s._sealed
    s.close()


def test_bad_arrays_are_refused_before_anything_is_written(tmp_path):
    s = _spool(tmp_path)
    before = s.bytes
    with pytest.raises(ValueError):
        s.append_readings(np.array([0, 1]), np.array([1.0]), np.array([1.0, 2.0]),
                          np.zeros(2, np.int8), 1.0)
    assert s.bytes == before and list(s.read_from()) == []
    s.close()


def test_one_process_per_spool_directory(tmp_path):
    s = _spool(tmp_path)
    with pytest.raises(RuntimeError, match="in use"):
        _spool(tmp_path)
    s.close()
    _spool(tmp_path).close()  # free again once closed (or the holder died)


def test_a_failed_rotation_leaves_the_live_segment_usable(tmp_path, monkeypatch):
    s = _spool(tmp_path, segment_bytes=4096)
    live = s._live
    real_writev = os.writev

    def full_disk(fd, bufs):
        raise OSError(28, "No space left on device")

    while s._ends[live] < 4096:
        _batch(s, float(s.stats.appended_ops))
    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(OSError):
        _batch(s, 1000.0)  # needs a new segment: its header cannot be written
    assert s._live == live and list_segments(tmp_path) == [live]
    assert s.stats.append_errors == 1
    monkeypatch.setattr(os, "writev", real_writev)
    _batch(s, 1001.0)
    assert list(s.read_from())[-1].readings.ts[0] == 1001.0
    assert s.stats.corrupt == 0
    s.close()


def test_a_partial_append_is_cut_back_so_the_log_stays_clean(tmp_path, monkeypatch):
    s = _spool(tmp_path)
    _batch(s, 1.0)
    real_writev, real_write = os.writev, os.write

    def half(fd, bufs):  # the disk fills in the middle of a record
        flat = b"".join(bytes(memoryview(b)) for b in bufs)
        return real_write(fd, flat[: len(flat) // 2])

    def no_space(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", half)
    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError):
        _batch(s, 2.0)
    monkeypatch.undo()
    assert os.writev is real_writev
    _batch(s, 3.0)
    assert [op.readings.ts[0] for op in s.read_from()] == [1.0, 3.0]
    s.close()
    s = _spool(tmp_path)  # and a fresh scan finds no damage
    assert s.stats.corrupt == 0 and s.stats.pending_ops == 2
    s.close()
