"""Export and import through db_api, on SQLite and PostgreSQL: ChatGPT's and Open WebUI's
exports (the shared fixtures when present, samples written here always), idempotence,
the report, limits, hostile files refused whole, the search index after an import, the
JSON Schema, Markdown, the streamed export, and export -> import round trips."""

from __future__ import annotations

import io
import json
import select
import socket
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from db_api.db import upgrade_database
from db_api.transfer import exporting, importing
from db_api.transfer.schema import json_schema
from tests.db_api.conftest import ALICE, BOB, new_chat, new_message
from tests.support import REPO, SHARED, run_service

FIXTURES = SHARED / "fixtures"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason="../shared/fixtures is not present"
)


def import_file(client: TestClient, data: bytes | Any, owner: dict[str, str] = ALICE) -> Any:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    response = client.post("/import", content=body, headers=owner)
    assert response.status_code == 200, response.text
    return response.json()


def refused(client: TestClient, data: bytes | Any, status: int, **headers: str) -> str:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    response = client.post("/import", content=body, headers={**ALICE, **headers})
    assert response.status_code == status, response.text
    assert client.get("/chats", headers=ALICE).json() == [], "a refused file left chats"
    detail: str = response.json()["detail"]
    return detail


def chats_of(client: TestClient, owner: dict[str, str] = ALICE) -> list[dict[str, Any]]:
    response = client.get("/chats", params={"limit": 200}, headers=owner)
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


def export_all(client: TestClient, owner: dict[str, str] = ALICE) -> dict[str, Any]:
    response = client.get("/export", headers=owner)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "attachment" in response.headers["content-disposition"]
    result: dict[str, Any] = response.json()
    return result


def normalized(chat: dict[str, Any]) -> dict[str, Any]:
    """A chat without its ids: messages by position, parents and the current leaf as
    positions, so two copies of one tree compare equal."""
    position = {m["id"]: i for i, m in enumerate(chat["messages"])}
    return {
        "title": chat["title"],
        "title_source": chat["title_source"],
        "system_prompt": chat["system_prompt"],
        "model": chat["model"],
        "params": chat["params"],
        "created_at": chat["created_at"],
        "updated_at": chat["updated_at"],
        "current": position.get(chat["current_leaf_id"]),
        "messages": [
            {
                **{k: v for k, v in m.items() if k not in ("id", "parent_id")},
                "parent": position.get(m["parent_id"]),
            }
            for m in chat["messages"]
        ],
    }


# -- Samples written here ------------------------------------------------------------------


def gpt_node(key: str, parent: str | None, role: str | None, text: str = "", t: float = 0) -> Any:
    message = None
    if role is not None:
        message = {
            "id": key,
            "author": {"role": role},
            "create_time": 1_700_000_000 + t if t else None,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "metadata": {},
            "recipient": "all",
        }
    return {"id": key, "message": message, "parent": parent, "children": []}


def gpt_conversation(key: str, title: str, nodes: list[Any], current: str) -> dict[str, Any]:
    return {
        "id": key,
        "conversation_id": key,
        "title": title,
        "create_time": 1_700_000_000,
        "update_time": 1_700_000_100,
        "mapping": {n["id"]: n for n in nodes},
        "current_node": current,
    }


def branched_chatgpt(key: str = "conv-branched") -> dict[str, Any]:
    """A regenerated answer (two versions), an edited follow-up (two branches)."""
    nodes = [
        gpt_node("root", None, None),
        gpt_node("q1", "root", "user", "How do I tune nginx proxy buffers?", 1),
        gpt_node("a1", "q1", "assistant", "Use proxy_buffers 8 16k.", 2),
        gpt_node("a1b", "q1", "assistant", "Set proxy_buffer_size first.", 3),
        gpt_node("q2", "a1b", "user", "And for SSE streams?", 4),
        gpt_node("a2", "q2", "assistant", "Turn proxy_buffering off.", 5),
        gpt_node("q2b", "a1b", "user", "What about websockets?", 6),
        gpt_node("a2b", "q2b", "assistant", "They are not buffered.", 7),
    ]
    return gpt_conversation(key, "Tuning nginx", nodes, current="a2")


# -- Importing --------------------------------------------------------------------------


