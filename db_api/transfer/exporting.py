"""Chats out of the database: one as JSON or Markdown, or all of an owner's as one JSON
file produced piece by piece (a batch of chats per short transaction), never whole in
memory."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from db_api.crud import NotFound
from db_api.models import Chat, Message, utcnow
from db_api.transfer.schema import FORMAT, VERSION, ExportChat, ExportFile, ExportMessage

BATCH_CHATS = 50


def _chat(chat: Chat, messages: list[Message]) -> ExportChat:
    exported = ExportChat.model_validate(chat, from_attributes=True)
    exported.messages = [ExportMessage.model_validate(m, from_attributes=True) for m in messages]
    return exported


def _messages_of(session: Session, chat_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Message]]:
    found: dict[uuid.UUID, list[Message]] = {chat_id: [] for chat_id in chat_ids}
    # Creation order puts every parent before its children.
    query = (
        sa.select(Message)
        .where(Message.chat_id.in_(chat_ids))
        .order_by(Message.chat_id, Message.created_at, Message.id)
    )
    for message in session.scalars(query):
        found[message.chat_id].append(message)
    return found


def export_chat(session: Session, owner: str, chat_id: uuid.UUID) -> ExportFile:
    with session.begin():
        chat = session.scalar(sa.select(Chat).where(Chat.id == chat_id, Chat.owner == owner))
        if chat is None:
            raise NotFound
        messages = _messages_of(session, [chat_id])[chat_id]
        exported = _chat(chat, messages)
    return ExportFile(format=FORMAT, version=VERSION, exported_at=utcnow(), chats=[exported])


def export_all(make_session: sessionmaker[Session], owner: str) -> Iterator[bytes]:
    """The owner's chats, oldest first, as one Parlor export file in pieces."""
    yield (
        f'{{"format":"{FORMAT}","version":{VERSION},'
        f'"exported_at":"{utcnow().isoformat().replace("+00:00", "Z")}","chats":['
    ).encode()
    after: tuple[datetime, uuid.UUID] | None = None
    first = True
    while True:
        with make_session() as session, session.begin():
            query = sa.select(Chat).where(Chat.owner == owner)
            if after is not None:
                when, last_id = after
                query = query.where(
                    sa.or_(
                        Chat.created_at > when,
                        sa.and_(Chat.created_at == when, Chat.id > last_id),
                    )
                )
            chats = list(
                session.scalars(query.order_by(Chat.created_at, Chat.id).limit(BATCH_CHATS))
            )
            messages = _messages_of(session, [chat.id for chat in chats])
            pieces = [_chat(chat, messages[chat.id]).model_dump_json() for chat in chats]
        for piece in pieces:
            yield (piece if first else "," + piece).encode()
            first = False
        if len(chats) < BATCH_CHATS:
            break
        after = (chats[-1].created_at, chats[-1].id)
    yield b"]}"


# -- Markdown ----------------------------------------------------------------------------

_ROLE_NAMES = {"user": "You", "assistant": "Assistant", "system": "System"}


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines() or [""])


def _message_md(message: ExportMessage, versions: list[ExportMessage]) -> str:
    head = f"### {_ROLE_NAMES.get(message.role, message.role)}"
    details = [_when(message.created_at)]
    if message.role == "assistant" and message.model:
        details.append(message.model)
    if len(versions) > 1:
        details.append(f"version {versions.index(message) + 1} of {len(versions)}")
    if message.status != "complete":
        details.append(message.status + (f": {message.reason}" if message.reason else ""))
    body = message.content if message.content.strip() else "*(empty)*"
    if message.status == "error" and message.error:
        body = f"{body}\n\n> Error: {message.error}"
    return f"{head} · {' · '.join(details)}\n\n{body}\n"


def markdown(chat: ExportChat) -> str:
    """The chat for reading: its current branch in order, then every other branch from
    where it leaves what was already shown (each message appears once)."""
    by_id = {m.id: m for m in chat.messages}
    siblings: dict[uuid.UUID | None, list[ExportMessage]] = {}
    for m in chat.messages:
        siblings.setdefault(m.parent_id, []).append(m)

    def path_to(leaf: uuid.UUID | None) -> list[ExportMessage]:
        path: list[ExportMessage] = []
        node = by_id.get(leaf) if leaf is not None else None
        while node is not None:
            path.append(node)
            node = by_id.get(node.parent_id) if node.parent_id is not None else None
        return path[::-1]

    lines = [f"# {chat.title or 'Untitled chat'}", ""]
    lines.append(f"- Created {_when(chat.created_at)}, last active {_when(chat.updated_at)}")
    if chat.model:
        lines.append(f"- Model: {chat.model}")
    for name, value in sorted(chat.params.items()):
        lines.append(f"- {name}: {value}")
    if chat.system_prompt:
        lines += ["- System prompt:", "", _quote(chat.system_prompt)]
    lines.append("")
    shown: set[uuid.UUID] = set()
    current = path_to(chat.current_leaf_id)
    for m in current:
        lines += ["---", "", _message_md(m, siblings[m.parent_id])]
        shown.add(m.id)
    leaves = [m for m in chat.messages if m.id not in siblings]
    others = [leaf for leaf in leaves if leaf.id not in shown]
    for number, leaf in enumerate(others, 1):
        branch = [m for m in path_to(leaf.id) if m.id not in shown]
        if number == 1:
            lines += ["---", "", "## Other versions", ""]
        fork = by_id.get(branch[0].parent_id) if branch[0].parent_id else None
        where = (
            f"after {_ROLE_NAMES.get(fork.role, fork.role).lower()}'s message of "
            f"{_when(fork.created_at)}"
            if fork
            else "as a first message"
        )
        lines += [f"#### Branch {number}, {where}", ""]
        for m in branch:
            lines.append(_message_md(m, siblings[m.parent_id]))
            shown.add(m.id)
    return "\n".join(lines).rstrip() + "\n"


def filename(title: str | None, extension: str) -> str:
    """An ASCII file name from the title (the header's filename*= carries Unicode)."""
    ascii_title = unicodedata.normalize("NFKD", title or "").encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_title).strip("-").lower()[:60] or "chat"
    return f"{slug}.{extension}"
