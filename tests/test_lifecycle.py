"""Alarm lifecycle (ISA-18.2): ack, shelve, out of service, suppression by design, comments."""

from __future__ import annotations

import math

import pytest

from alarms.lifecycle import (
    MAX_SHELVE_S,
    POINT_IN_SERVICE,
    POINT_OUT_OF_SERVICE,
    AlarmBook,
    AlarmError,
    PointPlace,
    add_comment,
    controls_from_journal,
    downwind_from_mine,
    places_from_mine,
    suppressing_root,
)
from minewatch.mine import Mine
from minewatch.records import AlarmRecord, OutOfService, Shelf

T = 1_000_000.0
H = 3600.0


@pytest.fixture
def book() -> AlarmBook:
    return AlarmBook()


# --- the existing states --------------------------------------------------------------------

def test_raise_ack_clear_cycle_unchanged(book):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    assert a.state == "unack_active" and a.annunciated and a.comments == []
    assert book.ack(a.id, "op", T + 1).state == "ack_active"
    assert book.clear("001A01", "over_limit", T + 2).state == "cleared"
    assert a.id not in book.open


# --- shelving ------------------------------------------------------------------------------

def test_shelve_records_who_why_until_and_hides_the_alarm(book):
    a = book.raise_("002A05", "under_limit", 0.1, T, "风速低")
    rec, transition = book.shelve(a.id, "王工", "风速传感器抖动，已报修", T + 2 * H, T + 1)
    assert transition == "shelved"
    assert (rec.shelved, rec.shelved_by, rec.shelve_reason, rec.shelved_at,
            rec.shelved_until) == (True, "王工", "风速传感器抖动，已报修", T + 1, T + 2 * H)
    assert rec.state == "unack_active" and not rec.annunciated and rec.updated_at == T + 1
    assert book.shelves[("002A05", "under_limit")] == Shelf(
        "002A05", "under_limit", "王工", "风速传感器抖动，已报修", T + 1, T + 2 * H, a.id)
    # The condition keeps being tracked underneath: it returns, is acknowledged, closes.
    assert book.clear("002A05", "under_limit", T + 10).state == "unack_rtn"
    assert book.ack(a.id, "王工", T + 11).state == "cleared"
    # The shelf is per point + kind: the same condition raising again is born shelved.
    b = book.raise_("002A05", "under_limit", 0.1, T + 20, "风速低")
    assert b.id != a.id and b.shelved and b.shelved_by == "王工" and not b.annunciated


@pytest.mark.parametrize("kind", ["power_cut_limit", "cut_unverified"])
def test_safety_critical_alarms_cannot_be_shelved(book, kind):
    a = book.raise_("001A02", kind, 1.6, T, "m")
    with pytest.raises(AlarmError) as exc:
        book.shelve(a.id, "王工", "reason", T + H, T)
    msg = str(exc.value)
    assert "不能搁置" in msg and "cannot be shelved" in msg
    assert not book.open[a.id].shelved and not book.shelves


@pytest.mark.parametrize("args, match", [
    (("", "r", T + H, T), "needs a user"),
    (("u", "  ", T + H, T), "needs a reason"),
    (("u", "r", T, T), "in the future"),
    (("u", "r", T + MAX_SHELVE_S + 1, T), "limited to 8 h"),
])
def test_shelve_refuses_bad_requests(book, args, match):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    with pytest.raises(AlarmError, match=match):
        book.shelve(a.id, *args)


def test_shelve_refuses_unknown_closed_or_already_shelved(book):
    with pytest.raises(AlarmError, match="not open"):
        book.shelve("nope", "u", "r", T + H, T)
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    book.shelve(a.id, "u", "r", T + H, T)
    with pytest.raises(AlarmError, match="already shelved"):
        book.shelve(a.id, "u", "r", T + H, T)
    book.ack(a.id, "u", T + 1)
    book.clear("001A01", "over_limit", T + 2)
    with pytest.raises(AlarmError, match="not open"):
        book.shelve(a.id, "u", "r", T + H, T + 3)


def test_unshelve_shows_the_alarm_in_its_real_state(book):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    book.shelve(a.id, "u", "r", T + H, T)
    book.clear("001A01", "over_limit", T + 5)
    rec, transition = book.unshelve(a.id, "值班员", T + 10)
    assert transition == "unshelved" and rec.state == "unack_rtn" and rec.annunciated
    assert rec.shelved_by is None and rec.shelved_until is None
    assert not book.shelves
    with pytest.raises(AlarmError, match="not shelved"):
        book.unshelve(a.id, "值班员", T + 11)
    with pytest.raises(AlarmError, match="not open"):
        book.unshelve("nope", "值班员", T + 11)
    with pytest.raises(AlarmError, match="needs a user"):
        book.unshelve(a.id, "", T + 11)


