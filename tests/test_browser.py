"""The wall screen in real headless Chromium: live values and schematic, a 瓦斯超限 alarm with
its tone, the trend chart with limits, the incident panel, acknowledging from one screen seen
on a second one, filters, and the stale indicator when the server stops."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from playwright.sync_api import sync_playwright

from minewatch.procs import ADMIN_PASSWORD, start_service
from tests.conftest import ARTIFACTS, ROOT, RunningService

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]  # a kiosk wall screen


@pytest.fixture
def browser(tmp_path):
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1920, "height": 1080}, locale="zh-CN",
            bypass_csp=True)  # the test's own page scripts (wait_for_function) use eval
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def strict_browser():
    """A browser that enforces the service's Content-Security-Policy, as a real one does."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ctx = b.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
        try:
            yield ctx
        finally:
            ctx.close()
            b.close()


def _open(browser, service: RunningService):
    page = browser.new_page()
    # Logged in: the token the wall screen keeps after the login form.
    page.add_init_script(f"localStorage.setItem('mw_token', {json.dumps(service.token)})")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(service.url + "/")
    page.wait_for_selector('#points tr[data-point="001A02"]')
    page.wait_for_selector('#conn[data-state="ok"]', timeout=5000)
    return page, errors


@pytest.mark.browser
def test_wall_screen_alarm_schematic_chart_sound_and_ack_on_two_screens(
        service: RunningService, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors = _open(browser, service)
    other, _ = _open(browser, service)
    assert "调度大屏" in page.title() or "调度大屏" in page.inner_text("header")
    assert page.locator("#points tbody tr").count() >= 40
    # Live values change over the WebSocket (the simulator adds noise every poll), in the
    # table and on the schematic.
    cell = 'tr[data-point="001A01"]'
    first = page.get_attribute(cell, "data-value")
    page.wait_for_function(
        f"document.querySelector('{cell}').dataset.value !== {first!r}", timeout=5000)
    assert page.locator("#schematic .pt").count() >= 40
    assert page.locator("#schematic .road").count() >= 10
    assert page.get_attribute('#schematic .pt[data-point="001A01"]', "data-state") == "normal"
    assert page.get_attribute("body", "data-sound") == "off"

    t0 = time.monotonic()
    service.inject("gas-overlimit", "001A02")
    page.wait_for_selector('#alarm-list li[data-kind="power_cut_limit"][data-point="001A02"]',
                           timeout=2000)
    assert time.monotonic() - t0 < 2.0
    page.wait_for_selector('tr[data-point="001A02"][data-state="cut"]', timeout=2000)
    page.wait_for_selector('#schematic .pt[data-point="001A02"][data-state="cut"]', timeout=2000)
    # The power-cut range is shaded on the schematic, and the evacuation areas.
    # (a straight roadway's overlay has a zero-width box, so: attached, not "visible")
    page.wait_for_selector('#schematic .area-cut.on[data-area="face_1101"]', timeout=3000,
                           state="attached")
    page.wait_for_selector('#schematic .area-evac.on[data-area="district_return"]',
                           timeout=3000, state="attached")
    shaded = page.eval_on_selector_all("#schematic .area-cut.on", "r => r.map(x => x.dataset.area)")
    assert set(shaded) == {"face_1101", "return_1101"}  # the range's roadways (the shearer
    # area has no roadway of its own); nothing else lost power
    text = page.inner_text("#alarm-list")
    assert "瓦斯超限" in text and "未确认" in text
    # The critical tone plays while it is unacknowledged.
    assert page.get_attribute("body", "data-sound") == "1"
    page.wait_for_function("window.__tones > 0", timeout=3000)
    # The incident panel shows the workflow with countdowns and acknowledge buttons.
    page.wait_for_selector('.incident .step[data-step="power_verified"][data-state="done"]',
                           timeout=5000)
    panel = page.inner_text("#incidents")
    assert "下达撤人指令" in panel and "带班领导" in panel and "剩" in panel
    # Trend chart of the point, with its alarm and power-cut limits drawn.
    page.click('#points tr[data-point="001A02"]')
    page.wait_for_function(
        "window.__chart && window.__chart.getOption().series[0].data.length > 5 && "
        "window.__chart.getOption().series[0].data.some(d => d[1] > 1.5)", timeout=5000)
    marks = page.evaluate("window.__chart.getOption().series[0].markLine.data.map(d => d.yAxis)")
    assert 1.0 in marks and 1.5 in marks
    assert "001A02" in page.inner_text("#chart-title")
    page.wait_for_selector('#command-list li[data-command]', timeout=3000)
    page.screenshot(path=str(ARTIFACTS / "wall-alarm.png"), full_page=False)
    shutil.copy(ARTIFACTS / "wall-alarm.png", ROOT / "docs" / "wall-alarm.png")

    # Acknowledge every alarm from the first screen: the second screen shows them acknowledged
    # and the tone stops (acknowledging silences; there is no mute-all).
    other.wait_for_selector('#alarm-list li[data-kind="power_cut_limit"].unack', timeout=3000)
    for _ in range(10):
        buttons = page.locator("#alarm-list li.unack button")
        if buttons.count() == 0:
            break
        buttons.first.click()
        page.wait_for_timeout(300)
    page.wait_for_function(
        "[...document.querySelectorAll('#alarm-list li[data-kind=\"power_cut_limit\"]')]"
        ".some(li => li.textContent.includes('已确认') && !li.classList.contains('unack'))",
        timeout=3000)
    other.wait_for_function(
        "[...document.querySelectorAll('#alarm-list li[data-kind=\"power_cut_limit\"]')]"
        ".some(li => li.textContent.includes('已确认'))", timeout=3000)
    page.wait_for_function("document.body.dataset.sound === 'off'", timeout=3000)
    alarms = service.get("/api/v1/alarms", params={"state": "ack_active"}).json()
    assert any(a["kind"] == "power_cut_limit" and a["acked_by"] == "调度员" for a in alarms)

    # Acknowledge the first report level from the second screen; the first sees it done.
    other.click('.incident .step[data-step="report:shift_leader"] button')
    page.wait_for_selector('.incident .step[data-step="report:shift_leader"][data-state="done"]',
                           timeout=3000)
    page.wait_for_selector('.incident .step[data-step="report:dispatch"][data-state="active"]',
                           timeout=3000)
    page.screenshot(path=str(ARTIFACTS / "wall-acked.png"))
    assert errors == []


@pytest.mark.browser
def test_point_filters_and_chart_zoom(shared_service: RunningService, browser):
    page, errors = _open(browser, shared_service)
    total = page.locator("#points tbody tr").count()
    page.fill("#filter-text", "一氧化碳")
    visible = page.locator("#points tbody tr:not([hidden])")
    assert 0 < visible.count() < total
    assert all("一氧化碳" in t for t in visible.all_inner_texts())
    page.fill("#filter-text", "")
    page.select_option("#filter-kind", "ch4")
    rows = "#points tbody tr:not([hidden])"
    kinds = page.eval_on_selector_all(rows, "r => r.map(x => x.dataset.kind)")
    assert kinds and set(kinds) == {"ch4"}
    page.select_option("#filter-kind", "")
    page.select_option("#filter-area", "heading_2102")
    areas = page.eval_on_selector_all(rows, "r => r.map(x => x.dataset.area)")
    assert areas and set(areas) == {"heading_2102"}
    page.select_option("#filter-area", "")
    # Zoom to one hour: the chart reads the 1-minute rollups.
    page.click('#points tr[data-point="001A01"]')
    page.wait_for_function(
        "window.__chart && window.__chart.getOption().series[0].data.length > 0", timeout=5000)
    page.click('.zoom button[data-span="3600"]')
    page.wait_for_function("document.querySelector('.zoom button.on').dataset.span === '3600'")
    page.wait_for_function("window.__chart.getOption().series[0].data.length > 0", timeout=8000)
    assert errors == []


@pytest.mark.browser
def test_wall_screen_reports_stale_data_when_the_server_stops(service: RunningService,
                                                              browser, tmp_path):
    page, _ = _open(browser, service)
    service.proc.terminate()
    try:
        service.proc.wait(15)
    except subprocess.TimeoutExpired:  # what the screen shows is the point here, not shutdown
        service.proc.kill()
        service.proc.wait(5)
    page.wait_for_selector('#conn[data-state="stale"]', timeout=6000)
    assert "数据中断" in page.inner_text("#conn")
    # The server comes back on the same address: the screen reconnects by itself.
    again = start_service(tmp_path, port=service.port, data_dir=service.data_dir)
    try:
        page.wait_for_selector('#conn[data-state="ok"]', timeout=10000)
        assert "数据正常" in page.inner_text("#conn")
    finally:
        again.stop()


@pytest.mark.browser
def test_wall_screen_asks_for_a_login_and_logs_in(shared_service: RunningService,
                                                  strict_browser):
    page = strict_browser.new_page()
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: blocked.append(str(e)))
    page.goto(shared_service.url + "/")
    page.wait_for_selector("#login:not([hidden])", timeout=5000)
    assert page.locator('#points tr[data-point="001A01"]').count() == 0  # nothing shown
    page.fill("#login-user", "admin")
    page.fill("#login-password", "wrong-password")
    page.click('#login-form button[type="submit"]')
    page.wait_for_selector("#login-error:not(:empty)", timeout=5000)  # no eval under the CSP
    page.fill("#login-password", ADMIN_PASSWORD)
    page.click('#login-form button[type="submit"]')
    page.wait_for_selector('#points tr[data-point="001A01"]', timeout=10000)
    page.wait_for_selector('#conn[data-state="ok"]', timeout=5000)
    # Under the real CSP the whole screen works: the chart draws (a canvas) and nothing is
    # refused.
    page.wait_for_selector("#chart canvas", timeout=5000)
    assert blocked == []
