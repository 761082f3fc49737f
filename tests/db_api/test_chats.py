"""The contract table, call by call: CRUD, ordering, cascade delete, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi.testclient import TestClient

from db_api.db import make_engine
from tests.db_api.conftest import ALICE, new_chat, new_message

CHAT_KEYS = {
    "id", "title", "system_prompt", "model", "created_at", "updated_at", "current_leaf_id",
    "params", "title_source",
}  # fmt: skip
MESSAGE_KEYS = {
    "id", "chat_id", "role", "content", "status", "error", "prompt_tokens",
    "completion_tokens", "ttft_ms", "generation_ms", "created_at", "updated_at",
    "parent_id", "version", "versions", "sibling_ids", "revision", "finish_reason", "reason",
    "model", "params", "plan", "lease_owner", "lease_until", "stop_requested",
}  # fmt: skip


def _utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    offset = parsed.utcoffset()
    assert offset is not None and offset.total_seconds() == 0, value
    return parsed


def test_create_chat_defaults_to_nulls(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    assert set(chat) == CHAT_KEYS
    assert chat["title"] is None and chat["system_prompt"] is None and chat["model"] is None
    assert chat["current_leaf_id"] is None
    assert (chat["params"], chat["title_source"]) == ({}, "auto")
    assert _utc(chat["created_at"]) == _utc(chat["updated_at"])


def test_create_and_get_chat_with_fields(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="Trip", system_prompt="Be brief.", model="qwen")
    got = client.get(f"/chats/{chat['id']}", headers=ALICE)
    assert got.status_code == 200
    body = got.json()
    assert body["messages"] == []
    assert {k: body[k] for k in CHAT_KEYS} == chat
    assert (body["title"], body["system_prompt"], body["model"]) == ("Trip", "Be brief.", "qwen")


def test_list_is_most_recently_updated_first_without_messages(client: TestClient) -> None:
    first = new_chat(client, ALICE, title="first")
    second = new_chat(client, ALICE, title="second")
    third = new_chat(client, ALICE, title="third")
    listed = client.get("/chats", headers=ALICE).json()
    assert [c["id"] for c in listed] == [third["id"], second["id"], first["id"]]
    assert all(set(c) == CHAT_KEYS for c in listed)

    new_message(client, ALICE, first["id"])  # activity moves `first` to the top
    listed = client.get("/chats", headers=ALICE).json()
    assert [c["id"] for c in listed] == [first["id"], third["id"], second["id"]]


def test_paging_with_limit_and_offset(client: TestClient) -> None:
    ids = [new_chat(client, ALICE, title=f"c{i}")["id"] for i in range(5)]
    newest_first = list(reversed(ids))
    page1 = client.get("/chats", params={"limit": 2}, headers=ALICE).json()
    page2 = client.get("/chats", params={"limit": 2, "offset": 2}, headers=ALICE).json()
    page3 = client.get("/chats", params={"limit": 2, "offset": 4}, headers=ALICE).json()
    assert [c["id"] for c in page1 + page2 + page3] == newest_first
    assert client.get("/chats", params={"offset": 5}, headers=ALICE).json() == []


def test_default_limit_is_50(client: TestClient) -> None:
    for i in range(51):
        new_chat(client, ALICE, title=f"c{i}")
    assert len(client.get("/chats", headers=ALICE).json()) == 50
    assert len(client.get("/chats", params={"limit": 200}, headers=ALICE).json()) == 51


def test_patch_chat_changes_only_sent_fields_and_null_clears(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="old", system_prompt="sp", model="m")
    r = client.patch(f"/chats/{chat['id']}", json={"title": "new"}, headers=ALICE)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == CHAT_KEYS
    assert (body["title"], body["system_prompt"], body["model"]) == ("new", "sp", "m")
    assert _utc(body["updated_at"]) > _utc(chat["updated_at"])

    cleared = client.patch(f"/chats/{chat['id']}", json={"title": None}, headers=ALICE).json()
    assert cleared["title"] is None and cleared["system_prompt"] == "sp"
    same = client.patch(f"/chats/{chat['id']}", json={}, headers=ALICE).json()
    assert same == cleared  # an empty patch changes nothing, not even updated_at


def test_messages_roundtrip_oldest_first(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    sent = [
        new_message(client, ALICE, chat["id"], role="system", content="You are terse."),
        new_message(client, ALICE, chat["id"], role="user", content="Hi"),
        new_message(client, ALICE, chat["id"], role="assistant", content="", status="pending"),
    ]
    assert all(set(m) == MESSAGE_KEYS for m in sent)
    assert sent[1]["status"] == "complete"  # the default
    assert sent[2]["status"] == "pending" and sent[2]["content"] == ""
    assert all(m["chat_id"] == chat["id"] and m["error"] is None for m in sent)
    messages = client.get(f"/chats/{chat['id']}", headers=ALICE).json()["messages"]
    assert messages == sent


def test_many_quick_messages_keep_insertion_order(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    sent = [new_message(client, ALICE, chat["id"], content=f"m{i}")["id"] for i in range(40)]
    got = client.get(f"/chats/{chat['id']}", headers=ALICE).json()["messages"]
    assert [m["id"] for m in got] == sent
    stamps = [_utc(m["created_at"]) for m in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_order_survives_a_clock_that_stands_still(client: TestClient, migrated_url: str) -> None:
    """Messages stamped in the same tick (or with the clock stepping back) keep their order:
    move the chat's newest message into the future, then add more."""
    chat = new_chat(client, ALICE)
    first = new_message(client, ALICE, chat["id"], content="first")
    engine = make_engine(migrated_url)
    future = datetime(2999, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE messages SET created_at = :t WHERE content = 'first'"),
            {"t": future.replace(tzinfo=None) if conn.dialect.name == "sqlite" else future},
        )
    engine.dispose()
    later = [new_message(client, ALICE, chat["id"], content=f"n{i}")["id"] for i in range(3)]
    got = client.get(f"/chats/{chat['id']}", headers=ALICE).json()
    assert [m["id"] for m in got["messages"]] == [first["id"], *later]
    assert _utc(got["messages"][1]["created_at"]) > future
    assert _utc(got["updated_at"]) >= _utc(got["messages"][-1]["created_at"])


