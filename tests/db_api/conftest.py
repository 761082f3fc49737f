"""db_api fixtures: a migrated database (SQLite, and PostgreSQL when TEST_DATABASE_URL is
set, through the shared `database_url` fixture) and in-process clients of a real app."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from db_api.config import Settings
from db_api.db import make_engine, upgrade_database
from db_api.main import create_app
from db_api.models import Base
from tests.support import fresh_postgres_database, postgres_server_url

ALICE = {"X-Owner": "alice-owner-key"}
BOB = {"X-Owner": "bob-owner-key"}


def _backends() -> list[str]:
    return ["sqlite", "postgres"] if postgres_server_url() else ["sqlite"]


@pytest.fixture(scope="session")
def migrated_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Databases migrated once per run (running the migrations for every test was most of
    the suite's time): a SQLite file copied for each test, and a PostgreSQL database
    emptied before each test."""
    sqlite_file = tmp_path_factory.mktemp("template") / "parlor.db"
    upgrade_database(f"sqlite:///{sqlite_file}")
    databases = {"sqlite": str(sqlite_file)}
    server = postgres_server_url()
    if server is None:
        yield databases
        return
    with fresh_postgres_database(server) as url:
        upgrade_database(url)
        databases["postgres"] = url
        yield databases


@pytest.fixture(params=_backends())
def migrated_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_once: dict[str, str]
) -> str:
    """An empty database at the newest revision: SQLite always, PostgreSQL too when
    TEST_DATABASE_URL is set. (The migrations themselves are tested on fresh databases
    in test_migrations.py.)"""
    if request.param == "sqlite":
        copy = tmp_path / "parlor.db"
        shutil.copyfile(migrated_once["sqlite"], copy)
        return f"sqlite:///{copy}"
    url = migrated_once["postgres"]
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            # Fail fast rather than hang if an earlier test leaked a connection in a
            # transaction on these tables.
            conn.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
            tables = ", ".join(t for t in Base.metadata.tables)
            conn.execute(sa.text(f"TRUNCATE {tables} CASCADE"))
    finally:
        engine.dispose()
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    # Every value explicit: a DB_API_* variable in the developer's shell must not leak in.
    values: dict[str, Any] = {"database_url": database_url, "internal_token": ""}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_client(migrated_url: str) -> Iterator[Callable[..., TestClient]]:
    """Build a client of a fresh app over the migrated database, with settings overrides."""
    clients: list[TestClient] = []

    def build(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(migrated_url, **overrides)))
        client.__enter__()  # runs the lifespan; closed (engine disposed) at teardown
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def new_chat(client: TestClient, owner: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post("/chats", json=fields, headers=owner)
    assert response.status_code == 201, response.text
    chat: dict[str, Any] = response.json()
    return chat


def new_message(
    client: TestClient, owner: dict[str, str], chat_id: str, **fields: Any
) -> dict[str, Any]:
    body = {"role": "user", "content": "hello", **fields}
    response = client.post(f"/chats/{chat_id}/messages", json=body, headers=owner)
    assert response.status_code == 201, response.text
    message: dict[str, Any] = response.json()
    return message


def new_turn(
    client: TestClient,
    owner: dict[str, str],
    chat_id: str,
    content: str = "question",
    **fields: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST /chats/{id}/turns: the stored question and its pending answer."""
    response = client.post(
        f"/chats/{chat_id}/turns", json={"content": content, **fields}, headers=owner
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body["user"], body["assistant"]


def path_of(
    client: TestClient, owner: dict[str, str], chat_id: str, **params: Any
) -> list[dict[str, Any]]:
    """The chat's current branch as GET /chats/{id} returns it."""
    response = client.get(f"/chats/{chat_id}", params=params, headers=owner)
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages
