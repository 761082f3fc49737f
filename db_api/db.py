"""Engine and session setup, plus applying the Alembic migrations programmatically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

# alembic.ini and migrations/ sit beside the package at the repository root (and are
# copied the same way into the images), so migrations run from any working directory.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = PROJECT_ROOT / "alembic.ini"
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def normalize_url(url: str) -> sa.URL:
    """Parse a database URL; plain `postgresql://` / `postgres://` mean psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(
    url: str,
    *,
    connect_timeout_s: int = 5,
    pool_size: int = 5,
    max_overflow: int = 10,
    sqlite_foreign_keys: bool = True,
) -> Engine:
    """A pooled engine; pre-ping replaces connections a PostgreSQL restart killed."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            pool_pre_ping=True,
            # Handlers run in the thread pool, so a connection moves between threads;
            # the pool still hands each one to a single thread at a time.
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _configure_sqlite(engine, foreign_keys=sqlite_foreign_keys)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = connect_timeout_s
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=connect_timeout_s,
        connect_args=connect_args,
    )


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked, per
        # connection. Migrations turn them off: batch table rebuilds would cascade.
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        # WAL lets readers proceed while one request writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def ensure_sqlite_directory(url: str) -> None:
    """Create the directory of a SQLite file (migrations create the database itself)."""
    parsed = normalize_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: responses are built from them afterwards.
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Any:
    """The Alembic config for `url`, independent of the current directory."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    # A host program (parlor up, tests) keeps its own logging configuration.
    config.attributes["configure_logger"] = False
    return config


def upgrade_database(url: str) -> None:
    """Apply every migration up to head (what `alembic upgrade head` does)."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def head_revision() -> str | None:
    """The newest migration's revision id, or None when migrations/ is not shipped."""
    if not MIGRATIONS_DIR.is_dir():
        return None
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
