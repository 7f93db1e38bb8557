"""Notification endpoints: a webhook receives the order as JSON on loopback; a dead endpoint is
recorded as failed and does not stop the others."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

from minewatch.emergency import Emergency, Endpoint
from minewatch.notify import Notification, Notifier
from minewatch.procs import free_port


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.got.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_webhook_and_log_endpoints():
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead = free_port()  # nothing listens here
    base = Emergency.load()
    config = base.model_copy(update={"notify": [
        Endpoint(target="area:face_1101", kind="webhook",
                 url=f"http://127.0.0.1:{server.server_port}/broadcast"),
        Endpoint(target="level:city", kind="webhook", url=f"http://127.0.0.1:{dead}/x"),
        Endpoint(target="*", kind="log")]})
    recorded: list[Notification] = []

    async def run() -> None:
        n = Notifier(config, recorded.append)
        n.send("I-1", "area:face_1101", "【撤人指令】1101工作面 全体人员立即撤离")
        n.send("I-1", "level:city", "【事故汇报】…")
        n.send("I-1", "area:return_1101", "【撤人指令】回风顺槽")  # falls back to "*": log
        await n.close()

    try:
        asyncio.run(run())
    finally:
        server.shutdown()
    by_target = {r.target: r for r in recorded}
    assert by_target["area:face_1101"].result == "sent"
    assert _Receiver.got and _Receiver.got[0]["message"].startswith("【撤人指令】1101")
    assert _Receiver.got[0]["incident"] == "I-1"
    assert by_target["level:city"].result == "failed" and by_target["level:city"].error
    assert by_target["area:return_1101"].endpoint == "log"
    assert by_target["area:return_1101"].result == "sent"


def test_duty_roster_picks_the_shift_on_duty():
    import datetime as dt

    e = Emergency.load()

    def at(hh: int) -> float:
        return dt.datetime(2026, 11, 25, hh, 30).timestamp()

    assert e.on_duty("shift_leader", at(9)) == "张建国"  # 早班 08–16
    assert e.on_duty("shift_leader", at(17)) == "赵伟"  # 中班 16–24
    assert e.on_duty("shift_leader", at(3)) == "孙磊"  # 夜班 00–08
    assert e.on_duty("city", at(3)) == "市煤矿安全应急指挥部值班室"
