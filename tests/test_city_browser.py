"""The city command-center page (/city) in real headless Chromium.

- A real mine service (the simulated demo mine) and the city behind one mosquitto: a gas
  over-limit injected at the mine turns its tile to 应急处置中 · 断电 and lists the incident with
  its report chain (带班领导 waiting, the rest not yet notified); the shift leader's
  acknowledgement at the mine's REST API shows as 已确认. Screenshot: artifacts/city.png (the
  README's docs/city.png is a copy of it).
- Synthetic mines over the broker: tiles per status, the drill-down link, the merged alarm feed,
  the double-blind drill panel (双盲演练: score per step, commitment, the site once revealed),
  and the page reporting its own stale data when the city server goes away.

Chromium is launched as in tests/test_browser.py (/usr/bin/chromium through Playwright). Every
wait is bounded, only 127.0.0.1 is contacted, and a missing browser or service fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from minewatch.events import HEARTBEAT_S
from minewatch.procs import ADMIN_PASSWORD, ServiceProcess
from tests.conftest import ARTIFACTS
from tests.test_city import (
    ACK_USER,
    COMMIT,
    POINT,
    STEP,
    AppServer,
    alarm,
    city_app,
    drill,
    drill_ev,
    engine,
    ev,
    incident,
    mine_on_broker,
    publish,
    running_broker,
    summary,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SHOT = ARTIFACTS / "city.png"

pytestmark = pytest.mark.browser


@pytest.fixture
def broker():
    with running_broker() as proc:
        yield proc


@pytest.fixture
def demo_mine(broker, tmp_path) -> Iterator[ServiceProcess]:
    with mine_on_broker(broker, tmp_path) as svc:
        yield svc


@contextlib.contextmanager
def chromium(profile: Path, bypass_csp: bool) -> Iterator[Any]:
    assert Path(CHROMIUM).exists(), f"headless Chromium not found at {CHROMIUM}"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1920, "height": 1080}, locale="zh-CN", bypass_csp=bypass_csp)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def browser(tmp_path):
    """Playwright's wait_for_function evaluates strings, which the page's CSP forbids."""
    with chromium(tmp_path / "profile", bypass_csp=True) as ctx:
        yield ctx


@pytest.fixture
def strict_browser(tmp_path):
    """Under the page's real Content-Security-Policy."""
    with chromium(tmp_path / "profile", bypass_csp=False) as ctx:
        yield ctx


def sender(cfg) -> Any:
    """Publish events as a mine would (engine account). Playwright's sync API runs a loop in
    the test's thread, so the MQTT client runs in another one."""
    async def publish_all(events: list[tuple[dict[str, Any], bool]]) -> None:
        async with engine(cfg) as eng:
            for e, retain in events:
                await publish(eng, e, retain_alarm=retain)

    def send(events: list[tuple[dict[str, Any], bool]]) -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, publish_all(events)).result(timeout=15)
    return send


def chain_states(page: Page, mine: str) -> list[str]:
    return page.eval_on_selector_all(f'.city-inc[data-mine="{mine}"] .chain li',
                                     "els => els.map(e => e.dataset.state)")


