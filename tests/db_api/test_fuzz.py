"""Schemathesis fuzzes the OpenAPI schema against a real app over a real (migrated)
SQLite database with all its checks: no 5xx, every response matches the published
schema, schema-valid requests are accepted and invalid ones rejected.

Valid ids and owner keys that the fuzzer generates are swapped for a real chat, message
and owner, so the generated bodies reach the database instead of stopping at a 404;
invalid ones are kept, so the 422 paths are fuzzed too.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import positive_data_acceptance

from db_api.db import upgrade_database
from db_api.main import create_app
from db_api.routes.deps import OWNER_RE
from tests.db_api.conftest import make_settings

OWNER = {"X-Owner": "fuzzer"}
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_OPERATION = 30

# schemathesis binds the app when it collects the operations, so the app exists at
# import; building it does not touch the database, which the fixture below creates
# (migrated) before the first request and removes afterwards.
FUZZ_DB = Path(tempfile.gettempdir()) / f"parlor-fuzz-{uuid.uuid4().hex}.db"
FUZZ_APP = create_app(make_settings(f"sqlite:///{FUZZ_DB}", internal_token=TOKEN))
schema = schemathesis.openapi.from_asgi("/openapi.json", FUZZ_APP)
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION)


@pytest.fixture(scope="module")
def fuzz_app() -> Iterator[FastAPI]:
    # One database for the whole run: state left by one example (chats, messages,
    # deletions) is what later examples run into, as in real use.
    upgrade_database(f"sqlite:///{FUZZ_DB}")
    yield FUZZ_APP
    FUZZ_APP.state.engine.dispose()
    for leftover in FUZZ_DB.parent.glob(FUZZ_DB.name + "*"):  # with WAL's -wal/-shm
        leftover.unlink()


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _real_ids(app: FastAPI) -> dict[str, str]:
    """A chat (with a message) of the fuzzing owner; recreated when a DELETE removed it."""
    with TestClient(app, headers=AUTH) as client:
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
    # Every check schemathesis has (no 5xx, response schemas, documented status codes,
    # Allow headers, valid data accepted, invalid data rejected, ...).
    # The token goes with every call, like the CLI's -H; the auth checks then verify
    # that a request without it is refused.
    # A schema-valid import file can still be refused whole (a message that is its own
    # parent, a repeated id: 422), which a JSON Schema cannot express.
    excluded = [positive_data_acceptance] if case.operation.label == "POST /import" else []
    case.call_and_validate(headers=AUTH, excluded_checks=excluded)
