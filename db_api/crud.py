"""Queries. Every function takes the owner and only ever sees that owner's rows:
another owner's chat is indistinguishable from a missing one.

Ordering: a chat's messages must read back in the order they were written, even when
two land in the same clock tick (or the clock steps back). Each new message takes the
chat row's write lock first (the UPDATE of updated_at), then gets a created_at strictly
after the chat's newest message. So created_at is strictly increasing within a chat
on both backends, and `ORDER BY created_at` is the insertion order (and orders versions).

Every write to a chat or its messages takes that lock first, so concurrent writers of one
chat are serialised (PostgreSQL: the chat row's lock; SQLite: the database's write lock).
Writes whose outcome depends on what is stored (revisions, final states, leases) are
conditional UPDATEs, decided by the database in the statement itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db_api import tree
from db_api.models import Chat, LoginSession, Message, Preset, utcnow
from db_contract import FINAL, RUNNING

ONE_TICK = timedelta(microseconds=1)  # the resolution both backends store


class NotFound(Exception):
    """The row does not exist or belongs to another owner."""

    def __init__(self, what: str = "chat") -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Conflict(Exception):
    """The write contradicts what is stored; `message` is the stored message (with its
    siblings' ids), if a message was written."""

    def __init__(
        self,
        detail: str,
        message: Message | None = None,
        versions: tree.Versions | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.message = message
        self.versions = versions


class BadVersion(Exception):
    """A version number beyond the message's siblings."""

    def __init__(self, versions: int) -> None:
        super().__init__(f"version is out of range: this message has {versions} version(s)")
        self.versions = versions


# `parent_id` left out of a request (follow the current leaf), as opposed to null.
CURRENT_LEAF: Any = object()
# Fields of a message write that steer its generation rather than change the answer:
# writing only these does not move the answer's revision, so a lease renewal or a Stop
# from another replica never makes the generation's next write stale.
CONTROL_FIELDS = frozenset({"lease_owner", "lease_s", "stop_requested"})


@dataclass
class ChatPage:
    chat: Chat
    messages: list[Message]
    has_earlier: bool
    versions: dict[uuid.UUID, tree.Versions]
    # More messages of the branch below the last one returned (a window before the leaf).
    has_later: bool = False


@dataclass
class Lease:
    owner: str | None = None
    seconds: float | None = None


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
    chat = Chat(
        id=uuid.uuid4(),
        owner=owner,
        created_at=now,
        updated_at=now,
        current_leaf_id=None,
        **fields,
    )
    with session.begin():
        session.add(chat)
    return chat


_Row = TypeVar("_Row")


def _one_owned(session: Session, query: sa.Select[tuple[_Row]], what: str) -> _Row:
    """The row `query` finds (re-read from the database, not the identity map), or
    NotFound naming `what`: another owner's row is missing just the same."""
    row = session.scalar(query.execution_options(populate_existing=True))
    if row is None:
        raise NotFound(what)
    return row


def _owned_chat(session: Session, owner: str, chat_id: uuid.UUID) -> Chat:
    return _one_owned(
        session, sa.select(Chat).where(Chat.id == chat_id, Chat.owner == owner), "chat"
    )


class NotOnBranch(NotFound):
    """A cursor message of the chat that the current branch does not go through."""


def get_chat(
    session: Session,
    owner: str,
    chat_id: uuid.UUID,
    *,
    limit: int | None = None,
    before: uuid.UUID | None = None,
    after: uuid.UUID | None = None,
    around: uuid.UUID | None = None,
) -> ChatPage:
    """The chat and its current branch, oldest first: all of it, or the last `limit`
    messages (of the branch, or of the path above `before`); the first `limit` of the
    branch below `after`; or a window of `limit` holding `around` (half above it, the
    rest below, filled from above near the leaf). At most one cursor."""
    with session.begin():
        chat = _owned_chat(session, owner, chat_id)
        if after is not None or around is not None:
            cursor = after if after is not None else around
            assert cursor is not None
            messages, has_earlier, has_later = _window_at(
                session, chat, cursor, limit, include=around is not None
            )
            return ChatPage(
                chat, messages, has_earlier, tree.versions_of(session, messages), has_later
            )
        start: uuid.UUID | None = chat.current_leaf_id
        if before is not None:
            start = _cursor(session, chat_id, before, "before").parent_id
        messages, has_earlier = (
            ([], False) if start is None else tree.path_up(session, start, limit=limit)
        )
        versions = tree.versions_of(session, messages)
    # Above `before` lies a window with (at least) the cursor below it.
    return ChatPage(chat, messages, has_earlier, versions, has_later=before is not None)


def _cursor(session: Session, chat_id: uuid.UUID, message_id: uuid.UUID, name: str) -> Any:
    row = session.execute(
        sa.select(Message.id, Message.parent_id).where(
            Message.id == message_id, Message.chat_id == chat_id
        )
    ).first()
    if row is None:
        raise NotFound(f"message `{name}`")
    return row


def _window_at(
    session: Session, chat: Chat, cursor: uuid.UUID, limit: int | None, *, include: bool
) -> tuple[list[Message], bool, bool]:
    """The window below `cursor` (after), or holding it (around): messages, has_earlier,
    has_later."""
    name = "around" if include else "after"
    _cursor(session, chat.id, cursor, name)
    below = (
        None
        if chat.current_leaf_id is None
        else tree.ids_below(session, chat.current_leaf_id, cursor)
    )
    if below is None:
        raise NotOnBranch(f"message `{name}` on the current branch")
    if not include:
        shown = below if limit is None else below[:limit]
        return tree.messages_by_id(session, shown), True, len(shown) < len(below)
    if limit is None:
        messages, _ = tree.path_up(session, cursor)
        return messages + tree.messages_by_id(session, below), False, False
    # Half the window below the message (fewer near the leaf), the rest above it.
    shown = below[: max(0, min(len(below), limit - 1 - limit // 2))]
    upper, has_earlier = tree.path_up(session, cursor, limit=limit - len(shown))
    return upper + tree.messages_by_id(session, shown), has_earlier, len(shown) < len(below)


def update_chat(session: Session, owner: str, chat_id: uuid.UUID, fields: dict[str, Any]) -> Chat:
    with session.begin():
        chat = _owned_chat(session, owner, chat_id)
        if fields:
            now = utcnow()
            query = (
                sa.update(Chat)
                .where(Chat.id == chat_id, Chat.owner == owner)
                .values(**fields, updated_at=now)
            )
            if fields.get("title_source") == "model":
                # Decided in the UPDATE itself: a title the person gave always wins over
                # a model's title written at the same moment.
                query = query.where(Chat.title_source != "user")
            if _rowcount(session.execute(query, execution_options=_NO_SYNC)) == 0:
                raise Conflict("the chat was named by its owner; a model title does not replace it")
            chat = _owned_chat(session, owner, chat_id)
    return chat


def _delete_owned(session: Session, query: sa.Delete, what: str) -> None:
    """Run one owner-scoped DELETE; NotFound naming `what` when it removed nothing."""
    with session.begin():
        if _rowcount(session.execute(query, execution_options=_NO_SYNC)) == 0:
            raise NotFound(what)


def delete_chat(session: Session, owner: str, chat_id: uuid.UUID) -> None:
    # ON DELETE CASCADE removes the messages in the same statement.
    _delete_owned(session, sa.delete(Chat).where(Chat.id == chat_id, Chat.owner == owner), "chat")


_NO_SYNC = {"synchronize_session": False}


def _touch_chat(
    session: Session, owner: str, chat_id: uuid.UUID, when: datetime
) -> uuid.UUID | None:
    """Move the chat's updated_at and answer its current leaf. This UPDATE also takes the
    chat row's write lock, which serialises concurrent writers of the same chat."""
    row = session.execute(
        sa.update(Chat)
        .where(Chat.id == chat_id, Chat.owner == owner)
        .values(updated_at=when)
        .returning(Chat.current_leaf_id),
        execution_options=_NO_SYNC,
    ).first()
    if row is None:
        raise NotFound
    leaf: uuid.UUID | None = row.current_leaf_id
    return leaf


def _next_stamp(session: Session, chat_id: uuid.UUID, now: datetime) -> datetime:
    """A created_at after every message of the chat (the chat's lock is held)."""
    newest = session.scalar(
        sa.select(Message.created_at)
        .where(Message.chat_id == chat_id)
        .order_by(Message.created_at.desc())
        .limit(1)
    )
    return now if newest is None or newest < now else newest + ONE_TICK


def _check_parent(session: Session, chat_id: uuid.UUID, parent_id: uuid.UUID) -> None:
    found = session.scalar(
        sa.select(Message.id).where(Message.id == parent_id, Message.chat_id == chat_id)
    )
    if found is None:
        raise NotFound("parent message")


def _db_now(session: Session) -> datetime:
    """The database's clock where several db_api replicas may share it (PostgreSQL), so
    that leases are granted and judged by one clock; db_api's own clock on SQLite."""
    if session.connection().dialect.name == "postgresql":
        now = session.scalar(sa.select(sa.func.now()))
        assert isinstance(now, datetime)
        return now.astimezone(UTC)
    return utcnow()


def _lease_values(session: Session, lease: Lease) -> dict[str, Any]:
    if lease.owner is None and lease.seconds is None:
        return {}
    until = None
    if lease.seconds is not None:
        until = _db_now(session) + timedelta(seconds=lease.seconds)
    return {"lease_owner": lease.owner, "lease_until": until}


def _new_message(
    chat_id: uuid.UUID, parent_id: uuid.UUID | None, created: datetime, **fields: Any
) -> Message:
    values: dict[str, Any] = {
        "error": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "ttft_ms": None,
        "generation_ms": None,
        "revision": 0,
        "finish_reason": None,
        "reason": None,
        "model": None,
        "params": None,
        "plan": None,
        "lease_owner": None,
        "lease_until": None,
        "stop_requested": False,
    }
    values.update(fields)
    return Message(
        id=uuid.uuid4(),
        chat_id=chat_id,
        parent_id=parent_id,
        created_at=created,
        updated_at=created,
        **values,
    )


def _set_leaf(session: Session, chat_id: uuid.UUID, leaf: uuid.UUID | None, when: datetime) -> None:
    session.execute(
        sa.update(Chat).where(Chat.id == chat_id).values(current_leaf_id=leaf, updated_at=when),
        execution_options=_NO_SYNC,
    )


def _place(
    session: Session, owner: str, chat_id: uuid.UUID, parent_id: uuid.UUID | None
) -> tuple[uuid.UUID | None, datetime]:
    """Where a new message goes in the owner's chat: its parent (the current leaf for
    CURRENT_LEAF, else a message of this chat, checked) and its creation stamp."""
    now = utcnow()
    leaf = _touch_chat(session, owner, chat_id, now)
    if parent_id is CURRENT_LEAF:
        return leaf, _next_stamp(session, chat_id, now)
    if parent_id is not None:
        _check_parent(session, chat_id, parent_id)
    return parent_id, _next_stamp(session, chat_id, now)


def add_message(
    session: Session,
    owner: str,
    chat_id: uuid.UUID,
    *,
    parent_id: uuid.UUID | None = CURRENT_LEAF,
    lease: Lease | None = None,
    **fields: Any,
) -> tuple[Message, tree.Versions]:
    """A new message below `parent_id` (by default the current leaf); it becomes the
    chat's current leaf."""
    with session.begin():
        parent, created = _place(session, owner, chat_id, parent_id)
        lease_values = _lease_values(session, lease or Lease())
        message = _new_message(chat_id, parent, created, **fields, **lease_values)
        session.add(message)
        session.flush()
        _set_leaf(session, chat_id, message.id, created)
        versions = tree.versions_of(session, [message])[message.id]
    return message, versions


def add_turn(
    session: Session,
    owner: str,
    chat_id: uuid.UUID,
    *,
    content: str,
    parent_id: uuid.UUID | None = CURRENT_LEAF,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    lease: Lease | None = None,
) -> tuple[Message, Message, dict[uuid.UUID, tree.Versions]]:
    """A question and its pending answer, in one transaction; the answer becomes the
    chat's current leaf."""
    with session.begin():
        parent, created = _place(session, owner, chat_id, parent_id)
        question = _new_message(
            chat_id, parent, created, role="user", content=content, status="complete"
        )
        session.add(question)
        session.flush()
        answer = _new_message(
            chat_id,
            question.id,
            created + ONE_TICK,
            role="assistant",
            content="",
            status="pending",
            model=model,
            params=params,
            **_lease_values(session, lease or Lease()),
        )
        session.add(answer)
        session.flush()
        _set_leaf(session, chat_id, answer.id, answer.created_at)
        versions = tree.versions_of(session, [question, answer])
    return question, answer, versions


def _owned_message(session: Session, owner: str, message_id: uuid.UUID) -> Message:
    query = (
        sa.select(Message)
        .join(Chat, Chat.id == Message.chat_id)
        .where(Message.id == message_id, Chat.owner == owner)
    )
    return _one_owned(session, query, "message")


def _message_chat(session: Session, owner: str, message_id: uuid.UUID) -> uuid.UUID:
    chat_id = session.scalar(
        sa.select(Message.chat_id)
        .join(Chat, Chat.id == Message.chat_id)
        .where(Message.id == message_id, Chat.owner == owner)
    )
    if chat_id is None:
        raise NotFound("message")
    return chat_id


def get_message(
    session: Session, owner: str, message_id: uuid.UUID
) -> tuple[Message, tree.Versions]:
    with session.begin():
        message = _owned_message(session, owner, message_id)
        versions = tree.versions_of(session, [message])[message.id]
    return message, versions


def _conditional_write(
    session: Session,
    owner: str,
    message_id: uuid.UUID,
    values: dict[str, Any],
    conditions: list[sa.ColumnElement[bool]],
) -> tuple[Message, tree.Versions]:
    """Apply `values` to the message if every condition holds at the moment of the
    UPDATE (the database decides, under the row's lock); else Conflict carrying the
    stored message."""
    chat_id = _message_chat(session, owner, message_id)
    now = utcnow()
    _touch_chat(session, owner, chat_id, now)
    result = session.execute(
        sa.update(Message)
        .where(Message.id == message_id, Message.chat_id == chat_id, *conditions)
        .values(**values, updated_at=now),
        execution_options=_NO_SYNC,
    )
    stored = session.scalar(
        sa.select(Message).where(Message.id == message_id).execution_options(populate_existing=True)
    )
    if stored is None:
        raise NotFound("message")
    versions = tree.versions_of(session, [stored])[stored.id]
    if _rowcount(result) == 0:
        raise Conflict("refused", stored, versions)
    return stored, versions


def update_message(
    session: Session, owner: str, message_id: uuid.UUID, fields: dict[str, Any]
) -> tuple[Message, tree.Versions]:
    """Change the fields given. `revision`, when given, must exceed the stored one; else
    the revision moves by one (unless only control fields are written). A final status
    never goes back to pending or streaming."""
    values = dict(fields)
    revision: int | None = values.pop("revision", None)
    status: str | None = values.get("status")
    try:
        with session.begin():
            if not fields:
                message = _owned_message(session, owner, message_id)
                return message, tree.versions_of(session, [message])[message.id]
            conditions: list[sa.ColumnElement[bool]] = []
            if revision is not None:
                conditions.append(Message.revision < revision)
                values["revision"] = revision
            elif not set(values) <= CONTROL_FIELDS:
                values["revision"] = Message.revision + 1
            if status in RUNNING:
                conditions.append(Message.status.in_(RUNNING))
            if "lease_s" in values:
                seconds = values.pop("lease_s")
                values["lease_until"] = (
                    None if seconds is None else _db_now(session) + timedelta(seconds=seconds)
                )
            return _conditional_write(session, owner, message_id, values, conditions)
    except Conflict as conflict:
        assert conflict.message is not None
        conflict.detail = _why_refused(conflict.message, revision, status)
        raise


def _why_refused(stored: Message, revision: int | None, status: str | None) -> str:
    reasons = []
    if revision is not None and revision <= stored.revision:
        reasons.append(f"revision {revision} is not newer than the stored {stored.revision}")
    if status in RUNNING and stored.status not in RUNNING:
        reasons.append(f"the answer is already final ({stored.status}); it cannot be {status}")
    return "; ".join(reasons) or "the stored message changed meanwhile"


def reopen_message(
    session: Session, owner: str, message_id: uuid.UUID, lease: Lease
) -> tuple[Message, tree.Versions]:
    """A finished answer back to pending (to be continued): its text and counts kept,
    its end (error, reason, finish_reason, stop) cleared, its revision moved."""
    try:
        with session.begin():
            values: dict[str, Any] = {
                "status": "pending",
                "error": None,
                "reason": None,
                "finish_reason": None,
                "stop_requested": False,
                "revision": Message.revision + 1,
                "lease_owner": None,
                "lease_until": None,
                **_lease_values(session, lease),
            }
            conditions = [Message.role == "assistant", Message.status.in_(FINAL)]
            return _conditional_write(session, owner, message_id, values, conditions)
    except Conflict as conflict:
        stored = conflict.message
        assert stored is not None
        conflict.detail = (
            f"only an answer can be reopened, not a {stored.role} message"
            if stored.role != "assistant"
            else f"the answer is still {stored.status}"
        )
        raise


def expire_message(
    session: Session,
    owner: str,
    message_id: uuid.UUID,
    *,
    reason: str,
    error: str | None,
    lease_owner: str | None = None,
) -> tuple[Message, tree.Versions]:
    """Mark a running answer interrupted, only if no live lease holds it (a lease held
    under `lease_owner`, the caller's own name, does not count). The lease check and the
    write are one UPDATE: a generation renewing its lease at the same moment either wins
    (409 here) or finds its answer final."""
    try:
        with session.begin():
            now = _db_now(session)
            values: dict[str, Any] = {
                "status": "interrupted",
                "reason": reason,
                "error": error,
                "revision": Message.revision + 1,
                "lease_until": None,
            }
            unheld = [Message.lease_until.is_(None), Message.lease_until <= now]
            if lease_owner is not None:
                unheld.append(Message.lease_owner == lease_owner)
            conditions = [
                Message.role == "assistant",
                Message.status.in_(RUNNING),
                sa.or_(*unheld),
            ]
            return _conditional_write(session, owner, message_id, values, conditions)
    except Conflict as conflict:
        stored = conflict.message
        assert stored is not None
        conflict.detail = (
            f"the message is not a running answer (it is {stored.status})"
            if stored.role != "assistant" or stored.status not in RUNNING
            else f"a live generation holds its lease ({stored.lease_owner or 'unnamed'})"
        )
        raise


def select_branch(
    session: Session,
    owner: str,
    chat_id: uuid.UUID,
    message_id: uuid.UUID,
    version: int | None,
) -> None:
    """Show the branch through `message_id` (or through its `version`-th sibling): the
    current leaf becomes the newest message below it. updated_at does not move: looking
    at another version is not activity."""
    with session.begin():
        _lock_chat(session, owner, chat_id)
        message = session.scalar(
            sa.select(Message).where(Message.id == message_id, Message.chat_id == chat_id)
        )
        if message is None:
            raise NotFound("message")
        target = message.id
        if version is not None:
            siblings = tree.versions_of(session, [message])[message.id].ids
            if version > len(siblings):
                raise BadVersion(len(siblings))
            target = siblings[version - 1]
        leaf = tree.newest_below(session, target)
        session.execute(
            sa.update(Chat).where(Chat.id == chat_id).values(current_leaf_id=leaf),
            execution_options=_NO_SYNC,
        )


def _lock_chat(session: Session, owner: str, chat_id: uuid.UUID) -> None:
    """Take the chat row's write lock without changing it (a no-op UPDATE)."""
    result = session.execute(
        sa.update(Chat)
        .where(Chat.id == chat_id, Chat.owner == owner)
        .values(updated_at=Chat.updated_at),
        execution_options=_NO_SYNC,
    )
    if _rowcount(result) == 0:
        raise NotFound


def delete_message(session: Session, owner: str, message_id: uuid.UUID) -> None:
    """Delete the message and its subtree (ON DELETE CASCADE). If the current leaf was in
    it (ON DELETE SET NULL cleared it), the newest message left below the parent (else in
    the chat) becomes the current leaf."""
    with session.begin():
        chat_id = _message_chat(session, owner, message_id)
        now = utcnow()
        _touch_chat(session, owner, chat_id, now)
        parent_id = session.scalar(sa.select(Message.parent_id).where(Message.id == message_id))
        result = session.execute(
            sa.delete(Message).where(Message.id == message_id), execution_options=_NO_SYNC
        )
        if _rowcount(result) == 0:
            raise NotFound("message")
        leaf = session.scalar(sa.select(Chat.current_leaf_id).where(Chat.id == chat_id))
        if leaf is None:
            leaf = (
                tree.newest_below(session, parent_id)
                if parent_id is not None
                else tree.newest_in_chat(session, chat_id)
            )
            _set_leaf(session, chat_id, leaf, now)


# --- presets (roles) -------------------------------------------------------------------


def list_presets(session: Session, owner: str, *, limit: int, offset: int) -> list[Preset]:
    query = (
        sa.select(Preset)
        .where(Preset.owner == owner)
        .order_by(Preset.name, Preset.id)
        .limit(limit)
        .offset(offset)
    )
    return list(session.scalars(query))


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a preset named {name!r} already exists")


def create_preset(session: Session, owner: str, fields: dict[str, Any]) -> Preset:
    now = utcnow()
    preset = Preset(id=uuid.uuid4(), owner=owner, created_at=now, updated_at=now, **fields)
    try:
        with session.begin():
            session.add(preset)
    except sa.exc.IntegrityError:
        # The unique (owner, name) constraint decides, even between concurrent requests.
        raise _name_taken(fields["name"]) from None
    return preset


def _owned_preset(session: Session, owner: str, preset_id: uuid.UUID) -> Preset:
    query = sa.select(Preset).where(Preset.id == preset_id, Preset.owner == owner)
    return _one_owned(session, query, "preset")


def get_preset(session: Session, owner: str, preset_id: uuid.UUID) -> Preset:
    with session.begin():
        return _owned_preset(session, owner, preset_id)


def update_preset(
    session: Session, owner: str, preset_id: uuid.UUID, fields: dict[str, Any]
) -> Preset:
    try:
        with session.begin():
            preset = _owned_preset(session, owner, preset_id)
            if fields:
                for name, value in fields.items():
                    setattr(preset, name, value)
                preset.updated_at = utcnow()
    except sa.exc.IntegrityError:
        raise _name_taken(fields["name"]) from None
    return preset


def delete_preset(session: Session, owner: str, preset_id: uuid.UUID) -> None:
    query = sa.delete(Preset).where(Preset.id == preset_id, Preset.owner == owner)
    _delete_owned(session, query, "preset")


# --- sessions (server-side login records) ----------------------------------------------


def create_session(session: Session, owner: str) -> LoginSession:
    record = LoginSession(id=uuid.uuid4(), owner=owner, created_at=utcnow())
    with session.begin():
        session.add(record)
    return record


def get_session(session: Session, owner: str, session_id: uuid.UUID) -> LoginSession:
    with session.begin():
        record = session.scalar(
            sa.select(LoginSession).where(
                LoginSession.id == session_id, LoginSession.owner == owner
            )
        )
    if record is None:
        raise NotFound("session")
    return record


def delete_session(session: Session, owner: str, session_id: uuid.UUID) -> None:
    query = sa.delete(LoginSession).where(
        LoginSession.id == session_id, LoginSession.owner == owner
    )
    _delete_owned(session, query, "session")


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
