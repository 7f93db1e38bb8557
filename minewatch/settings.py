"""Service settings from environment variables (MINEWATCH_*) and CLI flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from minewatch.mine import DEFAULT_THRESHOLDS, SAMPLE_MINE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MINEWATCH_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    mine_config: Path = SAMPLE_MINE
    thresholds: Path = DEFAULT_THRESHOLDS
    data_dir: Path = Path("data")
    database_url: str | None = None  # postgresql://… ; None = embedded SQLite in data_dir
    poll_ms: int | None = Field(None, ge=50)  # override every substation's poll period
    simulate: bool = True  # start the simulated substations of the mine configuration
    log_level: str = "INFO"