def test_unshelve_point_also_without_an_open_alarm(book):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    book.shelve(a.id, "u", "r", T + H, T)
    book.ack(a.id, "u", T + 1)
    book.clear("001A01", "over_limit", T + 2)  # closed; the shelf stays
    shelf, change = book.unshelve_point("001A01", "over_limit", "u", T + 3)
    assert shelf.alarm_id == a.id and change is None and not book.shelves
    with pytest.raises(AlarmError, match="not shelved"):
        book.unshelve_point("001A01", "over_limit", "u", T + 4)
    b = book.raise_("001A01", "fault", 1.1, T, "m")
    book.shelve(b.id, "u", "r", T + H, T)
    _, (rec, transition) = book.unshelve_point("001A01", "fault", "u", T + 5)
    assert transition == "unshelved" and not rec.shelved


def test_expire_shelves_at_expiry(book):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    b = book.raise_("001A03", "fault", math.nan, T, "m")
    book.shelve(a.id, "u", "r", T + H, T)
    book.shelve(b.id, "u", "r", T + 2 * H, T)
    book.ack(b.id, "u", T + 1)
    book.clear("001A03", "fault", T + 2)  # b closed while shelved
    assert book.expire_shelves(T + H - 1) == []
    [(rec, transition)] = book.expire_shelves(T + H)
    assert transition == "shelve_expired" and rec.id == a.id and rec.annunciated
    assert rec.updated_at == T + H
    assert book.expire_shelves(T + 2 * H) == []  # b's shelf goes silently
    assert not book.shelves


# --- out of service ------------------------------------------------------------------------

def test_out_of_service_point_alarms_are_recorded_not_annunciated(book):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    c = book.raise_("001A01", "power_cut_limit", 1.6, T, "m")
    entry, changes = book.set_out_of_service("001A01", "张工", "更换传感器", T + 1, until=T + H)
    assert entry == OutOfService("001A01", "张工", "更换传感器", T + 1, T + H)
    assert [(r.id, t) for r, t in changes] == [(a.id, "out_of_service")]
    assert not book.open[a.id].annunciated
    assert book.open[c.id].annunciated  # safety-critical stays on the screen
    f = book.raise_("001A01", "fault", math.nan, T + 2, "m")
    assert f.out_of_service and not f.annunciated and f.id in book.open  # recorded
    assert book.overdue_out_of_service(T + H - 1) == []
    assert book.overdue_out_of_service(T + H) == [entry]
    ended, changes = book.return_to_service("001A01", "张工", T + 3)
    assert (ended.ended_at, ended.ended_by) == (T + 3, "张工")
    assert sorted(t for _, t in changes) == ["in_service", "in_service"]
    assert all(r.annunciated for r in book.open.values())
    assert POINT_OUT_OF_SERVICE == "point_out_of_service" and POINT_IN_SERVICE == "point_in_service"


def test_out_of_service_illegal_transitions(book):
    with pytest.raises(AlarmError, match="not out of service"):
        book.return_to_service("001A01", "u", T)
    with pytest.raises(AlarmError, match="needs a reason"):
        book.set_out_of_service("001A01", "u", "", T)
    with pytest.raises(AlarmError, match="in the future"):
        book.set_out_of_service("001A01", "u", "r", T, until=T - 1)
    book.set_out_of_service("001A01", "u", "r", T)
    with pytest.raises(AlarmError, match="already out of service"):
        book.set_out_of_service("001A01", "u", "r", T)
    with pytest.raises(AlarmError, match="needs a user"):
        book.return_to_service("001A01", "", T)


# --- suppression by design -----------------------------------------------------------------

@pytest.fixture(scope="module")
def mine_places():
    mine = Mine.load()
    return places_from_mine(mine), downwind_from_mine(mine)


