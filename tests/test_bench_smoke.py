"""Benchmarks are not tests; this only checks each bench script runs in --quick mode and
prints the documented keys as one JSON object on its last line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCHES = {
    "latency.py": ["cut_p50_ms", "cut_p99_ms", "ws_p50_ms", "ws_p99_ms", "processing_p99_ms",
                   "poll_period_ms", "feed_p99_ms", "ws50_last_p99_ms_0", "cut_p99_ms_10k",
                   "ws50_last_p99_ms_10k", "achieved_load_10k"],
    "engine.py": ["ms_per_batch_1k", "ms_per_batch_10k", "ms_per_batch_100k",
                  "speedup_vs_reference"],
    "ingest.py": ["readings_per_s_1w", "readings_per_s_2w", "readings_per_s_4w",
                  "alarm_p99_ms"],
    "soak.py": ["published", "stored", "probes", "rss_end_mb"],
    "store.py": ["embedded_rows_per_s", "postgres_rows_per_s", "embedded_history_p99_ms",
                 "postgres_history_p99_ms"],
    "query.py": ["points", "days", "rows", "rollup_rows_1h", "pg_history_24h_p50_ms",
                 "pg_rollup_30d_p99_ms", "embedded_history_24h_p99_ms",
                 "embedded_rollup_30d_p99_ms", "baseline_rollup_30d_p50_ms", "rollup_speedup",
                 "pg_stats_24h_p99_ms", "embedded_stats_24h_p99_ms"],
    "modbus.py": ["substations", "channels", "readings_target_per_s_1s", "readings_per_s_1s",
                  "stored_per_s_1s", "cpu_s_per_10k_readings", "rss_mb",
                  "baseline_readings_per_s", "max_sustained_readings_per_s"],
    "scaling.py": ["readings_per_s_1_mines_1w", "readings_per_s_1_mines_2w",
                   "readings_per_s_10_mines_1w", "readings_per_s_10_mines_2w",
                   "publish_baseline_readings_per_s_10_mines"],
}


@pytest.mark.parametrize("script", sorted(BENCHES))
def test_bench_quick_prints_its_json_line(script):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if script == "soak.py":  # counts in = counts stored
        assert result["lost"] == 0 and result["stored"] == result["published"], result
    if script == "query.py":  # the store, the embedded store and plain SQL agree
        assert result["answers_match"] is True, result
    if script == "scaling.py":
        assert all(row["complete"] for row in result["rows"]), result
    for key in BENCHES[script]:
        assert isinstance(result[key], int | float), (key, result)
        assert result[key] > 0, (key, result)
