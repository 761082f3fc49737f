"""Chats, their branches and new messages, scoped by X-Owner."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, status
from fastapi.exceptions import RequestValidationError

from db_api import crud
from db_api.routes import deps
from db_api.schemas import (
    BranchSelect,
    ChatCreate,
    ChatOut,
    ChatUpdate,
    ChatWithMessages,
    MessageCreate,
    MessageOut,
    TurnCreate,
    TurnOut,
    check_limits,
)

# Deep paging is what a scraper does, not a sidebar; the bound keeps OFFSET cheap.
MAX_OFFSET = 100_000
# The most messages one window of a chat returns.
MAX_WINDOW = 1000
NOT_FOUND = deps.answers(404, "No such chat (or message in it) for this owner")

router = deps.owner_scoped_router("chats")

WindowLimit = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_WINDOW,
        description="Only the last N messages of the branch (or of the path above `before`)",
    ),
]
WindowBefore = Annotated[
    uuid.UUID | None,
    Query(description="A message of this chat: return the path above it (a cursor)"),
]
WindowAfter = Annotated[
    uuid.UUID | None,
    Query(description="A message of the current branch: return the branch below it"),
]
WindowAround = Annotated[
    uuid.UUID | None,
    Query(
        description="A message of the current branch: return a window holding it (about "
        "half of `limit` above it), e.g. to open a chat at a search hit"
    ),
]


@router.get("/chats", response_model=list[ChatOut])
def list_chats(
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[ChatOut]:
    """The owner's chats without messages, most recently updated first."""
    chats = crud.list_chats(session, owner, limit=limit, offset=offset)
    return [ChatOut.model_validate(chat) for chat in chats]


@router.post(
    "/chats",
    status_code=status.HTTP_201_CREATED,
    response_model=ChatOut,
    responses=deps.BODY_RESPONSES,
)
def create_chat(
    body: ChatCreate, owner: deps.OwnerDep, session: deps.SessionDep, settings: deps.SettingsDep
) -> ChatOut:
    check_limits(body, settings)
    fields = body.model_dump(exclude={"params"})
    chat = crud.create_chat(session, owner, {**fields, "params": body.params.stored()})
    return ChatOut.model_validate(chat)


def chat_page(page: crud.ChatPage) -> ChatWithMessages:
    """The window read by crud.get_chat as db_api answers it."""
    return ChatWithMessages(
        **ChatOut.model_validate(page.chat).model_dump(),
        messages=[MessageOut.of(m, page.versions[m.id].ids) for m in page.messages],
        has_earlier=page.has_earlier,
        has_later=page.has_later,
    )


@router.get("/chats/{chat_id}", response_model=ChatWithMessages, responses=NOT_FOUND)
def get_chat(
    chat_id: uuid.UUID,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    limit: WindowLimit = None,
    before: WindowBefore = None,
    after: WindowAfter = None,
    around: WindowAround = None,
) -> ChatWithMessages:
    """The chat with its current branch, oldest first: the whole path, or with `limit`
    its last N messages; `before` pages upward from a message (has_earlier says whether
    more lie above), `after` downward (has_later says whether more lie below), `around`
    opens a window at a message. One cursor at most (422); a cursor that is not a
    message of the chat, or (`after`, `around`) not on its current branch, is a 404."""
    cursors = {"before": before, "after": after, "around": around}
    given = [name for name, value in cursors.items() if value is not None]
    if len(given) > 1:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", given[1]),
                    "msg": f"Value error, give one cursor at most, not {' and '.join(given)}",
                    "input": str(cursors[given[1]]),
                    "ctx": {"error": "one cursor at most"},
                }
            ]
        )
    page = crud.get_chat(
        session, owner, chat_id, limit=limit, before=before, after=after, around=around
    )
    return chat_page(page)