def test_fan_stop_suppresses_low_wind_in_the_heading(book, mine_places):
    places, downwind = mine_places
    fan = book.raise_("002D01", "under_limit", 0.0, T, "主局扇停")
    wind = book.raise_("002A05", "under_limit", 0.1, T + 5, "风速低")
    other = book.raise_("001A12", "under_limit", 0.1, T + 6, "工作面风速低")  # other area
    [(rec, transition)] = book.update_suppression(places, downwind, T + 6)
    assert (rec.id, transition, rec.suppressed_by) == (wind.id, "suppressed", fan.id)
    assert not rec.annunciated and book.open[fan.id].annunciated
    assert book.open[other.id].annunciated
    assert book.update_suppression(places, downwind, T + 7) == []  # no change, no event
    book.clear("002D01", "under_limit", T + 8)  # fan runs again
    [(rec, transition)] = book.update_suppression(places, downwind, T + 8)
    assert (rec.id, transition, rec.suppressed, rec.suppressed_by) == \
        (wind.id, "unsuppressed", False, None)


def test_methane_downstream_alarms_suppressed_by_the_upstream_root(book, mine_places):
    places, downwind = mine_places
    face = book.raise_("002A01", "over_limit", 1.1, T, "m")
    ret = book.raise_("002A02", "over_limit", 1.05, T + 30, "m")  # 12 m from the mouth
    district = book.raise_("003A01", "over_limit", 1.02, T + 60, "m")  # downwind area
    cut = book.raise_("002A02", "power_cut_limit", 1.05, T + 30, "m")
    changes = dict((r.id, (t, r.suppressed_by)) for r, t in
                   book.update_suppression(places, downwind, T + 60))
    assert changes == {ret.id: ("suppressed", face.id), district.id: ("suppressed", face.id)}
    assert book.open[cut.id].annunciated  # power-cut alarms are never suppressed


def test_downstream_alarm_raised_first_is_not_hidden_by_its_upstream(book, mine_places):
    places, downwind = mine_places
    book.raise_("002A02", "over_limit", 1.05, T, "m")
    book.raise_("002A01", "over_limit", 1.1, T + 30, "m")
    assert book.update_suppression(places, downwind, T + 30) == []


def test_suppressing_root_helper():
    fan = PointPlace("heading_2102", "fan", "R07", 0.8)
    wind = PointPlace("heading_2102", "wind", "R08", 0.9)
    assert suppressing_root(wind, "under_limit", [("A1", fan, "under_limit")], {}) == "A1"
    assert suppressing_root(wind, "over_limit", [("A1", fan, "under_limit")], {}) is None
    up = PointPlace("heading_2102", "ch4", "R08", 0.01)
    down = PointPlace("heading_2102", "ch4", "R08", 0.96)
    elsewhere = PointPlace("heading_2102", "ch4", "R07", 0.99)
    roots = [("A2", up, "over_limit")]
    assert suppressing_root(down, "over_limit", roots, {}) == "A2"
    assert suppressing_root(down, "power_cut_limit", roots, {}) is None
    assert suppressing_root(elsewhere, "over_limit", roots, {}) is None  # order unknown
    far = PointPlace("district_return", "ch4", "R10", 0.5)
    assert suppressing_root(far, "over_limit", roots, {"heading_2102": {"district_return"}}) \
        == "A2"
    assert suppressing_root(far, "over_limit", roots, {}) is None


# --- comments --------------------------------------------------------------------------------

def test_comments_append_with_user_and_time(book):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    rec, transition = book.comment(a.id, "王工", "已通知带班领导", T + 1)
    assert transition == "commented"
    rec, _ = book.comment(a.id, "李工", "瓦斯已排放", T + 2)
    assert rec.comments == [{"at": T + 1, "user": "王工", "text": "已通知带班领导"},
                            {"at": T + 2, "user": "李工", "text": "瓦斯已排放"}]
    assert a.comments == []  # records are copied, never edited in place
    with pytest.raises(AlarmError, match="needs text"):
        book.comment(a.id, "王工", "  ", T + 3)
    with pytest.raises(AlarmError, match="limited to 2000"):
        book.comment(a.id, "王工", "x" * 2001, T + 3)
    with pytest.raises(AlarmError, match="not open"):
        book.comment("nope", "王工", "x", T + 3)


def test_comment_on_a_cleared_stored_record():
    rec = AlarmRecord("A1", "001A01", "over_limit", 2, "cleared", T, 1.1, "m", cleared_at=T + 1)
    new, transition = add_comment(rec, "总工", "事后分析：回风隅角积聚", T + 100)
    assert transition == "commented" and new.comments[0]["user"] == "总工"
    assert new.state == "cleared" and new.updated_at == T + 100


# --- persistence ------------------------------------------------------------------------------

