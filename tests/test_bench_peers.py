"""Smoke check of the peer benchmark (issue 10, item 5): ``bench/peers.py --quick`` runs
Prometheus + Alertmanager and minewatch on loopback and prints its fixed keys as one JSON
object on its last line. Benchmarks are not tests: no figure is asserted beyond being a
positive finite number. Prometheus and Alertmanager come from Debian
(scripts/setup.sh), like mosquitto."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.conftest import ROOT

KEYS = ["minewatch_mqtt_detect_p50_ms", "minewatch_modbus_detect_p50_ms",
        "prometheus_detect_p50_ms", "prometheus_100ms_detect_p50_ms", "detect_ratio_mqtt",
        "detect_ratio_modbus", "detect_ratio_mqtt_vs_100ms"]


def test_peers_quick_prints_its_json_line():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "peers.py"), "--quick"],
                         capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in KEYS:
        value = result[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, result)
        assert math.isfinite(value) and value > 0, (key, result)
    assert result["prometheus_defaults_detect_p50_ms"] is None  # skipped in --quick
