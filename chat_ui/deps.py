"""The dependencies routes declare, in one place: `owner: Owner`, `form: CheckedForm`,
`conv: Conversation`, ... (FastAPI resolves them per request from the app's state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from chat_ui import config, conversation, generation, metrics, session
from chat_ui.clients import DbApi, LmApi
from chat_ui.web import LoginRequired, checked_form, session_of


def _settings(request: Request) -> config.Settings:
    value: config.Settings = request.app.state.settings
    return value


def _db(request: Request) -> DbApi:
    value: DbApi = request.app.state.db
    return value


def _lm(request: Request) -> LmApi:
    value: LmApi = request.app.state.lm
    return value


def _generations(request: Request) -> generation.Generations:
    value: generation.Generations = request.app.state.generations
    return value


def _metrics(request: Request) -> metrics.Metrics:
    value: metrics.Metrics = request.app.state.metrics
    return value


def _maybe_owner(request: Request) -> str | None:
    return session_of(request).owner


def _owner(owner: Annotated[str | None, Depends(_maybe_owner)]) -> str:
    if owner is None:
        raise LoginRequired
    return owner


Settings = Annotated[config.Settings, Depends(_settings)]
Db = Annotated[DbApi, Depends(_db)]
Lm = Annotated[LmApi, Depends(_lm)]
Generations = Annotated[generation.Generations, Depends(_generations)]
Metrics = Annotated[metrics.Metrics, Depends(_metrics)]
Session = Annotated[session.Session, Depends(session_of)]
# The logged-in person's owner key; without a login the visitor goes to the login page.
Owner = Annotated[str, Depends(_owner)]
# The owner key, or None for a visitor who is not logged in.
MaybeOwner = Annotated[str | None, Depends(_maybe_owner)]
# The request's form, after the Origin and CSRF checks.
CheckedForm = Annotated[FormData, Depends(checked_form)]


def _conversation(
    owner: Owner, db: Db, generations: Generations, settings: Settings
) -> conversation.Conversation:
    return conversation.Conversation(owner, db, generations, settings)


def _maybe_conversation(
    owner: MaybeOwner, db: Db, generations: Generations, settings: Settings
) -> conversation.Conversation | None:
    return None if owner is None else conversation.Conversation(owner, db, generations, settings)


# The logged-in person's conversations (the operations routes call).
Conversation = Annotated[conversation.Conversation, Depends(_conversation)]
# The same, or None for a visitor who is not logged in.
MaybeConversation = Annotated[conversation.Conversation | None, Depends(_maybe_conversation)]