@router.patch(
    "/chats/{chat_id}",
    response_model=ChatOut,
    responses={
        **NOT_FOUND,
        **deps.BODY_RESPONSES,
        **deps.answers(409, "A model title over the owner's own title"),
    },
)
def update_chat(
    chat_id: uuid.UUID,
    body: ChatUpdate,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    settings: deps.SettingsDep,
) -> ChatOut:
    """Change the fields sent (null clears a text field; params replaces the settings);
    updated_at moves when anything changed."""
    chat = crud.update_chat(session, owner, chat_id, body.changes(settings))
    return ChatOut.model_validate(chat)


@deps.deletes(router, "/chats/{chat_id}", NOT_FOUND)
def delete_chat(chat_id: uuid.UUID, owner: deps.OwnerDep, session: deps.SessionDep) -> None:
    """Delete the chat and all its messages."""
    crud.delete_chat(session, owner, chat_id)


def _lease(body: MessageCreate | TurnCreate) -> crud.Lease:
    return crud.Lease(owner=body.lease_owner, seconds=body.lease_s)


def _parent(body: MessageCreate | TurnCreate) -> uuid.UUID | None:
    return body.parent_id if "parent_id" in body.model_fields_set else crud.CURRENT_LEAF


@router.post(
    "/chats/{chat_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    responses={**NOT_FOUND, **deps.BODY_RESPONSES},
)
def add_message(
    chat_id: uuid.UUID,
    body: MessageCreate,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    settings: deps.SettingsDep,
) -> MessageOut:
    """Add a message below `parent_id` (left out: the current leaf; null: a new first
    turn). It becomes the current leaf; the chat's updated_at moves with it. A
    regenerated answer is a pending assistant message with the old answer's parent."""
    check_limits(body, settings)
    body.check_content()
    message, versions = crud.add_message(
        session,
        owner,
        chat_id,
        parent_id=_parent(body),
        lease=_lease(body),
        role=body.role,
        content=body.content,
        status=body.status,
        model=body.model,
        params=body.params.stored() if body.params is not None else None,
    )
    return MessageOut.of(message, versions.ids)


@router.post(
    "/chats/{chat_id}/turns",
    status_code=status.HTTP_201_CREATED,
    response_model=TurnOut,
    responses={**NOT_FOUND, **deps.BODY_RESPONSES},
)
def add_turn(
    chat_id: uuid.UUID,
    body: TurnCreate,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    settings: deps.SettingsDep,
) -> TurnOut:
    """A question and its pending answer in one transaction: the question below
    `parent_id` (left out: the current leaf; null: a new first turn, i.e. an edit of the
    first question), the answer below it; the answer becomes the current leaf."""
    check_limits(body, settings)
    question, answer, versions = crud.add_turn(
        session,
        owner,
        chat_id,
        content=body.content,
        parent_id=_parent(body),
        model=body.model,
        params=body.params.stored() if body.params is not None else None,
        lease=_lease(body),
    )
    return TurnOut(
        user=MessageOut.of(question, versions[question.id].ids),
        assistant=MessageOut.of(answer, versions[answer.id].ids),
    )


@router.post(
    "/chats/{chat_id}/current",
    response_model=ChatWithMessages,
    responses={**NOT_FOUND, **deps.BODY_RESPONSES},
)
def select_branch(
    chat_id: uuid.UUID,
    body: BranchSelect,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    limit: WindowLimit = None,
) -> ChatWithMessages:
    """Show another branch: the one through `message_id`, or with `version` (1-based)
    through that sibling of it; the current leaf becomes the newest message below it.
    Answers the chat like GET (422 for a version out of range)."""
    try:
        crud.select_branch(session, owner, chat_id, body.message_id, body.version)
        page = crud.get_chat(session, owner, chat_id, limit=limit)
    except crud.BadVersion as exc:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("body", "version"),
                    "msg": str(exc),
                    "input": body.version,
                    "ctx": {"le": exc.versions},
                }
            ]
        ) from None
    return chat_page(page)
