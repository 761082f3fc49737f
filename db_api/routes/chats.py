"""Chats and their messages, scoped by X-Owner."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from db_api import crud
from db_api.routes.deps import (
    BODY_RESPONSES,
    COMMON_RESPONSES,
    ErrorOut,
    OwnerDep,
    SessionDep,
    SettingsDep,
    require_token,
)
from db_api.schemas import (
    ChatCreate,
    ChatOut,
    ChatUpdate,
    ChatWithMessages,
    MessageCreate,
    MessageOut,
    check_limits,
)

# Deep paging is what a scraper does, not a sidebar; the bound keeps OFFSET cheap.
MAX_OFFSET = 100_000
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such chat for this owner"}
}

router = APIRouter(
    tags=["chats"], dependencies=[Depends(require_token)], responses=COMMON_RESPONSES
)


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="chat not found")


@router.get("/chats", response_model=list[ChatOut])
def list_chats(
    owner: OwnerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ChatOut]:
    """The owner's chats without messages, most recently updated first."""
    chats = crud.list_chats(session, owner, limit=limit, offset=offset)
    return [ChatOut.model_validate(chat) for chat in chats]


@router.post(
    "/chats", status_code=status.HTTP_201_CREATED, response_model=ChatOut, responses=BODY_RESPONSES
)
def create_chat(
    body: ChatCreate, owner: OwnerDep, session: SessionDep, settings: SettingsDep
) -> ChatOut:
    check_limits(body, settings)
    chat = crud.create_chat(session, owner, body.model_dump())
    return ChatOut.model_validate(chat)


@router.get("/chats/{chat_id}", response_model=ChatWithMessages, responses=NOT_FOUND)
def get_chat(chat_id: uuid.UUID, owner: OwnerDep, session: SessionDep) -> ChatWithMessages:
    """The chat with its messages, oldest first."""
    try:
        chat, messages = crud.get_chat(session, owner, chat_id)
    except crud.NotFound:
        raise _not_found() from None
    return ChatWithMessages(
        **ChatOut.model_validate(chat).model_dump(),
        messages=[MessageOut.model_validate(m) for m in messages],
    )


@router.patch("/chats/{chat_id}", response_model=ChatOut, responses={**NOT_FOUND, **BODY_RESPONSES})
def update_chat(
    chat_id: uuid.UUID,
    body: ChatUpdate,
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ChatOut:
    """Change the fields sent (null clears one); updated_at moves when anything changed."""
    check_limits(body, settings)
    try:
        chat = crud.update_chat(session, owner, chat_id, body.model_dump(exclude_unset=True))
    except crud.NotFound:
        raise _not_found() from None
    return ChatOut.model_validate(chat)


@router.delete(
    "/chats/{chat_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=NOT_FOUND,
)
def delete_chat(chat_id: uuid.UUID, owner: OwnerDep, session: SessionDep) -> Response:
    """Delete the chat and all its messages."""
    try:
        crud.delete_chat(session, owner, chat_id)
    except crud.NotFound:
        raise _not_found() from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/chats/{chat_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    responses={**NOT_FOUND, **BODY_RESPONSES},
)
def add_message(
    chat_id: uuid.UUID,
    body: MessageCreate,
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> MessageOut:
    """Append a message; the chat's updated_at moves with it."""
    check_limits(body, settings)
    body.check_content()
    try:
        message = crud.add_message(
            session, owner, chat_id, role=body.role, content=body.content, status=body.status
        )
    except crud.NotFound:
        raise _not_found() from None
    return MessageOut.model_validate(message)
