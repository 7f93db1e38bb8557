"""Run every benchmark, print one summary table and write all results with machine facts.

Each bench/*.py script (engine, latency, ingest, modbus, store, query, scaling, peers, soak,
then any other bench script with a ``__main__`` block) runs as a subprocess in its own process
group, one after another (they would distort each other's figures), with ``--quick`` passed
through.
Its last stdout line is its JSON result. A script that is missing, exits non-zero, prints no
JSON or outlives ``--timeout`` is recorded with its error (and the tail of its stderr) and the
run goes on; its whole process group is stopped (SIGINT, then SIGKILL) so nothing it started
outlives it. The soak runs 30 minutes in full mode, so it is left out unless ``--with-soak``
(its 30 s smoke run is part of ``--quick``).

Each script's stdout and stderr are kept in bench-logs/ beside ``--out``. Written to
``--out`` (default artifacts/bench.json), after every script so a crash keeps what
was measured: ``machine`` (CPU model from /proc/cpuinfo, cores, RAM, OS, Python, date, git
commit and whether the tree had uncommitted changes), ``quick``, ``started_at``,
``finished_at``, ``results`` (per script: status ok | failed | timeout | missing | skipped,
``seconds``, ``returncode``, ``loadavg_before``/``loadavg_after`` (1-min load averages:
figures taken on a busy machine are contended), ``json`` (the script's result), ``output``
(its printed table), ``error``).

Usage: python bench/all.py [--quick] [--with-soak] [--only latency,engine] [--out FILE]
                           [--timeout SECONDS]
Exit status 1 if any script failed. Last line: one JSON object: scripts, ok, failed (names),
seconds, out.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ORDER = ["engine", "latency", "ingest", "modbus", "store", "query", "scaling", "peers", "soak"]
# Key figures per script for the summary table (glob patterns allowed); a script not listed
# here, or whose keys changed, shows its first numeric keys instead.
FIGURES: dict[str, list[str]] = {
    "engine": ["ms_per_batch_100k", "speedup_vs_reference"],
    "latency": ["cut_p99_ms", "feed_p99_ms", "ws_p99_ms", "processing_p99_ms",
                "ws50_last_p99_ms_0", "cut_p99_ms_10k", "ws50_last_p99_ms_10k",
                "achieved_load_10k", "cut_p99_ms_50k", "ws50_last_p99_ms_50k",
                "achieved_load_50k"],
    "ingest": ["readings_per_s_1w", "readings_per_s_4w", "alarm_p99_ms"],
    "modbus": ["readings_per_s_1s", "cpu_s_per_10k_readings", "poll_late_p99_ms",
               "max_sustained_readings_per_s"],
    "store": ["embedded_rows_per_s", "postgres_rows_per_s", "postgres_history_p99_ms"],
    "query": ["pg_rollup_30d_p50_ms", "rollup_speedup", "pg_history_24h_p99_ms"],
    "scaling": ["readings_per_s_*_mines_*w", "alarm_p99_ms_*_mines_*w"],
    "peers": ["minewatch_mqtt_detect_p50_ms", "minewatch_modbus_detect_p50_ms",
              "prometheus_detect_p50_ms", "detect_ratio_mqtt"],
    "soak": ["achieved_rate", "lost", "rss_growth_mb", "p99_drift_ms"],
}
MAX_FIGURES = 8
STOP_GRACE_S = 30.0  # after SIGINT to a timed-out script's process group, before SIGKILL


# --- machine facts -----------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or None)
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), None)
    os_name = next((line.split("=", 1)[1].strip().strip('"')
                    for line in _read("/etc/os-release").splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "ram_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "os": f"{os_name}, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "hostname": platform.node(),
    }


# --- running one script ------------------------------------------------------------------------
def scripts(only: list[str] | None) -> list[str]:
    """The fixed order first, then any other runnable bench script (not this one)."""
    found = sorted(p.stem for p in BENCH.glob("*.py") if p.name != Path(__file__).name
                   and "__main__" in p.read_text(encoding="utf-8", errors="replace"))
    names = ORDER + [n for n in found if n not in ORDER]
    if only:
        unknown = [n for n in only if n not in names]
        names = [n for n in names if n in only] + unknown
    return names


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a script and everything it started (its own process group), bounded: SIGINT (its
    finally blocks clean up), then SIGKILL; then SIGKILL whatever of the group is left (a
    process group id stays taken while any member lives, so this reaches only its members)."""
    for sig, wait in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


