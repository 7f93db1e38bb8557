"""Incident persistence, run against every backend (embedded SQLite and real PostgreSQL)."""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from ingest.pg_store import PostgresStore
from minewatch.records import IncidentRecord
from minewatch.store import IncidentQuery
from tests.conftest import make_store

T0 = 1_790_006_400.0


def _inc(id: str, opened: float, updated: float | None = None, state: Any = "open",
         drill: bool = False, kind: str = "gas_overlimit", **data: Any) -> IncidentRecord:
    return IncidentRecord(id, kind, state, opened, opened if updated is None else updated,
                          drill, data or {"step": "power_cut"})


async def _one(store, id: str) -> IncidentRecord:
    [got] = await store.incidents(IncidentQuery(ids=(id,)))
    return got


async def test_save_and_upsert_by_id(store):
    inc = _inc("I1", T0, step="power_cut")
    await store.save_incident(inc)
    assert await _one(store, "I1") == inc
    inc.state, inc.updated_at, inc.data = "closed", T0 + 60, {"step": "closed", "by": "王"}
    await store.save_incident(inc)
    assert await store.incidents(IncidentQuery()) == [inc]  # one row, the new state


async def test_newest_update_wins_and_an_older_replay_is_ignored(store):
    newer = _inc("I1", T0, T0 + 30, "closed", step="closed")
    await store.save_incident(newer)
    # A replay of an earlier state (spool replay after a crash, or out of order).
    await store.save_incident(_inc("I1", T0, T0 + 10, "open", step="evacuation"))
    await store.save_incident(_inc("I1", T0, T0, "open", step="power_cut"))
    assert await _one(store, "I1") == newer
    # An equal updated_at may overwrite (the same change saved again).
    same = _inc("I1", T0, T0 + 30, "closed", step="closed", note="re-saved")
    await store.save_incident(same)
    assert await _one(store, "I1") == same
    # Every column moves with the newer record, not only the JSON.
    later = IncidentRecord("I1", "co_overlimit", "open", T0 + 1, T0 + 31, True, {"x": 1})
    await store.save_incident(later)
    assert await _one(store, "I1") == later
    assert len(await store.incidents(IncidentQuery())) == 1


async def test_each_filter(store):
    await store.save_incident(_inc("I1", T0, state="closed"))
    await store.save_incident(_inc("I2", T0 + 10))
    await store.save_incident(_inc("I3", T0 + 20, drill=True))
    await store.save_incident(_inc("I4", T0 + 30, state="closed", drill=True))

    async def ids(**kw) -> list[str]:
        return [i.id for i in await store.incidents(IncidentQuery(**kw))]

    assert await ids() == ["I4", "I3", "I2", "I1"]
    assert await ids(state="open") == ["I3", "I2"]
    assert await ids(state="closed") == ["I4", "I1"]
    assert await ids(state=None) == ["I4", "I3", "I2", "I1"]
    assert await ids(drill=True) == ["I4", "I3"]
    assert await ids(drill=False) == ["I2", "I1"]
    assert await ids(ids=("I1", "I3", "nope")) == ["I3", "I1"]
    assert await ids(ids=("nope",)) == []
    # t_from inclusive, t_to exclusive, on opened_at.
    assert await ids(t_from=T0 + 10) == ["I4", "I3", "I2"]
    assert await ids(t_to=T0 + 20) == ["I2", "I1"]
    assert await ids(t_from=T0 + 10, t_to=T0 + 30) == ["I3", "I2"]
    assert await ids(t_from=T0 + 31) == []
    # Filters combine.
    assert await ids(state="closed", drill=False) == ["I1"]
    assert await ids(state="open", drill=True, t_from=T0 + 20, ids=("I3", "I4")) == ["I3"]


