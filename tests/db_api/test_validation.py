"""Every bad input of the issue gets a 4xx that says what is wrong, and nothing is
stored or changed by it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.db_api.conftest import ALICE, new_chat, new_message


@pytest.fixture
def chat(client: TestClient) -> dict[str, Any]:
    return new_chat(client, ALICE, title="keep")


def _detail_text(response: Any) -> str:
    return str(response.json()["detail"])


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/chats/not-a-uuid", "chat_id"),
        ("/chats/123", "chat_id"),
        ("/chats/00000000-0000-0000-0000-00000000000g", "chat_id"),
    ],
)
def test_malformed_chat_uuid(client: TestClient, path: str, field: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        r = client.request(method, path, json={} if method == "PATCH" else None, headers=ALICE)
        assert r.status_code == 422, method
        assert r.json()["detail"][0]["loc"] == ["path", field]
        assert "UUID" in r.json()["detail"][0]["msg"]
    r = client.post(f"{path}/messages", json={"role": "user", "content": "x"}, headers=ALICE)
    assert r.status_code == 422


def test_malformed_message_uuid(client: TestClient) -> None:
    r = client.patch("/messages/zzz", json={"content": "x"}, headers=ALICE)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["path", "message_id"]


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"role": "user", "content": ""}, "content", "must not be empty"),
        ({"role": "user", "content": "   \n"}, "content", "must not be empty"),
        ({"role": "system", "content": ""}, "content", "must not be empty"),
        ({"role": "assistant", "content": ""}, "content", "must not be empty"),
        ({"role": "user", "content": "x" * 100_001}, "content", "limit is 100000"),
        ({"role": "user", "content": "a\x00b"}, "content", "NUL"),
        ({"role": "robot", "content": "hi"}, "role", "'system', 'user' or 'assistant'"),
        ({"role": "user", "content": "hi", "status": "done"}, "status", "'complete'"),
        ({"role": "user", "content": 5}, "content", "valid string"),
        ({"role": "user", "content": None}, "content", "valid string"),
        ({"role": "user"}, "content", "Field required"),
        ({"content": "hi"}, "role", "Field required"),
        ({"role": "user", "content": "hi", "extra": 1}, "extra", "Extra inputs"),
    ],
)
def test_bad_new_message(
    client: TestClient, chat: dict[str, Any], body: dict[str, Any], loc: str, words: str
) -> None:
    r = client.post(f"/chats/{chat['id']}/messages", json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"][-1] == loc
    assert words in detail[0]["msg"]
    assert len(r.content) < 2000  # a 100 000-character input is not echoed back
    assert client.get(f"/chats/{chat['id']}", headers=ALICE).json()["messages"] == []


def test_lone_surrogate_is_rejected_cleanly(client: TestClient, chat: dict[str, Any]) -> None:
    raw = b'{"role": "user", "content": "bad \\ud800 text"}'
    r = client.post(
        f"/chats/{chat['id']}/messages",
        content=raw,
        headers={**ALICE, "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert "lone surrogate" in _detail_text(r)


def test_assistant_may_start_empty_only_when_not_complete(
    client: TestClient, chat: dict[str, Any]
) -> None:
    for status in ("pending", "streaming", "interrupted", "error"):
        msg = new_message(client, ALICE, chat["id"], role="assistant", content="", status=status)
        assert msg["content"] == "" and msg["status"] == status


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"title": "t" * 201}, "limit is 200"),
        ({"title": ""}, "must not be empty"),
        ({"title": "  "}, "must not be empty"),
        ({"title": "a\x00"}, "NUL"),
        ({"system_prompt": "s\x00"}, "NUL"),
        ({"system_prompt": "s" * 100_001}, "limit is 100000"),
        ({"model": "m" * 257}, "limit is 256"),
        ({"title": 7}, "valid string"),
        ({"title": ["a"]}, "valid string"),
        ({"owner": "bob"}, "Extra inputs"),
        ({"id": "00000000-0000-4000-8000-000000000000"}, "Extra inputs"),
    ],
)
def test_bad_chat_fields(
    client: TestClient, chat: dict[str, Any], body: dict[str, Any], words: str
) -> None:
    created = client.post("/chats", json=body, headers=ALICE)
    assert created.status_code == 422, created.text
    assert words in _detail_text(created)
    patched = client.patch(f"/chats/{chat['id']}", json=body, headers=ALICE)
    assert patched.status_code == 422
    assert words in _detail_text(patched)
    listed = client.get("/chats", headers=ALICE).json()
    assert [c["id"] for c in listed] == [chat["id"]]
    assert listed[0]["title"] == "keep"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"content": None}, "cannot be null"),
        ({"status": None}, "cannot be null"),
        ({"status": "finished"}, "'complete'"),
        ({"role": "user"}, "Extra inputs"),
        ({"chat_id": "00000000-0000-4000-8000-000000000000"}, "Extra inputs"),
        ({"content": "x\x00"}, "NUL"),
        ({"error": "e\x00"}, "NUL"),
        ({"content": "x" * 100_001}, "limit is 100000"),
        ({"prompt_tokens": -1}, "greater than or equal to 0"),
        ({"completion_tokens": 2**31}, "less than or equal to 2147483647"),
        ({"prompt_tokens": 10**40}, "less than or equal to 2147483647"),
        ({"prompt_tokens": 1.5}, "fractional part"),
        ({"ttft_ms": -0.1}, "greater than or equal to 0"),
        ({"generation_ms": 1e300}, "less than or equal to"),
        ({"ttft_ms": "fast"}, "must be a JSON number"),
        ({"ttft_ms": False}, "must be a JSON number"),
        ({"prompt_tokens": True}, "must be a JSON number"),
        ({"completion_tokens": "12"}, "must be a JSON number"),
    ],
)
def test_bad_message_patch(
    client: TestClient, chat: dict[str, Any], body: dict[str, Any], words: str
) -> None:
    msg = new_message(client, ALICE, chat["id"], role="assistant", content="so far")
    r = client.patch(f"/messages/{msg['id']}", json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    assert words in _detail_text(r)
    assert client.get(f"/chats/{chat['id']}", headers=ALICE).json()["messages"] == [msg]


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_timings_rejected(client: TestClient, chat: dict[str, Any], raw: bytes) -> None:
    msg = new_message(client, ALICE, chat["id"], role="assistant", content="x")
    r = client.patch(
        f"/messages/{msg['id']}",
        content=b'{"ttft_ms": ' + raw + b"}",
        headers={**ALICE, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 422),
        (b"", 422),
        (b"[]", 422),
        (b'"a string"', 422),
        (b"42", 422),
        (b"null", 422),
        (b'{"title": 1' + b"0" * 5000 + b"}", 400),  # beyond Python's int parsing limit
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nesting beyond the parser's recursion
    ],
)
def test_malformed_bodies(client: TestClient, raw: bytes, status: int) -> None:
    r = client.post("/chats", content=raw, headers={**ALICE, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert client.get("/chats", headers=ALICE).json() == []


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": -5}, "greater than or equal to 1"),
        ({"limit": 201}, "less than or equal to 200"),
        ({"limit": 10**30}, "less than or equal to 200"),
        ({"limit": "ten"}, "valid integer"),
        ({"offset": -1}, "greater than or equal to 0"),
        ({"offset": 10**30}, "less than or equal to 100000"),
        ({"offset": 1.5}, "valid integer"),
    ],
)
def test_bad_paging(client: TestClient, params: dict[str, Any], words: str) -> None:
    r = client.get("/chats", params=params, headers=ALICE)
    assert r.status_code == 422
    assert words in _detail_text(r)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "Field required"),
        ({"X-Owner": ""}, "X-Owner must be 1 to 128 printable ASCII"),
        ({"X-Owner": "o" * 129}, "X-Owner must be 1 to 128 printable ASCII"),
        ({"X-Owner": "tab\there"}, "X-Owner must be 1 to 128 printable ASCII"),
        ({"X-Owner": "caf\xe9".encode("latin-1")}, "X-Owner must be 1 to 128 printable ASCII"),
    ],
)
def test_bad_owner_header(
    client: TestClient, chat: dict[str, Any], headers: dict[str, Any], words: str
) -> None:
    calls = [
        ("GET", "/chats", None),
        ("POST", "/chats", {}),
        ("GET", f"/chats/{chat['id']}", None),
        ("PATCH", f"/chats/{chat['id']}", {"title": "x"}),
        ("DELETE", f"/chats/{chat['id']}", None),
        ("POST", f"/chats/{chat['id']}/messages", {"role": "user", "content": "x"}),
        ("PATCH", "/messages/00000000-0000-4000-8000-000000000000", {"content": "x"}),
    ]
    for method, url, body in calls:
        r = client.request(method, url, json=body, headers=headers)
        assert r.status_code == 422, (method, url)
        assert words in _detail_text(r)
        assert "x-owner" in _detail_text(r)
    assert client.get("/chats", headers=ALICE).json()[0]["title"] == "keep"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/chats?limit=27&3%C2%98=%C2%82%C2%88"),  # the fuzzer's find (issue 10 #12)
        ("GET", "/chats?lmit=5"),
        ("POST", "/chats?title=x"),
        ("GET", "/chats/{chat}?limit=5&since=x"),
        ("PATCH", "/chats/{chat}?force=1"),
        ("GET", "/presets?q=x"),
        ("POST", "/sessions?remember=1"),
        ("GET", "/health?verbose=1"),
        ("GET", "/metrics?format=json"),
    ],
)
def test_unknown_query_parameters_are_refused(
    client: TestClient, chat: dict[str, Any], method: str, url: str
) -> None:
    body: dict[str, Any] | None = {} if method in ("POST", "PATCH") else None
    r = client.request(method, url.format(chat=chat["id"]), json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"][0] == "query" and error["type"] == "extra_forbidden"
    assert [c["title"] for c in client.get("/chats", headers=ALICE).json()] == ["keep"]
    assert (
        client.get("/sessions/00000000-0000-4000-8000-000000000000", headers=ALICE).status_code
        == 404
    )


def test_the_schema_documents_the_refusal(client: TestClient) -> None:
    """Every operation lists 422 among its answers, /health and /metrics included."""
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert "422" in operation["responses"], (method, path)
