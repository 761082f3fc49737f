"""Windows of a chat's current branch for a long chat's page: `after` pages downward,
`around` opens the window holding a message (a search hit 400 messages back), each with
has_earlier / has_later at its edges; a cursor off the current branch is a 404."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from db_api.models import Chat
from tests.db_api.conftest import ALICE, new_chat, new_message, new_turn, path_of

BOB = {"X-Owner": "bob"}


def _window(client: TestClient, chat_id: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/chats/{chat_id}", params=params, headers=ALICE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in messages]


def _long_chat(client: TestClient, turns: int) -> tuple[str, list[dict[str, Any]]]:
    chat = new_chat(client, ALICE)
    for i in range(turns):
        new_turn(client, ALICE, chat["id"], f"q{i}")
    return chat["id"], path_of(client, ALICE, chat["id"])


def test_after_pages_down_to_the_leaf(client: TestClient) -> None:
    chat_id, full = _long_chat(client, 12)
    pages = [_window(client, chat_id, limit=10, after=full[0]["id"])]
    while pages[-1]["has_later"]:
        pages.append(_window(client, chat_id, limit=10, after=pages[-1]["messages"][-1]["id"]))
    assert [len(p["messages"]) for p in pages] == [10, 10, 3]
    assert [m for p in pages for m in p["messages"]] == full[1:]
    assert all(p["has_earlier"] for p in pages)
    # Exactly a window's worth below: nothing later; the leaf has nothing below it.
    exact = _window(client, chat_id, limit=4, after=full[-5]["id"])
    assert exact["messages"] == full[-4:] and exact["has_later"] is False
    leaf = _window(client, chat_id, limit=4, after=full[-1]["id"])
    assert leaf["messages"] == [] and leaf["has_later"] is False
    # Without limit: the whole branch below.
    assert _window(client, chat_id, after=full[5]["id"])["messages"] == full[6:]


def test_the_latest_window_has_nothing_later(client: TestClient) -> None:
    chat_id, full = _long_chat(client, 6)
    latest = _window(client, chat_id, limit=5)
    assert latest["messages"] == full[-5:]
    assert (latest["has_earlier"], latest["has_later"]) == (True, False)


def test_around_a_message_far_back(client: TestClient) -> None:
    chat_id, full = _long_chat(client, 60)  # 120 messages
    target = full[20]
    page = _window(client, chat_id, limit=10, around=target["id"])
    # Half the window above (the message included), the rest below.
    assert page["messages"] == full[15:25]
    assert (page["has_earlier"], page["has_later"]) == (True, True)
    # The windows continue without gap or overlap in both directions.
    up = _window(client, chat_id, limit=10, before=page["messages"][0]["id"])
    down = _window(client, chat_id, limit=10, after=page["messages"][-1]["id"])
    assert up["messages"] == full[5:15] and down["messages"] == full[25:35]
    assert (up["has_earlier"], up["has_later"]) == (True, True)


@pytest.mark.parametrize(
    ("index", "expected", "earlier", "later"),
    [
        (0, slice(0, 10), False, True),  # the first message: nothing above to show
        (2, slice(0, 10), False, True),
        (-1, slice(-10, None), True, False),  # the leaf: the window fills from above
        (-3, slice(-10, None), True, False),
    ],
)
def test_around_near_the_ends_fills_the_window(
    client: TestClient, index: int, expected: slice, earlier: bool, later: bool
) -> None:
    chat_id, full = _long_chat(client, 15)
    page = _window(client, chat_id, limit=10, around=full[index]["id"])
    assert full[index] in page["messages"]
    if index in (0, 2):
        # Fewer above than half: the window still holds the message, below it fills up.
        assert page["messages"][0] == full[0]
    else:
        assert page["messages"] == full[expected]
    assert (page["has_earlier"], page["has_later"]) == (earlier, later)


def test_around_without_limit_is_the_whole_branch(client: TestClient) -> None:
    chat_id, full = _long_chat(client, 4)
    page = _window(client, chat_id, around=full[3]["id"])
    assert page["messages"] == full
    assert (page["has_earlier"], page["has_later"]) == (False, False)


def test_a_cursor_off_the_current_branch_is_not_found(client: TestClient) -> None:
    chat_id, full = _long_chat(client, 3)
    # A second version of the second question: the current branch goes through it now.
    other = new_message(client, ALICE, chat_id, content="edited", parent_id=full[1]["id"])
    assert path_of(client, ALICE, chat_id)[-1]["id"] == other["id"]
    old = full[4]["id"]  # on the old branch only
    for cursor in ("after", "around"):
        response = client.get(f"/chats/{chat_id}", params={cursor: old}, headers=ALICE)
        assert response.status_code == 404, response.text
        assert "current branch" in response.json()["detail"]
    # `before` still walks up from any message of the chat.
    assert _ids(_window(client, chat_id, before=old)["messages"]) == _ids(full[:4])


def test_cursors_are_owner_scoped_and_single(client: TestClient) -> None:
    chat_id, full = _long_chat(client, 3)
    elsewhere, _ = _long_chat(client, 1)
    # Another chat's message, or another owner's chat: 404, nothing leaks.
    theirs = path_of(client, ALICE, elsewhere)[0]["id"]
    assert (
        client.get(f"/chats/{chat_id}", params={"around": theirs}, headers=ALICE).status_code == 404
    )
    assert (
        client.get(f"/chats/{chat_id}", params={"around": full[0]["id"]}, headers=BOB).status_code
        == 404
    )
    both = {"before": full[2]["id"], "after": full[1]["id"]}
    response = client.get(f"/chats/{chat_id}", params=both, headers=ALICE)
    assert response.status_code == 422 and "one cursor" in response.text


def test_an_empty_chat_has_no_message_to_open_at(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    other, full = _long_chat(client, 1)
    del other
    response = client.get(f"/chats/{chat['id']}", params={"around": full[0]["id"]}, headers=ALICE)
    assert response.status_code == 404


def test_a_window_far_back_costs_a_fixed_number_of_statements(
    client: TestClient,
) -> None:
    """The walk from the leaf to the message is one recursive query, however far."""
    chat_id, full = _long_chat(client, 40)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    costs = []
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        for target in (full[-20], full[20]):  # 19 and 59 messages back
            statements.clear()
            _window(client, chat_id, limit=6, around=target["id"])
            costs.append(len(statements))
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert costs[0] == costs[1] and costs[0] <= 8


def test_the_chat_list_reads_the_owner_index(client: TestClient, migrated_url: str) -> None:
    """The sidebar's first page of a person with thousands of chats is read from the
    (owner, updated_at) index, newest first, not by sorting all of them."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "owner": ALICE["X-Owner"] if i % 2 else "bob",
            "created_at": now,
            "updated_at": now - timedelta(seconds=i),
            "current_leaf_id": None,
        }
        for i in range(4000)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(Chat), rows)
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE chats"))
    query = (
        sa.select(Chat.id)
        .where(Chat.owner == ALICE["X-Owner"])
        .order_by(Chat.updated_at.desc(), Chat.id.desc())
        .limit(51)
    )
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        plan = " ".join(str(row) for row in conn.execute(sa.text(explain + sql)))
    assert "ix_chats_owner_updated_at" in plan, plan
    listed = client.get("/chats", params={"limit": 51}, headers=ALICE).json()
    assert [c["id"] for c in listed] == [
        str(r["id"]) for r in rows if r["owner"] == ALICE["X-Owner"]
    ][:51]