async def test_newest_opened_first_and_limit(store):
    # Saved out of order; an update does not move an incident (ordering is on opened_at).
    for i in [3, 0, 4, 1, 2]:
        await store.save_incident(_inc(f"I{i}", T0 + i * 60))
    await store.save_incident(_inc("I0", T0, T0 + 1000, "closed"))
    got = await store.incidents(IncidentQuery())
    assert [i.id for i in got] == ["I4", "I3", "I2", "I1", "I0"]
    assert [i.id for i in await store.incidents(IncidentQuery(limit=2))] == ["I4", "I3"]
    assert [i.id for i in await store.incidents(IncidentQuery(limit=2, state="open"))] == [
        "I4", "I3"]
    assert [i.id for i in await store.incidents(IncidentQuery(limit=1, state="closed"))] == [
        "I0"]
    # The same opened_at: a stable order by id, newest-looking id first.
    await store.save_incident(_inc("I5a", T0 + 500))
    await store.save_incident(_inc("I5b", T0 + 500))
    assert [i.id for i in await store.incidents(IncidentQuery(limit=3))] == [
        "I5b", "I5a", "I4"]


async def test_json_data_round_trips(store):
    data = {
        "title": "1101 回风巷瓦斯超限 — 断电、撤人",
        "steps": [
            {"name": "power_cut", "at": T0 + 0.123456789, "relays": ["001C01", "001C02"],
             "ok": True},
            {"name": "evacuation", "at": T0 + 1.5, "people": 42, "by": "调度员",
             "areas": [["1101", "1102"], []]},
            {"name": "report", "chain": [{"to": "矿长", "ack": None}], "notes": ""},
        ],
        "peak": {"ch4": 1.8300000000000001, "ratio": 1 / 3, "tiny": 1e-7, "neg": -2.5,
                 "big": 1e20, "whole": 2.0, "int": 2**53 + 1, "zero": 0.0},
        "z_last_key_first": {"b": 1, "a": 2, "aa": 3},
        "empty": {},
        "escapes": "quote \" backslash \\ tab \t newline \n emoji 🚨",
    }
    inc = IncidentRecord("I1", "gas_overlimit", "open", T0, T0 + 2, False, data)
    await store.save_incident(inc)
    got = await _one(store, "I1")
    assert got == inc
    assert IncidentRecord.from_dict(got.to_dict()) == inc
    # Exact: float stays float (jsonb alone would return 1e20 as an int), key order kept.
    assert type(got.data["peak"]["big"]) is float and type(got.data["peak"]["whole"]) is float
    assert type(got.data["peak"]["int"]) is int
    assert list(got.data["z_last_key_first"]) == ["b", "a", "aa"]
    assert list(got.data) == list(data)
    assert got.data["peak"]["ch4"] == 1.8300000000000001
    assert type(got.drill) is bool and type(got.opened_at) is float


async def test_non_finite_floats_in_data_are_stored_as_null(store):
    # As for alarms and journal data: strict JSON, NaN/inf become null.
    inc = _inc("I1", T0, peak=math.nan, hi=math.inf, ok=1.0)
    await store.save_incident(inc)
    got = await _one(store, "I1")
    assert got.data == {"peak": None, "hi": None, "ok": 1.0}


async def test_sqlite_database_from_before_incidents_gets_the_table(tmp_path):
    path = tmp_path / "old.sqlite"
    s = make_store({"name": "sqlite", "path": path})
    await s.open()
    await s.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE incidents")  # as a database created by an earlier version
    db.commit()
    db.close()
    s = make_store({"name": "sqlite", "path": path})
    await s.open()
    try:
        await s.save_incident(_inc("I1", T0))
        assert [i.id for i in await s.incidents(IncidentQuery())] == ["I1"]
        db = sqlite3.connect(path)
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE "
                                            "type = 'index' AND tbl_name = 'incidents'")}
        db.close()
        assert "incidents_opened" in indexes
    finally:
        await s.close()


async def test_postgres_incidents_are_per_mine(pg_url):
    a, b = PostgresStore(pg_url, "north"), PostgresStore(pg_url, "south")
    await a.open()
    await b.open()
    try:
        await a.save_incident(_inc("I1", T0, step="north"))
        await b.save_incident(_inc("I1", T0, T0 + 5, "closed", step="south"))
        # An older save in one mine is not compared with the other mine's row.
        await a.save_incident(_inc("I1", T0, T0 + 1, step="north-2"))
        [na] = await a.incidents(IncidentQuery())
        [sb] = await b.incidents(IncidentQuery())
        assert (na.state, na.data, na.updated_at) == ("open", {"step": "north-2"}, T0 + 1)
        assert (sb.state, sb.data) == ("closed", {"step": "south"})
    finally:
        await a.close()
        await b.close()
