"""Power-cut and restore: the actions the engine's decisions trigger.

On a power-cut edge the relays of the point's 断电范围 are opened at once (before anything is
stored: the regulation allows 2 s end to end), then the relay's feed (馈电) sensor must confirm
that power is really off within the verification window; a cut that is not confirmed is itself a
critical alarm. Restoring power is manual and refused while any methane point whose range
covers the relay is still at or above its restore limit, or cannot be trusted (fault, stale).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from minewatch.mine import Mine, Point, Relay
from minewatch.records import CommandRecord

log = logging.getLogger("minewatch.alarms.workflows")

RelayWriter = Callable[[list[Relay], bool], Awaitable[None]]  # one call per range
CommandSink = Callable[[CommandRecord], None]
FeedReader = Callable[[str], tuple[float, int, float]]  # point id → (value, quality, ts)
CutChecker = Callable[[str], str | None]  # point id → reason it blocks restore, or None


class RestoreRefused(ValueError):
    """A restore request that the safety rules do not allow; the message says why (中文)."""


@dataclass
class Pending:
    command: CommandRecord
    relay: Relay
    deadline: float
    expect_powered: bool


class PowerCutWorkflow:
    def __init__(self, mine: Mine, write_relay: RelayWriter, sink: CommandSink,
                 read_feed: FeedReader, verify_window: Callable[[Relay], float]) -> None:
        self.mine = mine
        self.write_relay = write_relay
        self.sink = sink
        self.read_feed = read_feed
        self.verify_window = verify_window
        self.relay_cut: dict[str, bool] = {r.id: False for r in mine.relays}
        self.pending: dict[str, Pending] = {}
        self._cutting: set[str] = set()
        self._seq = itertools.count(1)
        self._prefix = f"{int(time.time() * 1000):x}"
        # Methane points whose power-cut range covers each relay: they gate its restore.
        self.guards: dict[str, list[Point]] = {r.id: [] for r in mine.relays}
        for p in mine.points:
            if p.kind == "ch4":
                for r in mine.cut_relays(p):
                    self.guards[r.id].append(p)

    def restore_state(self, commands: list[CommandRecord]) -> None:
        """After a restart, each relay's state is that of its newest executed command."""
        for cmd in sorted(commands, key=lambda c: c.issued_at):
            if cmd.result in ("sent", "verified", "unverified") and cmd.target in self.relay_cut:
                self.relay_cut[cmd.target] = cmd.action == "cut"

    def _new(self, action: str, relay: Relay, reason: str, by: str, alarm_id: str | None,
             detected_perf: float | None) -> CommandRecord:
        return CommandRecord(
            id=f"C{self._prefix}-{next(self._seq)}", action=action, target=relay.id,
            area=relay.area, reason=reason, issued_by=by, issued_at=time.time(),
            alarm_id=alarm_id, detected_perf=detected_perf)

    async def _execute(self, cmds: list[CommandRecord], relays: list[Relay],
                       cut: bool) -> list[CommandRecord]:
        """Write all relays of one action together (one Modbus request per substation)."""
        try:
            await self.write_relay(relays, cut)
        except Exception as exc:  # the substation may be down: record, alarm, keep going
            for cmd in cmds:
                cmd.result, cmd.detail = "failed", f"写入断电器失败: {exc}"
                self.sink(cmd)
            log.error("relay write %s failed: %s", [r.id for r in relays], exc)
            return cmds
        now_perf = time.perf_counter()
        sent_at = time.time()
        for cmd, relay in zip(cmds, relays, strict=True):
            cmd.sent_at = sent_at
            if cmd.detected_perf is not None:
                cmd.sent_latency_ms = (now_perf - cmd.detected_perf) * 1000.0
            cmd.result = "sent"
            self.relay_cut[relay.id] = cut
            self.pending[relay.id] = Pending(cmd, relay, sent_at + self.verify_window(relay),
                                             expect_powered=not cut)
            self.sink(cmd)
        return cmds

    async def cut(self, point: Point, alarm_id: str | None, value: float,
                  detected_perf: float | None) -> list[CommandRecord]:
        """Open every relay of the point's power-cut range that is not already open."""
        return await self.cut_relays(self.mine.cut_relays(point),
                                     f"{point.name} 甲烷 {value:.2f}% 达到断电浓度",
                                     alarm_id, detected_perf)

    async def cut_relays(self, relays: list[Relay], reason: str, alarm_id: str | None,
                         detected_perf: float | None, *, force: bool = False,
                         by: str = "engine") -> list[CommandRecord]:
        """Open the given relays (those not already open); used for limits and lockouts.
        ``force`` re-issues a cut already recorded (a retry after an unconfirmed cut)."""
        # A relay whose cut is already on the wire is not cut twice (a lockout evaluated
        # while the methane cut's write is in flight).
        todo = [r for r in relays if (force or not self.relay_cut.get(r.id))
                and r.id not in self._cutting]
        if not todo:
            return []
        cmds = [self._new("cut", r, reason, by, alarm_id, detected_perf) for r in todo]
        self._cutting.update(r.id for r in todo)
        try:
            return await self._execute(cmds, todo, True)
        finally:
            self._cutting.difference_update(r.id for r in todo)

    async def restore(self, relay_id: str, user: str, reason: str,
                      blocker: CutChecker, relay_block: str | None = None) -> CommandRecord:
        """Manual (or, after 故障闭锁, automatic) restore; ``relay_block`` is an interlock's
        reason to refuse (风电闭锁: fan not running …)."""
        relay = self.mine.relay_by_id.get(relay_id)
        if relay is None:
            raise KeyError(relay_id)
        blocked = [msg for p in self.guards[relay_id] if (msg := blocker(p.id))]
        if relay_block:
            blocked.append(relay_block)
        if blocked:
            raise RestoreRefused("拒绝复电: " + "; ".join(blocked))
        cmd = self._new("restore", relay, reason or "人工复电", user, None, None)
        [done] = await self._execute([cmd], [relay], False)
        return done

    def check(self, now: float) -> list[CommandRecord]:
        """Verify pending commands against their feed sensors; returns commands that settled.

        A command settles as ``verified`` when the feed point reads the expected state from a
        reading taken after the command was sent, or ``unverified`` when its window expires.
        """
        settled = []
        for relay_id, pend in list(self.pending.items()):
            cmd, feed = pend.command, pend.relay.feed
            if feed is None:
                cmd.result, cmd.detail = "unverified", "未配置馈电传感器"
            else:
                value, quality, ts = self.read_feed(feed)
                if quality == 0 and ts > (cmd.sent_at or 0) and (value >= 0.5) == \
                        pend.expect_powered:
                    cmd.result, cmd.verified_at = "verified", ts
                elif now > pend.deadline:
                    cmd.result = "unverified"
                    cmd.detail = "馈电异常: 断电后仍检测到有电" if not pend.expect_powered \
                        else "馈电异常: 复电后未检测到电"
                else:
                    continue
            del self.pending[relay_id]
            self.sink(cmd)
            settled.append(cmd)
        return settled
