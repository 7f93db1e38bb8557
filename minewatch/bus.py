"""In-process event bus: the engine and workflows publish, the API's WebSockets subscribe.

A slow subscriber must never stall the engine, so each subscriber has a bounded queue and a
full queue drops that subscriber's oldest message (counted) instead of blocking the publisher.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Subscription:
    topics: frozenset[str]
    queue: asyncio.Queue[tuple[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1000))
    dropped: int = 0


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def publish(self, topic: str, message: Any) -> None:
        for sub in self._subs:
            if topic not in sub.topics:
                continue
            if sub.queue.full():
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait((topic, message))

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        sub = Subscription(frozenset(topics))
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    def wanted(self, topic: str) -> bool:
        """Anyone listening on ``topic``? (Lets a publisher skip building the message.)"""
        return any(topic in sub.topics for sub in self._subs)

    @property
    def subscribers(self) -> int:
        return len(self._subs)
