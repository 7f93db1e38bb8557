"""Command line: ``minewatch run`` (the service) and ``minewatch simulate`` (inject scenarios)."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from minewatch.mine import ConfigError

app = typer.Typer(help="minewatch: 煤矿安全监控 gas and ventilation monitoring and alarms.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def run(
    host: Annotated[str, typer.Option(help="address to serve the API on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    config: Annotated[Path | None, typer.Option(help="mine configuration TOML")] = None,
    data_dir: Annotated[Path, typer.Option(help="embedded store directory")] = Path("data"),
    simulate: Annotated[bool, typer.Option(help="start the mine's simulated substations")] = True,
    database_url: Annotated[str | None, typer.Option(
        help="postgresql://… (default: $MINEWATCH_DATABASE_URL, else the embedded store)")]
        = None,
    poll_ms: Annotated[int | None, typer.Option(help="override every substation's poll period")]
        = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the service: collectors, engine, store, REST/WebSocket API and dashboard."""
    import uvicorn

    from api.app import create_app
    from minewatch.service import Service
    from minewatch.settings import Settings

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    overrides: dict = {"host": host, "port": port, "data_dir": data_dir, "simulate": simulate,
                       "log_level": log_level}
    if config is not None:
        overrides["mine_config"] = config
    if database_url is not None:
        overrides["database_url"] = database_url
    if poll_ms is not None:
        overrides["poll_ms"] = poll_ms
    settings = Settings(**overrides)
    try:
        service = Service(settings)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"minewatch: mine {service.mine.mine.name} ({len(service.points)} points), "
               f"data in {settings.data_dir.resolve()}")
    typer.echo(f"dashboard: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", lifespan="on")


def _token(api: str) -> str | None:
    """MINEWATCH_TOKEN, else log in as MINEWATCH_USER (default admin) with MINEWATCH_PASSWORD
    (or MINEWATCH_ADMIN_PASSWORD)."""
    import os

    from minewatch.procs import login

    if token := os.environ.get("MINEWATCH_TOKEN"):
        return token
    password = os.environ.get("MINEWATCH_PASSWORD") or os.environ.get("MINEWATCH_ADMIN_PASSWORD")
    if not password:
        return None
    return login(api, os.environ.get("MINEWATCH_USER", "admin"), password)


def _call(api: str, method: str, path: str, body: dict | None = None) -> dict:
    import httpx

    try:
        token = _token(api)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.request(method, f"{api.rstrip('/')}/api/v1{path}", json=body, timeout=10,
                          headers=headers)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach {api}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if r.status_code == 401:
        typer.echo("not logged in: set MINEWATCH_PASSWORD (the admin password printed at the "
                   "first start) or MINEWATCH_TOKEN", err=True)
        raise typer.Exit(1)
    if r.status_code != 200:
        typer.echo(f"refused ({r.status_code}): {r.text}", err=True)
        raise typer.Exit(1)
    return r.json()


@app.command()
def simulate(
    scenario: Annotated[str, typer.Argument(help="gas-overlimit, gas-alarm, fan-stop, "
                                                 "sensor-fault, calibrate, substation-offline, "
                                                 "substation-online, relay-stuck, clear")],
    point: Annotated[str, typer.Option(help="point id, e.g. 001A02")],
    api: Annotated[str, typer.Option(help="URL of the running service")] =
        "http://127.0.0.1:8000",
    value: Annotated[float | None, typer.Option(help="value to hold (default per scenario)")]
        = None,
    ramp_s: Annotated[float, typer.Option(help="seconds to ramp to the value")] = 0.0,
) -> None:
    """Inject a scenario into the running service's simulated mine."""
    body = {"scenario": scenario, "point": point, "ramp_s": ramp_s}
    if value is not None:
        body["value"] = value
    typer.echo(json.dumps(_call(api, "POST", "/sim/scenarios", body), ensure_ascii=False))


