"""The import converters as pure functions: ChatGPT's and Open WebUI's exports (the shared
fixtures when present, and samples written here for what they do not show), Parlor's own
format, and the hostile files refused before anything is written."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any

import pytest

from db_api.transfer import reading
from db_api.transfer.tree import (
    ImportRejected,
    Limits,
    PreparedChat,
    Skipped,
    prepare,
    to_datetime,
)
from tests.support import SHARED

FIXTURES = SHARED / "fixtures"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = Limits()


def prepared(data: Any, limits: Limits = LIMITS) -> tuple[str, list[PreparedChat | Skipped]]:
    source, drafts = reading.drafts(data, limits)
    return source, [prepare(d, limits, now=NOW) for d in drafts]


def only_chats(data: Any, limits: Limits = LIMITS) -> list[PreparedChat]:
    _, chats = prepared(data, limits)
    assert all(isinstance(c, PreparedChat) for c in chats), chats
    return [c for c in chats if isinstance(c, PreparedChat)]


def shape(chat: PreparedChat) -> list[tuple[str, str | None, str, str]]:
    """(source key, parent's source key, role, content) in creation order."""
    keys = {m.id: m.source_key for m in chat.messages}
    return [
        (m.source_key, keys.get(m.parent_id) if m.parent_id else None, m.role, m.content)
        for m in chat.messages
    ]


def current_path(chat: PreparedChat) -> list[str]:
    by_id = {m.id: m for m in chat.messages}
    path: list[str] = []
    node = by_id.get(chat.current_leaf_id)
    while node is not None:
        path.append(node.source_key)
        node = by_id.get(node.parent_id) if node.parent_id else None
    return path[::-1]


def rejected(data: bytes | Any, limits: Limits = LIMITS) -> ImportRejected:
    with pytest.raises(ImportRejected) as caught:
        parsed = reading.parse(data, limits) if isinstance(data, bytes) else data
        prepared(parsed, limits)
    return caught.value


def created_in_order(chat: PreparedChat) -> None:
    times = [m.created_at for m in chat.messages]
    assert times == sorted(times) and len(set(times)) == len(times)
    seen: set[Any] = set()
    for m in chat.messages:
        assert m.parent_id is None or m.parent_id in seen
        seen.add(m.id)


# -- ChatGPT ---------------------------------------------------------------------------


def gpt_node(
    key: str,
    parent: str | None,
    role: str | None,
    text: str | list[Any] = "",
    *,
    t: float | None = None,
    children: list[str] | None = None,
    **message: Any,
) -> dict[str, Any]:
    if role is None:
        body = None
    else:
        parts = text if isinstance(text, list) else [text]
        body = {
            "id": key,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": t,
            "content": {"content_type": message.pop("content_type", "text"), "parts": parts},
            "status": "finished_successfully",
            "metadata": message.pop("metadata", {}),
            "recipient": message.pop("recipient", "all"),
            **message,
        }
    return {"id": key, "message": body, "parent": parent, "children": children or []}


def gpt_conversation(nodes: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "title": "Sample",
        "create_time": 1_700_000_000.0,
        "update_time": 1_700_000_900.0,
        "mapping": {n["id"]: n for n in nodes},
        "current_node": nodes[-1]["id"],
        "conversation_id": "conv-1",
        **fields,
    }


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is not present")
def test_chatgpt_fixture() -> None:
    data = json.loads((FIXTURES / "chatgpt-conversations.json").read_text())
    source, chats = prepared(data)
    assert source == "chatgpt"
    first, second = chats
    assert isinstance(first, PreparedChat) and isinstance(second, PreparedChat)
    assert first.title == "Nginx buffering and SSE"
    assert first.import_key == "chatgpt:6750a1b2-0000-4000-8000-000000000001"
    # The hidden system node is gone; its child is a first turn. The regenerated answer
    # is the second version of the first turn's answer, and the current branch.
    assert [(k, p, r) for k, p, r, _ in shape(first)] == [
        ("u1", None, "user"),
        ("a1", "u1", "assistant"),
        ("a1b", "u1", "assistant"),
        ("u2", "a1b", "user"),
        ("a2", "u2", "assistant"),
    ]
    assert current_path(first) == ["u1", "a1b", "u2", "a2"]
    assert first.system_prompt is None
    assert first.created_at == datetime.fromtimestamp(1733212800.12, UTC)
    assert first.updated_at == datetime.fromtimestamp(1733213400.5, UTC)
    assert first.messages[0].created_at == datetime.fromtimestamp(1733212801.0, UTC)
    assert first.messages[1].model == "gpt-4o" and first.messages[0].model is None
    assert "proxy_buffering off;" in first.messages[1].content
    created_in_order(first)
    assert second.title == "Übersetzung: 猫 und Katze"
    assert [c for *_, c in shape(second)] == [
        "Wie sagt man „Katze“ auf Japanisch? 🐈",
        "Auf Japanisch heißt Katze 猫 (ねこ, *neko*).",
    ]
    assert second.model == "gpt-4o-mini"


def test_chatgpt_tool_calls_hidden_nodes_and_parts() -> None:
    nodes = [
        gpt_node("root", None, None, children=["ctx"]),
        gpt_node("ctx", "root", "user", "about me", content_type="user_editable_context", t=1.7e9),
        gpt_node("sys", "ctx", "system", "Answer in French.", t=1.7e9 + 1),
        gpt_node("u", "sys", "user", ["look at this", {"content_type": "image_asset_pointer"}]),
        gpt_node("a", "u", "assistant", "Let me compute that.", t=1.7e9 + 3),
        gpt_node("call", "a", "assistant", "print(2+2)", recipient="python", t=1.7e9 + 4),
        gpt_node("tool", "call", "tool", "4", t=1.7e9 + 5),
        gpt_node("a2", "tool", "assistant", "The answer is 4.", t=1.7e9 + 6),
        gpt_node("empty", "a2", "assistant", "", t=1.7e9 + 7),
    ]
    (chat,) = only_chats([gpt_conversation(nodes, current_node="empty")])
    # Context and tool nodes hidden, the visible system text is the system prompt, the
    # answer split around the tool call is one message, the image is a placeholder.
    assert chat.system_prompt == "Answer in French."
    assert shape(chat) == [
        ("u", None, "user", "look at this\n\n[image]"),
        ("a", "u", "assistant", "Let me compute that.\n\nThe answer is 4."),
    ]
    # The current node is hidden: the nearest shown message above it is current.
    assert current_path(chat) == ["u", "a"]
    # No time on `u`: it takes its place right after what precedes it.
    assert chat.messages[0].created_at == datetime.fromtimestamp(1_700_000_000.0, UTC)
    created_in_order(chat)


def test_chatgpt_branches_current_node_and_lenient_links() -> None:
    nodes = [
        {"id": "root", "message": None, "children": ["q"]},  # no `parent` field at all
        gpt_node("q", None, "user", "question", t=1.7e9 + 1),
        gpt_node("v1", "q", "assistant", "first answer", t=1.7e9 + 2),
        gpt_node("v2", "q", "assistant", "second answer", t=1.7e9 + 3),
        gpt_node("orphan", "missing-node", "user", "from a partial export", t=1.7e9 + 4),
    ]
    del nodes[1]["parent"]  # taken from root's `children`
    (chat,) = only_chats([gpt_conversation(nodes, current_node="v1")])
    assert [(k, p) for k, p, *_ in shape(chat)] == [
        ("q", None),
        ("v1", "q"),
        ("v2", "q"),
        ("orphan", None),
    ]
    assert current_path(chat) == ["q", "v1"]
    # Without a usable current node: the newest leaf.
    (chat,) = only_chats([gpt_conversation(nodes, current_node="nonexistent")])
    assert current_path(chat) == ["orphan"]


def test_chatgpt_without_id_is_keyed_by_content() -> None:
    nodes = [gpt_node("q", None, "user", "hello", t=1.7e9)]
    conversation = gpt_conversation(nodes)
    del conversation["conversation_id"]
    (one,) = only_chats([conversation])
    (two,) = only_chats([json.loads(json.dumps(conversation))])
    assert one.import_key == two.import_key and one.import_key.startswith("chatgpt:sha256:")
    conversation["title"] = "Other"
    (three,) = only_chats([conversation])
    assert three.import_key != one.import_key


def test_chatgpt_conversation_with_only_hidden_nodes_is_skipped() -> None:
    nodes = [gpt_node("root", None, None), gpt_node("s", "root", "system", "")]
    _, (result,) = prepared([gpt_conversation(nodes)])
    assert isinstance(result, Skipped) and result.reason == "no messages"


# -- Open WebUI ------------------------------------------------------------------------


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is not present")
def test_open_webui_fixture() -> None:
    data = json.loads((FIXTURES / "open-webui-chats.json").read_text())
    source, (chat,) = prepared(data)
    assert source == "open-webui" and isinstance(chat, PreparedChat)
    assert chat.title == "Database haiku"
    assert chat.import_key == "open-webui:3f6c2a94-1111-4222-8333-444455556666"
    assert chat.system_prompt == "You are a poet." and chat.params == {"temperature": 0.8}
    assert chat.model == "qwen2.5:0.5b"
    assert [(k, p) for k, p, *_ in shape(chat)] == [
        ("m1", None),
        ("m2", "m1"),
        ("m3", "m2"),
        ("m4", "m3"),
        ("m3b", "m2"),
        ("m4b", "m3b"),
    ]
    assert current_path(chat) == ["m1", "m2", "m3b", "m4b"]
    assert chat.created_at == datetime.fromtimestamp(1733385600, UTC)
    created_in_order(chat)


def owui_message(key: str, parent: str | None, role: str, content: Any, **f: Any) -> dict[str, Any]:
    return {"id": key, "parentId": parent, "childrenIds": [], "role": role, "content": content, **f}


def test_open_webui_bare_chat_with_parts_milliseconds_and_failures() -> None:
    bare = {
        "id": "bare-1",
        "title": "Bare",
        "timestamp": 1_733_385_600_000,  # milliseconds
        "params": {"temperature": 9, "top_p": 0.5, "system": "Be kind."},
        "history": {
            "currentId": "a",
            "messages": {
                "u": owui_message(
                    "u",
                    None,
                    "user",
                    [{"type": "text", "text": "describe"}, {"type": "image_url"}],
                    timestamp=1_733_385_601_000,
                ),
                "a": owui_message("a", "u", "assistant", "half an ans", done=False),
                "b": owui_message(
                    "b", "u", "assistant", "", error={"content": "model crashed"}, timestamp=1
                ),
            },
        },
    }
    (chat,) = only_chats([bare])
    assert chat.import_key == "open-webui:bare-1"
    assert chat.params == {"top_p": 0.5}  # temperature 9 is out of range: dropped
    assert chat.system_prompt == "Be kind."
    assert chat.created_at == datetime.fromtimestamp(1_733_385_600, UTC)
    assert shape(chat)[0] == ("u", None, "user", "describe\n\n[image]")
    statuses = {m.source_key: (m.status, m.reason, m.error) for m in chat.messages}
    assert statuses["a"] == ("interrupted", "stopped", None)
    assert statuses["b"] == ("error", "model_error", "model crashed")
    assert current_path(chat) == ["u", "a"]


def test_open_webui_linear_messages_without_history() -> None:
    item = {
        "id": "lin",
        "chat": {
            "title": "Linear",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hi", "timestamp": 1_733_000_000},
                {"role": "assistant", "content": "hello", "timestamp": 1_733_000_005},
            ],
        },
    }
    (chat,) = only_chats([item])
    assert chat.system_prompt == "You are terse."
    assert [(p, r, c) for _, p, r, c in shape(chat)] == [
        (None, "user", "hi"),
        ("#1", "assistant", "hello"),
    ]


