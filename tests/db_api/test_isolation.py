"""Another owner's chat is a 404 on every route: never a 403, never data."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.db_api.conftest import ALICE, BOB, new_chat, new_message


@pytest.fixture
def alice_chat(client: TestClient) -> tuple[str, str]:
    chat = new_chat(client, ALICE, title="secret")
    msg = new_message(client, ALICE, chat["id"], content="my secret")
    return chat["id"], msg["id"]


def test_listing_shows_only_own_chats(client: TestClient, alice_chat: tuple[str, str]) -> None:
    bob_chat = new_chat(client, BOB, title="bob's")
    assert [c["id"] for c in client.get("/chats", headers=BOB).json()] == [bob_chat["id"]]
    assert [c["id"] for c in client.get("/chats", headers=ALICE).json()] == [alice_chat[0]]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/chats/{chat}", None),
        ("PATCH", "/chats/{chat}", {"title": "stolen"}),
        ("DELETE", "/chats/{chat}", None),
        ("POST", "/chats/{chat}/messages", {"role": "user", "content": "injected"}),
        ("PATCH", "/messages/{message}", {"content": "overwritten"}),
    ],
)
def test_other_owner_gets_404_and_nothing_changes(
    client: TestClient,
    alice_chat: tuple[str, str],
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    chat_id, message_id = alice_chat
    url = path.format(chat=chat_id, message=message_id)
    before = client.get(f"/chats/{chat_id}", headers=ALICE).json()

    r = client.request(method, url, json=body, headers=BOB)
    assert r.status_code == 404
    assert "secret" not in r.text
    # Same answer as for an id that does not exist at all.
    missing = url.replace(chat_id, "00000000-0000-4000-8000-000000000000").replace(
        message_id, "00000000-0000-4000-8000-000000000001"
    )
    assert client.request(method, missing, json=body, headers=BOB).json() == r.json()

    assert client.get(f"/chats/{chat_id}", headers=ALICE).json() == before


def test_owner_key_is_exact(client: TestClient, alice_chat: tuple[str, str]) -> None:
    chat_id, _ = alice_chat
    for near in ("Alice-owner-key", "alice-owner-ke", "alice-owner-key2"):
        r = client.get(f"/chats/{chat_id}", headers={"X-Owner": near})
        assert r.status_code == 404, near
