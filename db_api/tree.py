"""A chat's messages form a tree: each message has a parent (null for a first turn), the
children of one parent are the versions of that turn (oldest first), and the chat's
`current_leaf_id` names the branch shown: the path from a first turn down to it.

These queries keep their cost proportional to what they return, never to the chat:
a path is walked upward by primary key (a recursive CTE, cut at the window's size), the
versions of a page of messages are one indexed query, and a subtree is walked down the
(parent_id, created_at) index.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from db_api.models import Message

# No chat is this deep; the bound only keeps a corrupted (cyclic) tree from looping.
MAX_DEPTH = 1_000_000
# Bound parameters per IN (...): far below SQLite's and PostgreSQL's limits.
IN_CHUNK = 1000

_messages = Message.__table__


@dataclass(frozen=True)
class Versions:
    """A message's siblings, itself included, oldest first."""

    ids: list[uuid.UUID]

    def position(self, message_id: uuid.UUID) -> int:
        return self.ids.index(message_id) + 1


def _walk_up(
    name: str, start_param: str, goes_on: Callable[[sa.CTE], list[sa.ColumnElement[bool]]]
) -> sa.CTE:
    """A recursive CTE `name` of (id, parent_id, depth): the message bound as `start_param`
    at depth 0, then its parent, its parent's parent, ... by primary key, one step further
    while every condition `goes_on(walk)` names holds for the step reached so far."""
    start = (
        sa.select(_messages.c.id, _messages.c.parent_id, sa.literal(0, sa.Integer).label("depth"))
        .where(_messages.c.id == sa.bindparam(start_param))
        .cte(name, recursive=True)
    )
    above = _messages.alias("above")
    return start.union_all(
        sa.select(above.c.id, above.c.parent_id, start.c.depth + 1).where(
            above.c.id == start.c.parent_id, *goes_on(start)
        )
    )


def _path_up_query() -> sa.Select[tuple[Message]]:
    path = _walk_up("path", "start_id", lambda at: [at.c.depth < sa.bindparam("depth_bound")])
    return (
        sa.select(Message)
        .join(path, Message.id == path.c.id)
        .order_by(path.c.depth.desc())
        .execution_options(populate_existing=True)
    )


def _ids_below_query() -> sa.Select[tuple[uuid.UUID]]:
    walk = _walk_up(
        "below",
        "leaf_id",
        lambda at: [at.c.id != sa.bindparam("message_id"), at.c.depth < MAX_DEPTH],
    )
    return sa.select(walk.c.id).order_by(walk.c.depth.desc())


# Built once: constructing these recursive statements (an alias, a CTE's columns) cost
# more than running them, on every page of a chat.
_PATH_UP = _path_up_query()
_IDS_BELOW = _ids_below_query()


def path_up(
    session: Session, start_id: uuid.UUID, *, limit: int | None = None
) -> tuple[list[Message], bool]:
    """The path from a first turn down to `start_id`, oldest first. With `limit`: only the
    last `limit` messages of it, and whether more lie above them."""
    depth_bound = MAX_DEPTH if limit is None else limit
    params = {"start_id": start_id, "depth_bound": depth_bound}
    rows = list(session.scalars(_PATH_UP, params))
    has_earlier = limit is not None and len(rows) > limit
    if has_earlier:
        rows = rows[1:]
    return rows, has_earlier


def ids_below(
    session: Session, leaf_id: uuid.UUID, message_id: uuid.UUID
) -> list[uuid.UUID] | None:
    """The ids on the path from just below `message_id` down to `leaf_id`, oldest first
    (empty when it is the leaf), or None when `message_id` is not on that path. Walked
    upward from the leaf by primary key (ids only), stopping at `message_id`: the cost
    grows with how far the message lies above the leaf, never with the chat's size."""
    ids = list(session.scalars(_IDS_BELOW, {"leaf_id": leaf_id, "message_id": message_id}))
    if not ids or ids[0] != message_id:
        return None
    return ids[1:]


def messages_by_id(session: Session, ids: Sequence[uuid.UUID]) -> list[Message]:
    """These messages, in the order of `ids` (one indexed query per IN_CHUNK ids)."""
    found: dict[uuid.UUID, Message] = {}
    for chunk in _chunks(list(ids)):
        query = sa.select(Message).where(Message.id.in_(chunk))
        for message in session.scalars(query.execution_options(populate_existing=True)):
            found[message.id] = message
    return [found[i] for i in ids if i in found]


def versions_of(session: Session, messages: Iterable[Message]) -> dict[uuid.UUID, Versions]:
    """Each message's siblings (the versions of its turn), in two indexed queries at most,
    however many messages are asked about."""
    messages = list(messages)
    parents = sorted({m.parent_id for m in messages if m.parent_id is not None})
    root_chats = sorted({m.chat_id for m in messages if m.parent_id is None})
    groups: dict[tuple[str, uuid.UUID], list[uuid.UUID]] = {}
    order = (Message.created_at, Message.id)
    for chunk in _chunks(parents):
        children = sa.select(Message.id, Message.parent_id).where(Message.parent_id.in_(chunk))
        for message_id, parent_id in session.execute(children.order_by(*order)):
            if parent_id is not None:
                groups.setdefault(("parent", parent_id), []).append(message_id)
    for chunk in _chunks(root_chats):
        roots = sa.select(Message.id, Message.chat_id).where(
            Message.chat_id.in_(chunk), Message.parent_id.is_(None)
        )
        for message_id, chat_id in session.execute(roots.order_by(*order)):
            groups.setdefault(("chat", chat_id), []).append(message_id)
    result: dict[uuid.UUID, Versions] = {}
    for m in messages:
        key = ("parent", m.parent_id) if m.parent_id is not None else ("chat", m.chat_id)
        # A message always counts among its own versions (even one deleted meanwhile).
        result[m.id] = Versions(groups.get(key) or [m.id])
    return result


def newest_below(session: Session, message_id: uuid.UUID) -> uuid.UUID:
    """The most recently created message of the subtree under `message_id` (itself
    included): a leaf, since a child is always newer than its parent."""
    start = (
        sa.select(_messages.c.id, _messages.c.created_at, sa.literal(0, sa.Integer).label("depth"))
        .where(_messages.c.id == message_id)
        .cte("subtree", recursive=True)
    )
    below = _messages.alias("below")
    subtree = start.union_all(
        sa.select(below.c.id, below.c.created_at, start.c.depth + 1).where(
            below.c.parent_id == start.c.id, start.c.depth < MAX_DEPTH
        )
    )
    newest = session.scalar(
        sa.select(subtree.c.id).order_by(subtree.c.created_at.desc(), subtree.c.id.desc()).limit(1)
    )
    return newest if newest is not None else message_id


def newest_in_chat(session: Session, chat_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(
        sa.select(Message.id)
        .where(Message.chat_id == chat_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )


def _chunks(values: Sequence[uuid.UUID]) -> Iterable[Sequence[uuid.UUID]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]
