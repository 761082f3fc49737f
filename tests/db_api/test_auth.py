"""The internal token guards every route but /health and /metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.db_api.conftest import ALICE

TOKEN = "s3cret-internal-token"
ROUTES = [
    ("GET", "/chats", None),
    ("POST", "/chats", {}),
    ("GET", "/chats/00000000-0000-4000-8000-000000000000", None),
    ("PATCH", "/chats/00000000-0000-4000-8000-000000000000", {}),
    ("DELETE", "/chats/00000000-0000-4000-8000-000000000000", None),
    ("POST", "/chats/00000000-0000-4000-8000-000000000000/messages", {"role": "user"}),
    ("PATCH", "/messages/00000000-0000-4000-8000-000000000000", {}),
    ("GET", "/messages/00000000-0000-4000-8000-000000000000", None),
    ("DELETE", "/messages/00000000-0000-4000-8000-000000000000", None),
    ("POST", "/messages/00000000-0000-4000-8000-000000000000/reopen", {}),
    ("POST", "/messages/00000000-0000-4000-8000-000000000000/expire", {}),
    ("POST", "/chats/00000000-0000-4000-8000-000000000000/turns", {}),
    ("POST", "/chats/00000000-0000-4000-8000-000000000000/current", {}),
    ("GET", "/presets", None),
    ("POST", "/presets", {"name": "x"}),
    ("GET", "/presets/00000000-0000-4000-8000-000000000000", None),
    ("PATCH", "/presets/00000000-0000-4000-8000-000000000000", {}),
    ("DELETE", "/presets/00000000-0000-4000-8000-000000000000", None),
    ("POST", "/sessions", None),
    ("GET", "/sessions/00000000-0000-4000-8000-000000000000", None),
    ("DELETE", "/sessions/00000000-0000-4000-8000-000000000000", None),
]


@pytest.fixture
def guarded(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(internal_token=TOKEN)


@pytest.mark.parametrize(
    "auth",
    [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer ", "Bearer"],
)
def test_wrong_or_missing_token_is_401_everywhere(guarded: TestClient, auth: str | None) -> None:
    headers = dict(ALICE)
    if auth is not None:
        headers["Authorization"] = auth
    for method, url, body in ROUTES:
        r = guarded.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, (method, url, r.text)
        assert "internal token" in r.json()["detail"]
        assert r.headers["WWW-Authenticate"] == "Bearer"
    ok = {**ALICE, "Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/chats", headers=ok).json() == []  # nothing was created
    assert guarded.get("/presets", headers=ok).json() == []


def test_right_token_works(guarded: TestClient) -> None:
    headers = {**ALICE, "Authorization": f"Bearer {TOKEN}"}
    created = guarded.post("/chats", json={"title": "ok"}, headers=headers)
    assert created.status_code == 201
    assert [c["title"] for c in guarded.get("/chats", headers=headers).json()] == ["ok"]


def test_health_and_metrics_need_no_token(guarded: TestClient) -> None:
    assert guarded.get("/health").status_code == 200
    assert guarded.get("/metrics").status_code == 200


def test_no_token_configured_means_no_check(client: TestClient) -> None:
    r = client.get("/chats", headers={**ALICE, "Authorization": "Bearer anything"})
    assert r.status_code == 200
