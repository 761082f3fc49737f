"""Another owner's object is a 404 on every route: never a 403, never data, and
nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.db_api.conftest import ALICE, BOB, new_chat, new_message, new_turn

MISSING_IDS = {
    "chat": "00000000-0000-4000-8000-000000000000",
    "message": "00000000-0000-4000-8000-000000000001",
    "answer": "00000000-0000-4000-8000-000000000002",
    "preset": "00000000-0000-4000-8000-000000000003",
    "session": "00000000-0000-4000-8000-000000000004",
}


@pytest.fixture
def alice(client: TestClient) -> dict[str, str]:
    """Alice's chat (a question, a finished answer, a running answer), preset, session."""
    chat = new_chat(client, ALICE, title="secret")
    msg = new_message(client, ALICE, chat["id"], content="my secret")
    new_message(client, ALICE, chat["id"], role="assistant", content="secret answer")
    _, running = new_turn(client, ALICE, chat["id"], "another secret")
    preset = client.post("/presets", json={"name": "secret role"}, headers=ALICE).json()
    session = client.post("/sessions", headers=ALICE).json()
    return {
        "chat": chat["id"],
        "message": msg["id"],
        "answer": running["id"],
        "preset": preset["id"],
        "session": session["id"],
    }


def _snapshot(client: TestClient, ids: dict[str, str]) -> list[Any]:
    return [
        client.get(f"/chats/{ids['chat']}", headers=ALICE).json(),
        client.get("/presets", headers=ALICE).json(),
        client.get(f"/sessions/{ids['session']}", headers=ALICE).status_code,
    ]


CALLS = [
    ("GET", "/chats/{chat}", None),
    ("GET", "/chats/{chat}?limit=1", None),
    ("PATCH", "/chats/{chat}", {"title": "stolen"}),
    ("DELETE", "/chats/{chat}", None),
    ("POST", "/chats/{chat}/messages", {"role": "user", "content": "injected"}),
    ("POST", "/chats/{chat}/turns", {"content": "injected"}),
    ("POST", "/chats/{chat}/current", {"message_id": "{message}"}),
    ("GET", "/messages/{message}", None),
    ("PATCH", "/messages/{message}", {"content": "overwritten"}),
    ("DELETE", "/messages/{message}", None),
    ("POST", "/messages/{answer}/reopen", {}),
    ("POST", "/messages/{answer}/expire", {"reason": "lease_expired"}),
    ("GET", "/presets/{preset}", None),
    ("PATCH", "/presets/{preset}", {"name": "stolen"}),
    ("DELETE", "/presets/{preset}", None),
    ("GET", "/sessions/{session}", None),
    ("DELETE", "/sessions/{session}", None),
]


def _fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format(**ids)
    if isinstance(template, dict):
        return {k: _fill(v, ids) for k, v in template.items()}
    return template


@pytest.mark.parametrize(("method", "path", "body"), CALLS)
def test_other_owner_gets_404_and_nothing_changes(
    client: TestClient,
    alice: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    before = _snapshot(client, alice)
    r = client.request(method, _fill(path, alice), json=_fill(body, alice), headers=BOB)
    assert r.status_code == 404, r.text
    assert "secret" not in r.text
    # The same answer as for ids that do not exist at all.
    missing = client.request(
        method, _fill(path, MISSING_IDS), json=_fill(body, MISSING_IDS), headers=BOB
    )
    assert missing.status_code == 404 and missing.json() == r.json()
    assert _snapshot(client, alice) == before


def test_listings_show_only_own_objects(client: TestClient, alice: dict[str, str]) -> None:
    bob_chat = new_chat(client, BOB, title="bob's")
    assert [c["id"] for c in client.get("/chats", headers=BOB).json()] == [bob_chat["id"]]
    assert [c["id"] for c in client.get("/chats", headers=ALICE).json()] == [alice["chat"]]
    assert client.get("/presets", headers=BOB).json() == []


def test_references_into_another_owners_chat_are_404(
    client: TestClient, alice: dict[str, str]
) -> None:
    """Bob's own chat, pointing at Alice's messages (as parent, branch or cursor)."""
    bob_chat = new_chat(client, BOB)["id"]
    before = _snapshot(client, alice)
    calls = [
        ("POST", f"/chats/{bob_chat}/turns", {"content": "x", "parent_id": alice["message"]}),
        (
            "POST",
            f"/chats/{bob_chat}/messages",
            {"role": "user", "content": "x", "parent_id": alice["message"]},
        ),
        ("POST", f"/chats/{bob_chat}/current", {"message_id": alice["message"]}),
        ("GET", f"/chats/{bob_chat}?before={alice['message']}", None),
    ]
    for method, url, body in calls:
        r = client.request(method, url, json=body, headers=BOB)
        assert r.status_code == 404, (url, r.text)
        assert "secret" not in r.text
    assert client.get(f"/chats/{bob_chat}", headers=BOB).json()["messages"] == []
    assert _snapshot(client, alice) == before


def test_owner_key_is_exact(client: TestClient, alice: dict[str, str]) -> None:
    for near in ("Alice-owner-key", "alice-owner-ke", "alice-owner-key2"):
        r = client.get(f"/chats/{alice['chat']}", headers={"X-Owner": near})
        assert r.status_code == 404, near
        r = client.get(f"/messages/{alice['message']}", headers={"X-Owner": near})
        assert r.status_code == 404, near