# -- Parlor's own format -----------------------------------------------------------------


def parlor_file(messages: list[dict[str, Any]], **chat: Any) -> dict[str, Any]:
    return {
        "format": "parlor-chats",
        "version": 1,
        "exported_at": "2026-01-01T00:00:00Z",
        "chats": [
            {
                "id": "00000000-0000-4000-8000-000000000001",
                "title": "Mine",
                "created_at": "2025-01-01T00:00:00Z",
                "updated_at": "2025-01-01T00:10:00Z",
                "messages": messages,
                **chat,
            }
        ],
    }


def pmsg(n: int, parent: int | None, role: str = "user", **fields: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "parent_id": f"00000000-0000-4000-8000-{parent:012d}" if parent else None,
        "role": role,
        "content": f"message {n}",
        "created_at": f"2025-01-01T00:00:{n:02d}Z",
        **fields,
    }


def test_parlor_format_keeps_statuses_and_marks_running_answers_interrupted() -> None:
    data = parlor_file(
        [
            pmsg(10, None),
            pmsg(11, 10, "assistant", status="streaming"),
            pmsg(12, 10, "assistant", status="error", error="boom", reason="model_error"),
        ],
        current_leaf_id="00000000-0000-4000-8000-000000000012",
        params={"temperature": 0.5, "unknown": 1},
    )
    (chat,) = only_chats(data)
    assert chat.import_key == "parlor:00000000-0000-4000-8000-000000000001"
    assert chat.params == {"temperature": 0.5}
    assert [(m.status, m.reason) for m in chat.messages] == [
        ("complete", None),
        ("interrupted", "stopped"),
        ("error", "model_error"),
    ]
    assert current_path(chat)[-1] == "00000000-0000-4000-8000-000000000012"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"version": 2}, "reads export version 1"),
        ({"chats": [{"id": "not-a-uuid"}]}, "not a valid Parlor export"),
        ({"exported_at": "2026-01-01T00:00:00"}, "not a valid Parlor export"),  # no zone
    ],
)
def test_parlor_format_refusals(change: dict[str, Any], expected: str) -> None:
    data = {**parlor_file([pmsg(1, None)]), **change}
    error = rejected(data)
    assert error.status == 422 and expected in error.detail


