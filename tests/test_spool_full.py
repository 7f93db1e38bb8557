"""A spool that fills (the store cannot keep up) is a clear alarm, and clears when it drains."""

from __future__ import annotations

import sqlite3

from minewatch.procs import start_service


def test_spool_full_raises_a_critical_alarm_and_clears(tmp_path):
    env = {"MINEWATCH_SPOOL_MAX_BYTES": "30000", "MINEWATCH_SPOOL_SEGMENT_BYTES": "4096"}
    svc = start_service(tmp_path, "--poll-ms", "100", env=env)
    try:
        db = sqlite3.connect(svc.data_dir / "minewatch.db", timeout=10)
        db.execute("BEGIN EXCLUSIVE")  # the store stops accepting writes

        def full_alarm(state=None):
            alarms = svc.get("/api/v1/alarms", params={"state": "open"}).json()
            return [a for a in alarms if a["kind"] == "spool_full"
                    and (state is None or a["state"] == state)]
        [alarm] = svc.wait_for(full_alarm, timeout=20, interval=0.2)
        assert alarm["severity"] == 1 and "本地数据缓存已满" in alarm["message"]
        assert svc.get("/api/v1/health").json()["spool_full"] is True
        db.rollback()  # the store is back: the writer drains the spool
        db.close()
        svc.wait_for(lambda: full_alarm("unack_rtn"), timeout=30, interval=0.2)
        assert svc.get("/api/v1/health").json()["spool_full"] is False
    finally:
        svc.stop()