@needs_fixtures
def test_chatgpt_fixture_imports_once_and_is_searchable(client: TestClient) -> None:
    data = (FIXTURES / "chatgpt-conversations.json").read_bytes()
    report = import_file(client, data)
    assert report["summary"] == "2 chats imported" and report["source"] == "chatgpt"
    listed = {c["title"]: c for c in chats_of(client)}
    assert set(listed) == {"Nginx buffering and SSE", "Übersetzung: 猫 und Katze"}
    assert listed["Nginx buffering and SSE"]["created_at"].startswith("2024-12-03T08:00:00.12")
    again = import_file(client, data)
    assert again["summary"] == "0 chats imported, 2 skipped: already imported"
    assert len(chats_of(client)) == 2
    hits = client.get("/search", params={"q": "ngin"}, headers=ALICE).json()
    assert hits[0]["chat_title"] == "Nginx buffering and SSE"
    hits = client.get("/search", params={"q": "katze"}, headers=ALICE).json()
    assert hits[0]["chat_title"] == "Übersetzung: 猫 und Katze"


@needs_fixtures
def test_open_webui_fixture(client: TestClient) -> None:
    report = import_file(client, (FIXTURES / "open-webui-chats.json").read_bytes())
    assert report["summary"] == "1 chat imported" and report["source"] == "open-webui"
    (chat,) = export_all(client)["chats"]
    assert chat["title"] == "Database haiku" and chat["system_prompt"] == "You are a poet."
    assert chat["params"] == {"temperature": 0.8}
    contents = {m["id"]: m["content"] for m in chat["messages"]}
    assert contents[chat["current_leaf_id"]].startswith("Keys in memory")
    assert client.get("/search", params={"q": "redis"}, headers=ALICE).json()


def test_branches_become_versions_and_the_current_node_the_current_branch(
    client: TestClient,
) -> None:
    import_file(client, [branched_chatgpt()])
    (chat,) = export_all(client)["chats"]
    by_id = {m["id"]: m for m in chat["messages"]}
    content = {m["id"]: m["content"] for m in chat["messages"]}
    parent = {m["content"]: content.get(m["parent_id"]) for m in chat["messages"]}
    assert parent == {
        "How do I tune nginx proxy buffers?": None,
        "Use proxy_buffers 8 16k.": "How do I tune nginx proxy buffers?",
        "Set proxy_buffer_size first.": "How do I tune nginx proxy buffers?",
        "And for SSE streams?": "Set proxy_buffer_size first.",
        "Turn proxy_buffering off.": "And for SSE streams?",
        "What about websockets?": "Set proxy_buffer_size first.",
        "They are not buffered.": "What about websockets?",
    }
    assert by_id[chat["current_leaf_id"]]["content"] == "Turn proxy_buffering off."
    assert chat["created_at"] == "2023-11-14T22:13:20Z"


def test_the_report_names_what_was_skipped(client: TestClient) -> None:
    conversations = [
        gpt_conversation(f"c{i}", f"chat {i}", [gpt_node("q", None, "user", f"hello {i}")], "q")
        for i in range(12)
    ]
    conversations.append(gpt_conversation("empty", "nothing", [gpt_node("r", None, None)], "r"))
    report = import_file(client, conversations)
    assert report["summary"] == "12 chats imported, 1 skipped: no messages"
    assert report["imported"] == 12 and report["skipped"] == 1
    assert report["skipped_chats"] == [
        {"chat": "conversation 13 'nothing'", "source_id": "empty", "reason": "no messages"}
    ]
    assert len(chats_of(client)) == 12


def test_imports_are_per_owner(client: TestClient) -> None:
    import_file(client, [branched_chatgpt()], ALICE)
    import_file(client, [branched_chatgpt()], BOB)
    assert len(chats_of(client, ALICE)) == len(chats_of(client, BOB)) == 1
    assert client.get("/search", params={"q": "websock"}, headers=BOB).json()


