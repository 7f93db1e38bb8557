"""The store contract, run against every backend (embedded SQLite and real PostgreSQL)."""

from __future__ import annotations

import math

import pytest

from minewatch.records import AlarmRecord, CommandRecord, DeadLetter
from minewatch.store import (
    AlarmQuery,
    CommandQuery,
    HistoryQuery,
    Retention,
    first_broken,
    verify_journal,
)
from tests.conftest import make_store

T0 = 1_790_006_400.0  # 2026-09-21 14:40 UTC, on an hour boundary


def _rows(point: str, start: float, n: int, step: float = 1.0, value=lambda i: 0.01 * i,
          quality: int = 0, drill: bool = False):
    return [(point, start + i * step, value(i), quality, start + i * step, drill)
            for i in range(n)]


async def test_replayed_readings_are_counted_not_stored_twice(store):
    rows = _rows("001A01", T0, 100)
    first = await store.write_readings(rows)
    again = await store.write_readings([*rows[50:], ("001A01", T0 + 500, 0.5, 0, T0, False)])
    assert (first.inserted, first.duplicates) == (100, 0)
    assert (again.inserted, again.duplicates) == (1, 50)
    got = await store.history(HistoryQuery(("001A01",), T0 + 10, T0 + 20))
    assert [r[1] for r in got] == [T0 + 10 + i for i in range(10)]
    assert got[0][2] == pytest.approx(0.10)


async def test_history_pages_with_a_cursor_across_points(store):
    await store.write_readings(_rows("001A01", T0, 30) + _rows("001A02", T0, 30))
    seen, after = [], None
    while True:
        page = await store.history(HistoryQuery(("001A01", "001A02"), T0, T0 + 3600,
                                                limit=7, after=after))
        if not page:
            break
        seen += [(r[0], r[1]) for r in page]
        after = (page[-1][1], page[-1][0])
    assert len(seen) == 60 and len(set(seen)) == 60
    assert seen == sorted(seen, key=lambda x: (x[1], x[0]))


async def test_rollups_aggregate_ok_readings_and_count_alarms(store):
    # 3 minutes of 1 Hz data: value = minute index + second/100; one calibrating and one
    # drill reading with huge values that must not reach the rollups.
    rows = _rows("001A01", T0, 180, value=lambda i: i // 60 + (i % 60) / 100)
    rows[5] = ("001A01", T0 + 5, 9.99, 2, T0 + 5, False)  # calibrating
    rows[6] = ("001A01", T0 + 6, 8.88, 0, T0 + 6, True)  # drill
    await store.write_readings(rows)
    await store.save_alarm(AlarmRecord("A1", "001A01", "over_limit", 2, "cleared", T0 + 70,
                                       1.1, "m"))
    if hasattr(store, "refresh_rollups"):
        await store.refresh_rollups()
    got = await store.history(HistoryQuery(("001A01",), T0, T0 + 180, "1m"))
    assert [r[1] for r in got] == [T0, T0 + 60, T0 + 120]
    b0, b1, b2 = got
    assert b0[6] == 58 and b1[6] == 60 and b2[6] == 60  # count excludes the two bad rows
    assert b0[2] == pytest.approx(0.0) and b0[3] == pytest.approx(0.59)  # min, max
    assert b1[5] == pytest.approx(1.59)  # last
    assert b1[4] == pytest.approx(1 + sum(range(60)) / 100 / 60)  # avg
    assert (b0[7], b1[7], b2[7]) == (0, 1, 0)  # alarms raised per bucket
    [h] = await store.history(HistoryQuery(("001A01",), T0, T0 + 3600, "1h"))
    assert h[6] == 178 and h[3] == pytest.approx(2.59)
    assert len(await store.history(HistoryQuery(("001A01",), T0, T0 + 180, "5m"))) == 1


async def test_alarm_and_command_queries_filter_and_round_trip(store):
    a = AlarmRecord("A1", "001A02", "power_cut_limit", 1, "unack_active", T0, 1.8, "瓦斯超限")
    await store.save_alarm(a)
    a.state, a.acked_by = "ack_active", "调度员"
    await store.save_alarm(a)
    await store.save_alarm(AlarmRecord("A2", "001A03", "fault", 2, "cleared", T0 + 10,
                                       math.nan, "故障", drill=True))
    [got] = await store.alarms(AlarmQuery(state="active"))
    assert got.state == "ack_active" and got.acked_by == "调度员" and got.message == "瓦斯超限"
    [drill] = await store.alarms(AlarmQuery(drill=True))
    assert drill.id == "A2" and math.isnan(drill.value)
    assert [x.id for x in await store.alarms(AlarmQuery(kinds=("fault",)))] == ["A2"]
    assert [x.id for x in await store.alarms(AlarmQuery(point_ids=("001A02",)))] == ["A1"]
    assert [x.id for x in await store.alarms(AlarmQuery(t_from=T0 + 5))] == ["A2"]
    assert await store.alarms(AlarmQuery(state="unack_rtn")) == []
    c = CommandRecord("C1", "cut", "001C01", "face_1101", "r", "engine", T0 + 1, alarm_id="A1")
    await store.save_command(c)
    c.result, c.verified_at = "verified", T0 + 1.5
    await store.save_command(c)
    await store.save_command(CommandRecord("C2", "restore", "001C01", "face_1101", "r", "王",
                                           T0 + 100))
    [cmd] = await store.commands(CommandQuery(action="cut"))
    assert cmd.result == "verified" and cmd.verified_at == T0 + 1.5
    assert [x.id for x in await store.commands(CommandQuery(alarm_ids=("A1",)))] == ["C1"]
    assert [x.id for x in await store.commands(CommandQuery())] == ["C2", "C1"]


async def test_journal_is_chained_idempotent_by_key_and_verifiable(store):
    for i in range(5):
        row = await store.append_journal(T0 + i, "alarm_raised", f"A{i}", {"value": i * 0.1},
                                         key=f"k{i}")
        assert row is not None and row.seq == i + 1
    assert await store.append_journal(T0, "alarm_raised", "A0", {"value": 0}, key="k0") is None
    rows = await store.journal()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5] and first_broken(rows) is None
    assert await verify_journal(store, page=2) == (5, None)


