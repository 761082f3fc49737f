"""One message: read, write as it streams (in revision order), continue, expire, delete.
Owner-scoped through its chat."""

from __future__ import annotations

import uuid
from typing import Any

from db_api import crud
from db_api.routes import deps
from db_api.schemas import (
    ExpireBody,
    MessageConflict,
    MessageOut,
    MessageUpdate,
    ReopenBody,
    check_limits,
)

router = deps.owner_scoped_router("messages")

NOT_FOUND = deps.answers(404, "No such message for this owner")


def _write_answers(conflict: str) -> dict[int | str, dict[str, Any]]:
    """What a write to a message may answer besides the message: 404, 400 for a body
    that is not JSON, and 409 with the stored message when it is refused (`conflict`
    says when)."""
    return {**NOT_FOUND, **deps.BODY_RESPONSES, **deps.answers(409, conflict, MessageConflict)}


@router.get("/messages/{message_id}", response_model=MessageOut, responses=NOT_FOUND)
def get_message(
    message_id: uuid.UUID, owner: deps.OwnerDep, session: deps.SessionDep
) -> MessageOut:
    """The message, with its place among its versions."""
    message, versions = crud.get_message(session, owner, message_id)
    return MessageOut.of(message, versions.ids)


@router.patch(
    "/messages/{message_id}",
    response_model=MessageOut,
    responses=_write_answers("An older revision, or a final answer sent back to pending/streaming"),
)
def update_message(
    message_id: uuid.UUID,
    body: MessageUpdate,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    settings: deps.SettingsDep,
) -> MessageOut:
    """Change the fields sent; the chat's updated_at moves with it. With `revision`, the
    write applies only if it is newer than the stored revision (else 409 and the stored
    message); without, the revision moves by one, except for a write of only
    lease_owner/lease_s/stop_requested. `lease_s` sets lease_until to now + lease_s
    (db_api's clock), null clears it. A final status never returns to pending/streaming."""
    message, versions = crud.update_message(session, owner, message_id, body.changes(settings))
    return MessageOut.of(message, versions.ids)


@deps.deletes(router, "/messages/{message_id}", NOT_FOUND)
def delete_message(message_id: uuid.UUID, owner: deps.OwnerDep, session: deps.SessionDep) -> None:
    """Delete the message and every message below it. If the current branch went with it,
    the newest message left below its parent (else in the chat) becomes the current leaf."""
    crud.delete_message(session, owner, message_id)


@router.post(
    "/messages/{message_id}/reopen",
    response_model=MessageOut,
    responses=_write_answers("A user or system message, or an answer still running"),
)
def reopen_message(
    message_id: uuid.UUID, body: ReopenBody, owner: deps.OwnerDep, session: deps.SessionDep
) -> MessageOut:
    """Set a finished answer back to pending to continue it (revision + 1): its text and
    counts stay, its end (error, reason, finish_reason, stop_requested) is cleared."""
    lease = crud.Lease(owner=body.lease_owner, seconds=body.lease_s)
    message, versions = crud.reopen_message(session, owner, message_id, lease)
    return MessageOut.of(message, versions.ids)


@router.post(
    "/messages/{message_id}/expire",
    response_model=MessageOut,
    responses=_write_answers("The answer is not running, or a live lease holds it"),
)
def expire_message(
    message_id: uuid.UUID,
    body: ExpireBody,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    settings: deps.SettingsDep,
) -> MessageOut:
    """Mark a running (pending/streaming) answer interrupted with `reason`, only if its
    lease is absent or expired, or held under `lease_owner` (the caller's own name, after
    a restart): the check and the write are one statement."""
    check_limits(body, settings)
    message, versions = crud.expire_message(
        session,
        owner,
        message_id,
        reason=body.reason,
        error=body.error,
        lease_owner=body.lease_owner,
    )
    return MessageOut.of(message, versions.ids)