def run_script(name: str, quick: bool, timeout: float, logs: Path) -> dict[str, Any]:
    path = BENCH / f"{name}.py"
    res: dict[str, Any] = {"status": "missing", "seconds": 0.0, "returncode": None,
                           "loadavg_before": round(os.getloadavg()[0], 2)}
    if not path.exists():
        res["error"] = f"{path.relative_to(ROOT)} not found"
        return res
    cmd = [sys.executable, str(path), *(["--quick"] if quick else [])]
    # Files, not pipes: a daemon a script leaves behind would hold a pipe open.
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    t0 = time.monotonic()
    timed_out = False
    with out_path.open("w") as out_f, err_path.open("w") as err_f:
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out_f, stderr=err_f,
                                    start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except OSError as exc:
            res.update(status="failed", error=f"cannot start: {exc}")
            return res
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _stop_group(proc)
    out = out_path.read_text(errors="replace")
    err = err_path.read_text(errors="replace")
    res["seconds"] = round(time.monotonic() - t0, 1)
    res["returncode"] = proc.returncode
    res["loadavg_after"] = round(os.getloadavg()[0], 2)
    result = last_json(out)
    res["output"] = "\n".join(out.strip().splitlines()[:-1])[-20000:]
    if timed_out:
        res["status"], res["error"] = "timeout", f"stopped after {timeout:g} s"
    elif proc.returncode != 0:
        res["status"], res["error"] = "failed", f"exit status {proc.returncode}"
    elif result is None:
        res["status"], res["error"] = "failed", "no JSON object on the last stdout line"
    else:
        res["status"] = "ok"
    if result is not None:
        res["json"] = result
    if res["status"] != "ok":
        res["stderr_tail"] = err[-4000:]
    return res


# --- summary -----------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int) or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def figures(name: str, result: dict[str, Any]) -> list[tuple[str, Any]]:
    picked: list[tuple[str, Any]] = []
    for pattern in FIGURES.get(name, []):
        for key in (k for k in result if fnmatch.fnmatchcase(k, pattern)):
            if result[key] is not None and all(key != k for k, _ in picked):
                picked.append((key, result[key]))
    if not picked:
        picked = [(k, v) for k, v in result.items()
                  if isinstance(v, int | float) and not isinstance(v, bool)]
    return picked[:MAX_FIGURES]


def summary(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'script':<10}{'status':<9}{'seconds':>9}  key figures"]
    for name, r in results.items():
        if r["status"] == "ok":
            figs = ", ".join(f"{k}={_fmt(v)}" for k, v in figures(name, r["json"]))
        else:
            figs = r.get("error", "")
        lines.append(f"{name:<10}{r['status']:<9}{r['seconds']:>9.1f}  {figs}")
    return "\n".join(lines)


def write(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    os.replace(tmp, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script")
    ap.add_argument("--with-soak", action="store_true",
                    help="include the 30-minute soak in a full run")
    ap.add_argument("--only", help="comma-separated script names (e.g. latency,engine)")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench.json")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per script (default 600 with --quick, 5400 without)")
    args = ap.parse_args()
    timeout = args.timeout or (600.0 if args.quick else 5400.0)
    names = scripts(args.only.split(",") if args.only else None)
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick,
                              "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "results": {}}
    t0 = time.monotonic()
    for name in names:
        if name == "soak" and not args.quick and not args.with_soak:
            report["results"][name] = {"status": "skipped", "seconds": 0.0,
                                       "error": "30-minute soak: pass --with-soak"}
            continue
        print(f"running bench/{name}.py{' --quick' if args.quick else ''} …",
              file=sys.stderr, flush=True)
        res = run_script(name, args.quick, timeout, args.out.parent / "bench-logs")
        report["results"][name] = res
        print(f"  {res['status']} in {res['seconds']:.1f} s"
              + (f": {res['error']}" if res.get("error") else ""), file=sys.stderr, flush=True)
        write(args.out, report)
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["seconds"] = round(time.monotonic() - t0, 1)
    write(args.out, report)
    failed = [n for n, r in report["results"].items() if r["status"] not in ("ok", "skipped")]
    m = report["machine"]
    print(summary(report["results"]))
    print(f"{m['cpu_model']}, {m['cores']} cores, {m['ram_gb']} GB, {m['os']}, Python "
          f"{m['python']}, commit {(m['git_commit'] or '?')[:10]}"
          f"{' (uncommitted changes)' if m['git_dirty'] else ''}; "
          f"total {report['seconds']:.0f} s; written to {args.out}")
    print(json.dumps({"scripts": len(report["results"]),
                      "ok": sum(r["status"] == "ok" for r in report["results"].values()),
                      "failed": failed, "seconds": report["seconds"], "out": str(args.out)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