# -- Refused whole ------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["chatgpt", "open-webui", "parlor"])
def test_a_cycle_refuses_the_file(source: str) -> None:
    if source == "chatgpt":
        nodes = [
            gpt_node("a", "c", "user", "one"),
            gpt_node("b", "a", "assistant", "two"),
            gpt_node("c", "b", "user", "three"),
        ]
        data: Any = [
            gpt_conversation([gpt_node("ok", None, "user", "fine")]),
            gpt_conversation(nodes),
        ]
    elif source == "open-webui":
        messages = {
            "x": owui_message("x", "y", "user", "one"),
            "y": owui_message("y", "x", "assistant", "two"),
        }
        data = [{"id": "c", "chat": {"history": {"messages": messages, "currentId": "x"}}}]
    else:
        data = parlor_file([pmsg(1, 1)])  # its own parent
    error = rejected(data)
    assert error.status == 422 and "cycle" in error.detail


def test_duplicate_message_ids_refuse_the_file() -> None:
    error = rejected(parlor_file([pmsg(1, None), pmsg(1, None)]))
    assert error.status == 422 and "appears twice" in error.detail


def test_counts_are_bounded() -> None:
    small = Limits(max_chats=2, max_messages=3)
    three_chats = [gpt_conversation([gpt_node("q", None, "user", "x")]) for _ in range(3)]
    error = rejected(three_chats, small)
    assert error.status == 422 and "3 chats" in error.detail and "limit" in error.detail
    nodes = [gpt_node(f"n{i}", f"n{i - 1}" if i else None, "user", "x") for i in range(4)]
    error = rejected([gpt_conversation(nodes)], small)
    assert error.status == 422 and "4 messages" in error.detail


