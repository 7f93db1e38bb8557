"""The shape of events a mine publishes to the city on ``mw/{mine}/events`` (JSON, QoS 1).

Every event: ``{"v": 1, "mine": id, "mine_name": name, "type": …, "at": epoch seconds, …}``.
- ``alarm``: ``transition`` (raised | returned | acknowledged | shelved …) and ``alarm``
  (the REST alarm object: id, point_id, point_name, kind, severity, state, raised_at, value,
  message, area, drill …). The last state of each alarm is also retained on
  ``mw/{mine}/alarms/{alarm_id}`` so a city view that starts late sees every open alarm.
- ``command``: ``command`` (the REST command object: id, action, target, target_name,
  issued_at, sent_at, verified_at, result …).
- ``heartbeat`` (every ``HEARTBEAT_S``): ``summary`` = {points, open_alarms,
  unacked_alarms, cut_relays, max_ch4, max_ch4_point, stale_points, substations_online,
  substations}. A mine whose last event is older than ``QUIET_AFTER_S`` is itself an alarm at
  the city (no data, 无数据).
Workflow steps (issue 6) will add ``type: "incident"``.
"""

from __future__ import annotations

import time
from typing import Any

EVENT_VERSION = 1
HEARTBEAT_S = 5.0
QUIET_AFTER_S = 3 * HEARTBEAT_S


def event(mine_id: str, mine_name: str, kind: str, **body: Any) -> dict[str, Any]:
    return {"v": EVENT_VERSION, "mine": mine_id, "mine_name": mine_name, "type": kind,
            "at": time.time(), **body}


def events_topic(mine_id: str) -> str:
    return f"mw/{mine_id}/events"


def alarm_topic(mine_id: str, alarm_id: str) -> str:
    return f"mw/{mine_id}/alarms/{alarm_id}"
