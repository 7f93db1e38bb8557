"""The substation register map: the contract between a substation (real or simulated) and
the Modbus collector.

Per substation (one Modbus device id):
- Input registers, two per channel ``c``: ``2c`` = value as a signed 16-bit integer,
  ``round(value * scale)`` with the sensor kind's scale from thresholds.toml (e.g. CH4 ×100,
  so 123 = 1.23 %); ``2c + 1`` = status word, bit 0 fault (断线/故障), bit 1 calibrating (标校).
- Coils, one per relay (断电器): ``True`` = relay open, power cut downstream; ``False`` = closed.
A read never exceeds 124 registers (the Modbus limit is 125), so large substations are read
in chunks of 62 channels.
"""

from __future__ import annotations

import math

import numpy as np

from minewatch.readings import Quality

REGS_PER_CHANNEL = 2
MAX_READ = 124
STATUS_FAULT = 0x1
STATUS_CALIBRATING = 0x2


def encode_value(value: float, scale: float) -> int:
    """Value → unsigned register word (two's complement), clamped to the int16 range."""
    # Clamp before rounding: a huge value times the scale is inf, which round() refuses.
    raw = round(max(-32768.0, min(32767.0, value * scale)))
    return raw & 0xFFFF


def encode_channel(value: float, scale: float, *, fault: bool = False,
                   calibrating: bool = False) -> tuple[int, int]:
    if not math.isfinite(value):
        return 0, STATUS_FAULT
    status = (STATUS_FAULT if fault else 0) | (STATUS_CALIBRATING if calibrating else 0)
    return encode_value(value, scale), status


def read_spans(n_channels: int) -> list[tuple[int, int]]:
    """(address, count) pairs covering all channels' registers."""
    total = n_channels * REGS_PER_CHANNEL
    return [(a, min(MAX_READ, total - a)) for a in range(0, total, MAX_READ)]


def decode(registers: list[int], scales: np.ndarray, range_lo: np.ndarray,
           range_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Registers of all channels → (values, quality) arrays, vectorized over channels."""
    regs = np.asarray(registers, dtype=np.int64).reshape(-1, REGS_PER_CHANNEL)
    if regs.shape[0] != scales.shape[0]:
        raise ValueError(f"expected {scales.shape[0]} channels, got {regs.shape[0]}")
    raw = regs[:, 0]
    raw = np.where(raw >= 0x8000, raw - 0x10000, raw)
    values = raw / scales
    status = regs[:, 1]
    quality = np.full(values.shape, Quality.OK, dtype=np.int8)
    quality[(values < range_lo) | (values > range_hi)] = Quality.OUT_OF_RANGE
    quality[(status & STATUS_CALIBRATING) != 0] = Quality.CALIBRATING
    quality[(status & STATUS_FAULT) != 0] = Quality.FAULT
    return values, quality