def test_patch_message_updates_fields_and_moves_chat(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    msg = new_message(client, ALICE, chat["id"], role="assistant", content="", status="pending")
    before = client.get(f"/chats/{chat['id']}", headers=ALICE).json()["updated_at"]
    patch = {
        "content": "Hello there",
        "status": "complete",
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "ttft_ms": 41.5,
        "generation_ms": 250.25,
    }
    r = client.patch(f"/messages/{msg['id']}", json=patch, headers=ALICE)
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in patch} == patch
    assert body["created_at"] == msg["created_at"]
    assert _utc(body["updated_at"]) > _utc(msg["updated_at"])
    chat_after = client.get(f"/chats/{chat['id']}", headers=ALICE).json()
    assert _utc(chat_after["updated_at"]) > _utc(before)
    assert chat_after["messages"] == [body]


def test_patch_message_error_then_clear(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    msg = new_message(client, ALICE, chat["id"], role="assistant", content="", status="streaming")
    failed = client.patch(
        f"/messages/{msg['id']}", json={"status": "error", "error": "lm_api down"}, headers=ALICE
    ).json()
    assert (failed["status"], failed["error"], failed["content"]) == ("error", "lm_api down", "")
    # A final answer never goes back to running through PATCH (Continue uses /reopen).
    back = client.patch(
        f"/messages/{msg['id']}", json={"status": "pending", "error": None}, headers=ALICE
    )
    assert back.status_code == 409
    assert back.json()["message"] == failed
    cleared = client.patch(f"/messages/{msg['id']}", json={"error": None}, headers=ALICE).json()
    assert (cleared["status"], cleared["error"]) == ("error", None)


def test_delete_chat_cascades_to_messages(client: TestClient, migrated_url: str) -> None:
    keep = new_chat(client, ALICE)
    gone = new_chat(client, ALICE)
    kept_msg = new_message(client, ALICE, keep["id"])
    msg = new_message(client, ALICE, gone["id"])
    new_message(client, ALICE, gone["id"], role="assistant", content="yes")

    assert client.delete(f"/chats/{gone['id']}", headers=ALICE).status_code == 204
    assert client.get(f"/chats/{gone['id']}", headers=ALICE).status_code == 404
    assert client.delete(f"/chats/{gone['id']}", headers=ALICE).status_code == 404
    patch = client.patch(f"/messages/{msg['id']}", json={"content": "x"}, headers=ALICE)
    assert patch.status_code == 404
    assert [c["id"] for c in client.get("/chats", headers=ALICE).json()] == [keep["id"]]

    # The rows are really gone (the database cascaded), not just hidden.
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT chat_id FROM messages")).scalars().all()
    engine.dispose()
    assert len(rows) == 1
    kept = client.get(f"/chats/{keep['id']}", headers=ALICE).json()["messages"]
    assert kept == [kept_msg]


def test_limits_follow_settings(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_message_chars=10, max_title_chars=5)
    chat = new_chat(client, ALICE, title="12345")
    assert client.post("/chats", json={"title": "123456"}, headers=ALICE).status_code == 422
    ok = {"role": "user", "content": "x" * 10}
    too_long = {"role": "user", "content": "x" * 11}
    url = f"/chats/{chat['id']}/messages"
    assert client.post(url, json=ok, headers=ALICE).status_code == 201
    r = client.post(url, json=too_long, headers=ALICE)
    assert r.status_code == 422
    assert "limit is 10" in r.json()["detail"][0]["msg"]


def test_unicode_text_roundtrips(client: TestClient) -> None:
    text = "héllo — 你好 🦜 \u200b tabs\tand\nnewlines"
    chat = new_chat(client, ALICE, title="🦜 parrot")
    msg = new_message(client, ALICE, chat["id"], content=text)
    got = client.get(f"/chats/{chat['id']}", headers=ALICE).json()
    assert got["title"] == "🦜 parrot"
    assert got["messages"][0]["content"] == text == msg["content"]


def test_concurrent_writers_keep_a_total_order(client: TestClient) -> None:
    """chat_ui patches a streaming answer while the user may post: concurrent writes to
    one chat all land, each message with its own, strictly increasing created_at."""
    from concurrent.futures import ThreadPoolExecutor

    chat = new_chat(client, ALICE)
    answer = new_message(client, ALICE, chat["id"], role="assistant", content="", status="pending")

    def post(i: int) -> str:
        message_id: str = new_message(client, ALICE, chat["id"], content=f"m{i}")["id"]
        return message_id

    def patch(i: int) -> int:
        r = client.patch(f"/messages/{answer['id']}", json={"content": "t" * i}, headers=ALICE)
        status: int = r.status_code
        return status

    with ThreadPoolExecutor(max_workers=6) as pool:
        posts = pool.map(post, range(30))  # both batches submitted before either is awaited
        patches = pool.map(patch, range(30))
        posted, patched = list(posts), list(patches)
    assert patched == [200] * 30
    got = client.get(f"/chats/{chat['id']}", headers=ALICE).json()["messages"]
    assert {m["id"] for m in got} == {answer["id"], *posted}
    stamps = [_utc(m["created_at"]) for m in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
