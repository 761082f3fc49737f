"""The dependencies routes declare, in one place: `owner: Owner`, `form: CheckedForm`,
`conv: Conversation`, ... (FastAPI resolves them per request from the app's state).

Each is `async def` although none awaits anything: FastAPI runs a plain `def` dependency
in its thread pool, a thread hop each, and a chat page resolves a dozen of them (in the
profile, more of the page's time than some of its reads)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, HTTPException, Query, Request
from starlette.datastructures import FormData

from chat_ui import (
    chat_settings,
    commands,
    config,
    conversation,
    generation,
    metrics,
    roles,
    session,
    versions,
)
from chat_ui.clients import DbApi, LmApi
from chat_ui.web import LoginRequired, checked_form, session_of, set_session

T = TypeVar("T")


def _app_state(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency: the app's `state.<name>` (set up by chat_ui.main), typed as `kind`."""

    # async: FastAPI runs a plain `def` dependency in its thread pool, a hop per
    # dependency per request for what is only an attribute read.
    async def get(request: Request) -> T:
        value: T = getattr(request.app.state, name)
        return value

    return get


_settings = _app_state("settings", config.Settings)
_db = _app_state("db", DbApi)
_lm = _app_state("lm", LmApi)
_generations = _app_state("generations", generation.Generations)
_metrics = _app_state("metrics", metrics.Metrics)
_sessions = _app_state("sessions", session.SessionStore)


async def _session(
    request: Request, sessions: Annotated[session.SessionStore, Depends(_sessions)]
) -> session.Session:
    """The request's session, its login checked against the server-side record: a
    login ended elsewhere (logout in another copy of the cookie) is logged out here."""
    current = session_of(request)
    if current.name is None or current.sid is None or current.owner is None:
        return current
    if getattr(request.state, "session_checked", False):
        return current
    request.state.session_checked = True
    if not await sessions.alive(current.owner, current.sid):
        set_session(request, session.revoked(current))
    return session_of(request)


async def _maybe_owner(current: Annotated[session.Session, Depends(_session)]) -> str | None:
    return current.owner


async def _owner(owner: Annotated[str | None, Depends(_maybe_owner)]) -> str:
    if owner is None:
        raise LoginRequired
    return owner


Settings = Annotated[config.Settings, Depends(_settings)]
Db = Annotated[DbApi, Depends(_db)]
Lm = Annotated[LmApi, Depends(_lm)]
Generations = Annotated[generation.Generations, Depends(_generations)]
Metrics = Annotated[metrics.Metrics, Depends(_metrics)]
Sessions = Annotated[session.SessionStore, Depends(_sessions)]
# The visitor's session, its login checked (a logged-out one when it has ended).
Session = Annotated[session.Session, Depends(_session)]
# The logged-in person's owner key; without a login the visitor goes to the login page.
Owner = Annotated[str, Depends(_owner)]
# The owner key, or None for a visitor who is not logged in.
MaybeOwner = Annotated[str | None, Depends(_maybe_owner)]
# The request's form, after the Origin and CSRF checks.
CheckedForm = Annotated[FormData, Depends(checked_form)]


async def _conversation(
    owner: Owner, db: Db, generations: Generations, settings: Settings
) -> conversation.Conversation:
    return conversation.Conversation(owner, db, generations, settings)


async def _maybe_conversation(
    owner: MaybeOwner, db: Db, generations: Generations, settings: Settings
) -> conversation.Conversation | None:
    return None if owner is None else conversation.Conversation(owner, db, generations, settings)


# The logged-in person's conversations (the operations routes call).
Conversation = Annotated[conversation.Conversation, Depends(_conversation)]
# The same, or None for a visitor who is not logged in.
MaybeConversation = Annotated[conversation.Conversation | None, Depends(_maybe_conversation)]


async def _versions(
    owner: Owner, db: Db, generations: Generations, settings: Settings
) -> versions.Versions:
    return versions.Versions(owner, db, generations, settings)


# The logged-in person's conversations as trees (edit, regenerate, continue, switch).
Versions = Annotated[versions.Versions, Depends(_versions)]


# The longest offset a stream accepts: far beyond any answer, far below any cost.
MAX_OFFSET_DIGITS = 9


def _offset(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > MAX_OFFSET_DIGITS:
        raise HTTPException(400, f"{what} must be a character offset (0 to 999999999).")
    return int(value)


async def _stream_offset(
    after: Annotated[str, Query(max_length=64)] = "0",
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> int:
    """Where an answer's stream resumes: Last-Event-ID (a reconnect, exactly where the
    browser stopped) over `after` (the text the page was rendered with). Checked before
    anything else is done: anything but a plain small number is a 400."""
    if last_event_id is not None:
        return _offset(last_event_id, "Last-Event-ID")
    return _offset(after, "after")


StreamOffset = Annotated[int, Depends(_stream_offset)]


async def _chat_settings(
    owner: Owner, db: Db, lm: Lm, settings: Settings
) -> chat_settings.ChatSettings:
    return chat_settings.ChatSettings(owner, db, lm, settings)


async def _roles(owner: Owner, db: Db, lm: Lm, settings: Settings) -> roles.Roles:
    return roles.Roles(owner, db, lm, settings)


# The logged-in person's chat settings (model and sampling) and roles.
ChatSettings = Annotated[chat_settings.ChatSettings, Depends(_chat_settings)]
Roles = Annotated[roles.Roles, Depends(_roles)]


async def _command_context(
    conv: Conversation, db: Db, lm: Lm, settings_: ChatSettings, roles_: Roles
) -> commands.Context:
    return commands.Context(conv, db, lm, settings_, roles_)


# What a slash command acts on (its chat is set where the command is typed).
CommandContext = Annotated[commands.Context, Depends(_command_context)]
