"""Alembic owns the schema: the revisions run up and down on both backends, and the
models describe exactly what the migrations build."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    make_sessionmaker,
    normalize_url,
    upgrade_database,
)
from db_api.models import Base, Chat, Message
from tests.support import REPO

TABLES = {"chats", "messages", "presets", "sessions"}
R1_TABLES = {"chats", "messages"}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
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
            context = MigrationContext.configure(conn, opts={"compare_type": True})
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
        assert indexes["ix_messages_parent_id_created_at"] == ["parent_id", "created_at"]
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("chats")}
        assert indexes["ix_chats_owner_updated_at"] == ["owner", "updated_at"]
        assert indexes["ix_chats_current_leaf_id"] == ["current_leaf_id"]
        fks = {
            (tuple(fk["constrained_columns"]), fk["referred_table"], fk["options"].get("ondelete"))
            for fk in inspector.get_foreign_keys("messages")
        }
        assert fks == {(("chat_id",), "chats", "CASCADE"), (("parent_id",), "messages", "CASCADE")}
        ((fk),) = inspector.get_foreign_keys("chats")
        assert fk["constrained_columns"] == ["current_leaf_id"]
        assert (fk["referred_table"], fk["options"].get("ondelete")) == ("messages", "SET NULL")
        checks = {c["name"] for c in inspector.get_check_constraints("messages")}
        assert checks == {"ck_messages_role", "ck_messages_status"}
        checks = {c["name"] for c in inspector.get_check_constraints("chats")}
        assert checks == {"ck_chats_title_source"}
        (unique,) = inspector.get_unique_constraints("presets")
        assert (unique["name"], unique["column_names"]) == (
            "uq_presets_owner_name",
            ["owner", "name"],
        )
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
    assert head_revision() == "0002"


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


# --- 0001 -> 0002: every flat chat becomes one branch, nothing lost --------------------

R1_STATUSES = ("complete", "pending", "streaming", "interrupted", "error")
OWNERS = {str(uuid.UUID(int=(c + 1) << 64)): f"owner-{c % 2}" for c in range(4)}


def _r1_stamp(conn: sa.Connection, when: datetime) -> datetime | str:
    # What 0001's UTCDateTime stored: naive UTC text on SQLite, timestamptz on PostgreSQL.
    if conn.dialect.name == "sqlite":
        return when.replace(tzinfo=None).isoformat(sep=" ")
    return when


def _populate_r1(url: str) -> dict[str, list[dict[str, Any]]]:
    """Chats as round 1 wrote them (flat, every role and status, two messages in the
    same clock tick, an empty chat), through plain SQL at revision 0001."""
    base = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    chats: dict[str, list[dict[str, Any]]] = {}
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for c in range(4):
                chat_id = uuid.UUID(int=(c + 1) << 64)
                conn.execute(
                    sa.text(
                        "INSERT INTO chats (id, owner, title, system_prompt, model, created_at,"
                        " updated_at) VALUES (:id, :owner, :title, NULL, 'qwen', :t, :t)"
                    ),
                    {
                        "id": chat_id.hex if conn.dialect.name == "sqlite" else chat_id,
                        "owner": OWNERS[str(chat_id)],
                        "title": f"chat {c}",
                        "t": _r1_stamp(conn, base),
                    },
                )
                rows: list[dict[str, Any]] = []
                count = (0, 1, 5, 12)[c]
                for i in range(count):
                    role = (
                        ("system", "user", "assistant")[i % 3]
                        if i < 3
                        else ("user" if i % 2 else "assistant")
                    )
                    status = "complete" if role != "assistant" else R1_STATUSES[i % 5]
                    # Messages 3 and 4 share a timestamp: the id breaks the tie.
                    tick = min(i, 3) if c == 3 and i in (3, 4) else i
                    row: dict[str, Any] = {
                        "id": uuid.UUID(int=((c + 1) << 64) + {3: 201, 4: 200}.get(i, 100 + i)),
                        "chat_id": chat_id,
                        "role": role,
                        "content": f"m{c}.{i} é 🦜",
                        "status": status,
                        "error": "boom" if status == "error" else None,
                        "prompt_tokens": i,
                        "ttft_ms": 1.5 * i,
                        "t": base + timedelta(seconds=tick),
                    }
                    rows.append(row)
                    conn.execute(
                        sa.text(
                            "INSERT INTO messages (id, chat_id, role, content, status, error,"
                            " prompt_tokens, ttft_ms, created_at, updated_at) VALUES (:id,"
                            " :chat_id, :role, :content, :status, :error, :prompt_tokens,"
                            " :ttft_ms, :t, :t)"
                        ),
                        {
                            **row,
                            "id": row["id"].hex if conn.dialect.name == "sqlite" else row["id"],
                            "chat_id": chat_id.hex if conn.dialect.name == "sqlite" else chat_id,
                            "t": _r1_stamp(conn, row["t"]),
                        },
                    )
                # round 1's reading order: created_at, then id
                rows.sort(key=lambda r: (r["t"], r["id"]))
                chats[str(chat_id)] = rows
    finally:
        engine.dispose()
    return chats


def _check_one_branch(url: str, chats: dict[str, list[dict[str, Any]]]) -> None:
    sessionmaker = make_sessionmaker(make_engine(url))
    try:
        with sessionmaker() as session:
            for chat_id, rows in chats.items():
                chat = session.get_one(Chat, uuid.UUID(chat_id))
                stored = list(session.scalars(sa.select(Message).where(Message.chat_id == chat.id)))
                assert len(stored) == len(rows)
                by_id = {m.id: m for m in stored}
                expected_parent = None
                for row in rows:
                    message = by_id[row["id"]]
                    assert message.parent_id == expected_parent, (chat_id, row["content"])
                    assert (message.role, message.content, message.status) == (
                        row["role"],
                        row["content"],
                        row["status"],
                    )
                    assert (message.error, message.prompt_tokens, message.ttft_ms) == (
                        row["error"],
                        row["prompt_tokens"],
                        row["ttft_ms"],
                    )
                    assert message.created_at == row["t"]
                    assert (message.revision, message.stop_requested) == (0, False)
                    assert message.lease_until is None and message.params is None
                    expected_parent = message.id
                assert chat.current_leaf_id == expected_parent
                assert (chat.params, chat.title_source) == ({}, "auto")
    finally:
        sessionmaker.kw["bind"].dispose()


def _api_path(url: str, chats: dict[str, list[dict[str, Any]]]) -> None:
    """db_api reads the migrated chats back as their old flat history."""
    from fastapi.testclient import TestClient

    from db_api.main import create_app
    from tests.db_api.conftest import make_settings

    with TestClient(create_app(make_settings(url))) as client:
        for chat_id, rows in chats.items():
            owner = {"X-Owner": OWNERS[chat_id]}
            body = client.get(f"/chats/{chat_id}", headers=owner).json()
            assert [m["id"] for m in body["messages"]] == [str(r["id"]) for r in rows]
            assert all(m["versions"] == 1 and m["version"] == 1 for m in body["messages"])


def test_0002_turns_every_chat_into_one_branch(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0001")
    chats = _populate_r1(database_url)
    command.upgrade(config, "0002")
    _check_one_branch(database_url, chats)

    # Down keeps every message (flat again); up rebuilds the same branch.
    command.downgrade(config, "0001")
    assert _tables(database_url) == R1_TABLES
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
    finally:
        engine.dispose()
    assert count == sum(len(rows) for rows in chats.values())
    command.upgrade(config, "head")
    _check_one_branch(database_url, chats)
    _api_path(database_url, chats)


def test_0002_refuses_a_sqlite_connection_with_foreign_keys_on(tmp_path: Path) -> None:
    """Its table rebuilds would cascade-delete every message: nothing is touched."""
    url = f"sqlite:///{tmp_path / 'fk.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    chats = _populate_r1(url)
    engine = make_engine(url)  # foreign keys on, as db_api runs
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            with pytest.raises(RuntimeError, match="foreign_keys=OFF"):
                command.upgrade(config, "0002")
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert count == sum(len(rows) for rows in chats.values()) and version == "0001"
