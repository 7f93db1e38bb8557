"""The one shape every reading takes, however it arrived (Modbus, MQTT, simulator, replay)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

import numpy as np


class Quality(IntEnum):
    """Quality flag stored with each reading; the engine evaluates limits only on OK."""

    OK = 0
    FAULT = 1  # 断线/故障: substation reports the channel faulty
    CALIBRATING = 2  # 标校: standard gas applied, not an over-limit event
    OUT_OF_RANGE = 3  # outside the sensor's measuring range
    STALE = 4  # no fresh reading within the stale window (lost substation)
    SUSPECT = 5  # falsification detectors

    @property
    def label(self) -> str:
        return self.name.lower()


QUALITY_BY_LABEL = {q.label: q for q in Quality}


@dataclass(slots=True)
class Batch:
    """Readings of one poll or message as parallel arrays (point slot, ts, value, quality).

    ``received_at`` is the server's receive time (perf counter for latency bookkeeping and
    wall clock for the record), kept beside the source timestamps so clock skew is visible.
    """

    slots: np.ndarray  # int32 engine slot per reading
    ts: np.ndarray  # float64 source timestamp, epoch seconds
    values: np.ndarray  # float64
    quality: np.ndarray  # int8 Quality
    received_at: float  # epoch seconds (server clock)
    received_perf: float  # time.perf_counter() at receive

    def __len__(self) -> int:
        return int(self.slots.shape[0])


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC with milliseconds, the API's time format."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_time(text: str) -> float:
    """ISO 8601 (with or without zone; naive means UTC) or epoch seconds → epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