def test_message_too_long_skips_that_chat_only() -> None:
    limits = Limits(max_message_chars=10)
    data = [
        gpt_conversation([gpt_node("q", None, "user", "short")], conversation_id="a"),
        gpt_conversation([gpt_node("q", None, "user", "much too long")], conversation_id="b"),
    ]
    _, (ok, skipped) = prepared(data, limits)
    assert isinstance(ok, PreparedChat)
    assert isinstance(skipped, Skipped) and "longer than 10 characters" in skipped.reason


def test_text_the_databases_cannot_store_is_replaced() -> None:
    raw = '[{"mapping": {"q": {"message": {"author": {"role": "user"}, "content": ' \
        '{"content_type": "text", "parts": ["a\\u0000b\\ud800c"]}}, "parent": null}}, ' \
        '"title": "t\\udfff"}]'  # fmt: skip
    (chat,) = only_chats(reading.parse(raw.encode(), LIMITS))
    assert chat.messages[0].content == "a\ufffdb\ufffdc" and chat.title == "t\ufffd"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not a JSON file"),
        (b"\xff\xfe\xfa", 400, "not a JSON file"),
        (b"[" + b"9" * 5000 + b"]", 400, "not a JSON file"),  # an integer too long to read
        (b'{"some": "object"}', 422, "not a chat export"),
        (b"42", 422, "not a chat export"),
        (b'[{"mapping": {}}, {"chat": {"history": {}}}]', 422, "not like the first"),
        (b'[{"mapping": {"n": 5}}]', 422, "not an object"),
    ],
)
def test_malformed_files(body: bytes, status: int, words: str) -> None:
    error = rejected(body)
    assert error.status == status and words in error.detail


