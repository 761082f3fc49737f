"""A chat is a tree of messages: turns, edits (sibling questions), regenerations (sibling
answers), switching versions, deleting subtrees, and the current branch read in windows."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.db_api.conftest import ALICE, new_chat, new_message, new_turn, path_of

MISSING = "00000000-0000-4000-8000-000000000000"


def _ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in messages]


def _select(client: TestClient, chat_id: str, message_id: str, version: int | None = None) -> Any:
    body: dict[str, Any] = {"message_id": message_id}
    if version is not None:
        body["version"] = version
    return client.post(f"/chats/{chat_id}/current", json=body, headers=ALICE)


def test_turns_form_one_branch(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    sent = []
    for i in range(3):
        question, answer = new_turn(
            client, ALICE, chat["id"], f"q{i}", model="small", params={"temperature": 0.5}
        )
        assert answer["parent_id"] == question["id"]
        assert (question["role"], question["status"]) == ("user", "complete")
        assert (answer["role"], answer["status"], answer["content"]) == ("assistant", "pending", "")
        assert (answer["model"], answer["params"]) == ("small", {"temperature": 0.5})
        assert question["model"] is None and answer["revision"] == 0
        sent += [question, answer]
    messages = path_of(client, ALICE, chat["id"])
    assert _ids(messages) == _ids(sent)
    assert [m["parent_id"] for m in messages] == [None, *_ids(sent)[:-1]]
    assert all((m["version"], m["versions"]) == (1, 1) for m in messages)
    assert all(m["sibling_ids"] == [m["id"]] for m in messages)
    got = client.get(f"/chats/{chat['id']}", headers=ALICE).json()
    assert got["current_leaf_id"] == sent[-1]["id"] and got["has_earlier"] is False
    assert messages == sent  # what the turn answered is what is stored


def test_posted_messages_follow_the_current_leaf_or_the_parent_given(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    system = new_message(client, ALICE, chat["id"], role="system", content="Be brief.")
    question = new_message(client, ALICE, chat["id"], content="hi")
    assert (system["parent_id"], question["parent_id"]) == (None, system["id"])
    # Regenerate: a pending answer beside the old one, with the same parent.
    first = new_message(client, ALICE, chat["id"], role="assistant", content="one")
    again = new_message(
        client,
        ALICE,
        chat["id"],
        role="assistant",
        content="",
        status="pending",
        parent_id=question["id"],
        model="big",
        params={"temperature": 1.2, "seed": 7, "sampler": "greedy"},
    )
    assert again["parent_id"] == question["id"]
    assert (again["version"], again["versions"]) == (2, 2)
    assert again["sibling_ids"] == [first["id"], again["id"]]
    assert again["params"] == {"temperature": 1.2, "seed": 7, "sampler": "greedy"}
    assert _ids(path_of(client, ALICE, chat["id"])) == [system["id"], question["id"], again["id"]]
    # Explicit null: a new first turn.
    root = new_message(client, ALICE, chat["id"], content="another start", parent_id=None)
    assert root["parent_id"] is None and root["versions"] == 2
    assert _ids(path_of(client, ALICE, chat["id"])) == [root["id"]]


def test_edit_and_switch_versions(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    q1, a1 = new_turn(client, ALICE, chat["id"], "q1")
    q2, a2 = new_turn(client, ALICE, chat["id"], "q2")
    # Edit q2: a sibling question under a1, answered anew.
    q2b, a2b = new_turn(client, ALICE, chat["id"], "q2, edited", parent_id=a1["id"])
    assert (q2b["version"], q2b["versions"], q2b["sibling_ids"]) == (2, 2, [q2["id"], q2b["id"]])
    path = path_of(client, ALICE, chat["id"])
    assert _ids(path) == [q1["id"], a1["id"], q2b["id"], a2b["id"]]

    back = _select(client, chat["id"], q2b["id"], version=1)
    assert back.status_code == 200, back.text
    assert _ids(back.json()["messages"]) == [q1["id"], a1["id"], q2["id"], a2["id"]]
    assert back.json()["current_leaf_id"] == a2["id"]
    assert back.json()["messages"][2]["version"] == 1
    assert _ids(path_of(client, ALICE, chat["id"])) == _ids(back.json()["messages"])

    forth = _select(client, chat["id"], q2["id"], version=2).json()
    assert _ids(forth["messages"]) == [q1["id"], a1["id"], q2b["id"], a2b["id"]]
    # A message alone (no version): the branch through it.
    assert _ids(_select(client, chat["id"], q2["id"]).json()["messages"])[-1] == a2["id"]

    # Edit the first question: a new first turn.
    q1b, a1b = new_turn(client, ALICE, chat["id"], "q1, edited", parent_id=None)
    assert q1b["parent_id"] is None and q1b["sibling_ids"] == [q1["id"], q1b["id"]]
    assert _ids(path_of(client, ALICE, chat["id"])) == [q1b["id"], a1b["id"]]


@pytest.mark.parametrize("version", [0, 3, 99])
def test_version_out_of_range_changes_nothing(client: TestClient, version: int) -> None:
    chat = new_chat(client, ALICE)
    _, a1 = new_turn(client, ALICE, chat["id"], "q1")
    q2, _ = new_turn(client, ALICE, chat["id"], "q2")
    new_turn(client, ALICE, chat["id"], "q2b", parent_id=a1["id"])
    before = client.get(f"/chats/{chat['id']}", headers=ALICE).json()
    r = _select(client, chat["id"], q2["id"], version=version)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "version"]
    assert client.get(f"/chats/{chat['id']}", headers=ALICE).json() == before


def test_switching_follows_the_most_recent_descendants(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    q1, a1 = new_turn(client, ALICE, chat["id"], "q1")
    _, a2 = new_turn(client, ALICE, chat["id"], "q2")
    _, a3 = new_turn(client, ALICE, chat["id"], "q3")
    # Regenerate a1 and go on from there.
    a1b = new_message(client, ALICE, chat["id"], role="assistant", content="b", parent_id=q1["id"])
    _, a2b = new_turn(client, ALICE, chat["id"], "q2 on b")
    # Back to a1: its most recent descendant is a3, the end of that branch.
    assert _select(client, chat["id"], a1b["id"], version=1).json()["current_leaf_id"] == a3["id"]
    # Continue the old branch from its middle: a newer leaf below a1.
    _, a3c = new_turn(client, ALICE, chat["id"], "q3 again", parent_id=a2["id"])
    _select(client, chat["id"], a1["id"], version=2)
    assert path_of(client, ALICE, chat["id"])[-1]["id"] == a2b["id"]
    selected = _select(client, chat["id"], a1b["id"], version=1).json()
    assert selected["current_leaf_id"] == a3c["id"]
    assert selected["messages"][-3]["id"] == a2["id"]
    assert selected["messages"][-2]["versions"] == 2  # q3 and "q3 again"


def test_sibling_order_is_stable(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    question = new_message(client, ALICE, chat["id"], content="q")
    answers = [
        new_message(
            client, ALICE, chat["id"], role="assistant", content=f"a{i}", parent_id=question["id"]
        )
        for i in range(4)
    ]
    ids = _ids(answers)
    # Writing an older version (updated_at moves) does not reorder the versions.
    client.patch(f"/messages/{ids[0]}", json={"content": "rewritten"}, headers=ALICE)
    got = client.get(f"/messages/{ids[0]}", headers=ALICE).json()
    assert got["sibling_ids"] == ids and got["version"] == 1
    assert client.delete(f"/messages/{ids[1]}", headers=ALICE).status_code == 204
    got = client.get(f"/messages/{ids[3]}", headers=ALICE).json()
    assert got["sibling_ids"] == [ids[0], ids[2], ids[3]] and got["version"] == 3


def test_delete_removes_the_subtree_and_moves_the_current_leaf(
    client: TestClient, migrated_url: str
) -> None:
    chat = new_chat(client, ALICE)
    q1, a1 = new_turn(client, ALICE, chat["id"], "q1")
    q2, a2 = new_turn(client, ALICE, chat["id"], "q2")
    q3, a3 = new_turn(client, ALICE, chat["id"], "q3")
    q2b, a2b = new_turn(client, ALICE, chat["id"], "q2b", parent_id=a1["id"])  # newest branch
    other = new_chat(client, ALICE)
    new_turn(client, ALICE, other["id"], "elsewhere")

    # Deleting a branch that is not shown keeps the current leaf.
    assert client.delete(f"/messages/{q2['id']}", headers=ALICE).status_code == 204
    for gone in (q2, a2, q3, a3):
        assert client.get(f"/messages/{gone['id']}", headers=ALICE).status_code == 404
    path = path_of(client, ALICE, chat["id"])
    assert _ids(path) == [q1["id"], a1["id"], q2b["id"], a2b["id"]]
    assert path[2]["versions"] == 1

    # Deleting the shown branch: the newest message left below the parent.
    q2c, a2c = new_turn(client, ALICE, chat["id"], "q2c", parent_id=a1["id"])
    _select(client, chat["id"], q2b["id"])
    assert client.delete(f"/messages/{q2b['id']}", headers=ALICE).status_code == 204
    assert _ids(path_of(client, ALICE, chat["id"])) == [q1["id"], a1["id"], q2c["id"], a2c["id"]]
    # ... or the parent itself when nothing else is below it.
    assert client.delete(f"/messages/{q2c['id']}", headers=ALICE).status_code == 204
    assert _ids(path_of(client, ALICE, chat["id"])) == [q1["id"], a1["id"]]
    # Deleting a first turn: the newest message left in the chat, or nothing.
    q0, _ = new_turn(client, ALICE, chat["id"], "q0", parent_id=None)
    assert client.delete(f"/messages/{q0['id']}", headers=ALICE).status_code == 204
    assert _ids(path_of(client, ALICE, chat["id"])) == [q1["id"], a1["id"]]
    assert client.delete(f"/messages/{q1['id']}", headers=ALICE).status_code == 204
    got = client.get(f"/chats/{chat['id']}", headers=ALICE).json()
    assert (got["messages"], got["current_leaf_id"]) == ([], None)
    assert client.delete(f"/messages/{q1['id']}", headers=ALICE).status_code == 404

    # The rows are really gone; the other chat is untouched.
    from db_api.db import make_engine

    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM messages")).scalar_one()
    engine.dispose()
    assert count == 2
    assert len(path_of(client, ALICE, other["id"])) == 2
    # A new turn in the emptied chat starts a new first turn.
    q, _ = new_turn(client, ALICE, chat["id"], "fresh")
    assert q["parent_id"] is None


def test_deleting_a_chat_with_a_current_leaf(client: TestClient) -> None:
    """chats -> messages (current leaf) and messages -> chats (cascade) form a cycle;
    deleting a chat goes through it on both databases."""
    chat = new_chat(client, ALICE)
    new_turn(client, ALICE, chat["id"], "q")
    assert client.delete(f"/chats/{chat['id']}", headers=ALICE).status_code == 204
    assert client.get(f"/chats/{chat['id']}", headers=ALICE).status_code == 404


def test_bad_parent_is_404_and_stores_nothing(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    other = new_chat(client, ALICE)
    _, foreign = new_turn(client, ALICE, other["id"], "elsewhere")
    new_turn(client, ALICE, chat["id"], "q")
    before = client.get(f"/chats/{chat['id']}", headers=ALICE).json()
    for parent in (MISSING, foreign["id"]):
        r = client.post(
            f"/chats/{chat['id']}/turns", json={"content": "x", "parent_id": parent}, headers=ALICE
        )
        assert r.status_code == 404 and "parent message" in r.json()["detail"]
        body = {"role": "user", "content": "x", "parent_id": parent}
        r = client.post(f"/chats/{chat['id']}/messages", json=body, headers=ALICE)
        assert r.status_code == 404
        r = _select(client, chat["id"], parent)
        assert r.status_code == 404
    assert client.get(f"/chats/{chat['id']}", headers=ALICE).json() == before


# --- windows of the current branch --------------------------------------------------


def test_windows_page_up_the_branch(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    for i in range(12):
        new_turn(client, ALICE, chat["id"], f"q{i}")
    full = path_of(client, ALICE, chat["id"])
    assert len(full) == 24
    pages = []
    page = client.get(f"/chats/{chat['id']}", params={"limit": 10}, headers=ALICE).json()
    pages.append(page)
    while page["has_earlier"]:
        params = {"limit": 10, "before": page["messages"][0]["id"]}
        page = client.get(f"/chats/{chat['id']}", params=params, headers=ALICE).json()
        pages.append(page)
    assert [len(p["messages"]) for p in pages] == [10, 10, 4]
    assert [m for p in reversed(pages) for m in p["messages"]] == full
    # Exactly a window's worth left: no earlier ones.
    exact = client.get(
        f"/chats/{chat['id']}", params={"limit": 4, "before": full[4]["id"]}, headers=ALICE
    ).json()
    assert exact["messages"] == full[:4] and exact["has_earlier"] is False
    # Without limit, before gives the whole path above; the first message has none above.
    above = client.get(f"/chats/{chat['id']}", params={"before": full[5]["id"]}, headers=ALICE)
    assert above.json()["messages"] == full[:5]
    top = client.get(f"/chats/{chat['id']}", params={"before": full[0]["id"]}, headers=ALICE)
    assert top.json()["messages"] == [] and top.json()["has_earlier"] is False


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 1001}, 422),
        ({"limit": "x"}, 422),
        ({"before": "nope"}, 422),
        ({"before": MISSING}, 404),
        ({"limit": 5, "after": MISSING}, 404),
        ({"limit": 5, "around": MISSING}, 404),
        ({"around": "nope"}, 422),
        ({"limit": 5, "later": MISSING}, 422),
    ],
)
def test_bad_windows(client: TestClient, params: dict[str, Any], status: int) -> None:
    chat = new_chat(client, ALICE)
    new_turn(client, ALICE, chat["id"])
    assert client.get(f"/chats/{chat['id']}", params=params, headers=ALICE).status_code == status


def test_reading_a_long_chat_costs_the_same_statements_as_a_short_one(
    client: TestClient, migrated_url: str
) -> None:
    """No N+1: a window, a whole branch and a page of versions are a fixed number of
    queries however long the chat (counted at the engine)."""
    short = new_chat(client, ALICE)
    long = new_chat(client, ALICE)
    for i in range(3):
        new_turn(client, ALICE, short["id"], f"q{i}")
    for i in range(60):
        _, answer = new_turn(client, ALICE, long["id"], f"q{i}")
        if i % 10 == 0:  # some turns with versions
            new_message(
                client,
                ALICE,
                long["id"],
                role="assistant",
                content="v2",
                parent_id=answer["parent_id"],
            )
            new_turn(client, ALICE, long["id"], "after v2")
    engine = client.app.state.engine  # type: ignore[attr-defined]
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        costs = {}
        for name, chat in (("short", short), ("long", long)):
            for params in ({}, {"limit": 5}):
                statements.clear()
                assert client.get(f"/chats/{chat['id']}", params=params, headers=ALICE).is_success
                costs[name, bool(params)] = len(statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert costs["short", False] == costs["long", False]
    assert costs["short", True] == costs["long", True]
    assert costs["long", True] <= 5


# --- the invariants, under a long random (but seeded) sequence of operations --------


@dataclass
class Model:
    """What the tree should be: parents, creation order, the current leaf."""

    parent: dict[str, str | None] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    leaf: str | None = None

    def add(self, message: dict[str, Any]) -> None:
        self.parent[message["id"]] = message["parent_id"]
        self.order.append(message["id"])
        self.leaf = message["id"]

    def siblings(self, message_id: str) -> list[str]:
        parent = self.parent[message_id]
        return [m for m in self.order if self.parent[m] == parent]

    def below(self, message_id: str) -> list[str]:
        found = [message_id]
        for m in self.order:  # parents come before children
            if self.parent[m] in found:
                found.append(m)
        return found

    def newest_below(self, message_id: str) -> str:
        below = set(self.below(message_id))
        return [m for m in self.order if m in below][-1]

    def path(self) -> list[str]:
        path: list[str] = []
        node = self.leaf
        while node is not None:
            path.append(node)
            node = self.parent[node]
        return path[::-1]

    def delete(self, message_id: str) -> None:
        parent = self.parent[message_id]
        gone = set(self.below(message_id))
        self.order = [m for m in self.order if m not in gone]
        for m in gone:
            del self.parent[m]
        if self.leaf in gone:
            if parent is not None:
                self.leaf = self.newest_below(parent)
            else:
                self.leaf = self.order[-1] if self.order else None


def _check(client: TestClient, chat_id: str, model: Model) -> None:
    chat = client.get(f"/chats/{chat_id}", headers=ALICE).json()
    path = chat["messages"]
    assert _ids(path) == model.path()
    assert chat["current_leaf_id"] == model.leaf
    for i, m in enumerate(path):
        assert m["parent_id"] == (path[i - 1]["id"] if i else None)
        assert m["sibling_ids"] == model.siblings(m["id"])
        assert m["sibling_ids"][m["version"] - 1] == m["id"]
        assert m["versions"] == len(m["sibling_ids"])


def test_random_edits_keep_the_invariants(client: TestClient) -> None:
    rng = random.Random(20261203)  # fixed: the same sequence every run
    chat = new_chat(client, ALICE)
    model = Model()
    for step in range(40):
        path = model.path()
        action = rng.choice(["turn", "turn", "edit", "regenerate", "switch", "jump", "delete"])
        if action == "turn" or not path:
            question, answer = new_turn(client, ALICE, chat["id"], f"s{step}")
            model.add(question)
            model.add(answer)
        elif action == "edit":
            target = rng.choice([m for m in path if m in model.parent and m in path[::2]])
            question, answer = new_turn(
                client, ALICE, chat["id"], f"e{step}", parent_id=model.parent[target]
            )
            model.add(question)
            model.add(answer)
        elif action == "regenerate":
            target = rng.choice(path)
            answer = new_message(
                client,
                ALICE,
                chat["id"],
                role="assistant",
                content="",
                status="pending",
                parent_id=model.parent[target],
            )
            model.add(answer)
        elif action == "switch":
            target = rng.choice(path)
            version = rng.randint(1, len(model.siblings(target)))
            r = _select(client, chat["id"], target, version)
            assert r.status_code == 200, r.text
            model.leaf = model.newest_below(model.siblings(target)[version - 1])
        elif action == "jump":
            target = rng.choice(model.order)
            assert _select(client, chat["id"], target).status_code == 200
            model.leaf = model.newest_below(target)
        else:
            target = rng.choice(path[1:] or path)
            assert client.delete(f"/messages/{target}", headers=ALICE).status_code == 204
            model.delete(target)
        _check(client, chat["id"], model)