def test_a_chat_is_written_whole_or_not_at_all(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    real = importing._message_row

    def broken_second_chat(chat_id: uuid.UUID, message: Any) -> dict[str, Any]:
        row = real(chat_id, message)
        if message.content == "second chat's answer":
            row["role"] = "not-a-role"  # violates the CHECK: the INSERT fails
        return row

    monkeypatch.setattr(importing, "_message_row", broken_second_chat)
    first = gpt_conversation("one", "first", [gpt_node("q", None, "user", "first chat")], "q")
    nodes = [gpt_node("q", None, "user", "second chat"), gpt_node("a", "q", "assistant", "x")]
    nodes[1]["message"]["content"]["parts"] = ["second chat's answer"]
    second = gpt_conversation("two", "second", nodes, "a")
    failing = TestClient(client.app, raise_server_exceptions=False)
    response = failing.post("/import", content=json.dumps([first, second]), headers=ALICE)
    assert response.status_code == 500
    # The first chat is stored; of the second nothing, not even its chat row.
    assert [c["title"] for c in chats_of(client)] == ["first"]
    assert client.get("/search", params={"q": "second"}, headers=ALICE).json() == []


def test_zip_of_a_chatgpt_export(client: TestClient) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("chat.html", "<html></html>")
        archive.writestr("conversations.json", json.dumps([branched_chatgpt()]))
    assert import_file(client, buffer.getvalue())["summary"] == "1 chat imported"


# -- Refused whole ------------------------------------------------------------------------


def test_a_declared_2_gb_upload_is_refused_before_reading(client: TestClient) -> None:
    detail = refused(client, b"[]", 413, **{"Content-Length": str(2 * 1024**3)})
    assert "larger than the import limit of 64 MiB" in detail


def test_an_upload_is_counted_as_it_arrives(make_client: Callable[..., TestClient]) -> None:
    client = make_client(import_max_bytes=1024)
    body = json.dumps([branched_chatgpt()]).encode()
    assert len(body) > 1024

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    response = client.post("/import", content=chunks(), headers=ALICE)
    assert response.status_code == 413 and "1024 bytes" in response.json()["detail"]
    assert chats_of(client) == []


def test_file_too_many_chats_and_messages(make_client: Callable[..., TestClient]) -> None:
    client = make_client(import_max_chats=2, import_max_messages=3)
    three = [
        gpt_conversation(f"c{i}", "t", [gpt_node("q", None, "user", "x")], "q") for i in range(3)
    ]
    assert "limit per import is 2" in refused(client, three, 422)
    nodes = [gpt_node(f"n{i}", f"n{i - 1}" if i else None, "user", "x") for i in range(4)]
    long_chat = gpt_conversation("long", "t", nodes, "n3")
    assert "limit per chat is 3" in refused(client, [three[0], long_chat], 422)


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("conversations.json", "w") as member:
            member.write(b"[")
            for _ in range(100):  # 100 MiB of spaces, a few hundred KB packed
                member.write(b" " * (1024 * 1024))
            member.write(b"]")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make_body", "status", "words"),
    [
        (lambda: b'[{"mapping": {', 400, "not a JSON file"),
        (lambda: b"\x89PNG\r\n\x1a\n", 400, "not a JSON file"),
        (lambda: b"", 400, "empty"),
        (lambda: b"[]", 422, "holds no chats"),
        (lambda: b'{"format": "something-else"}', 422, "not a chat export"),
        (lambda: b"[" * 100_000 + b"]" * 100_000, 422, "nested deeper"),
        (lambda: b'{"a":' * 70 + b"1" + b"}" * 70, 422, "nested deeper"),
        (zip_bomb, 413, "unpacks to more than"),
        (lambda: b"PK\x03\x04garbage", 400, "not a readable zip"),
    ],
    ids=[
        "truncated",
        "binary",
        "empty",
        "no-chats",
        "unknown",
        "deep-list",
        "deep-object",
        "zip-bomb",
        "bad-zip",
    ],
)
def test_hostile_files(
    make_client: Callable[..., TestClient],
    make_body: Callable[[], bytes],
    status: int,
    words: str,
) -> None:
    client = make_client(import_max_bytes=8 * 1024 * 1024)
    assert words in refused(client, make_body(), status)


def test_a_cycle_refuses_the_whole_file(client: TestClient) -> None:
    fine = branched_chatgpt("fine")
    nodes = [
        gpt_node("a", "c", "user", "one"),
        gpt_node("b", "a", "assistant", "two"),
        gpt_node("c", "b", "user", "three"),
    ]
    looped = gpt_conversation("loop", "loop", nodes, "c")
    assert "cycle" in refused(client, [fine, looped], 422)


def test_a_refused_file_says_so_in_the_openapi_document(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/import"]["post"]
    assert {"200", "400", "413", "422"} <= set(operation["responses"])
    assert "application/json" in operation["requestBody"]["content"]


# -- Exporting ------------------------------------------------------------------------------


def test_schema_file_is_what_the_models_say() -> None:
    published = json.loads((REPO / "docs" / "export-schema-v1.json").read_text())
    assert published == json_schema(), "run: uv run python -m db_api.transfer.schema"
    assert published["properties"]["version"]["const"] == 1


def test_exports_validate_against_the_schema(client: TestClient) -> None:
    import_file(client, [branched_chatgpt()])
    chat = new_chat(client, ALICE, title="Native", system_prompt="Be brief.")
    new_message(client, ALICE, chat["id"], content="native question")
    schema = json.loads((REPO / "docs" / "export-schema-v1.json").read_text())
    everything = export_all(client)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
        everything
    )
    assert [c["title"] for c in everything["chats"]] == ["Tuning nginx", "Native"]  # oldest first
    one = client.get(f"/chats/{chat['id']}/export", headers=ALICE)
    assert one.status_code == 200 and one.headers["content-type"] == "application/json"
    assert 'filename="native.json"' in one.headers["content-disposition"]
    jsonschema.Draft202012Validator(schema).validate(one.json())
    assert one.json()["chats"][0]["messages"][0]["content"] == "native question"


