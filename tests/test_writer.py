"""The store writer over the real embedded store: order, outages, replays after a crash.

``FlakyStore`` is a fault injector around the real ``SqliteStore`` (it fails chosen calls,
before or after the real write), not a stand-in for it: every write lands in SQLite.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from ingest.spool import CHECKPOINT, KIND_NAMES, Spool, iter_ops, list_segments
from ingest.sqlite_store import SqliteStore
from ingest.writer import StoreWriter
from minewatch.records import AlarmRecord, CommandRecord, IncidentRecord
from minewatch.store import AlarmQuery, CommandQuery, IncidentQuery, verify_journal
from tests.conftest import make_store

IDS = [f"001A{i:02d}" for i in range(1, 11)]
T0 = 1_790_006_400.0


class StoreDown(ConnectionError):
    pass


class FlakyStore:
    """Delegates to a real store; ``plan[method]`` lists call numbers (1-based) that fail —
    ``"before"`` (nothing written) or ``"after"`` (written, then the ack is lost)."""

    def __init__(self, store: SqliteStore, plan: dict[str, dict[int, str]]) -> None:
        self.store, self.plan = store, plan
        self.calls: dict[str, int] = {}
        self.mode = store.mode

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.store, name)
        if name not in self.plan:
            return real

        async def call(*args: Any, **kw: Any) -> Any:
            n = self.calls[name] = self.calls.get(name, 0) + 1
            when = self.plan[name].get(n)
            if when == "before":
                raise StoreDown(f"{name} call {n}: store unreachable")
            result = await real(*args, **kw)
            if when == "after":
                raise StoreDown(f"{name} call {n}: connection lost after commit")
            return result

        return call


def _batch(spool: Spool, t: float, n: int = 10, nan_at: int | None = None) -> None:
    values = np.linspace(0.1, 1.0, n)
    if nan_at is not None:
        values[nan_at] = math.nan
    spool.append_readings(np.arange(n), np.full(n, t), values, np.zeros(n, np.int8), t + 0.02)


def _alarm(spool: Spool, rec: AlarmRecord, transition: str) -> None:
    spool.append_op("alarm", {"at": rec.updated_at, "transition": transition,
                              "record": rec.to_dict()})


def _workload(spool: Spool) -> int:
    """A mix of every op kind; returns the number of journal entries it should produce."""
    a = AlarmRecord("A1", "001A02", "power_cut_limit", 1, "unack_active", T0 + 1, 1.8, "瓦斯超限",
                    updated_at=T0 + 1)
    _batch(spool, T0)
    _batch(spool, T0 + 0.5, nan_at=3)
    _alarm(spool, a, "raised")
    cmd = CommandRecord("C1", "cut", "001C01", "face_1101", "cut", "engine", T0 + 1,
                        alarm_id="A1", result="sent", sent_at=T0 + 1.001)
    spool.append_op("command", {"at": T0 + 1.001, "record": cmd.to_dict()})
    for i in range(2, 6):
        _batch(spool, T0 + i * 0.5)
    cmd.result, cmd.verified_at = "verified", T0 + 2.0
    spool.append_op("command", {"at": T0 + 2.0, "record": cmd.to_dict()})
    spool.append_op("journal", {"at": T0 + 3.0, "event": "restore_permitted",
                                "subject": "001A02", "data": {"value": math.nan}})
    a.state, a.acked_at, a.acked_by, a.updated_at = "ack_active", T0 + 4, "调度员", T0 + 4
    _alarm(spool, a, "acknowledged")
    _batch(spool, T0 + 5)
    return 5


async def _check_store(store: SqliteStore, path: Path) -> None:
    db = sqlite3.connect(path)
    total, distinct = db.execute(
        "SELECT count(*), count(DISTINCT point_id || '@' || ts) FROM readings").fetchone()
    assert total == distinct == 7 * 10
    assert db.execute("SELECT count(*) FROM readings WHERE value IS NULL").fetchone() == (1,)
    nulls = db.execute("SELECT point_id, ts FROM readings WHERE value IS NULL").fetchone()
    assert nulls == ("001A04", T0 + 0.5)
    keys = db.execute("SELECT count(*), count(DISTINCT key) FROM journal").fetchone()
    assert keys == (5, 5)
    db.close()
    events = [r.event for r in await store.journal()]
    assert events == ["alarm_raised", "command_sent", "command_verified", "restore_permitted",
                      "alarm_acknowledged"]
    assert (await verify_journal(store))[1] is None
    [alarm] = await store.alarms(AlarmQuery())
    assert alarm.state == "ack_active" and alarm.acked_by == "调度员"  # last write wins, in order
    [cmd] = await store.commands(CommandQuery())
    assert cmd.result == "verified"


async def _setup(tmp_path: Path, **kw: Any) -> tuple[Spool, SqliteStore]:
    spool = Spool(tmp_path / "spool", IDS, fsync=kw.pop("fsync", False), **kw)
    spool.open()
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    return spool, store


async def test_ops_are_applied_in_order(tmp_path):
    spool, store = await _setup(tmp_path, fsync=True)
    writer = StoreWriter(spool, store, fsync_interval=0.01)
    writer.start()
    _workload(spool)
    assert await writer.wait_idle(5)
    await _check_store(store, tmp_path / "store.db")
    h = writer.health()
    assert h["stored"] == 70 and h["duplicates"] == 0 and h["store_errors"] == 0
    assert h["store_backlog_ops"] == 0 and h["store_caught_up"] is True
    assert h["journal_duplicates"] == 0 and h["spool_bytes"] == spool.bytes
    assert await writer.stop(5)
    assert spool.checkpoint.offset > 0
    spool.close()
    await store.close()


async def test_consecutive_batches_go_in_one_call_capped(tmp_path):
    spool, real = await _setup(tmp_path)
    for i in range(30):
        _batch(spool, T0 + i)
    store = FlakyStore(real, {"write_readings": {}})
    writer = StoreWriter(spool, store, max_rows=100)  # 10 batches of 10 per call
    writer.start()
    assert await writer.wait_idle(5)
    assert store.calls["write_readings"] == 3 and writer.stats.stored == 300
    await writer.stop(5)
    spool.close()
    await real.close()


async def test_store_outage_loses_nothing_and_doubles_nothing(tmp_path):
    spool, real = await _setup(tmp_path)
    # Outages of each call kind, including writes that landed but whose ack was lost.
    store = FlakyStore(real, {
        "write_readings": {1: "before", 2: "before", 3: "after", 5: "after"},
        "save_alarm": {1: "before"},
        "append_journal": {1: "after", 3: "before", 4: "after"},
        "save_command": {2: "after"},
    })
    writer = StoreWriter(spool, store, backoff_min=0.005, backoff_max=0.02)
    writer.start()
    _workload(spool)
    assert await writer.wait_idle(10)
    st = writer.stats
    assert st.store_errors == 9 and st.consecutive_errors == 0
    assert "StoreDown" in st.last_error
    # A write whose ack was lost is sent again: its rows count as duplicates (the inserted
    # count of the lost call is unknown), and the store holds every row once (below).
    assert st.duplicates > 0 and st.stored + st.duplicates == 70
    assert st.journal_duplicates == 2  # the two journal writes whose ack was lost
    await _check_store(real, tmp_path / "store.db")
    await writer.stop(5)
    spool.close()
    await real.close()


async def test_service_goes_on_appending_while_the_store_is_down(tmp_path):
    spool, real = await _setup(tmp_path)
    down = {n: "before" for n in range(1, 1000)}
    store = FlakyStore(real, {"write_readings": down})
    writer = StoreWriter(spool, store, backoff_min=0.005, backoff_max=0.01)
    writer.start()
    for i in range(20):
        _batch(spool, T0 + i)
    assert not await writer.wait_idle(0.3)
    assert writer.health()["store_backlog_ops"] == 20 and writer.stats.store_errors > 3
    assert writer.health()["store_caught_up"] is False
    # A stop while the store is down gives up after its timeout; the ops stay spooled.
    assert await writer.stop(0.1) is False
    spool.close()
    # Next start, store reachable: the backlog is replayed first.
    spool = Spool(tmp_path / "spool", IDS, fsync=False)
    spool.open()
    assert spool.stats.recovered_ops == 20
    writer = StoreWriter(spool, real)
    writer.start()
    assert await writer.wait_idle(5)
    assert writer.stats.stored == 200
    await writer.stop(5)
    spool.close()
    await real.close()


async def test_restart_after_apply_before_checkpoint_counts_duplicates(tmp_path):
    spool, store = await _setup(tmp_path)
    writer = StoreWriter(spool, store)
    writer.start()
    journal_entries = _workload(spool)
    assert await writer.wait_idle(5)
    assert writer.stats.stored == 70
    await writer.stop(5)
    spool.close()
    # The process died after the store calls but before any checkpoint reached the disk.
    (tmp_path / "spool" / CHECKPOINT).unlink()
    # A new process over the same spool directory and store.
    spool = Spool(tmp_path / "spool", IDS, fsync=False)
    spool.open()
    assert spool.stats.recovered_ops == 12
    writer = StoreWriter(spool, store)
    writer.start()
    assert await writer.wait_idle(5)
    assert writer.stats.stored == 0 and writer.stats.duplicates == 70
    assert writer.stats.journal_duplicates == journal_entries
    await _check_store(store, tmp_path / "store.db")
    # Now checkpointed: the old segment is gone and a third start replays nothing.
    assert list_segments(tmp_path / "spool") == [spool._live]
    await writer.stop(5)
    spool.close()
    spool = Spool(tmp_path / "spool", IDS, fsync=False)
    spool.open()
    assert spool.stats.recovered_ops == 0
    spool.close()
    await store.close()


def test_spool_kind_numbers_are_stable():
    # The on-disk format: existing kinds keep their numbers, a new kind takes the next one.
    assert KIND_NAMES == {1: "segment", 2: "readings", 3: "alarm", 4: "command", 5: "journal",
                          6: "dead_letter", 7: "incident"}


async def _drain(spool: Spool, store: Any) -> StoreWriter:
    writer = StoreWriter(spool, store)
    writer.start()
    assert await writer.wait_idle(10)
    assert await writer.stop(5)
    assert writer.stats.store_errors == 0 and writer.stats.journal_duplicates == 0
    assert writer.stats.applied_ops == 5
    return writer


async def test_incident_ops_replayed_are_stored_once_with_the_newest_state(tmp_path, backend):
    spool = Spool(tmp_path / "spool", IDS, fsync=False)
    spool.open()
    store = make_store(backend)
    await store.open()
    inc = IncidentRecord("I1", "gas_overlimit", "open", T0, T0 + 1, False,
                         {"steps": [{"name": "power_cut", "at": T0 + 1, "by": "engine"}],
                          "area": "1101 回风巷", "peak": 1.83})
    spool.append_op("incident", {"at": inc.updated_at, "record": inc.to_dict()})
    _batch(spool, T0)
    inc.data["steps"].append({"name": "evacuation", "at": T0 + 2, "by": "调度员"})
    inc.updated_at = T0 + 2
    spool.append_op("incident", {"at": inc.updated_at, "record": inc.to_dict()})
    newest = IncidentRecord("I1", "gas_overlimit", "closed", T0, T0 + 9, False,
                            {**inc.data, "closed_by": "矿长"})
    key = spool.append_op("incident", {"at": newest.updated_at, "record": newest.to_dict()})
    # A stale state arriving after the newer one (appended out of order) must not win.
    stale = IncidentRecord("I1", "gas_overlimit", "open", T0, T0 + 1.5, False, {"stale": True})
    spool.append_op("incident", {"at": stale.updated_at, "record": stale.to_dict()})
    ops = [o for o in iter_ops(tmp_path / "spool") if o.kind == "incident"]
    assert len(ops) == 4 and ops[2].data["key"] == key
    assert ops[2].data["record"] == newest.to_dict()
    try:
        await _drain(spool, store)
        assert await store.incidents(IncidentQuery()) == [newest]
        assert await store.journal() == []  # incident steps are journaled separately
        # The process died before the checkpoint reached the disk: every op is applied again.
        spool.close()
        (tmp_path / "spool" / CHECKPOINT).unlink()
        spool = Spool(tmp_path / "spool", IDS, fsync=False)
        spool.open()
        assert spool.stats.recovered_ops == 5
        writer = await _drain(spool, store)
        assert writer.stats.duplicates == 10  # the readings batch, replayed
        assert await store.incidents(IncidentQuery()) == [newest]
        assert await store.journal() == []
    finally:
        spool.close()
        await store.close()
