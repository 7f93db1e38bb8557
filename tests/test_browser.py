"""The wall screen in real headless Chromium: live values change, a 瓦斯超限 alarm appears,
and acknowledging from the screen changes the alarm's state."""

from __future__ import annotations

import shutil
import time

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import ARTIFACTS, RunningService

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser(tmp_path):
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1920, "height": 1080}, locale="zh-CN")
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.mark.browser
def test_wall_screen_shows_live_values_and_the_alarm(service: RunningService, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page()
    page.goto(service.url + "/")
    page.wait_for_selector('#points tr[data-point="001A02"]')
    assert "调度大屏" in page.title() or "调度大屏" in page.inner_text("header")
    page.wait_for_selector('#conn[data-state="ok"]', timeout=5000)

    # Live values change over the WebSocket (the simulator adds noise every poll).
    cell = 'tr[data-point="001A01"]'
    first = page.get_attribute(cell, "data-value")
    page.wait_for_function(
        f"document.querySelector('{cell}').dataset.value !== {first!r}", timeout=5000)
    rows = page.locator("#points tbody tr").count()
    assert rows >= 40

    t0 = time.monotonic()
    service.inject("gas-overlimit", "001A02")
    page.wait_for_selector('#alarm-list li[data-kind="power_cut_limit"][data-point="001A02"]',
                           timeout=2000)
    shown_after = time.monotonic() - t0
    assert shown_after < 2.0
    page.wait_for_selector('tr[data-point="001A02"][data-state="cut"]', timeout=2000)
    text = page.inner_text("#alarm-list")
    assert "瓦斯超限" in text and "未确认" in text
    page.wait_for_selector('#command-list li[data-command]', timeout=3000)
    page.screenshot(path=str(ARTIFACTS / "wall-alarm.png"), full_page=False)

    # Acknowledge from the screen: the alarm stops flashing and reads 已确认.
    item = page.locator('#alarm-list li[data-kind="power_cut_limit"]')
    item.locator("button").click()
    page.wait_for_function(
        "[...document.querySelectorAll('#alarm-list li[data-kind=\"power_cut_limit\"]')]"
        ".some(li => li.textContent.includes('已确认') && !li.classList.contains('unack'))",
        timeout=3000)
    alarms = service.get("/api/v1/alarms", params={"state": "ack_active"}).json()
    assert any(a["kind"] == "power_cut_limit" and a["acked_by"] == "调度员" for a in alarms)
    page.screenshot(path=str(ARTIFACTS / "wall-acked.png"))


@pytest.mark.browser
def test_wall_screen_reports_stale_data_when_the_server_stops(service: RunningService,
                                                              browser):
    page = browser.new_page()
    page.goto(service.url + "/")
    page.wait_for_selector('#conn[data-state="ok"]', timeout=5000)
    service.proc.terminate()
    service.proc.wait(15)
    page.wait_for_selector('#conn[data-state="stale"]', timeout=6000)
    assert "数据中断" in page.inner_text("#conn")
