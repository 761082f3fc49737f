"""Per-chat sampling settings, who titled a chat, presets (roles) and login sessions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.db_api.conftest import ALICE, BOB, new_chat

FULL = {
    "temperature": 0.7,
    "top_p": 0.95,
    "max_tokens": 512,
    "plan_mode": True,
    "planner_model": "big",
}


def test_chat_params_are_stored_and_replaced(client: TestClient) -> None:
    chat = new_chat(client, ALICE, params=FULL)
    assert chat["params"] == FULL
    assert client.get(f"/chats/{chat['id']}", headers=ALICE).json()["params"] == FULL
    # PATCH replaces the settings as a whole; null values mean "the server's default".
    r = client.patch(
        f"/chats/{chat['id']}", json={"params": {"temperature": 0, "top_p": None}}, headers=ALICE
    )
    assert r.json()["params"] == {"temperature": 0}
    assert client.patch(f"/chats/{chat['id']}", json={}, headers=ALICE).json()["params"] == {
        "temperature": 0
    }
    edges = {"temperature": 2, "top_p": 0, "max_tokens": 32768}
    r = client.patch(f"/chats/{chat['id']}", json={"params": edges}, headers=ALICE)
    assert r.json()["params"] == edges
    assert (
        client.patch(f"/chats/{chat['id']}", json={"params": {}}, headers=ALICE).json()["params"]
        == {}
    )
    listed = client.get("/chats", headers=ALICE).json()
    assert listed[0]["params"] == {}


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": -1},
        {"temperature": 99},
        {"temperature": "0.5"},
        {"temperature": True},
        {"top_p": 1.5},
        {"top_p": -0.1},
        {"max_tokens": 0},
        {"max_tokens": 32769},
        {"max_tokens": 1.5},
        {"plan_mode": "yes"},
        {"plan_mode": 1},
        {"planner_model": ""},
        {"planner_model": "m" * 257},
        {"seed": 1},
        [],
        None,
    ],
)
def test_bad_chat_params_change_nothing(client: TestClient, params: Any) -> None:
    chat = new_chat(client, ALICE, params={"temperature": 1})
    assert client.post("/chats", json={"params": params}, headers=ALICE).status_code == 422
    r = client.patch(f"/chats/{chat['id']}", json={"params": params}, headers=ALICE)
    assert r.status_code == 422, r.text
    listed = client.get("/chats", headers=ALICE).json()
    assert [c["params"] for c in listed] == [{"temperature": 1}]


def test_a_model_title_never_replaces_the_owners(client: TestClient) -> None:
    chat = new_chat(client, ALICE, title="first words")
    assert chat["title_source"] == "auto"
    url = f"/chats/{chat['id']}"
    named = client.patch(
        url, json={"title": "Model's idea", "title_source": "model"}, headers=ALICE
    )
    assert (named.json()["title"], named.json()["title_source"]) == ("Model's idea", "model")
    mine = client.patch(url, json={"title": "Mine", "title_source": "user"}, headers=ALICE)
    assert mine.json()["title_source"] == "user"
    r = client.patch(
        url, json={"title": "Late model title", "title_source": "model"}, headers=ALICE
    )
    assert r.status_code == 409
    assert client.get(url, headers=ALICE).json()["title"] == "Mine"
    assert client.patch(url, json={"title_source": "robot"}, headers=ALICE).status_code == 422


# --- presets ------------------------------------------------------------------------


def _preset(client: TestClient, owner: dict[str, str], **fields: Any) -> dict[str, Any]:
    r = client.post("/presets", json=fields, headers=owner)
    assert r.status_code == 201, r.text
    preset: dict[str, Any] = r.json()
    return preset


def test_preset_crud(client: TestClient) -> None:
    pirate = _preset(
        client,
        ALICE,
        name="Pirate",
        system_prompt="Talk like a pirate.",
        model="small",
        params=FULL,
    )
    assert (pirate["name"], pirate["params"], pirate["model"]) == ("Pirate", FULL, "small")
    coder = _preset(client, ALICE, name="Coder")
    assert (coder["system_prompt"], coder["model"], coder["params"]) == (None, None, {})
    listed = client.get("/presets", headers=ALICE).json()
    assert [p["name"] for p in listed] == ["Coder", "Pirate"]
    assert client.get(f"/presets/{pirate['id']}", headers=ALICE).json() == pirate

    r = client.patch(
        f"/presets/{pirate['id']}",
        json={"name": "Captain", "model": None, "params": {"temperature": 1.5}},
        headers=ALICE,
    )
    assert r.status_code == 200
    body = r.json()
    assert (body["name"], body["model"], body["system_prompt"]) == (
        "Captain",
        None,
        "Talk like a pirate.",
    )
    assert body["params"] == {"temperature": 1.5}
    assert client.delete(f"/presets/{pirate['id']}", headers=ALICE).status_code == 204
    assert client.get(f"/presets/{pirate['id']}", headers=ALICE).status_code == 404
    assert client.delete(f"/presets/{pirate['id']}", headers=ALICE).status_code == 404
    assert [p["name"] for p in client.get("/presets", headers=ALICE).json()] == ["Coder"]


def test_preset_names_are_unique_per_owner(client: TestClient) -> None:
    first = _preset(client, ALICE, name="Tutor")
    other = _preset(client, ALICE, name="Poet")
    r = client.post("/presets", json={"name": "Tutor"}, headers=ALICE)
    assert r.status_code == 409 and "Tutor" in r.json()["detail"]
    r = client.patch(f"/presets/{other['id']}", json={"name": "Tutor"}, headers=ALICE)
    assert r.status_code == 409
    assert client.get(f"/presets/{other['id']}", headers=ALICE).json()["name"] == "Poet"
    # Another person may use the same name; renaming to itself is fine.
    assert _preset(client, BOB, name="Tutor")["name"] == "Tutor"
    r = client.patch(f"/presets/{first['id']}", json={"name": "Tutor"}, headers=ALICE)
    assert r.status_code == 200


def test_concurrent_creates_of_one_name_leave_one(client: TestClient) -> None:
    def create(_: int) -> int:
        status: int = client.post("/presets", json={"name": "Same"}, headers=ALICE).status_code
        return status

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(create, range(6)))
    assert statuses == [201] + [409] * 5
    assert len(client.get("/presets", headers=ALICE).json()) == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "n" * 10_000}, "at most 100"),
        ({"name": "n" * 101}, "at most 100"),
        ({"name": ""}, "must not be empty"),
        ({"name": "  "}, "must not be empty"),
        ({"name": "a\x00"}, "NUL"),
        ({}, "Field required"),
        ({"name": "ok", "params": {"temperature": 99}}, "less than or equal to 2"),
        ({"name": "ok", "system_prompt": "s" * 100_001}, "limit is 100000"),
        ({"name": "ok", "model": ""}, "must not be empty"),
        ({"name": "ok", "owner": "bob"}, "Extra inputs"),
    ],
)
def test_bad_presets(client: TestClient, body: dict[str, Any], words: str) -> None:
    existing = _preset(client, ALICE, name="keep")
    r = client.post("/presets", json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    assert words in str(r.json()["detail"])
    if body:
        patch = {**body, "name": None} if "name" not in body else body
        r = client.patch(f"/presets/{existing['id']}", json=patch, headers=ALICE)
        assert r.status_code == 422, r.text
    assert client.get("/presets", headers=ALICE).json() == [existing]


# --- sessions -----------------------------------------------------------------------


def test_session_lifecycle(client: TestClient) -> None:
    r = client.post("/sessions", headers=ALICE)
    assert r.status_code == 201
    sid = r.json()["id"]
    other = client.post("/sessions", headers=ALICE).json()["id"]
    assert sid != other
    assert client.get(f"/sessions/{sid}", headers=ALICE).json()["id"] == sid
    assert client.get(f"/sessions/{sid}", headers=BOB).status_code == 404
    assert client.delete(f"/sessions/{sid}", headers=BOB).status_code == 404
    assert client.delete(f"/sessions/{sid}", headers=ALICE).status_code == 204
    assert client.get(f"/sessions/{sid}", headers=ALICE).status_code == 404
    assert client.delete(f"/sessions/{sid}", headers=ALICE).status_code == 404
    assert client.get(f"/sessions/{other}", headers=ALICE).status_code == 200  # the other login
    assert client.get("/sessions/not-a-uuid", headers=ALICE).status_code == 422
