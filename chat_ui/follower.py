"""Following an answer that another chat_ui replica writes, from what it saves in db_api.

With several replicas behind a load balancer, a page or a stream often lands on a
replica that does not run the answer (a reload, a second tab, a reconnect). That replica
reads the answer's saved partial text from db_api every `CHAT_UI_FOLLOW_POLL_S` and hands
on what grew, until the answer is final; the stream routes treat a `Follower` exactly as
the in-process `generation.Generation` (`text`, `follow()`, `finished`, `final`), so the
same Markdown streaming and the same `done` event come out of either.

Why polling `GET /messages/{id}` rather than a change feed (PostgreSQL LISTEN/NOTIFY
through db_api): it needs nothing new in db_api and works the same on SQLite, through any
number of db_api replicas and proxies; each poll is one primary-key read; and the lag it
adds (the poll interval) is below the writer's own save interval, which bounds the lag
anyway (the writer saves its partial text every `CHAT_UI_FLUSH_INTERVAL_S`): 0.5 s + 0.4 s
by default. A change feed would save the reads but hold a database connection per
followed answer and would still only see what the writer has saved.

A follower that sees the writer's lease lapse ends the answer itself (reason
`lease_expired`, see chat_ui/leases.py), so a stream never hangs on a dead replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol
from uuid import UUID

from chat_ui.clients import DbApi, DbUnavailable, NotFound
from chat_ui.contracts import Message
from chat_ui.generation import Told, Update
from chat_ui.leases import Replica

STORAGE_AWAY = "Storage cannot be reached right now: the answer shows up again when it is back."


class AnswerSource(Protocol):
    """What the stream routes follow: a `generation.Generation` (this replica writes the
    answer) or a `Follower` (another one does)."""

    text: str
    finished: asyncio.Event
    # The answer once finished (None: it was deleted meanwhile).
    final: Message | None

    def follow(self, offset: int = 0) -> AsyncIterator[Update]: ...


class Follower:
    """A running answer written elsewhere, as it is saved."""

    def __init__(self, db: DbApi, owner: str, message: Message, replica: Replica) -> None:
        self.message_id: UUID = message.id
        self.chat_id: UUID = message.chat_id
        self.owner = owner
        self.text = message.content
        self.notice = ""
        self.finished = asyncio.Event()
        # The answer once it is final; None with `finished` set when it was deleted.
        self.final: Message | None = None
        self._db = db
        self._replica = replica

    async def follow(self, offset: int = 0) -> AsyncIterator[Update]:
        """The text after `offset` and the notice, now and after every poll that changed
        them, until the answer is final."""
        told = Told(offset)
        while True:
            # The text and the notice: a follower does not hand on a plan as it grows.
            news = told.news(self.text, self.notice, "", finished=self.finished.is_set())
            if news is not None:
                yield news
            if self.finished.is_set():
                return
            await asyncio.sleep(self._replica.poll_s)
            await self.poll()

    async def reach(self, offset: int) -> None:
        """Wait until the saved text is `offset` long or the answer has ended: a page the
        writing replica showed from memory is ahead of what it has saved (by up to its
        save interval), and a stream resumed from there must not first show less."""
        while len(self.text) < offset and not self.finished.is_set():
            await asyncio.sleep(self._replica.poll_s)
            await self.poll()

    async def poll(self) -> None:
        """Read the answer once more; end the follow when it is final (or gone)."""
        try:
            stored = await self._db.get_message(self.owner, self.message_id)
            if stored.running:
                stored = await self._replica.settle(self._db, self.owner, stored)
        except NotFound:
            self.finished.set()
            return
        except DbUnavailable:
            self.notice = STORAGE_AWAY
            return
        self.notice = ""
        if not stored.content.startswith(self.text):
            # Written over (answered again from the start): the page starts over too, from
            # the bubble as it now stands (a running one opens a fresh stream).
            self.final = stored
            self.finished.set()
            return
        self.text = stored.content
        if not stored.running:
            self.final = stored
            self.finished.set()
