"""Alembic owns the schema: the revisions run up and down on both backends, and the
models describe exactly what the migrations build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError

from db_api.config import Settings
from db_api.db import (
    alembic_config,
    head_revision,
    make_engine,
    normalize_url,
    upgrade_database,
)
from db_api.models import Base
from db_api.search import SEARCH_OBJECTS, include_object
from tests.support import REPO

TABLES = {"chats", "messages"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        # Search's FTS5 tables (SQLite) live beside the models: db_api/search.py.
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version", *SEARCH_OBJECTS}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    config = alembic_config(database_url)
    assert _tables(database_url) == set()
    command.upgrade(config, "head")
    assert _tables(database_url) == TABLES
    command.downgrade(config, "base")
    assert _tables(database_url) == set()
    command.upgrade(config, "head")
    assert _tables(database_url) == TABLES
    upgrade_database(database_url)  # idempotent at head


def test_models_match_migrations(database_url: str) -> None:
    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            opts = {"compare_type": True, "include_object": include_object}
            context = MigrationContext.configure(conn, opts=opts)
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_schema_details(database_url: str) -> None:
    upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("messages")}
        assert indexes["ix_messages_chat_id_created_at"] == ["chat_id", "created_at"]
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("chats")}
        assert indexes["ix_chats_owner_updated_at"] == ["owner", "updated_at"]
        (fk,) = inspector.get_foreign_keys("messages")
        assert fk["referred_table"] == "chats" and fk["options"].get("ondelete") == "CASCADE"
        checks = {c["name"] for c in inspector.get_check_constraints("messages")}
        assert checks == {"ck_messages_role", "ck_messages_status"}
        # The CHECKs hold even for writers that bypass the API.
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO chats (id, owner, created_at, updated_at) "
                    "VALUES (:id, 'o', :t, :t)"
                ),
                {"id": "0" * 32, "t": "2026-01-01"},
            )
        for role, status in (("robot", "complete"), ("user", "done")):
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            "INSERT INTO messages (id, chat_id, role, content, status, "
                            "created_at, updated_at) VALUES (:id, :chat, :role, 'x', :status, "
                            ":t, :t)"
                        ),
                        {
                            "id": "1" * 32,
                            "chat": "0" * 32,
                            "role": role,
                            "status": status,
                            "t": "2026-01-01",
                        },
                    )
            except sa.exc.IntegrityError:
                continue
            raise AssertionError(f"CHECK let role={role} status={status} through")
    finally:
        engine.dispose()


def test_head_revision_is_the_hand_written_one() -> None:
    assert head_revision() == "0003"


def test_alembic_cli_reads_db_api_database_url(tmp_path: Path) -> None:
    """`alembic upgrade head` from the repo root uses DB_API_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'sub' / 'cli.db'}"
    env = {**os.environ, "DB_API_DATABASE_URL": url}
    alembic = Path(sys.executable).parent / "alembic"
    subprocess.run([alembic, "upgrade", "head"], cwd=REPO, env=env, check=True)
    assert _tables(url) == TABLES


def test_migrate_module_works_from_any_directory(tmp_path: Path) -> None:
    """`python -m db_api.migrate` (the compose migrate step) from an unrelated cwd."""
    url = f"sqlite:///{tmp_path / 'data' / 'parlor.db'}"
    env = {**os.environ, "DB_API_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "db_api.migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "newest revision" in done.stderr
    assert _tables(url) == TABLES


def test_database_urls_are_normalised() -> None:
    assert normalize_url("postgresql://u:p@h:5432/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///./data/parlor.db").drivername == "sqlite"


def test_bad_database_url_fails_at_startup_with_the_setting_name() -> None:
    with pytest.raises(ValidationError, match="not a database URL"):
        Settings(database_url="nonsense")
    with pytest.raises(ValidationError, match="unsupported database 'mysql'"):
        Settings(database_url="mysql://u@h/d")
