"""db_api settings, read from `DB_API_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DB_API_", extra="ignore")

    # `postgresql://` (and `postgres://`) mean psycopg 3; SQLite is the embedded default.
    database_url: str = "sqlite:///./data/parlor.db"
    # Shared secret for internal callers; empty disables the check (local runs, tests).
    internal_token: str = ""
    max_message_chars: int = Field(default=100_000, ge=1)
    max_title_chars: int = Field(default=200, ge=1)
    max_model_chars: int = Field(default=256, ge=1)
    # Seconds to wait for a new PostgreSQL connection, so /health answers 503 quickly
    # instead of hanging when the server is unreachable (libpq wants an integer >= 2).
    connect_timeout_s: int = Field(default=5, ge=2)
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=10, ge=0)