@app.command()
def worker(
    config: Annotated[list[Path], typer.Option(help="mine configuration TOML (repeatable)")],
    database_url: Annotated[str, typer.Option(help="postgresql://… (shared by all workers)")],
    broker_url: Annotated[str, typer.Option(help="mqtt://minewatch:password@host:port")],
    data_dir: Annotated[Path, typer.Option(help="spool root (per mine below it)")] =
        Path("data"),
    worker_id: Annotated[str | None, typer.Option(help="default: hostname-pid")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """An engine worker: evaluates its fair share of the mines, taking over a dead worker's."""
    import asyncio

    from minewatch.settings import Settings
    from minewatch.worker import Worker, default_worker_id

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = Settings(database_url=database_url, broker_url=broker_url, data_dir=data_dir)
    try:
        w = Worker(worker_id or default_worker_id(), config, base)
    except (ValueError, ConfigError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(w.run())


@app.command()
def city(
    broker_url: Annotated[str, typer.Option(help="mqtt://[user[:password]@]host[:port]")],
    host: Annotated[str, typer.Option(help="address to serve the city view on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the city view")] = 8100,
    username: Annotated[str, typer.Option(help="the broker's city account")] = "city",
    password: Annotated[str | None, typer.Option(
        help="default: from the URL or $MINEWATCH_CITY_MQTT_PASSWORD")] = None,
    mine_url: Annotated[list[str] | None, typer.Option(
        help="MINE=http://… drill-down link to a mine's wall screen (repeatable)")] = None,
    data_dir: Annotated[Path, typer.Option(
        help="the city's users and token secret (add users: minewatch user add --data-dir)")]
        = Path("city-data"),
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """City command center (市煤矿安全应急指挥部): every mine's alarms and status at /city.
    Log in as admin with the one-time password printed at the first start (or
    MINEWATCH_ADMIN_PASSWORD)."""
    from api.city_app import city_main

    try:
        city_main(host, port, broker_url, username, password, mine_url or [],
                  data_dir=data_dir, log_level=log_level)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command("verify-journal")
def verify_journal_cmd(
    data_dir: Annotated[Path, typer.Option(help="embedded store directory")] = Path("data"),
    database_url: Annotated[str | None, typer.Option(
        help="postgresql://… (default: $MINEWATCH_DATABASE_URL, else the embedded store)")]
        = None,
    mine: Annotated[str | None, typer.Option(help="mine id (PostgreSQL holds many mines)")]
        = None,
    config: Annotated[Path | None, typer.Option(help="mine configuration TOML")] = None,
) -> None:
    """Check the hash chain of the audit journal; name the first broken row (exit 1)."""
    import asyncio

    from minewatch.mine import Mine
    from minewatch.service import open_store
    from minewatch.settings import Settings
    from minewatch.store import verify_journal

    overrides: dict = {"data_dir": data_dir}
    if database_url is not None:
        overrides["database_url"] = database_url
    if config is not None:
        overrides["mine_config"] = config
    settings = Settings(**overrides)
    if not settings.database_url and not (data_dir / "minewatch.db").exists():
        typer.echo(f"no embedded store in {data_dir}", err=True)
        raise typer.Exit(2)
    mine_id = mine or Mine.load(settings.mine_config).mine.id

    async def check() -> tuple[int, int | None, str]:
        store = open_store(settings, mine_id)
        await store.open()
        try:
            checked, bad = await verify_journal(store)
            detail = ""
            if bad is not None:
                rows = await store.journal(bad - 1, 1)
                if rows:
                    r = rows[0]
                    detail = f" ({r.event} {r.subject})"
            return checked, bad, detail
        finally:
            await store.close()

    checked, bad, detail = asyncio.run(check())
    if bad is None:
        where = "postgresql" if settings.database_url else "embedded"
        typer.echo(f"journal OK: {checked} rows verified (mine {mine_id}, {where})")
        return
    typer.echo(f"journal BROKEN at seq {bad}{detail}: {checked} rows verified before it",
               err=True)
    raise typer.Exit(1)


# --- users -------------------------------------------------------------------------------------
user_app = typer.Typer(help="Users of the REST API and screens (hashed passwords in the store).",
                       no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="viewer, dispatcher, mine_leader, organiser, "
                                           "regulator, city, admin")],
    mine: Annotated[list[str] | None, typer.Option(
        help="mine id the user may see (repeatable; default all)")] = None,
    data_dir: Annotated[Path, typer.Option(help="embedded store directory")] = Path("data"),
    database_url: Annotated[str | None, typer.Option(help="postgresql://…")] = None,
) -> None:
    """Add or replace a user; the password is read from MINEWATCH_NEW_PASSWORD or prompted."""
    import asyncio
    import os

    from minewatch.auth import AuthError, new_user
    from minewatch.mine import Mine
    from minewatch.service import open_store
    from minewatch.settings import Settings

    password = os.environ.get("MINEWATCH_NEW_PASSWORD") or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True)
    try:
        user = new_user(name, role, password, mine or ["*"])
    except AuthError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    overrides: dict = {"data_dir": data_dir}
    if database_url is not None:
        overrides["database_url"] = database_url
    settings = Settings(**overrides)

    async def save() -> None:
        store = open_store(settings, Mine.load(settings.mine_config).mine.id)
        await store.open()
        try:
            await store.save_user(user)
        finally:
            await store.close()

    asyncio.run(save())
    typer.echo(f"user {name} ({role}) saved; mines: {', '.join(user.mines)}")


# --- drills (双盲演练) --------------------------------------------------------------------------
drill_app = typer.Typer(help="Double-blind drills: draw a plan with a commitment, arm, reveal, "
                             "verify, report.", no_args_is_help=True)
app.add_typer(drill_app, name="drill")


@drill_app.command("plan")
def drill_plan(
    out: Annotated[Path, typer.Option(help="where to write the secret plan (JSON)")],
    config: Annotated[list[Path] | None, typer.Option(
        help="candidate mine files (repeatable; default the sample mine)")] = None,
    start_in_min: Annotated[float, typer.Option(help="earliest start, minutes from now")] = 0.0,
    window_min: Annotated[float, typer.Option(help="start drawn within this many minutes")]
        = 60.0,
) -> None:
    """Draw mine, site, scenario and start time at random; print the commitment (last line)."""
    import time

    from minewatch.mine import SAMPLE_MINE, Mine
    from simulators.drill import commitment, draw, load_library

    mines = [Mine.load(p) for p in (config or [SAMPLE_MINE])]
    plan = draw(mines, load_library(), time.time() + start_in_min * 60, window_min * 60)
    out.write_text(plan.model_dump_json(indent=2), encoding="utf-8")
    out.chmod(0o600)
    typer.echo(f"plan written to {out} (keep it secret until the drill is over)")
    typer.echo(commitment(plan))


@drill_app.command("verify")
def drill_verify(
    plan_file: Annotated[Path, typer.Argument(help="the revealed plan")],
    commitment: Annotated[str, typer.Option(help="the hash published before the drill")],
) -> None:
    """Exit 0 only when the revealed plan hashes to the published commitment."""
    from simulators.drill import verify

    if verify(plan_file.read_text(encoding="utf-8"), commitment):
        typer.echo("OK: the plan matches the commitment (fixed before the drill, unchanged)")
        return
    typer.echo("MISMATCH: this plan is not the one committed to", err=True)
    raise typer.Exit(1)


API = Annotated[str, typer.Option(help="URL of the mine's service")]
USER = Annotated[str, typer.Option(help="organiser's name")]


@drill_app.command("arm")
def drill_arm(plan_file: Path, commitment: Annotated[str, typer.Option()], user: USER,
              api: API = "http://127.0.0.1:8000") -> None:
    """Give the plan to the mine's service; it starts by itself at the drawn time."""
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    d = _call(api, "POST", "/drills", {"plan": plan, "commitment": commitment, "user": user})
    typer.echo(d["id"])


@drill_app.command("abort")
def drill_abort(drill_id: str, user: USER, api: API = "http://127.0.0.1:8000") -> None:
    typer.echo(json.dumps(_call(api, "POST", f"/drills/{drill_id}/abort", {"user": user}),
                          ensure_ascii=False))


@drill_app.command("finish")
def drill_finish(drill_id: str, user: USER, api: API = "http://127.0.0.1:8000") -> None:
    typer.echo(json.dumps(_call(api, "POST", f"/drills/{drill_id}/finish", {"user": user}),
                          ensure_ascii=False))


@drill_app.command("reveal")
def drill_reveal(drill_id: str, user: USER, api: API = "http://127.0.0.1:8000") -> None:
    """Publish the plan (with its nonce) so anyone can check it against the commitment."""
    d = _call(api, "POST", f"/drills/{drill_id}/reveal", {"user": user})
    typer.echo(json.dumps(d["plan"], ensure_ascii=False, indent=2))


@drill_app.command("report")
def drill_report(drill_id: str, api: API = "http://127.0.0.1:8000") -> None:
    """Each step's time against its limit, pass/fail (JSON)."""
    typer.echo(json.dumps(_call(api, "GET", f"/drills/{drill_id}/report"), ensure_ascii=False,
                          indent=2))


if __name__ == "__main__":
    app()
