"""Updating one message (a streaming answer is written as it grows), owner-scoped
through its chat."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, HTTPException, status

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
from db_api.schemas import MessageOut, MessageUpdate, check_limits

router = APIRouter(
    tags=["messages"], dependencies=[Depends(require_token)], responses=COMMON_RESPONSES
)


@router.patch(
    "/messages/{message_id}",
    response_model=MessageOut,
    responses={
        404: {"model": ErrorOut, "description": "No such message for this owner"},
        **BODY_RESPONSES,
    },
)
def update_message(
    message_id: uuid.UUID,
    body: MessageUpdate,
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> MessageOut:
    """Change the fields sent; the chat's updated_at moves with it."""
    check_limits(body, settings)
    try:
        message = crud.update_message(
            session, owner, message_id, body.model_dump(exclude_unset=True)
        )
    except crud.NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="message not found") from None
    return MessageOut.model_validate(message)