def test_city_page_shows_a_mine_incident_and_its_report_chain(broker, demo_mine, browser):
    cfg, svc = broker.config, demo_mine
    send = sender(cfg)
    app = city_app(cfg, mine_urls={"demo": svc.url}, quiet_after_s=120)
    with AppServer(app) as srv:
        page = browser.new_page()
        page.add_init_script(f"localStorage.setItem('mw_token', {json.dumps(srv.token)})")
        page.goto(srv.url + "/city")
        page.wait_for_selector('#conn[data-state="ok"]', timeout=5000)
        assert "市煤矿安全应急指挥部" in page.title()
        page.wait_for_selector('.tile[data-mine="demo"][data-status="normal"]', timeout=5000)
        page.wait_for_function(
            "document.querySelector('.tile[data-mine=\"demo\"] .name').textContent === '示范煤矿'",
            timeout=(HEARTBEAT_S + 3) * 1000)
        assert page.locator("#city-incidents .city-inc").count() == 0
        assert "无未关闭事件" in page.inner_text("#city-incidents")
        # Other mines of the city (synthetic, over the same broker): normal, alarm, power cut.
        send([(ev("north", "heartbeat", summary=summary(max_ch4=0.35)), False),
              (ev("south", "heartbeat", summary=summary(max_ch4=1.12, max_ch4_point="001A02",
                                                        open_alarms=1, unacked_alarms=1)),
               False),
              (ev("south", "alarm", transition="raised", alarm=alarm(
                  "S-1", message="2201运输巷 甲烷 1.12% 报警")), True),
              (ev("west", "heartbeat", summary=summary(cut_relays=2, max_ch4=1.58,
                                                       max_ch4_point="003A01")), False),
              (ev("west", "alarm", transition="raised", alarm=alarm(
                  "W-1", kind="power_cut_limit", severity=1,
                  message="3101回风巷 甲烷 1.58% 超限断电")), True)])
        page.wait_for_selector('.tile[data-mine="west"][data-status="power_cut"]', timeout=5000)
        page.wait_for_selector('.tile[data-mine="south"][data-status="alarm"]', timeout=5000)

        svc.inject("gas-overlimit", POINT)
        tile = '.tile[data-mine="demo"]'
        page.wait_for_selector(f'{tile}[data-status="incident"]', timeout=5000)
        page.wait_for_function(
            f"(() => {{ const b = document.querySelector('{tile} .badge').textContent;"
            " return b.includes('应急处置中') && b.includes('断电'); })()", timeout=5000)
        demo = page.locator(tile)
        assert "瓦斯超限" in demo.locator(".inc").inner_text()
        assert demo.locator("a.drill").get_attribute("href") == svc.url + "/"

        card = '.city-inc[data-mine="demo"]'
        page.wait_for_selector(f'{card} .chain li[data-step="report:city"]', timeout=5000)
        assert chain_states(page, "demo") == ["active"] + ["pending"] * 4
        first = page.locator(f'{card} .chain li[data-step="{STEP}"]')
        text = first.inner_text()
        assert "带班领导" in text and "等待确认" in text and "剩余" in text
        [mine_inc] = svc.get("/api/v1/incidents", params={"state": "open"}).json()
        inc_id = mine_inc["id"]
        notified = next(s for s in mine_inc["steps"] if s["name"] == STEP)["extra"]["to"]
        assert notified and notified in text
        for level in ("矿调度", "矿长/总工", "县煤矿安全应急指挥部", "市煤矿安全应急指挥部"):
            li = page.locator(f'{card} .chain li', has_text=level)
            assert li.get_attribute("data-state") == "pending" and "未通知" in li.inner_text()
        head = page.inner_text(f"{card} .ihead")
        assert "示范煤矿" in head and "瓦斯超限" in head
        assert not page.is_visible(f"{card} .idrill")  # not a drill
        report = page.locator(f"{card} .ifoot a", has_text="事件报告")
        assert report.get_attribute("href") == \
            f"{svc.url}/api/v1/incidents/{inc_id}/report"
        page.wait_for_selector(f'#feed li[data-kind="incident"][data-alarm="{inc_id}"]',
                               timeout=3000)
        page.wait_for_selector('#feed li[data-mine="demo"][data-kind="power_cut_limit"]',
                               timeout=3000)
        assert page.inner_text("#count-incident") == "1"
        assert page.inner_text("#count-cut") == "2"  # demo (in the incident) and west

        # The shift leader confirms at the mine: 已确认 at the city, 矿调度 notified next.
        r = svc.post(f"/api/v1/incidents/{inc_id}/steps/{STEP}/ack", json={"user": ACK_USER})
        assert r.status_code == 200, r.text
        page.wait_for_selector(f'{card} .chain li[data-step="{STEP}"][data-state="done"]',
                               timeout=3000)
        assert chain_states(page, "demo") == ["done", "active"] + ["pending"] * 3
        text = first.inner_text()
        assert "已确认" in text and ACK_USER in text
        assert "等待确认" in page.locator(f'{card} .chain li', has_text="矿调度").inner_text()
        # The max methane of the mine arrives with its next heartbeat.
        page.wait_for_function(
            f"Number(document.querySelector('{tile} .ch4v').textContent) >= 1.5",
            timeout=(HEARTBEAT_S + 3) * 1000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOT))
        assert SHOT.stat().st_size > 10_000


