"""Login sessions: chat_ui records each login here and checks it on every request, so
that deleting the record (logout) ends every copy of the cookie."""

from __future__ import annotations

import uuid

from fastapi import status

from db_api import crud
from db_api.routes import deps
from db_api.schemas import SessionOut

router = deps.owner_scoped_router("sessions")

NOT_FOUND = deps.answers(404, "No such live session for this owner")


@router.post("/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionOut)
def create_session(owner: deps.OwnerDep, session: deps.SessionDep) -> SessionOut:
    """A new session record for the owner; its id is unguessable (a random UUID)."""
    return SessionOut.model_validate(crud.create_session(session, owner))


@router.get("/sessions/{session_id}", response_model=SessionOut, responses=NOT_FOUND)
def get_session(
    session_id: uuid.UUID, owner: deps.OwnerDep, session: deps.SessionDep
) -> SessionOut:
    """200 while the session is live; 404 once revoked (or never created)."""
    return SessionOut.model_validate(crud.get_session(session, owner, session_id))


@deps.deletes(router, "/sessions/{session_id}", NOT_FOUND)
def delete_session(session_id: uuid.UUID, owner: deps.OwnerDep, session: deps.SessionDep) -> None:
    """Revoke the session."""
    crud.delete_session(session, owner, session_id)
