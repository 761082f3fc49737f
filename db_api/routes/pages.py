"""What one page of chat_ui shows, read in one request: a chat's latest window, the
newest chats of the sidebar and the owner's presets (its roles).

A chat page is three reads; as three requests each paid db_api's own cost (HTTP,
routing, dependencies, a pooled session, validation and serialization: about as much as
the reads themselves) and chat_ui's client's, most of the page's time. Each part is the
same as its own route answers (GET /chats/{id}?limit=, GET /chats, GET /presets).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Response
from pydantic import BaseModel

from db_api import crud
from db_api.routes import deps
from db_api.routes.chats import MAX_WINDOW, NOT_FOUND, chat_page
from db_api.schemas import ChatOut, ChatWithMessages, PresetOut

router = deps.owner_scoped_router("pages")


class PageOut(BaseModel):
    # The chat asked for (`chat`), its latest `limit` messages of the current branch;
    # null when none was asked for.
    chat: ChatWithMessages | None
    # The newest `chats` chats, most recently updated first (as GET /chats).
    chats: list[ChatOut]
    # The first `presets` presets by name (as GET /presets).
    presets: list[PresetOut]


# Answered as JSON made here: FastAPI would dump the model to a dict, validate that dict
# against PageOut again and serialize it, three passes over every message of the window
# for one the model already passed (PageOut is still the documented answer).
@router.get("/page", response_model=PageOut, responses=NOT_FOUND)
def page(
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    chat: Annotated[uuid.UUID | None, Query(description="A chat of the owner's")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_WINDOW, description="Messages of the chat's window")
    ] = 50,
    chats: Annotated[int, Query(ge=1, le=200, description="Chats of the list")] = 50,
    presets: Annotated[int, Query(ge=1, le=500, description="Presets of the list")] = 200,
) -> Response:
    """A page's reads in one: the chat's latest window (404 when it is not the owner's),
    the newest chats and the presets."""
    window = None if chat is None else chat_page(crud.get_chat(session, owner, chat, limit=limit))
    listed = crud.list_chats(session, owner, limit=chats, offset=0)
    roles = crud.list_presets(session, owner, limit=presets, offset=0)
    out = PageOut(
        chat=window,
        chats=[ChatOut.model_validate(c) for c in listed],
        presets=[PresetOut.model_validate(p) for p in roles],
    )
    return Response(out.model_dump_json(), media_type="application/json")
