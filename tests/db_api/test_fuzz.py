"""Schemathesis fuzzes the OpenAPI schema against a real app over a real (migrated)
SQLite database: no 5xx, and every response matches the published schema.

Valid ids and owner keys that the fuzzer generates are swapped for a real chat, message
and owner, so the generated bodies reach the database instead of stopping at a 404;
invalid ones are kept, so the 422 paths are fuzzed too.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from db_api.db import upgrade_database
from db_api.main import create_app
from db_api.routes.deps import OWNER_RE
from tests.db_api.conftest import make_settings

OWNER = {"X-Owner": "fuzzer"}
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # One database for the whole run: state left by one example (chats, messages,
    # deletions) is what later examples run into, as in real use.
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    upgrade_database(url)
    return create_app(make_settings(url))


# The schema does not depend on the database, so it is read from an app built at import
# (building one does not connect); each test sends to its own app over a fresh database.
# (schemathesis.pytest.from_fixture would be neater but breaks on pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(make_settings("sqlite://")).openapi())
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION)


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _real_ids(app: FastAPI) -> dict[str, str]:
    """A chat (with a message) of the fuzzing owner; recreated when a DELETE removed it."""
    with TestClient(app) as client:
        chats = client.get("/chats", headers=OWNER).json()
        if chats:
            chat = client.get(f"/chats/{chats[0]['id']}", headers=OWNER).json()
            if chat["messages"]:
                return {"chat_id": chat["id"], "message_id": chat["messages"][0]["id"]}
        else:
            chat = client.post("/chats", json={}, headers=OWNER).json()
        body = {"role": "user", "content": "seed"}
        message = client.post(f"/chats/{chat['id']}/messages", json=body, headers=OWNER).json()
        return {"chat_id": chat["id"], "message_id": message["id"]}


@schema.parametrize()
def test_api_conforms_and_never_fails(case: Any, fuzz_app: FastAPI) -> None:
    ids = _real_ids(fuzz_app)
    for name, value in list((case.path_parameters or {}).items()):
        if name in ids and _is_uuid(value):
            case.path_parameters[name] = ids[name]
    headers = case.headers or {}
    owner = headers.get("X-Owner", headers.get("x-owner"))
    if isinstance(owner, str) and OWNER_RE.fullmatch(owner):
        headers.pop("x-owner", None)
        headers["X-Owner"] = OWNER["X-Owner"]
        case.headers = headers
    case.call_and_validate(
        app=fuzz_app,
        checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
    )
