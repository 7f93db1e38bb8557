"""The embedded store: idempotent reading inserts and the hash-chained journal."""

from __future__ import annotations

import sqlite3

from ingest.sqlite_store import SqliteStore
from minewatch.records import AlarmRecord, CommandRecord
from minewatch.store import first_broken


async def test_replayed_readings_are_counted_not_stored_twice(tmp_path):
    store = SqliteStore(tmp_path / "db.sqlite")
    await store.open()
    rows = [("001A01", 1000.0 + i, 0.1 * i, 0, 1000.0 + i, False) for i in range(100)]
    first = await store.write_readings(rows)
    again = await store.write_readings([*rows[50:], ("001A01", 2000.0, 0.5, 0, 2000.0, False)])
    assert (first.inserted, first.duplicates) == (100, 0)
    assert (again.inserted, again.duplicates) == (1, 50)
    got = await store.readings("001A01", 1010.0, 1020.0, 100)
    assert [r[1] for r in got] == [1010.0 + i for i in range(10)]
    assert await store.readings("001A01", 0, 3000, 5) == (await store.readings(
        "001A01", 0, 3000, 100))[:5]
    await store.close()


async def test_alarms_and_commands_round_trip_and_survive_reopen(tmp_path):
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    await store.open()
    a = AlarmRecord("A1", "001A02", "power_cut_limit", 1, "unack_active", 10.0, 1.8, "瓦斯超限")
    await store.save_alarm(a)
    a.state, a.acked_by = "ack_active", "调度员"
    await store.save_alarm(a)
    c = CommandRecord("C1", "cut", "001C01", "face_1101", "r", "engine", 10.5, alarm_id="A1")
    await store.save_command(c)
    await store.close()
    store = SqliteStore(path)
    await store.open()
    [got] = await store.alarms("active", None, None, 10)
    assert got.state == "ack_active" and got.acked_by == "调度员"
    assert await store.alarms("cleared", None, None, 10) == []
    [cmd] = await store.commands(None, None, 10)
    assert cmd.target == "001C01" and cmd.alarm_id == "A1"
    await store.close()


async def test_journal_chain_detects_an_edited_row(tmp_path):
    path = tmp_path / "db.sqlite"
    store = SqliteStore(path)
    await store.open()
    for i in range(5):
        await store.append_journal(100.0 + i, "alarm_raised", f"A{i}", {"value": i})
    assert first_broken(await store.journal()) is None
    await store.close()
    # Reopen continues the chain from the last row.
    store = SqliteStore(path)
    await store.open()
    await store.append_journal(200.0, "command_sent", "C1", {"target": "001C01"})
    rows = await store.journal()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6] and first_broken(rows) is None
    await store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE journal SET data = '{\"value\": 0.1}' WHERE seq = 3")
    db.commit()
    db.close()
    store = SqliteStore(path)
    await store.open()
    assert first_broken(await store.journal()) == 3
    await store.close()