def test_a_page_is_its_three_reads_in_one(client: TestClient) -> None:
    """GET /page answers what GET /chats/{id}?limit=, GET /chats and GET /presets answer,
    in one request; another owner's chat is a 404, and without `chat` only the lists."""
    chat_id, _ = _long_chat(client, 6)
    for i in range(3):
        new_chat(client, ALICE, title=f"other {i}")
    preset = {"name": "Pirate", "system_prompt": "Arr.", "params": {}}
    assert client.post("/presets", json=preset, headers=ALICE).status_code == 201
    client.post("/presets", json={**preset, "name": "Poet"}, headers=BOB)

    page = client.get("/page", params={"chat": chat_id, "limit": 5, "chats": 2}, headers=ALICE)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["chat"] == _window(client, chat_id, limit=5)
    listed = client.get("/chats", params={"limit": 2}, headers=ALICE).json()
    assert body["chats"] == listed and len(listed) == 2
    assert body["presets"] == client.get("/presets", headers=ALICE).json()
    assert [p["name"] for p in body["presets"]] == ["Pirate"]

    lists = client.get("/page", headers=ALICE).json()
    assert lists["chat"] is None and len(lists["chats"]) == 4
    assert client.get("/page", params={"chat": chat_id}, headers=BOB).status_code == 404
    missing = client.get("/page", params={"chat": str(uuid.uuid4())}, headers=ALICE)
    assert missing.status_code == 404
    assert client.get("/page", params={"limit": 0}, headers=ALICE).status_code == 422
