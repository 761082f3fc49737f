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
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Chat(Base):
    __tablename__ = "chats"
    # The sidebar lists one owner's chats by most recent activity.
    __table_args__ = (
        sa.Index("ix_chats_owner_updated_at", "owner", "updated_at"),
        # Where an imported chat came from: importing the same file twice adds nothing.
        sa.Index("ux_chats_owner_import_key", "owner", "import_key", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(sa.String(128))
    title: Mapped[str | None] = mapped_column(sa.Text)
    system_prompt: Mapped[str | None] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    import_key: Mapped[str | None] = mapped_column(sa.String(300))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # The chat page reads a chat's messages oldest first.
        sa.Index("ix_messages_chat_id_created_at", "chat_id", "created_at"),
        sa.CheckConstraint(_in("role", ROLES), name="role"),
        sa.CheckConstraint(_in("status", STATUSES), name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    chat_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("chats.id", ondelete="CASCADE"))
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
