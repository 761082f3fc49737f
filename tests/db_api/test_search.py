"""GET /search on SQLite (FTS5) and PostgreSQL (GIN over tsvectors): prefixes, ranking,
snippets, owner scope, paging, the index following inserts, updates and deletes, and
hostile input answered with results or nothing, never an error."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from db_api import search
from db_api.db import alembic_config, make_engine
from db_api.main import create_app
from db_api.models import Chat, Message
from tests.db_api.conftest import ALICE, BOB, make_settings, new_chat, new_message


def found(client: TestClient, q: str, owner: dict[str, str] = ALICE, **params: Any) -> Any:
    response = client.get("/search", params={"q": q, **params}, headers=owner)
    assert response.status_code == 200, response.text
    return response.json()


def hit_words(segments: list[dict[str, Any]]) -> list[str]:
    return [s["text"] for s in segments if s["hit"]]


def test_a_prefix_finds_the_word_with_a_marked_snippet(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="Streaming trouble")
    question = new_message(
        client, ALICE, chat["id"], content="Why does my SSE stream stall behind nginx?"
    )
    new_message(client, ALICE, chat["id"], role="assistant", content="Check the buffers.")
    (result,) = found(client, "ngin")
    assert result["chat_id"] == chat["id"] and result["chat_title"] == "Streaming trouble"
    assert result["message_id"] == question["id"] and result["role"] == "user"
    assert hit_words(result["snippet"]) == ["nginx"]
    assert "".join(s["text"] for s in result["snippet"]) == question["content"]
    assert result["hits"] == 1


def test_punctuation_separates_words_on_both_backends(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    new_message(client, ALICE, chat["id"], content="edit nginx.conf and set proxy_buffering off")
    for q in ("conf", "nginx.conf", "buffering", "proxy_buf", "NGINX"):
        assert [r["chat_id"] for r in found(client, q)] == [chat["id"]], q


def test_every_word_must_match(client: TestClient) -> None:
    both = new_chat(client, ALICE)
    new_message(client, ALICE, both["id"], content="nginx proxy buffering explained")
    one = new_chat(client, ALICE)
    new_message(client, ALICE, one["id"], content="nginx as a load balancer")
    assert [r["chat_id"] for r in found(client, "nginx buffer")] == [both["id"]]
    assert {r["chat_id"] for r in found(client, "nginx")} == {both["id"], one["id"]}


def test_words_of_other_languages(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="Übersetzung: 猫 und Katze")
    new_message(client, ALICE, chat["id"], content="Wie sagt man „Katze“ auf Japanisch? 🐈")
    new_message(client, ALICE, chat["id"], role="assistant", content="Кошка по-русски, 猫 (ねこ)")
    assert found(client, "übersetz")[0]["chat_id"] == chat["id"]
    assert found(client, "ÜBERSETZUNG")[0]["chat_id"] == chat["id"]
    result = found(client, "katz")[0]
    assert hit_words(result["snippet"]) == ["Katze"]
    assert found(client, "кошк")[0]["chat_id"] == chat["id"]
    assert hit_words(found(client, "ねこ")[0]["snippet"]) == ["ねこ"]
    assert found(client, "猫")[0]["chat_id"] == chat["id"]


def test_ranking_and_one_row_per_chat(client: TestClient) -> None:
    passing = new_chat(client, ALICE, title="Holiday plans")
    new_message(
        client,
        ALICE,
        passing["id"],
        content="We talked about many things on the trip, mostly food and trains, and "
        "once, briefly, about a server that ran nginx in the hotel's basement, then "
        "about the museums and the weather for the rest of the week.",
    )
    focused = new_chat(client, ALICE, title="Nginx buffering")
    new_message(client, ALICE, focused["id"], content="nginx buffering: nginx buffers nginx")
    new_message(client, ALICE, focused["id"], role="assistant", content="Yes, nginx buffers.")
    results = found(client, "nginx")
    # The chat about nginx (title and dense messages) first; each chat once.
    assert [r["chat_id"] for r in results] == [focused["id"], passing["id"]]
    assert results[0]["hits"] == 2 and results[1]["hits"] == 1
    assert results[0]["rank"] > results[1]["rank"]
    assert hit_words(results[0]["title_snippet"]) == ["Nginx"]


def test_title_only_match(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="Kubernetes notes")
    new_message(client, ALICE, chat["id"], content="nothing relevant here")
    (result,) = found(client, "kube")
    assert result["message_id"] is None and result["hits"] == 0
    assert hit_words(result["snippet"]) == ["Kubernetes"]


def test_other_owners_chats_are_never_found(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="secret nginx plans")
    new_message(client, ALICE, chat["id"], content="nginx secrets")
    assert found(client, "nginx", BOB) == []
    assert found(client, "secret", BOB) == []
    assert len(found(client, "nginx", ALICE)) == 1


def test_paging(client: TestClient) -> None:
    ids = set()
    for i in range(7):
        chat = new_chat(client, ALICE, title=f"chat {i}")
        new_message(client, ALICE, chat["id"], content=f"paging word{i} marker")
        ids.add(chat["id"])
    first = found(client, "marker", limit=3)
    second = found(client, "marker", limit=3, offset=3)
    third = found(client, "marker", limit=3, offset=6)
    pages = [r["chat_id"] for r in first + second + third]
    assert len(first) == len(second) == 3 and len(third) == 1
    assert len(pages) == len(set(pages)) and set(pages) == ids
    assert found(client, "marker", offset=7) == []


def test_index_follows_updates_and_deletes(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="before")
    message = new_message(client, ALICE, chat["id"], content="original wording")
    assert len(found(client, "original")) == 1
    # The answer is rewritten (as a stream fills it): old words go, new words come.
    patched = client.patch(
        f"/messages/{message['id']}", json={"content": "rewritten text"}, headers=ALICE
    )
    assert patched.status_code == 200
    assert found(client, "original") == []
    assert found(client, "rewrit")[0]["message_id"] == message["id"]
    client.patch(f"/chats/{chat['id']}", json={"title": "renamed"}, headers=ALICE)
    assert found(client, "before") == []
    assert found(client, "renamed")[0]["chat_id"] == chat["id"]
    assert client.delete(f"/chats/{chat['id']}", headers=ALICE).status_code == 204
    assert found(client, "rewritten") == [] and found(client, "renamed") == []


def test_snippets_are_text_never_markup(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    content = "<script>alert(1)</script> <b>nginx</b> &amp; " + "filler " * 100
    new_message(client, ALICE, chat["id"], content=content)
    (result,) = found(client, "nginx")
    text = "".join(s["text"] for s in result["snippet"])
    assert text.startswith("<script>alert(1)</script> <b>")
    assert hit_words(result["snippet"]) == ["nginx"]
    assert text.endswith("…") and len(text) <= search.SNIPPET_CHARS + 2


def test_snippet_is_cut_around_the_hit(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    new_message(client, ALICE, chat["id"], content="lorem " * 200 + "needle " + "ipsum " * 200)
    (result,) = found(client, "needle")
    text = "".join(s["text"] for s in result["snippet"])
    assert text.startswith("…") and text.endswith("…") and "needle" in text


HOSTILE = [
    '")',
    "*",
    "NEAR",
    "a NEAR b",
    "AND",
    "OR NOT",
    '"unterminated',
    "'single' quotes''",
    "back\\slash\\",
    "nginx:* & !x | (y)",
    "col:nginx",
    "^nginx",
    "-nginx",
    "nginx)",
    "%_%",
    "\u0000",
    "x" * 1000,
    "ab " * 333,
    "🐈🐈🐈",
    " ",
    "",
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_answers_results_or_nothing(client: TestClient, query: str) -> None:
    chat = new_chat(client, ALICE, title="nginx")
    new_message(client, ALICE, chat["id"], content="nginx col NEAR AND x" + " xx" * 10)
    response = client.get("/search", params={"q": query}, headers=ALICE)
    assert response.status_code == 200, response.text
    assert isinstance(response.json(), list)


def test_undecodable_query_bytes(client: TestClient) -> None:
    # A lone surrogate and bytes that are not UTF-8, percent-encoded in the URL.
    response = client.get("/search?q=%ED%A0%80%FF%00nginx", headers=ALICE)
    assert response.status_code == 200 and isinstance(response.json(), list)


def test_operators_are_words(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    new_message(client, ALICE, chat["id"], content="stay NEAR the exit AND wait")
    assert [r["chat_id"] for r in found(client, "NEAR AND")] == [chat["id"]]
    assert found(client, '"near" OR nothing') == []  # OR is a word too, and absent


def test_too_long_a_query_is_refused(client: TestClient) -> None:
    response = client.get("/search", params={"q": "x" * 1001}, headers=ALICE)
    assert response.status_code == 422


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 51}, {"offset": -1}])
def test_paging_bounds(client: TestClient, params: dict[str, int]) -> None:
    response = client.get("/search", params={"q": "x", **params}, headers=ALICE)
    assert response.status_code == 422


# -- Units --------------------------------------------------------------------------------


def test_terms_are_words_only() -> None:
    assert search.terms_of('") * NEAR \\ nginx.conf Über_set 猫') == [
        "near",
        "nginx",
        "conf",
        "über",
        "set",
        "猫",
    ]
    assert search.terms_of("a a A") == ["a"]
    assert len(search.terms_of(" ".join(f"w{i}" for i in range(100)))) == search.MAX_TERMS
    assert search.fts5_query(["ngin", "x"]) == '"ngin"* "x"*'
    assert search.pg_tsquery(["ngin", "x"]) == "'ngin':* & 'x':*"


def test_snippet_marks_every_hit_in_the_window() -> None:
    segments = search.snippet("Nginx and\nnginx-ui, not engine", ["nginx"])
    assert [(s.text, s.hit) for s in segments] == [
        ("Nginx", True),
        (" and ", False),
        ("nginx", True),
        ("-ui, not engine", False),
    ]
    assert search.snippet("", ["x"]) == []


# -- The schema --------------------------------------------------------------------------


def test_search_objects_exist_at_head(migrated_url: str) -> None:
    """A later migration that rebuilds chats or messages on SQLite drops their triggers;
    this fails until it recreates them."""
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                indexes = {
                    row.indexname: row.indexdef
                    for row in conn.execute(
                        sa.text(
                            "SELECT indexname, indexdef FROM pg_indexes "
                            "WHERE indexname LIKE 'ix_%_search'"
                        )
                    )
                }
                assert set(indexes) == {"ix_messages_search", "ix_chats_search"}
                assert all("gin (search_vector)" in d for d in indexes.values())
                generated = conn.scalar(
                    sa.text(
                        "SELECT generation_expression FROM information_schema.columns "
                        "WHERE table_name = 'messages' AND column_name = 'search_vector'"
                    )
                )
                assert "'simple'" in generated and "translate" in generated
            else:
                triggers = set(
                    conn.scalars(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
                )
                assert {
                    f"{table}_search_{event}"
                    for table in ("chats", "messages")
                    for event in ("insert", "update", "delete")
                } <= triggers
    finally:
        engine.dispose()


def test_postgres_uses_the_indexes(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("PostgreSQL only")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join(
                conn.scalars(
                    sa.text(
                        "EXPLAIN SELECT m.id FROM messages m WHERE m.search_vector @@ "
                        "to_tsquery('simple'::regconfig, 'ngin:*')"
                    )
                )
            )
        assert "ix_messages_search" in plan, plan
        # The generated column is what search.py says it is.
        with engine.begin() as conn:
            chat_id = uuid.uuid4()
            now = datetime.now(UTC)
            conn.execute(
                sa.insert(Chat).values(id=chat_id, owner="x", created_at=now, updated_at=now)
            )
            conn.execute(
                sa.insert(Message).values(
                    id=uuid.uuid4(),
                    chat_id=chat_id,
                    role="user",
                    content="nginx.conf, proxy_buffering: Übersetzung „Katze“",
                    status="complete",
                    created_at=now,
                    updated_at=now,
                )
            )
            expression = search.pg_document("content")
            same = conn.scalar(
                sa.text(f"SELECT bool_and(search_vector = {expression}) FROM messages")  # noqa: S608
            )
            assert same is True
    finally:
        engine.dispose()


def test_rows_written_before_the_migration_are_indexed(database_url: str) -> None:
    config = alembic_config(database_url)
    command.upgrade(config, "0003")
    command.downgrade(config, "-1")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            chats = sa.table(
                "chats",
                sa.column("id", sa.Uuid),
                sa.column("owner", sa.String),
                sa.column("title", sa.Text),
                sa.column("created_at", sa.DateTime),
                sa.column("updated_at", sa.DateTime),
            )
            messages = sa.table(
                "messages",
                sa.column("id", sa.Uuid),
                sa.column("chat_id", sa.Uuid),
                sa.column("role", sa.String),
                sa.column("content", sa.Text),
                sa.column("status", sa.String),
                sa.column("created_at", sa.DateTime),
                sa.column("updated_at", sa.DateTime),
            )
            now = datetime.now(UTC).replace(tzinfo=None)
            chat_id, message_id = uuid.uuid4(), uuid.uuid4()
            conn.execute(
                sa.insert(chats).values(
                    id=chat_id,
                    owner=ALICE["X-Owner"],
                    title="legacy title",
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                sa.insert(messages).values(
                    id=message_id,
                    chat_id=chat_id,
                    role="user",
                    content="written before search existed",
                    status="complete",
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        engine.dispose()
    command.upgrade(config, "head")
    with TestClient(create_app(make_settings(database_url))) as client:
        assert found(client, "legacy")[0]["chat_id"] == str(chat_id)
        assert found(client, "existed")[0]["message_id"] == str(message_id)


def test_hits_say_whether_they_are_on_the_branch_shown(client: TestClient) -> None:
    def node(key: str, parent: str | None, role: str, text: str, t: int) -> dict[str, Any]:
        message = {
            "author": {"role": role},
            "create_time": 1_700_000_000 + t,
            "content": {"content_type": "text", "parts": [text]},
        }
        return {"id": key, "parent": parent, "message": message}

    conversation = {
        "id": "branches",
        "title": "Two answers",
        "current_node": "second",
        "mapping": {
            "q": node("q", None, "user", "which proxy setting?", 1),
            "first": node("first", "q", "assistant", "proxy_buffers alpha", 2),
            "second": node("second", "q", "assistant", "proxy_buffering beta", 3),
        },
    }
    response = client.post("/import", content=json.dumps([conversation]), headers=ALICE)
    assert response.status_code == 200, response.text
    (shown,) = found(client, "beta")
    (hidden,) = found(client, "alpha")
    assert shown["on_current_path"] is True and hidden["on_current_path"] is False
    assert found(client, "which")[0]["on_current_path"] is True
    assert found(client, "two answers")[0]["on_current_path"] is True  # the title


def test_a_deleted_subtree_leaves_the_index(client: TestClient, migrated_url: str) -> None:
    """Deleting a message deletes its subtree (ON DELETE CASCADE); every deleted message
    leaves the index (the SQLite triggers fire for cascaded rows too)."""
    chat = new_chat(client, ALICE, title="kept title")
    root = new_message(client, ALICE, chat["id"], content="subtree root")
    engine = make_engine(migrated_url)
    try:
        with engine.begin() as conn:
            rows = [
                {"id": uuid.uuid4(), "parent": uuid.UUID(root["id"]), "text": "child cascade"},
            ]
            rows.append({"id": uuid.uuid4(), "parent": rows[0]["id"], "text": "grandchild cascade"})
            for row in rows:
                now = datetime.now(UTC)
                conn.execute(
                    sa.insert(Message).values(
                        id=row["id"],
                        chat_id=uuid.UUID(chat["id"]),
                        parent_id=row["parent"],
                        role="user",
                        content=row["text"],
                        status="complete",
                        created_at=now,
                        updated_at=now,
                    )
                )
        assert len(found(client, "cascade")) == 1
        assert found(client, "cascade")[0]["hits"] == 2
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM messages WHERE content = 'subtree root'"))
            assert conn.scalar(sa.text("SELECT count(*) FROM messages")) == 0
            if engine.dialect.name == "sqlite":  # only the title's row is left
                assert conn.scalar(sa.text("SELECT count(*) FROM search_docs")) == 1
                assert conn.scalar(sa.text("SELECT count(*) FROM search_fts")) == 1
    finally:
        engine.dispose()
    assert found(client, "cascade") == [] and found(client, "subtree") == []
    assert found(client, "kept")[0]["chat_id"] == chat["id"]