def test_markdown_export(client: TestClient) -> None:
    import_file(client, [branched_chatgpt()])
    (chat,) = chats_of(client)
    response = client.get(
        f"/chats/{chat['id']}/export", params={"format": "markdown"}, headers=ALICE
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert 'filename="tuning-nginx.md"' in response.headers["content-disposition"]
    text = response.text
    assert text.startswith("# Tuning nginx\n")
    # The current branch in order, then the other versions, each message once.
    order = [
        "How do I tune nginx proxy buffers?",
        "Set proxy_buffer_size first.",
        "And for SSE streams?",
        "Turn proxy_buffering off.",
        "## Other versions",
    ]
    positions = [text.index(piece) for piece in order]
    assert positions == sorted(positions)
    rest = text[positions[-1] :]
    for other in ("Use proxy_buffers 8 16k.", "What about websockets?", "They are not buffered."):
        assert text.count(other) == 1 and other in rest
    assert "version 2 of 2" in text


def test_export_of_another_owners_chat_is_404(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    assert client.get(f"/chats/{chat['id']}/export", headers=BOB).status_code == 404
    assert export_all(client, BOB)["chats"] == []


def test_the_full_export_is_streamed_in_batches(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporting, "BATCH_CHATS", 2)
    ids = [new_chat(client, ALICE, title=f"chat {i}")["id"] for i in range(5)]
    new_message(client, ALICE, ids[3], content="in the fourth")
    with client.stream("GET", "/export", headers=ALICE) as response:
        assert response.status_code == 200 and "content-length" not in response.headers
        pieces = list(response.iter_raw())
    assert len(pieces) >= 5  # header, a piece per chat, footer: not one built body
    exported = json.loads(b"".join(pieces))
    assert [c["id"] for c in exported["chats"]] == ids
    assert exported["chats"][3]["messages"][0]["content"] == "in the fourth"


# -- Round trips ---------------------------------------------------------------------------


def test_export_import_round_trip_into_another_owner(client: TestClient) -> None:
    import_file(client, [branched_chatgpt()])
    if FIXTURES.is_dir():
        import_file(client, (FIXTURES / "open-webui-chats.json").read_bytes())
    native = new_chat(client, ALICE, title="Native chat", system_prompt="Be brief.")
    new_message(client, ALICE, native["id"], content="a question")
    new_message(client, ALICE, native["id"], role="assistant", content="an answer")
    original = export_all(client, ALICE)
    report = import_file(client, json.dumps(original).encode(), BOB)
    assert report["skipped"] == 0 and report["imported"] == len(original["chats"])
    copy = export_all(client, BOB)
    assert [normalized(c) for c in copy["chats"]] == [normalized(c) for c in original["chats"]]
    assert {c["id"] for c in copy["chats"]}.isdisjoint(c["id"] for c in original["chats"])
    # The copy is searchable for its new owner.
    assert client.get("/search", params={"q": "websock"}, headers=BOB).json()
    # Imported again into either account: nothing new.
    assert import_file(client, json.dumps(original).encode(), BOB)["imported"] == 0
    assert import_file(client, json.dumps(original).encode(), ALICE)["imported"] == 0
    assert import_file(client, json.dumps(copy).encode(), ALICE)["imported"] == 0


def test_a_deleted_chat_can_be_restored_from_its_export(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="Keep me")
    new_message(client, ALICE, chat["id"], content="precious")
    backup = client.get(f"/chats/{chat['id']}/export", headers=ALICE).content
    assert import_file(client, backup)["summary"] == "0 chats imported, 1 skipped: already imported"
    client.delete(f"/chats/{chat['id']}", headers=ALICE)
    assert import_file(client, backup)["summary"] == "1 chat imported"
    (restored,) = export_all(client)["chats"]
    assert restored["title"] == "Keep me" and restored["messages"][0]["content"] == "precious"


# -- A real server --------------------------------------------------------------------------


def test_a_real_server_refuses_a_2_gb_upload_while_it_streams(tmp_path: Path) -> None:
    """Against uvicorn: a declared 2 GB body is answered 413 before any of it is sent;
    an undeclared (chunked) one is answered 413 after about the limit, long before 2 GB."""
    url = f"sqlite:///{tmp_path / 'parlor.db'}"
    upgrade_database(url)
    env = {
        "DB_API_DATABASE_URL": url,
        "DB_API_INTERNAL_TOKEN": "",
        "DB_API_IMPORT_MAX_BYTES": str(1024 * 1024),
    }
    with run_service("db_api", "db_api.main:app", env, tmp_path) as service:
        port = int(service.url.rsplit(":", 1)[1])
        head = (
            "POST /import HTTP/1.1\r\nHost: x\r\nX-Owner: alice\r\n"
            "Content-Type: application/json\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(f"{head}Content-Length: {2 * 1024**3}\r\n\r\n".encode())
            assert conn.recv(4096).startswith(b"HTTP/1.1 413")

        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * (64 * 1024))
            pending = memoryview(b"")
            answer = b""
            while sent < 2 * 1024**3:
                readable, writable, _ = select.select([conn], [conn], [], 30)
                assert readable or writable, "the server neither read nor answered"
                if readable:
                    answer = conn.recv(4096)
                    break
                if not pending:
                    pending = memoryview(chunk)
                try:
                    count = conn.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    answer = conn.recv(4096)
                    break
                pending = pending[count:]
                sent += count
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 256 * 1024 * 1024  # stopped near the limit, far from 2 GB


def test_round_trip_of_a_chat_built_through_the_api(client: TestClient) -> None:
    """Versions made by regenerating and by editing, a branch chosen back, settings and
    an interrupted answer: the copy in another account is the same tree, same current
    branch, and shows the same page."""
    chat = new_chat(client, ALICE, title="Built here", system_prompt="Be brief.")
    chat_id = chat["id"]
    assert client.patch(
        f"/chats/{chat_id}", json={"params": {"temperature": 0.7}}, headers=ALICE
    ).is_success

    def turn(content: str, **fields: Any) -> tuple[str, str]:
        response = client.post(
            f"/chats/{chat_id}/turns", json={"content": content, **fields}, headers=ALICE
        )
        assert response.status_code == 201, response.text
        return response.json()["user"]["id"], response.json()["assistant"]["id"]

    def finish(message_id: str, content: str, status: str = "complete", **fields: Any) -> None:
        body = {"content": content, "status": status, **fields}
        response = client.patch(f"/messages/{message_id}", json=body, headers=ALICE)
        assert response.status_code == 200, response.text

    q1, a1 = turn("first question", model="toy", params={"temperature": 0.2})
    finish(a1, "first answer", finish_reason="stop", prompt_tokens=12, completion_tokens=3)
    regenerated = client.post(
        f"/chats/{chat_id}/messages",
        json={"role": "assistant", "content": "", "status": "pending", "parent_id": q1},
        headers=ALICE,
    )
    assert regenerated.status_code == 201, regenerated.text
    a1b = regenerated.json()["id"]
    finish(a1b, "second answer")
    _, a2 = turn("follow-up")
    finish(a2, "cut short", "interrupted", reason="stopped")
    _, a1c = turn("first question, edited", parent_id=None)
    finish(a1c, "answer to the edit")
    selected = client.post(f"/chats/{chat_id}/current", json={"message_id": a1b}, headers=ALICE)
    assert selected.status_code == 200, selected.text

    original = client.get(f"/chats/{chat_id}/export", headers=ALICE).json()
    assert import_file(client, json.dumps(original).encode(), BOB)["summary"] == "1 chat imported"
    (copy,) = export_all(client, BOB)["chats"]
    assert normalized(copy) == normalized(original["chats"][0])

    def page(owner: dict[str, str], some_chat_id: str) -> list[Any]:
        body = client.get(f"/chats/{some_chat_id}", headers=owner).json()
        return [
            (m["role"], m["content"], m["status"], m["version"], m["versions"])
            for m in body["messages"]
        ]

    shown = page(ALICE, chat_id)
    assert [content for _, content, *_ in shown] == [
        "first question",
        "second answer",
        "follow-up",
        "cut short",
    ]
    assert shown[0][3:] == (1, 2) and shown[1][3:] == (2, 2)
    assert page(BOB, copy["id"]) == shown