async def test_retention_prunes_old_records_and_keeps_the_chain_verifiable(backend):
    store = make_store(backend, retention=Retention(raw_days=1, rollup_days=2, records_days=2))
    await store.open()
    try:
        now = T0 + 10 * 86400
        await store.write_readings(_rows("001A01", T0, 10) + _rows("001A01", now - 60, 10))
        for i, at in enumerate([T0, T0 + 1, now - 5, now - 4]):
            await store.append_journal(at, "e", "s", {"i": i}, key=f"k{i}")
        await store.save_alarm(AlarmRecord("A1", "p", "fault", 2, "cleared", T0, 0, "m"))
        await store.save_alarm(AlarmRecord("A2", "p", "fault", 2, "unack_active", T0, 0, "m"))
        done = await store.maintain(now)
        assert done["journal_pruned"] == 2
        left = await store.history(HistoryQuery(("001A01",), T0 - 10, now + 10,
                                                limit=100))
        assert [r[1] for r in left] == [now - 60 + i for i in range(10)]
        assert await store.journal_anchor() != (0, "0" * 64)
        assert await verify_journal(store) == (2, None)
        assert [a.id for a in await store.alarms(AlarmQuery())] == ["A2"]  # open alarms stay
        row = await store.append_journal(now, "e", "s", {"i": 9}, key="k9")
        assert row is not None and row.seq == 5
        assert await verify_journal(store) == (3, None)
    finally:
        await store.close()


async def test_dead_letters_are_kept_once_with_their_reason(store):
    letter = DeadLetter("k1", T0, "mw/demo/S04/data", "unit", "point 004A01 is in '%'",
                        '{"point": "004A01"}')
    await store.save_dead_letter(letter)
    await store.save_dead_letter(letter)  # a spool replay
    await store.save_dead_letter(DeadLetter("k2", T0 + 1, "mw/demo/S04/data", "json", "x", "{"))
    got = await store.dead_letters(None, None, 10)
    assert [d.key for d in got] == ["k2", "k1"]
    assert got[1] == letter
    assert [d.key for d in await store.dead_letters(T0 + 0.5, None, 10)] == ["k2"]
