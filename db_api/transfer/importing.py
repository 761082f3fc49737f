"""Prepared chats into the database: each chat in one transaction (all of it or none),
skipped when the owner already holds it (its import key, or its own id for a Parlor
export read back into the same account). The search index follows by itself (the
PostgreSQL expression indexes, the SQLite triggers)."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from db_api.models import Chat, Message
from db_api.transfer.tree import PreparedChat, PreparedMessage, Skipped
from db_contract import Reason

ALREADY_IMPORTED = "already imported"
# After an import this large, PostgreSQL's planner gets fresh statistics right away
# rather than at autovacuum's next pass (a search planned on stale ones can be slow).
ANALYZE_AFTER_MESSAGES = 1000
_CHAT_COLUMNS = frozenset(Chat.__table__.columns.keys())
_MESSAGE_COLUMNS = frozenset(Message.__table__.columns.keys())
# Reasons this version knows; an unknown one from a newer export is dropped, not refused.
_REASONS = frozenset(get_args(Reason))


@dataclass
class Report:
    source: str
    imported: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        count = len(self.imported)
        text = f"{count} chat{'' if count == 1 else 's'} imported"
        if self.skipped:
            reasons = Counter(s.reason for s in self.skipped)
            if len(reasons) == 1:
                text += f", {len(self.skipped)} skipped: {next(iter(reasons))}"
            else:
                parts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
                text += f", {len(self.skipped)} skipped ({parts})"
        return text


def _message_row(chat_id: uuid.UUID, message: PreparedMessage) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": message.id,
        "chat_id": chat_id,
        "parent_id": message.parent_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "error": message.error,
        "reason": message.reason if message.reason in _REASONS else None,
        "finish_reason": message.finish_reason,
        "model": message.model,
        "params": message.params,
        "plan": message.plan,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "ttft_ms": message.ttft_ms,
        "generation_ms": message.generation_ms,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
    }
    return {name: value for name, value in row.items() if name in _MESSAGE_COLUMNS}


def _held_ids(chat: PreparedChat) -> list[uuid.UUID]:
    """Ids of chats that this one is a copy of: the exported chat itself, and the
    Parlor chat its key names (a copy of a copy names the first one)."""
    ids = [chat.original_id] if chat.original_id is not None else []
    source, _, rest = chat.import_key.partition(":")
    if source == "parlor":
        try:
            ids.append(uuid.UUID(rest))
        except ValueError:
            pass
    return ids


def _already_held(session: Session, owner: str, chat: PreparedChat) -> bool:
    """Whether the owner holds this chat already: one imported under the same key, or
    (for Parlor's own export) the very chat it was exported from."""
    same = Chat.import_key == chat.import_key
    ids = _held_ids(chat)
    condition = sa.or_(same, Chat.id.in_(ids)) if ids else same
    held = sa.select(Chat.id).where(Chat.owner == owner, condition).limit(1)
    return session.scalar(held) is not None


def write_chat(session: Session, owner: str, chat: PreparedChat) -> uuid.UUID | None:
    """Store one chat in one transaction; None when the owner already holds it."""
    chat_id = uuid.uuid4()
    try:
        with session.begin():
            if _already_held(session, owner, chat):
                return None
            fields: dict[str, Any] = {
                "id": chat_id,
                "owner": owner,
                "title": chat.title,
                "title_source": chat.title_source,
                "system_prompt": chat.system_prompt,
                "model": chat.model,
                "params": chat.params,
                "created_at": chat.created_at,
                "updated_at": chat.updated_at,
                "import_key": chat.import_key,
            }
            session.execute(
                sa.insert(Chat), [{k: v for k, v in fields.items() if k in _CHAT_COLUMNS}]
            )
            session.execute(sa.insert(Message), [_message_row(chat_id, m) for m in chat.messages])
            if "current_leaf_id" in _CHAT_COLUMNS:
                session.execute(
                    sa.update(Chat)
                    .where(Chat.id == chat_id)
                    .values(current_leaf_id=chat.current_leaf_id),
                    execution_options={"synchronize_session": False},
                )
    except sa.exc.IntegrityError:
        # Another import of the same chat may have won the race for its key.
        with session.begin():
            if _already_held(session, owner, chat):
                return None
        raise
    return chat_id


def import_prepared(
    make_session: sessionmaker[Session],
    owner: str,
    source: str,
    chats: list[PreparedChat | Skipped],
) -> Report:
    report = Report(source=source)
    for chat in chats:
        if isinstance(chat, Skipped):
            report.skipped.append(chat)
            continue
        with make_session() as session:
            chat_id = write_chat(session, owner, chat)
        if chat_id is None:
            report.skipped.append(Skipped(chat.label, chat.import_key, ALREADY_IMPORTED))
        else:
            report.imported.append(
                {"id": chat_id, "title": chat.title, "messages": len(chat.messages)}
            )
    if sum(chat["messages"] for chat in report.imported) >= ANALYZE_AFTER_MESSAGES:
        with make_session() as session, session.begin():
            if session.connection().dialect.name == "postgresql":
                session.execute(sa.text("ANALYZE chats, messages"))
    return report
