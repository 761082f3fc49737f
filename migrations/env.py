"""Alembic environment: the database URL comes from db_api's settings
(DB_API_DATABASE_URL), or from `upgrade_database(url)` / a test's connection."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from db_api.config import Settings
from db_api.db import ensure_sqlite_directory, make_engine, normalize_url
from db_api.models import Base
from db_api.search import include_object

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return str(config.attributes.get("database_url") or Settings().database_url)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # Search's FTS5 tables and expression indexes are not models (db_api/search.py).
        include_object=include_object,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    context.configure(
        url=normalize_url(_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # a caller (a test) lends its own connection
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Foreign keys off on SQLite while migrating: a batch rebuild drops and recreates
    # a table, which would otherwise cascade-delete every message of every chat.
    ensure_sqlite_directory(_url())
    engine = make_engine(_url(), sqlite_foreign_keys=False)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
