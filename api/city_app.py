"""City command-center service (市煤矿安全应急指挥部): subscribes to every mine's events on the
broker and serves per-mine tiles, a merged alarm feed and the command-center wall page.

- MQTT: one aiomqtt subscriber (persistent session, QoS 1) on ``mw/+/events`` and
  ``mw/+/alarms/#``, reconnecting with exponential backoff; messages feed ``api.city.CityState``.
- Users: its own user store (the embedded store in ``--data-dir``; ``minewatch user add
  --data-dir …`` adds city, regulator or admin users; the first start prints a one-time admin
  password unless MINEWATCH_ADMIN_PASSWORD is set) and the same OAuth2 login as a mine's
  service (``POST /api/v1/auth/token``). Every route but health and the page shell needs the
  token (WebSocket: ``?token=``); each user sees only the mines of their jurisdiction.
- REST: ``GET /api/v1/city/mines`` (tiles; each with ``open_incidents``: the mine's open
  incidents with their ``report_chain``), ``GET /api/v1/city/mines/{mine}``,
  ``GET /api/v1/city/incidents?mine=`` (open incidents across mines, newest first),
  ``GET /api/v1/city/drills?mine=&limit=`` (double-blind drills with their score, newest
  first), ``GET /api/v1/city/alarms?limit=&open=``, ``GET /api/v1/health``.
- WebSocket ``/ws/city``: a snapshot, then an update on every change and at least once per
  second; each carries the tiles (with their open incidents) and the new feed entries; the
  drill list (``drills``) comes with the snapshot and with any update after it changed.
- Page: ``/city`` (``/`` redirects there), static assets under ``/dashboard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from fastapi import Depends, FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.auth import AuthContext, need, ws_user
from api.auth import router as auth_router
from api.city import CityState
from api.security import add_guard
from dashboard import STATIC_DIR
from minewatch.auth import User, ensure_admin
from minewatch.events import QUIET_AFTER_S
from minewatch.readings import iso
from minewatch.store import Store

log = logging.getLogger("minewatch.city")

TOPICS = ("mw/+/events", "mw/+/alarms/#")
WS_PERIOD_S = 1.0  # an update at least this often, even when nothing changed
WS_MIN_GAP_S = 0.05  # coalesce bursts of changes
TICK_S = 0.25  # quiet-mine detection resolution
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
FEED_LIMIT = 500
DRILLS_LIMIT = 200
PASSWORD_ENV = "MINEWATCH_CITY_MQTT_PASSWORD"
MAX_REQUEST_BYTES = 64 * 1024  # the city takes nothing bigger than a login form
Reader = Annotated[User, Depends(need("read"))]


class Notifier:
    """Wakes every waiting WebSocket when the city state changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event


@dataclass
class BrokerLink:
    url: str
    client_id: str
    connected: bool = False
    since: float | None = None  # when the current state (up/down) began
    connects: int = 0
    failures: int = 0
    last_error: str = ""

    def json(self) -> dict[str, Any]:
        return {"url": self.url, "client_id": self.client_id, "connected": self.connected,
                "since": iso(self.since), "connects": self.connects, "failures": self.failures,
                "last_error": self.last_error}


def _check_urls(mine_urls: dict[str, str] | None) -> dict[str, str]:
    out = {}
    for mine, url in (mine_urls or {}).items():
        if not mine or "/" in mine or "+" in mine or "#" in mine:
            raise ValueError(f"bad mine id: {mine!r}")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ValueError(f"mine {mine}: not an http(s) URL: {url!r}")
        out[mine] = url
    return out


def create_city_app(broker_host: str, broker_port: int, username: str, password: str,
                    mine_urls: dict[str, str] | None = None, *, users: Store, secret: str,
                    admin_password: str | None = None,
                    quiet_after_s: float = QUIET_AFTER_S, client_id: str | None = None,
                    clock: Callable[[], float] = time.time) -> FastAPI:
    """The city app. ``client_id`` names the persistent MQTT session (default: per host and
    user); two city processes must not share one. ``users``: the (unopened) store holding
    the city's users; ``secret`` signs their tokens."""
    urls = _check_urls(mine_urls)
    state = CityState(quiet_after_s=quiet_after_s, clock=clock, mine_urls=urls)
    notifier = Notifier()
    link = BrokerLink(f"mqtt://{broker_host}:{broker_port}",
                      client_id or f"minewatch-city-{socket.gethostname()}-{username}")
    started = time.time()

    async def subscribe_forever() -> None:
        backoff = BACKOFF_MIN_S
        while True:
            try:
                async with aiomqtt.Client(broker_host, broker_port, username=username,
                                          password=password, identifier=link.client_id,
                                          clean_session=False, keepalive=10,
                                          timeout=10) as client:
                    for topic in TOPICS:
                        await client.subscribe(topic, qos=1)
                    link.connected, link.since = True, time.time()
                    link.connects += 1
                    backoff = BACKOFF_MIN_S
                    log.info("city: subscribed to %s as %s", link.url, username)
                    notifier.notify()
                    async for msg in client.messages:
                        state.ingest_message(str(msg.topic), msg.payload,
                                             retained=bool(msg.retain))
                        notifier.notify()
            except aiomqtt.MqttError as exc:
                err = str(exc) or type(exc).__name__
            except Exception as exc:  # keep the feed alive whatever happens
                log.exception("city: subscriber error")
                err = f"{type(exc).__name__}: {exc}"
            else:
                err = "connection closed"
            if link.connected or not link.last_error:
                log.warning("city: broker %s unavailable: %s", link.url, err)
            link.connected, link.since = False, time.time()
            link.failures += 1
            link.last_error = err
            notifier.notify()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def tick_forever() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if state.tick():
                notifier.notify()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await users.open()
        await ensure_admin(users, admin_password, "minewatch city")
        state.listening()
        tasks = [asyncio.create_task(subscribe_forever(), name="city-mqtt"),
                 asyncio.create_task(tick_forever(), name="city-tick")]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await users.close()

    app = FastAPI(title="minewatch city", version="0.1.0", lifespan=lifespan,
                  description="市煤矿安全应急指挥部: every mine's status and alarms")
    app.state.city = state
    app.state.broker = link
    app.state.auth = AuthContext(users, secret, None)
    app.include_router(auth_router)
    add_guard(app, MAX_REQUEST_BYTES)

    def visible(user: User, mine_id: str | None) -> None:
        """A mine filter (None: all the user's mines) must be in the user's jurisdiction
        (403) and known to the city (404)."""
        if mine_id is None:
            return
        if not user.sees(mine_id):
            raise HTTPException(403, f"无权查看煤矿 {mine_id} / outside your jurisdiction")
        if mine_id not in state.mines:
            raise HTTPException(404, f"unknown mine: {mine_id}")

    @app.get("/api/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok" if link.connected else "degraded", "role": "city",
                "uptime_s": round(time.time() - started, 1), "quiet_after_s": quiet_after_s,
                "broker": link.json(), **state.counters()}

    @app.get("/api/v1/city/mines")
    async def mines(user: Reader) -> list[dict[str, Any]]:
        return state.tiles(user.sees)

    @app.get("/api/v1/city/mines/{mine_id}")
    async def mine(mine_id: str, user: Reader) -> dict[str, Any]:
        visible(user, mine_id)
        state.tick()
        detail = state.mine_detail(mine_id)
        if detail is None:
            raise HTTPException(404, f"unknown mine: {mine_id}")
        return detail

    @app.get("/api/v1/city/incidents")
    async def incidents(user: Reader, mine: str | None = None) -> list[dict[str, Any]]:
        visible(user, mine)
        return state.incidents(mine, user.sees)

    @app.get("/api/v1/city/drills")
    async def drills(user: Reader, mine: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=DRILLS_LIMIT)] = 50,
                     ) -> list[dict[str, Any]]:
        visible(user, mine)
        return state.drills(mine, limit, user.sees)

    @app.get("/api/v1/city/alarms")
    async def alarms(user: Reader, limit: Annotated[int, Query(ge=1, le=FEED_LIMIT)] = 100,
                     open_now: Annotated[bool, Query(
                         alias="open",
                         description="open alarms now instead of the transition feed")] = False,
                     ) -> list[dict[str, Any]]:
        if open_now:
            return state.open_alarms(sees=user.sees)[:limit]
        return state.feed(limit, sees=user.sees)

    def message(user: User, kind: str, after_seq: int, drills_sent: int | None = None
                ) -> dict[str, Any]:
        """``drills_sent``: the drill list version the client has (None: send it anyway)."""
        feed = state.feed(100 if kind == "snapshot" else FEED_LIMIT, after_seq=after_seq,
                          sees=user.sees)
        msg = {"type": kind, "at": iso(clock()), "broker_connected": link.connected,
               "quiet_after_s": quiet_after_s, "mines": state.tiles(user.sees),
               "alarms": feed, "seq": state.seq, "drills_version": state.drills_version}
        if drills_sent is None or drills_sent != state.drills_version:
            msg["drills"] = state.drills(sees=user.sees)
        return msg

    @app.websocket("/ws/city")
    async def ws_city(ws: WebSocket) -> None:
        await ws.accept()
        user = await ws_user(ws)
        if user is None:
            return
        receiver = asyncio.create_task(_drain_client(ws))
        try:
            changed = notifier.current()
            msg = message(user, "snapshot", 0)
            await ws.send_json(msg)
            seq, drills_sent = msg["seq"], msg["drills_version"]
            while not receiver.done():
                waiter = asyncio.create_task(changed.wait())
                await asyncio.wait({waiter, receiver}, timeout=WS_PERIOD_S,
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if receiver.done():
                    break
                await asyncio.sleep(WS_MIN_GAP_S)
                changed = notifier.current()
                msg = message(user, "update", seq, drills_sent)
                await ws.send_json(msg)
                seq, drills_sent = msg["seq"], msg["drills_version"]
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            receiver.cancel()

    @app.get("/city", include_in_schema=False)
    async def city_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "city.html", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/city")

    app.mount("/dashboard", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
    return app


async def _drain_client(ws: WebSocket) -> None:
    """Read (and ignore) client frames so a disconnect is noticed promptly."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await ws.receive_text()


def parse_broker_url(url: str) -> tuple[str, int, str | None, str | None]:
    """``mqtt://[user[:password]@]host[:port]`` (also ``tcp://``) → host, port, user, password."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ValueError(f"not an mqtt:// broker URL: {url!r}")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ValueError(f"bad port in broker URL: {url!r}") from exc
    return (parts.hostname, port, unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None)


def parse_mine_urls(items: list[str]) -> dict[str, str]:
    """``["demo=http://10.0.0.5:8000/", …]`` → {mine id: wall-screen URL}."""
    out = {}
    for item in items:
        mine, sep, url = item.partition("=")
        if not sep or not mine.strip() or not url.strip():
            raise ValueError(f"expected MINE=URL, got {item!r}")
        out[mine.strip()] = url.strip()
    return _check_urls(out)


def city_main(host: str, port: int, broker_url: str, username: str, password: str | None,
              mine_url: list[str], *, data_dir: Path = Path("city-data"),
              quiet_after_s: float = QUIET_AFTER_S, client_id: str | None = None,
              log_level: str = "INFO") -> None:
    """Run the city command center with uvicorn (blocks). ``password`` None: from the broker
    URL, else ``$MINEWATCH_CITY_MQTT_PASSWORD``. Users live in the embedded store in
    ``data_dir`` (or the database of $MINEWATCH_DATABASE_URL). Raises ValueError on a bad
    URL."""
    import uvicorn

    from minewatch.auth import load_secret
    from minewatch.service import open_store
    from minewatch.settings import Settings

    b_host, b_port, url_user, url_password = parse_broker_url(broker_url)
    user = username or url_user
    if not user:
        raise ValueError("no MQTT username (the broker's city account, e.g. 'city')")
    secret = password if password is not None else url_password or os.environ.get(PASSWORD_ENV)
    if secret is None:
        raise ValueError(f"no MQTT password (pass it or set ${PASSWORD_ENV})")
    settings = Settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_city_app(b_host, b_port, user, secret, parse_mine_urls(mine_url),
                          users=open_store(settings, "city"),
                          secret=load_secret(settings.jwt_secret, settings.data_dir),
                          admin_password=settings.admin_password,
                          quiet_after_s=quiet_after_s, client_id=client_id)
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"city command center: http://{host}:{port}/city  (broker {b_host}:{b_port})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
