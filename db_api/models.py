"""The tables, as typed SQLAlchemy 2 models.

Alembic owns the schema: these models describe it for queries and for the
"autogenerate finds no difference" test; they never create tables themselves.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("system", "user", "assistant")
STATUSES = ("complete", "pending", "streaming", "interrupted", "error")
# Who wrote a chat's title: the first words of the question, the person, or the model.
TITLE_SOURCES = ("auto", "user", "model")

# Explicit constraint names: the same names on both backends, and SQLite batch
# migrations need names to alter constraints later.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """`timestamp with time zone` that always comes back as an aware UTC datetime.

    SQLite has no time zone type and returns naive values; PostgreSQL returns them in
    the session's time zone. Both are normalised here so the API never has to care.
    SQLite gets naive UTC, stored as fixed-width text that sorts chronologically.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Chat(Base):
    __tablename__ = "chats"
    __table_args__ = (
        # The sidebar lists one owner's chats by most recent activity.
        sa.Index("ix_chats_owner_updated_at", "owner", "updated_at"),
        # Deleting a message looks up the chats whose current leaf it was (ON DELETE
        # SET NULL); without this index that is a scan of every chat.
        sa.Index("ix_chats_current_leaf_id", "current_leaf_id"),
        sa.CheckConstraint(_in("title_source", TITLE_SOURCES), name="title_source"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(sa.String(128))
    title: Mapped[str | None] = mapped_column(sa.Text)
    system_prompt: Mapped[str | None] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The branch shown and sent to the model: the path from a first turn down to this
    # message. chats -> messages -> chats is a cycle: `use_alter` lets SQLAlchemy order
    # CREATE/DROP around it; the migrations add this constraint after both tables exist.
    current_leaf_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="SET NULL", use_alter=True)
    )
    # Sampling settings (temperature, top_p, max_tokens, plan_mode, planner_model).
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON, server_default=sa.text("'{}'"))
    title_source: Mapped[str] = mapped_column(sa.String(8), server_default="auto")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # A chat's messages by age (the newest, the first turns, the migration's order).
        sa.Index("ix_messages_chat_id_created_at", "chat_id", "created_at"),
        # A message's children oldest first (its versions, the subtree below it, and
        # the ON DELETE CASCADE of a deleted parent).
        sa.Index("ix_messages_parent_id_created_at", "parent_id", "created_at"),
        sa.CheckConstraint(_in("role", ROLES), name="role"),
        sa.CheckConstraint(_in("status", STATUSES), name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("chats.id", ondelete="CASCADE"))
    # Null for a first turn; siblings (same parent) are versions of one turn. Deleting a
    # message deletes the subtree below it.
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(sa.String(16))
    content: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))
    error: Mapped[str | None] = mapped_column(sa.Text)
    prompt_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    completion_tokens: Mapped[int | None] = mapped_column(sa.Integer)
    ttft_ms: Mapped[float | None] = mapped_column(sa.Float)
    generation_ms: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Orders the writes of one message: only grows; an older write is refused.
    revision: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    finish_reason: Mapped[str | None] = mapped_column(sa.String(16))
    # Why an answer ended interrupted or in error, as a machine code (`error`: the text).
    reason: Mapped[str | None] = mapped_column(sa.String(32))
    # What an answer was generated with.
    model: Mapped[str | None] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    plan: Mapped[str | None] = mapped_column(sa.Text)
    # The generation writing this answer and how long its claim holds.
    lease_owner: Mapped[str | None] = mapped_column(sa.String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stop_requested: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())


class Preset(Base):
    """A role: a person's named system prompt, model and sampling settings."""

    __tablename__ = "presets"
    __table_args__ = (sa.UniqueConstraint("owner", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(sa.String(128))
    name: Mapped[str] = mapped_column(sa.String(100))
    system_prompt: Mapped[str | None] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON, server_default=sa.text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginSession(Base):
    """A login's server-side record: deleting it ends every copy of its cookie."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
