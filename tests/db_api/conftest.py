"""db_api fixtures: a migrated database (SQLite, and PostgreSQL when TEST_DATABASE_URL is
set, through the shared `database_url` fixture) and in-process clients of a real app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from db_api.config import Settings
from db_api.db import upgrade_database
from db_api.main import create_app

ALICE = {"X-Owner": "alice-owner-key"}
BOB = {"X-Owner": "bob-owner-key"}


@pytest.fixture
def migrated_url(database_url: str) -> str:
    upgrade_database(database_url)
    return database_url


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
