"""Notifications (撤人指令, 事故汇报) to areas' broadcast/phone endpoints and report levels.

Two kinds of endpoint: ``log`` keeps the message in the service (journal and
``GET /api/v1/notifications``) — the loopback used by the sample mine and the tests — and
``webhook`` POSTs it as JSON to a URL (a broadcast gateway, an SMS relay, the city's system).
A failing endpoint is recorded with the error and never blocks the workflow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from minewatch.emergency import Emergency, Endpoint

log = logging.getLogger("minewatch.notify")
WEBHOOK_TIMEOUT_S = 2.0


@dataclass
class Notification:
    at: float
    incident: str
    target: str  # area:<id> | level:<level>
    message: str
    endpoint: str  # log | webhook URL
    result: str = "sent"  # sent | failed
    error: str = ""
    drill: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Notifier:
    def __init__(self, config: Emergency, record: Callable[[Notification], None],
                 keep: int = 1000) -> None:
        self.config = config
        self.record = record  # the service journals each notification
        self.sent: deque[Notification] = deque(maxlen=keep)
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task] = set()

    def send(self, incident: str, target: str, message: str, drill: bool = False) -> None:
        """Fire and forget: log endpoints now, webhooks in a task."""
        for ep in self.config.endpoints(target):
            n = Notification(time.time(), incident, target, message,
                             ep.url if ep.kind == "webhook" else "log", drill=drill)
            if ep.kind == "log":
                self._done(n)
            else:
                task = asyncio.get_running_loop().create_task(self._post(ep, n))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _post(self, ep: Endpoint, n: Notification) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        try:
            r = await self._client.post(str(ep.url), json=n.to_dict())
            r.raise_for_status()
        except Exception as exc:  # an endpoint down must not stop the workflow
            n.result, n.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("notification to %s failed: %s", ep.url, n.error)
        self._done(n)

    def _done(self, n: Notification) -> None:
        self.sent.append(n)
        self.record(n)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
