"""db_api settings, read from `DB_API_*` environment variables."""

from __future__ import annotations

import sqlalchemy as sa
from pydantic import Field, field_validator
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
    # POST /import: the largest upload (and unpacked zip member), chats per file,
    # messages per chat; beyond them the whole file is refused (413, 422).
    import_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    import_max_chats: int = Field(default=10_000, ge=1)
    import_max_messages: int = Field(default=10_000, ge=1)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        # Fail at startup with the setting's name, not later inside a request.
        try:
            backend = sa.make_url(value).get_backend_name()
        except sa.exc.ArgumentError:
            raise ValueError(
                "not a database URL; expected sqlite:///path/to/file.db or "
                "postgresql://user:password@host:5432/dbname"
            ) from None
        if backend not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
        return value