def test_old_stored_records_load_with_defaults():
    old = {"id": "A1", "point_id": "001A01", "kind": "over_limit", "severity": 2,
           "state": "unack_active", "raised_at": T, "value": None, "message": "m",
           "cleared_at": None, "acked_at": None, "acked_by": None, "drill": False,
           "updated_at": T}
    rec = AlarmRecord.from_dict(old)
    assert math.isnan(rec.value) and rec.comments == [] and rec.annunciated
    assert not rec.shelved and rec.shelved_until is None and rec.suppressed_by is None
    rec2 = AlarmRecord.from_dict({**old, "comments": None, "shelved": None})
    assert rec2.comments == [] and rec2.shelved is False
    full = AlarmRecord.from_dict(add_comment(rec, "u", "t", T)[0].to_dict())
    assert full.comments == [{"at": T, "user": "u", "text": "t"}]


def test_restart_recovers_shelves_and_out_of_service(book):
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    shelved, _ = book.shelve(a.id, "u", "r", T + H, T)
    entry, _ = book.set_out_of_service("002A03", "u", "maint", T)
    fresh = AlarmBook()
    fresh.restore([shelved])
    assert fresh.shelves[("001A01", "over_limit")].until == T + H
    rows = [
        {"at": T, "event": "alarm_shelved", "data": shelved.to_dict()},
        {"at": T, "event": "alarm_shelved", "data": {
            **shelved.to_dict(), "point_id": "001A03", "kind": "fault"}},
        {"at": T + 1, "event": "alarm_unshelved", "data": {"point_id": "001A03",
                                                           "kind": "fault"}},
        {"at": T, "event": POINT_OUT_OF_SERVICE, "data": entry.to_dict()},
        {"at": T, "event": POINT_OUT_OF_SERVICE, "data": OutOfService(
            "003A01", "u", "r", T).to_dict()},
        {"at": T + 2, "event": POINT_IN_SERVICE, "data": {"point_id": "003A01"}},
    ]
    shelves, oos = controls_from_journal(rows, now=T + 10)
    assert [(s.point_id, s.kind, s.by, s.until) for s in shelves] == \
        [("001A01", "over_limit", "u", T + H)]
    assert oos == [entry]
    assert controls_from_journal(rows, now=T + H)[0] == []  # expired meanwhile
    again = AlarmBook()
    again.restore([], shelves=shelves, out_of_service=oos)
    b = again.raise_("001A01", "over_limit", 1.2, T + 20, "m")
    c = again.raise_("002A03", "over_limit", 1.2, T + 20, "m")
    assert b.shelved and c.out_of_service


def test_new_fields_survive_the_stores_json_round_trip(book):
    from minewatch.store import normalise

    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    rec, _ = book.shelve(a.id, "王工", "检修", T + H, T)
    rec, _ = book.comment(rec.id, "王工", "备注", T + 1)
    assert AlarmRecord.from_dict(normalise(rec.to_dict())) == rec


def test_error_classes_for_http_statuses(book):
    from alarms.lifecycle import AlarmConflict, AlarmForbidden, AlarmInvalid, AlarmNotFound

    with pytest.raises(AlarmNotFound):
        book.ack("nope", "u", T)
    a = book.raise_("001A01", "over_limit", 1.1, T, "m")
    with pytest.raises(AlarmInvalid):
        book.shelve(a.id, "u", "", T + H, T)
    book.shelve(a.id, "u", "r", T + H, T)
    with pytest.raises(AlarmConflict):
        book.shelve(a.id, "u", "r", T + H, T)
    lock = book.raise_("002C01", "lockout", math.nan, T, "风电闭锁")
    assert lock.severity == 1
    with pytest.raises(AlarmForbidden):
        book.shelve(lock.id, "u", "r", T + H, T)
    assert issubclass(AlarmForbidden, AlarmError)


def test_screen_order_puts_roots_first(book, mine_places):
    from alarms.lifecycle import screen_order

    places, downwind = mine_places
    fan = book.raise_("002D01", "under_limit", 0.0, T, "主局扇停")
    wind = book.raise_("002A05", "under_limit", 0.1, T + 5, "风速低")
    co = book.raise_("001A07", "over_limit", 30, T + 6, "CO")
    cut = book.raise_("001A02", "power_cut_limit", 1.6, T + 1, "断电")
    shelved = book.raise_("003A04", "over_limit", 30, T + 7, "CO")
    book.shelve(shelved.id, "u", "r", T + H, T + 7)
    book.update_suppression(places, downwind, T + 8)
    order = [r.id for r in screen_order(book.open.values())]
    assert order == [cut.id, co.id, fan.id, wind.id, shelved.id]
