"""`minewatch verify-journal` catches a journal row edited or deleted directly in the database."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

import psycopg

from tests.conftest import ROOT, make_store


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minewatch.cli", "verify-journal", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def _fill(backend: dict, n: int = 6) -> None:
    async def go():
        store = make_store(backend)
        await store.open()
        for i in range(n):
            await store.append_journal(1000.0 + i, "alarm_raised", f"A{i}",
                                       {"point_id": "001A02", "value": 1.5 + i / 10},
                                       key=f"k{i}")
        await store.close()
    asyncio.run(go())


def test_verifier_names_the_edited_row_in_sqlite(tmp_path):
    data = tmp_path / "data"
    backend = {"name": "sqlite", "path": data / "minewatch.db"}
    _fill(backend)
    ok = _verify("--data-dir", str(data))
    assert ok.returncode == 0 and "6 rows verified" in ok.stdout
    db = sqlite3.connect(data / "minewatch.db")
    db.execute("""UPDATE journal SET data = '{"point_id": "001A02", "value": 0.5}' WHERE seq = 4""")
    db.commit()
    bad = _verify("--data-dir", str(data))
    assert bad.returncode == 1
    assert "BROKEN at seq 4" in bad.stderr and "A3" in bad.stderr


def test_postgres_refuses_edits_and_the_verifier_catches_a_forced_one(pg_url):
    _fill({"name": "postgres", "url": pg_url})
    assert _verify("--database-url", pg_url).returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # The database itself refuses edits and deletes of journal rows ...
        for sql in ("UPDATE journal SET event = 'x' WHERE seq = 2",
                    "DELETE FROM journal WHERE seq = 2"):
            try:
                conn.execute(sql)
                raise AssertionError(f"{sql} was allowed")
            except psycopg.errors.RaiseException as exc:
                assert "append-only" in str(exc)
        # ... and a superuser who switches the guard off is still caught by the chain.
        conn.execute("ALTER TABLE journal DISABLE TRIGGER journal_append_only")
        conn.execute("""UPDATE journal SET data_text = '{"point_id": "001A02", "value": 0.9}'
                        WHERE seq = 3""")
    bad = _verify("--database-url", pg_url)
    assert bad.returncode == 1 and "BROKEN at seq 3" in bad.stderr
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM journal WHERE seq >= 3")  # trigger still off: hide the edit
        conn.execute("INSERT INTO journal SELECT mine_id, seq + 1, at, event, subject, data, "
                     "data_text, prev_hash, hash, key || 'x' FROM journal WHERE seq = 2")
    gap = _verify("--database-url", pg_url)
    assert gap.returncode == 1 and "BROKEN at seq 3" in gap.stderr