def test_city_page_tiles_feed_and_stale_data(broker, browser):
    cfg = broker.config
    send = sender(cfg)
    send([(ev("north", "alarm", transition="raised",
              alarm=alarm("N-1", message="1101回风隅角 甲烷 1.10% 报警")), True)])
    app = city_app(cfg, mine_urls={"north": "http://127.0.0.1:9/"}, quiet_after_s=30)
    with AppServer(app) as srv:
        try:
            page = browser.new_page()
            page.add_init_script(f"localStorage.setItem('mw_token', {json.dumps(srv.token)})")
            page.goto(srv.url + "/")
            page.wait_for_selector('#conn[data-state="ok"]', timeout=5000)
            send([
                (ev("north", "heartbeat", summary=summary(max_ch4=1.10, max_ch4_point="001A02",
                                                          open_alarms=1, unacked_alarms=1)),
                 False),
                (ev("south", "heartbeat", summary=summary(cut_relays=3, max_ch4=1.62)), False),
                (ev("south", "alarm", transition="raised", alarm=alarm(
                    "S-1", kind="power_cut_limit", severity=1,
                    message="2201回风巷 甲烷 1.62% 超限断电")), True)])
            page.wait_for_selector('.tile[data-mine="north"][data-status="alarm"]', timeout=5000)
            page.wait_for_selector('.tile[data-mine="south"][data-status="power_cut"]',
                                   timeout=5000)
            assert page.locator("#tiles .tile").count() == 2
            north = page.locator('.tile[data-mine="north"]')
            assert "北山煤矿" in north.inner_text() and "1.10" in north.inner_text()
            assert "报警" in north.locator(".badge").inner_text()
            assert "断电" in page.locator('.tile[data-mine="south"] .badge').inner_text()
            assert "flash" in (north.get_attribute("class") or "")
            assert north.locator("a").get_attribute("href") == "http://127.0.0.1:9/"
            assert page.locator('.tile[data-mine="south"] a').count() == 0
            page.wait_for_selector('#feed li[data-alarm="S-1"]', timeout=5000)
            feed = page.inner_text("#feed")
            assert "超限断电" in feed and "1101回风隅角" in feed and "南岭煤矿" in feed
            assert page.inner_text("#count-cut") == "1"
            assert page.inner_text("#count-incident") == "0"

            # A drill incident at south whose first report level went overdue (escalated).
            t0 = time.time() - 200
            late = incident("south-I1", t0=t0, updated=t0 + 121, drill=True,
                            states=("overdue", "active") + ("pending",) * 3,
                            shift_leader={"escalated_to": "dispatch"})
            send([(ev("south", "incident", incident=late), False)])
            card = '.city-inc[data-mine="south"]'
            page.wait_for_selector(f'{card} .chain li[data-state="overdue"]', timeout=5000)
            assert page.is_visible(f"{card} .idrill")
            assert page.get_attribute(card, "data-drill") == "true"
            overdue = page.inner_text(f'{card} .chain li[data-state="overdue"]')
            assert "带班领导" in overdue and "超时未确认" in overdue and "已超" in overdue
            assert "已越级上报" in overdue
            assert "剩余" in page.inner_text(f'{card} .chain li[data-state="active"]')
            badge = page.inner_text('.tile[data-mine="south"] .badge')
            assert "应急处置中（演练）" in badge and "断电" in badge
            page.wait_for_selector('#feed li[data-kind="incident"]', timeout=3000)
            assert "【演练】" in page.inner_text('#feed li[data-kind="incident"]')
            # Closed at the mine: it leaves the list.
            send([(ev("south", "incident", incident=incident(
                "south-I1", t0=t0, updated=t0 + 190, state="closed", drill=True)), False)])
            page.wait_for_selector(card, state="detached", timeout=5000)
            assert "无未关闭事件" in page.inner_text("#city-incidents")
            page.wait_for_selector('.tile[data-mine="south"][data-status="power_cut"]',
                                   timeout=3000)

            # A double-blind drill finished at south: listed with its score per step and the
            # commitment; the site only once the plan is revealed (the same card updated).
            assert "暂无演练记录" in page.inner_text("#city-drills")
            t1 = time.time() - 120
            send([(drill_ev(drill("D1", t0=t1, mine="south"), at=t1 + 41, mine="south"),
                   False)])
            dcard = '.city-drill[data-mine="south"][data-drill="D1"]'
            page.wait_for_selector(f'{dcard}[data-status="finished"]', timeout=5000)
            head = page.inner_text(f"{dcard} .dhead")
            assert "南岭煤矿" in head and "回风巷瓦斯超限" in head and "已结束" in head
            assert "不合格" in head and page.get_attribute(dcard, "data-passed") == "false"
            assert "开始" in page.inner_text(f"{dcard} .dstart")
            assert COMMIT[:12] in page.inner_text(f"{dcard} .dcommit")
            assert "未公开" in page.inner_text(f"{dcard} .dsite")
            ok = page.inner_text(f'{dcard} .marks li[data-step="alarm:over_limit"]')
            assert "6.2 s" in ok and "14.0 s" in ok and "合格" in ok and "不合格" not in ok
            miss = page.inner_text(f'{dcard} .marks li[data-step="alarm:power_cut_limit"]')
            assert "未完成" in miss and "不合格" in miss
            send([(drill_ev(drill("D1", t0=t1, mine="south", revealed=True), at=t1 + 100,
                            mine="south"), False)])
            page.wait_for_selector(f'{dcard}[data-revealed="true"]', timeout=5000)
            assert "001A03" in page.inner_text(f"{dcard} .dsite")
            assert page.locator("#city-drills .city-drill").count() == 1

            # The city server goes away: the page says its own data is stale.
            srv.server.should_exit = True
            page.wait_for_selector('#conn[data-state="stale"]', timeout=6000)
            assert page.is_visible("#stale-banner")
            assert "指挥部数据中断" in page.inner_text("#conn")
        finally:
            with contextlib.suppress(Exception):
                srv.server.should_exit = True


def test_city_page_asks_for_a_login_and_logs_in(broker, strict_browser):
    """Without a token the page shows the login form (the WebSocket is refused with 4401);
    a wrong password shows the server's reason, the right one brings the feed."""
    app = city_app(broker.config, quiet_after_s=120)
    with AppServer(app) as srv:
        page = strict_browser.new_page()
        page.goto(srv.url + "/city")
        page.wait_for_selector("#login:not([hidden])", timeout=5000)
        page.fill("#login-user", "admin")
        page.fill("#login-password", "wrong-password")
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector("#login-error:not(:empty)", timeout=5000)
        assert "用户名或密码错误" in page.inner_text("#login-error")
        page.fill("#login-password", ADMIN_PASSWORD)
        page.click('#login-form button[type="submit"]')
        page.wait_for_selector('#conn[data-state="ok"]', timeout=10000)
        assert page.is_hidden("#login")
