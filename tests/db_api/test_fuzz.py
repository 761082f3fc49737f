"""Schemathesis fuzzes the OpenAPI schema against a real app over a real (migrated)
SQLite database with all its checks: no 5xx, every response matches the published
schema, schema-valid requests are accepted and invalid ones rejected.

Valid ids and owner keys that the fuzzer generates are swapped for a real chat, message,
preset, session and owner, so the generated bodies reach the database instead of stopping
at a 404; invalid ones are kept, so the 422 paths are fuzzed too.

The run is derandomized (and keeps no example database): the same examples in the same
order on every run and every machine, so a failure is repeatable and the suite never
fails at random.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import positive_data_acceptance

from db_api.db import upgrade_database
from db_api.main import create_app
from db_api.models import Chat, LoginSession, Preset
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
schema.config.generation.update(
    max_examples=EXAMPLES_PER_OPERATION, deterministic=True, database="none"
)


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


# The fuzzing owner's objects that path parameters are swapped for (kept across examples).
REAL: dict[str, str] = {}


def _real_ids(app: FastAPI) -> dict[str, str]:
    """A chat (its current leaf a message), a preset and a session of the fuzzing owner;
    one query checks they still exist, and what a DELETE removed is made again."""
    if REAL:
        with app.state.engine.connect() as conn:
            alive = conn.execute(
                sa.select(
                    sa.exists().where(
                        Chat.id == uuid.UUID(REAL["chat_id"]),
                        Chat.current_leaf_id == uuid.UUID(REAL["message_id"]),
                    ),
                    sa.exists().where(Preset.id == uuid.UUID(REAL["preset_id"])),
                    sa.exists().where(LoginSession.id == uuid.UUID(REAL["session_id"])),
                )
            ).one()
        if all(alive):
            return REAL
    with TestClient(app, headers={**AUTH, **OWNER}) as client:
        presets = client.get("/presets").json()
        REAL["preset_id"] = (
            presets[0]["id"]
            if presets
            else client.post("/presets", json={"name": "seed"}).json()["id"]
        )
        REAL["session_id"] = client.post("/sessions").json()["id"]
        chat = client.post("/chats", json={}).json()
        turn = client.post(f"/chats/{chat['id']}/turns", json={"content": "seed"}).json()
        REAL["chat_id"], REAL["message_id"] = chat["id"], turn["assistant"]["id"]
    return REAL


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
    # Exceptions: data, not schema, decides these 422s. How many versions a message has
    # (a version number beyond them), an import file that is schema-valid yet
    # refused whole (a message that is its own parent, a repeated id), and a chat window
    # asked with two cursors at once (OpenAPI cannot say "one of these parameters").
    cursors = {"before", "after", "around"} & set(case.query or {})
    excluded = []
    if (
        case.path == "/import"
        or (
            case.path == "/chats/{chat_id}/current"
            and isinstance(case.body, dict)
            and "version" in case.body
        )
        or (case.path == "/chats/{chat_id}" and len(cursors) > 1)
    ):
        excluded.append(positive_data_acceptance)
    case.call_and_validate(headers=AUTH, excluded_checks=excluded)