def test_depth_is_counted_before_parsing() -> None:
    error = rejected(b"[" * 200_000 + b"]" * 200_000)
    assert error.status == 422 and "nested deeper than 64 levels" in error.detail
    # Brackets inside strings are text, not nesting.
    reading.check_depth(b'["' + b"[" * 1000 + b'\\"{{{"]', 2)
    with pytest.raises(ImportRejected):
        reading.check_depth(b"[[[" + b'"x"' + b"]]]", 2)


def test_empty_list_is_nothing_to_import() -> None:
    source, chats = prepared([])
    assert (source, chats) == ("empty", [])


# -- Zip files ---------------------------------------------------------------------------


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_chatgpt_zip_is_read() -> None:
    conversation = gpt_conversation([gpt_node("q", None, "user", "zipped hello")])
    data = zipped(
        {
            "chat.html": b"<html></html>",
            "user.json": b"{}",
            "conversations.json": json.dumps([conversation]).encode(),
        }
    )
    (chat,) = only_chats(reading.parse(data, LIMITS))
    assert chat.messages[0].content == "zipped hello"


def test_zip_bomb_is_refused_while_unpacking() -> None:
    limits = Limits(max_bytes=1024 * 1024)
    bomb = zipped({"conversations.json": b"[" + b" " * (50 * 1024 * 1024) + b"]"})
    assert len(bomb) < 100_000
    error = rejected(bomb, limits)
    assert error.status == 413 and "unpacks to more than" in error.detail


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (zipped({"a.json": b"[]", "b.json": b"[]"}), 422, "no conversations.json"),
        (zipped({"notes.txt": b"hi"}), 422, "no conversations.json"),
        (b"PK\x03\x04" + b"\x00" * 100, 400, "not a readable zip"),
    ],
)
def test_unusable_zips(data: bytes, status: int, words: str) -> None:
    error = rejected(data)
    assert error.status == status and words in error.detail


# -- Helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_733_212_800, datetime(2024, 12, 3, 8, 0, tzinfo=UTC)),
        (1_733_212_800.5, datetime(2024, 12, 3, 8, 0, 0, 500000, tzinfo=UTC)),
        (1_733_212_800_000, datetime(2024, 12, 3, 8, 0, tzinfo=UTC)),
        (1_733_212_800_000_000, datetime(2024, 12, 3, 8, 0, tzinfo=UTC)),
        ("2024-12-03T08:00:00Z", datetime(2024, 12, 3, 8, 0, tzinfo=UTC)),
        ("2024-12-03T09:00:00+01:00", datetime(2024, 12, 3, 8, 0, tzinfo=UTC)),
        ("2024-12-03T08:00:00", datetime(2024, 12, 3, 8, 0, tzinfo=UTC)),
        (None, None),
        (True, None),
        (float("nan"), None),
        (-5, None),
        (1e300, None),
        ("yesterday", None),
    ],
)
def test_times(value: object, expected: datetime | None) -> None:
    assert to_datetime(value) == expected
