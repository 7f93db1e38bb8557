"""The incident workflow as a pure state machine, driven by an injected clock (no sleeps)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from alarms.incidents import AlarmInfo, IncidentBook, IncidentConflict, Layout
from minewatch.emergency import Emergency
from minewatch.mine import SAMPLE_MINE, Mine

T0 = 1_800_000_000.0  # a fixed clock


@dataclass
class Cmd:
    action: str
    target: str
    result: str
    issued_by: str = "engine"
    sent_at: float | None = None
    verified_at: float | None = None


@pytest.fixture
def book() -> IncidentBook:
    people = {"face_1101": 3}
    return IncidentBook(Emergency.load(), Layout.from_mine(Mine.load(SAMPLE_MINE)), "I",
                        people=lambda a: people.get(a, 0))


def _open(book: IncidentBook, at: float = T0):
    return book.on_alarm(AlarmInfo("A1", "001A02", "power_cut_limit", 1.8, at), at)


def test_gas_overlimit_opens_an_incident_with_the_regulation_sequence(book):
    inc, effects = _open(book)
    assert inc is not None and inc.state == "open" and inc.kind == "gas_overlimit"
    assert inc.areas == ["face_1101", "shearer_1101", "return_1101"]
    # Evacuation reaches the areas downwind on the same return air.
    assert inc.evac_areas == ["face_1101", "shearer_1101", "return_1101", "district_return",
                              "main_return"]
    assert set(inc.relays) == {"001C01", "001C02", "001C03"}
    names = [s.name for s in inc.steps]
    assert names[:3] == ["power_cut", "power_verified", "evacuation_order"]
    assert [n for n in names if n.startswith("report:")] == [
        "report:shift_leader", "report:dispatch", "report:mine_leader", "report:county",
        "report:city"]
    assert names[-2:] == ["restore", "close"]
    assert inc.step("evacuation_order").done_at == T0  # ordered at once
    notify = [e for e in effects if e.kind == "notify"]
    assert {e.target for e in notify} == {f"area:{a}" for a in inc.evac_areas} | {
        "level:shift_leader"}  # only the first report level is notified at first
    assert inc.step("report:city").deadline == T0 + 1800  # DOMAIN.md: city ≤ 30 min
    assert inc.step("report:county").deadline == T0 + 600
    assert inc.step("evacuate:face_1101").extra["people"] == 3
    # A later alarm in its areas joins the incident instead of opening another.
    again, _ = book.on_alarm(AlarmInfo("A2", "001A03", "over_limit", 1.2, T0 + 5), T0 + 5)
    assert again is inc and inc.alarms == ["A1", "A2"] and len(book.incidents) == 1


def test_power_cut_verified_completes_the_first_steps(book):
    inc, _ = _open(book)
    for r in inc.relays:
        book.on_command(Cmd("cut", r, "sent", sent_at=T0 + 0.01), T0 + 0.01)
    assert inc.step("power_cut").state == "done"
    assert inc.step("power_cut").done_at == T0 + 0.01
    assert inc.step("power_verified").state == "active"
    for r in inc.relays:
        book.on_command(Cmd("cut", r, "verified", verified_at=T0 + 0.6), T0 + 0.6)
    assert inc.step("power_verified").state == "done"
    assert inc.step("power_verified").done_at == T0 + 0.6


def test_unverified_cut_is_retried_once_then_escalates_with_a_wider_cut(book):
    inc, _ = _open(book)
    [(_, effects)] = book.on_command(Cmd("cut", "001C01", "unverified"), T0 + 2.5)
    retry = [e for e in effects if e.kind == "cut"]
    assert retry and retry[0].relays == ("001C01",)
    assert inc.step("power_verified").state == "active"
    [(_, effects)] = book.on_command(Cmd("cut", "001C01", "unverified"), T0 + 5.0)
    step = inc.step("power_verified")
    assert step.state == "failed" and "断电失败" in step.detail
    assert not [e for e in effects if e.kind == "cut"]  # no third attempt by itself
    assert any(e.kind == "notify" and "断电失败" in e.message for e in effects)
    # The wider cut: relays of the areas upwind and downwind not already in the range.
    assert inc.wider_relays and not set(inc.wider_relays) & set(inc.relays)
    _, effects = book.wider_cut(inc.id, "调度员", T0 + 10)
    assert [e.relays for e in effects if e.kind == "cut"] == [tuple(inc.wider_relays)]


def test_an_unacknowledged_report_escalates_after_its_deadline(book):
    inc, _ = _open(book)
    leader, dispatch = inc.step("report:shift_leader"), inc.step("report:dispatch")
    assert leader.state == "active" and dispatch.state == "pending"
    assert book.tick(T0 + 119) == []  # not yet
    [(_, effects)] = book.tick(T0 + 121)
    assert leader.state == "overdue" and leader.extra["escalated_to"] == "dispatch"
    assert dispatch.state == "active" and dispatch.started_at == T0 + 121
    assert any(e.kind == "notify" and e.target == "level:dispatch" for e in effects)
    assert any(e.kind == "journal" and e.target == "incident_escalated" for e in effects)
    # Acknowledging the dispatch level notifies the next one at once.
    _, effects = book.ack(inc.id, "report:dispatch", "李明", T0 + 130)
    assert dispatch.state == "done" and dispatch.by == "李明"
    assert inc.step("report:mine_leader").state == "active"
    # The overdue level may still acknowledge late; it is marked late.
    book.ack(inc.id, "report:shift_leader", "张建国", T0 + 140)
    assert leader.state == "done" and leader.extra["late"] is True
    with pytest.raises(IncidentConflict):
        book.ack(inc.id, "report:city", "x", T0 + 141)  # not notified yet


def test_close_needs_restore_and_every_area_clear(book):
    inc, _ = _open(book)
    with pytest.raises(IncidentConflict, match="尚未复电"):
        book.close(inc.id, "王志强", T0 + 60)
    for r in inc.relays:
        book.on_command(Cmd("restore", r, "sent", issued_by="带班领导"), T0 + 300)
    assert inc.step("restore").state == "done" and inc.step("restore").by == "带班领导"
    with pytest.raises(IncidentConflict, match="撤人未确认"):
        book.close(inc.id, "王志强", T0 + 301)
    for a in inc.evac_areas:
        book.ack(inc.id, f"evacuate:{a}", "调度员", T0 + 302)
    assert inc.step("evacuate:face_1101").extra["people_at_confirm"] == 3
    book.set_task(inc.id, "R05", "done", "救护一队", "调度员", T0 + 303)
    assert inc.step("discharge:R05").state == "done"
    inc, _ = book.close(inc.id, "王志强", T0 + 400)
    assert inc.state == "closed" and inc.closed_at == T0 + 400
    assert inc.step("close").by == "王志强"
    # Closed: no more changes; a new over-limit opens a new incident.
    with pytest.raises(IncidentConflict):
        book.ack(inc.id, "report:city", "x", T0 + 401)
    new, _ = book.on_alarm(AlarmInfo("A9", "001A02", "power_cut_limit", 1.6, T0 + 500),
                           T0 + 500)
    assert new is not None and new.id != inc.id


def test_non_trigger_alarm_outside_any_incident_opens_nothing(book):
    inc, effects = book.on_alarm(AlarmInfo("A1", "001A02", "over_limit", 1.1, T0), T0)
    assert inc is None and effects == [] and not book.incidents
