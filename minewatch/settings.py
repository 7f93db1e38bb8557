"""Service settings from environment variables (MINEWATCH_*) and CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from minewatch.emergency import DEFAULT_EMERGENCY
from minewatch.mine import DEFAULT_THRESHOLDS, SAMPLE_MINE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINEWATCH_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    mine_config: Path = SAMPLE_MINE
    thresholds: Path = DEFAULT_THRESHOLDS
    emergency: Path = DEFAULT_EMERGENCY  # workflows, duty roster, notification endpoints
    data_dir: Path = Path("data")
    database_url: str | None = None
    # MQTT broker for the engine: mqtt://user:password@host:port. Without it, and with
    # embedded_broker on, a private mosquitto is started (if installed) for the MQTT
    # substations of the (simulated) mine and the events feed.
    broker_url: str | None = None
    embedded_broker: bool = True  # postgresql://… ; None = embedded SQLite in data_dir
    # With broker_url: a credentials.json as written by minewatch.broker.write_config
    # (username → password); the simulated mine's MQTT gateways then use that broker.
    broker_credentials: Path | None = None
    poll_ms: int | None = Field(None, ge=50)  # override every substation's poll period
    simulate: bool = True  # start the simulated substations of the mine configuration
    log_level: str = "INFO"
    # Security: the admin's password (else a one-time one is printed at the first start),
    # the token signing secret (else a random one kept in data_dir/jwt.secret), request size.
    admin_password: str | None = Field(None, min_length=8)
    jwt_secret: str | None = Field(None, min_length=32)
    max_request_bytes: int = Field(1 << 20, ge=1024)
    # Retention (days); defaults sit above the regulation minimums in DOMAIN.md.
    retention_raw_days: float = Field(90, ge=7)
    retention_rollup_days: float = Field(730, ge=365)
    retention_records_days: float = Field(730, ge=365)
    rollup_refresh_s: float = Field(10.0, gt=0)
    retention_every_s: float = Field(3600.0, gt=0)
    # Durable spool between the collectors and the store (data_dir/spool).
    spool_max_bytes: int = Field(1 << 30, gt=0)  # beyond it: spool_full (appends go on)
    spool_segment_bytes: int = Field(16 << 20, ge=4096)
    spool_fsync_ms: float = Field(100.0, ge=0)  # power-loss fsync period; 0 = never
    spool_keep_applied: bool = False  # keep applied segments (tests, forensics)
    spool_batch_rows: int = Field(50_000, ge=1)  # readings per store call at most
    spool_replay_wait_s: float = Field(10.0, ge=0)  # crash replay waited for at start
    spool_stop_timeout_s: float = Field(10.0, ge=0)  # draining to the store at stop
