"""Queries. Every function takes the owner and only ever sees that owner's rows:
another owner's chat is indistinguishable from a missing one.

Ordering: a chat's messages must read back in the order they were written, even when
two land in the same clock tick (or the clock steps back). Each new message takes the
chat row's write lock first (the UPDATE of updated_at), then gets a created_at strictly
after the chat's newest message. So created_at is strictly increasing within a chat
on both backends, and `ORDER BY created_at` is the insertion order.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db_api.models import Chat, Message, utcnow

ONE_TICK = timedelta(microseconds=1)  # the resolution both backends store


class NotFound(Exception):
    """The row does not exist or belongs to another owner."""


def list_chats(session: Session, owner: str, *, limit: int, offset: int) -> list[Chat]:
    query = (
        sa.select(Chat)
        .where(Chat.owner == owner)
        # id breaks ties so that pages never overlap or skip when timestamps collide.
        .order_by(Chat.updated_at.desc(), Chat.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def create_chat(session: Session, owner: str, fields: dict[str, Any]) -> Chat:
    now = utcnow()
    chat = Chat(id=uuid.uuid4(), owner=owner, created_at=now, updated_at=now, **fields)
    with session.begin():
        session.add(chat)
    return chat


def _owned_chat(session: Session, owner: str, chat_id: uuid.UUID) -> Chat:
    chat = session.scalar(sa.select(Chat).where(Chat.id == chat_id, Chat.owner == owner))
    if chat is None:
        raise NotFound
    return chat


def get_chat(session: Session, owner: str, chat_id: uuid.UUID) -> tuple[Chat, list[Message]]:
    with session.begin():
        chat = _owned_chat(session, owner, chat_id)
        messages = list(
            session.scalars(
                sa.select(Message)
                .where(Message.chat_id == chat_id)
                .order_by(Message.created_at, Message.id)
            )
        )
    return chat, messages


def update_chat(session: Session, owner: str, chat_id: uuid.UUID, fields: dict[str, Any]) -> Chat:
    with session.begin():
        chat = _owned_chat(session, owner, chat_id)
        if fields:
            for name, value in fields.items():
                setattr(chat, name, value)
            chat.updated_at = utcnow()
    return chat


def delete_chat(session: Session, owner: str, chat_id: uuid.UUID) -> None:
    # ON DELETE CASCADE removes the messages in the same statement.
    with session.begin():
        result = session.execute(
            sa.delete(Chat).where(Chat.id == chat_id, Chat.owner == owner),
            execution_options={"synchronize_session": False},
        )
        if _rowcount(result) == 0:
            raise NotFound


def _touch_chat(session: Session, owner: str, chat_id: uuid.UUID, when: datetime) -> None:
    """Move the chat's updated_at; this UPDATE also takes the chat row's write lock,
    which serialises concurrent writers of the same chat."""
    result = session.execute(
        sa.update(Chat).where(Chat.id == chat_id, Chat.owner == owner).values(updated_at=when),
        execution_options={"synchronize_session": False},
    )
    if _rowcount(result) == 0:
        raise NotFound


def add_message(
    session: Session, owner: str, chat_id: uuid.UUID, *, role: str, content: str, status: str
) -> Message:
    with session.begin():
        now = utcnow()
        _touch_chat(session, owner, chat_id, now)
        newest = session.scalar(
            sa.select(Message.created_at)
            .where(Message.chat_id == chat_id)
            .order_by(Message.created_at.desc())
            .limit(1)
        )
        created = now if newest is None or newest < now else newest + ONE_TICK
        if created != now:
            _touch_chat(session, owner, chat_id, created)
        message = Message(
            id=uuid.uuid4(),
            chat_id=chat_id,
            role=role,
            content=content,
            status=status,
            created_at=created,
            updated_at=created,
        )
        session.add(message)
    return message


def update_message(
    session: Session, owner: str, message_id: uuid.UUID, fields: dict[str, Any]
) -> Message:
    with session.begin():
        chat_id = session.scalar(
            sa.select(Message.chat_id)
            .join(Chat, Chat.id == Message.chat_id)
            .where(Message.id == message_id, Chat.owner == owner)
        )
        if chat_id is None:
            raise NotFound
        now = utcnow()
        if fields:
            _touch_chat(session, owner, chat_id, now)
        message = session.get_one(Message, message_id, populate_existing=True)
        if fields:
            for name, value in fields.items():
                setattr(message, name, value)
            message.updated_at = now
    return message


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def schema_revision(session: Session) -> str | None:
    """Check the database answers and return its Alembic revision (None: unmigrated)."""
    with session.begin():
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            # /health must answer quickly even if the server is wedged.
            session.execute(sa.text("SET LOCAL statement_timeout = 2000"))
        session.execute(sa.text("SELECT 1"))
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        revision = session.scalar(sa.text("SELECT version_num FROM alembic_version"))
    return str(revision) if revision is not None else None
