"""The register map round-trips values and flags, including negatives and bad values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minewatch.readings import Quality
from minewatch.registers import MAX_READ, decode, encode_channel, encode_value, read_spans


@given(st.lists(st.tuples(st.floats(-300, 300, allow_nan=False), st.booleans(), st.booleans()),
                min_size=1, max_size=80))
def test_encode_decode_round_trip(channels):
    scales = np.full(len(channels), 100.0)
    regs: list[int] = []
    for value, fault, cal in channels:
        regs.extend(encode_channel(value, 100.0, fault=fault, calibrating=cal))
    values, quality = decode(regs, scales, np.full(len(channels), -1.0),
                             np.full(len(channels), 4.0))
    for (value, fault, cal), v, q in zip(channels, values, quality, strict=True):
        assert math.isclose(v, max(-327.68, min(327.67, round(value * 100) / 100)), abs_tol=1e-9)
        if fault:
            assert q == Quality.FAULT
        elif cal:
            assert q == Quality.CALIBRATING
        elif v < -1.0 or v > 4.0:
            assert q == Quality.OUT_OF_RANGE
        else:
            assert q == Quality.OK


def test_non_finite_values_go_on_the_wire_as_faults():
    assert encode_channel(math.nan, 100.0) == (0, 1)
    assert encode_channel(math.inf, 100.0)[1] & 1


def test_reads_stay_within_the_modbus_limit():
    spans = read_spans(150)
    assert all(count <= MAX_READ for _, count in spans)
    assert sum(count for _, count in spans) == 300
    assert spans[0] == (0, MAX_READ)


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=128).filter(
    lambda r: len(r) % 2 == 0))
def test_decoder_fuzz_any_register_content_is_a_value_and_a_quality(registers):
    """Whatever a (faulty or hostile) substation answers, every channel decodes to a finite
    value and exactly one quality; fault and calibration bits win over the range check."""
    n = len(registers) // 2
    scales = np.full(n, 100.0)
    values, quality = decode(registers, scales, np.zeros(n), np.full(n, 100.0))
    assert values.shape == quality.shape == (n,)
    assert np.isfinite(values).all()
    for c in range(n):
        status = registers[2 * c + 1]
        if status & 1:
            assert quality[c] == Quality.FAULT
        elif status & 2:
            assert quality[c] == Quality.CALIBRATING
        elif values[c] < 0 or values[c] > 100:
            assert quality[c] == Quality.OUT_OF_RANGE
        else:
            assert quality[c] == Quality.OK


def test_decoder_refuses_a_short_answer():
    with pytest.raises(ValueError):
        decode([0, 0, 0, 0], np.ones(3), np.zeros(3), np.ones(3))


def test_huge_values_clamp_instead_of_overflowing():
    """1e308 × the scale is inf: the simulator once failed every poll of the substation."""
    assert encode_value(1e308, 100) == 32767
    assert encode_value(-1e308, 100) == 0x8000  # -32768 as an unsigned word
