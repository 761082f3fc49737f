"""The conversation operations the routes call: load, send, stop, retry, rename, delete.

A route reads the request, calls one of these and renders the result; the rules (what a
valid message is, what is stored first, when a chat gets its title, which answers no
generation will finish) live here, once. One `Conversation` acts for one owner.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from uuid import UUID

from chat_ui.chat_list import SIDEBAR_CHATS
from chat_ui.clients import MAX_ROLES, DbApi, DbRejected, DbUnavailable, NotFound, Stale
from chat_ui.config import Settings
from chat_ui.contracts import (
    Chat,
    ChatPatch,
    ChatSummary,
    Message,
    MessagePatch,
    Page,
    storable,
)
from chat_ui.follower import Follower
from chat_ui.generation import Generation, Generations

log = logging.getLogger("chat_ui.conversation")

TITLE_CHARS = 60
STORAGE_AWAY = (
    "Parlor cannot reach its storage right now, so your message was not sent. "
    "Your text is kept below: send it again in a moment."
)

# What Retry writes (after reopening the answer) before answering again: the failed
# attempt leaves no trace.
RETRY_RESET = MessagePatch(
    content="",
    status="pending",
    error=None,
    reason=None,
    finish_reason=None,
    prompt_tokens=None,
    completion_tokens=None,
    ttft_ms=None,
    generation_ms=None,
    plan=None,
)


class Refused(Exception):
    """The operation is not possible as asked; shown as an error page with `status`."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class SendRefused(Exception):
    """A message was not sent; the typed `text` goes back to the person with `reason`."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.text = text


@dataclass
class Sent:
    chat: Chat
    user: Message
    answer: Message


def title_from(content: str) -> str:
    """A chat's automatic title: its first message on one line, shortened."""
    text = " ".join(content.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def chat_title(chat: ChatSummary) -> str:
    return chat.title or "New chat"


class Conversation:
    def __init__(self, owner: str, db: DbApi, generations: Generations, settings: Settings) -> None:
        self.owner = owner
        self._db = db
        self._generations = generations
        self._settings = settings

    def _claim(self) -> dict[str, object]:
        """The lease a new generation of this replica takes (chat_ui/leases.py)."""
        return self._generations.replica.claim()

    # --- chats -----------------------------------------------------------------------------

    async def chats(self) -> list[ChatSummary]:
        """The newest chats, one more than the sidebar lists (see chat_ui.chat_list)."""
        return await self._db.list_chats(self.owner, limit=SIDEBAR_CHATS + 1)

    async def sidebar(self) -> list[ChatSummary] | None:
        """The chat list, or None when storage cannot be reached (the page goes on)."""
        try:
            return await self.chats()
        except DbUnavailable:
            return None

    async def new_chat(self, settings: ChatPatch | None = None) -> ChatSummary:
        return await self._db.create_chat(self.owner, settings)

    async def load(self, chat_id: UUID) -> Chat:
        """The chat with its messages, answers that nothing will finish marked so."""
        return await self.reconcile(await self._db.get_chat(self.owner, chat_id))

    async def load_window(self, chat_id: UUID, window: dict[str, str | int]) -> Chat:
        """Like `load`, only the window of the branch that chat_ui.window asks for."""
        return await self.reconcile(await self._db.get_chat(self.owner, chat_id, window))

    async def load_page(self, chat_id: UUID | None, limit: int) -> Page:
        """What a page shows in one read: the chat's latest `limit` messages (reconciled
        like `load`), one more chat than the sidebar lists, and the roles."""
        page = await self._db.get_page(
            self.owner, chat_id, limit=limit, chats=SIDEBAR_CHATS + 1, presets=MAX_ROLES
        )
        if page.chat is not None:
            page.chat = await self.reconcile(page.chat)
        return page

    async def load_unreconciled(self, chat_id: UUID) -> Chat:
        return await self._db.get_chat(self.owner, chat_id)

    async def reconcile(self, chat: Chat) -> Chat:
        """Show each running answer as it truly stands. One this process has finished but
        not stored yet (storage was away) is shown from memory, marked unsaved. One that
        another replica writes under a live lease stays running (the page follows it);
        one whose writer is gone (this replica restarted, or another one's lease lapsed)
        is ended as interrupted with its partial text (leases.Replica.settle): nobody
        will ever finish it, and restarting it silently could answer twice; the person
        gets the Retry button instead."""
        for msg in chat.messages:
            if not msg.running:
                continue
            gen = self._generations.get(msg.id, self.owner)
            if gen is not None:
                if gen.finished.is_set() and gen.final is not None:
                    chat.replace(gen.final)
                elif len(gen.text) > len(msg.content) or len(gen.plan) > len(msg.plan or ""):
                    # The stored partial lags by up to a flush interval: a reload shows the
                    # text (and plan) as this process has it, and the stream follows on.
                    content = max(gen.text, msg.content, key=len)
                    plan = max(gen.plan, msg.plan or "", key=len) or None
                    chat.replace(msg.model_copy(update={"content": content, "plan": plan}))
                continue
            chat.replace(await self._generations.replica.settle(self._db, self.owner, msg))
        return chat

    async def message(self, chat_id: UUID, message_id: UUID) -> Message:
        """One message as it stands; an answer finished here is answered from memory
        (so an answer whose saving is pending shows even while storage is away)."""
        gen = self._generations.get(message_id, self.owner)
        if (
            gen is not None
            and gen.chat_id == chat_id
            and gen.finished.is_set()
            and gen.final is not None
        ):
            return gen.final
        # The window of this one message: reading (and reconciling) the whole chat for it
        # cost every stream of a long chat's answer the whole chat.
        only: dict[str, str | int] = {"limit": 1, "around": str(message_id)}
        message = (await self.load_window(chat_id, only)).find(message_id)
        if message is None:
            raise NotFound(str(message_id))
        return message

    async def rename(self, chat_id: UUID, raw_title: str) -> None:
        title = " ".join(raw_title.split())
        limit = self._settings.max_title_chars
        if not title:
            raise Refused(422, "Empty title", "A chat title cannot be empty.")
        if len(title) > limit:
            raise Refused(422, "Title too long", f"Chat titles are at most {limit} characters.")
        try:
            # "user": a title the person gave, which a model's title never replaces.
            await self._db.update_chat(
                self.owner, chat_id, ChatPatch(title=title, title_source="user")
            )
        except DbRejected as exc:
            raise Refused(422, "Could not rename", exc.detail) from exc

    async def set_system_prompt(self, chat_id: UUID, raw_prompt: str) -> None:
        prompt = raw_prompt.strip()
        limit = self._settings.max_system_prompt_chars
        if len(prompt) > limit:
            raise Refused(
                422, "System prompt too long", f"The system prompt is at most {limit} characters."
            )
        # Empty means "use the default from the settings".
        try:
            await self._db.update_chat(self.owner, chat_id, ChatPatch(system_prompt=prompt or None))
        except DbRejected as exc:
            raise Refused(422, "Could not save the system prompt", exc.detail) from exc

    async def delete(self, chat_id: UUID) -> None:
        """Stop the chat's running answers, then delete it with all its messages."""
        chat = await self.load_unreconciled(chat_id)
        for msg in chat.messages:
            await self._generations.stop(msg.id, self.owner)
        await self._db.delete_chat(self.owner, chat_id)

    # --- answers ---------------------------------------------------------------------------

    def live(self, message_id: UUID) -> Generation | None:
        """The generation writing this answer in this process, if any."""
        return self._generations.get(message_id, self.owner)

    def follower(self, answer: Message) -> Follower:
        """A running answer another replica writes, followed from what it saves."""
        return Follower(self._db, self.owner, answer, self._generations.replica)

    def _cleaned(self, content: str) -> str:
        """The message as it will be stored, or SendRefused (text kept)."""
        # Browsers send a textarea's line breaks as CRLF; the limit counts what was typed.
        content = storable(content.replace("\r\n", "\n"))
        limit = self._settings.max_message_chars
        if not content.strip():
            raise SendRefused(422, "Type a message first.", content)
        if len(content) > limit:
            raise SendRefused(
                422,
                f"Messages are at most {limit} characters (this one has {len(content)}).",
                content,
            )
        return content

    async def start_chat(self, content: str, settings: ChatPatch | None = None) -> Sent:
        """A new chat (with `settings`, e.g. its model) and its first message (so no
        empty chat is left behind)."""
        content = self._cleaned(content)
        try:
            chat = await self.new_chat(settings)
        except DbUnavailable as exc:
            raise SendRefused(503, STORAGE_AWAY, content) from exc
        try:
            return await self.send(chat.id, content)
        except SendRefused:
            with contextlib.suppress(DbUnavailable, NotFound):
                await self._db.delete_chat(self.owner, chat.id)
            raise

    async def send(self, chat_id: UUID, content: str) -> Sent:
        """Store the person's message and a pending answer (one transaction), title a
        new chat and start answering. Raises SendRefused (text kept) or NotFound. One
        answer at a time in a chat: while one is written, a new message is refused (its
        text kept); the page disables Send meanwhile."""
        content = self._cleaned(content)
        try:
            chat = await self.load(chat_id)
            if chat.running or self._generations.running_in(chat_id, self.owner):
                raise SendRefused(
                    409,
                    "An answer is still being written: wait for it to finish, or stop it, "
                    "then send your message.",
                    content,
                )
            # The person's text is stored before anything is sent to the model.
            turn = await self._db.add_turn(self.owner, chat_id, content, self._claim())
        except DbUnavailable as exc:
            raise SendRefused(503, STORAGE_AWAY, content) from exc
        except DbRejected as exc:
            raise SendRefused(422, exc.detail, content) from exc
        first = not chat.title
        if first:
            try:
                titled = await self._db.update_chat(
                    self.owner, chat_id, ChatPatch(title=title_from(content))
                )
                chat.title = titled.title
            except (DbUnavailable, DbRejected) as exc:
                log.warning("could not title chat %s: %s", chat_id, exc)
        chat.messages = [*chat.messages, turn.user, turn.assistant]
        gen = self._generations.start(self.owner, chat, turn.assistant)
        if first and self._settings.model_titles:
            self._generations.title_after(gen, content)
        return Sent(chat=chat, user=turn.user, answer=turn.assistant)

    async def stop(self, chat_id: UUID, message_id: UUID) -> Message:
        """Stop a running answer (its partial text kept); the answer as it now stands."""
        gen = await self._generations.stop(message_id, self.owner)
        if gen is not None and gen.chat_id == chat_id and gen.final is not None:
            return gen.final
        # Already finished (or orphaned, which load ends): as it stands.
        message = await self.message(chat_id, message_id)
        if message.running:
            # Another replica writes it: asked through storage, it stops on its next save.
            message = await self._generations.replica.stop_elsewhere(self._db, self.owner, message)
        return message

    async def retry(self, chat_id: UUID, message_id: UUID) -> Message:
        """Answer again in place of a failed answer (or one cut off before any text)."""
        chat = await self.load(chat_id)
        message = chat.find(message_id)
        if message is None:
            raise NotFound(str(message_id))
        if message.role != "assistant":
            raise Refused(409, "Nothing to retry", "Only an answer can be retried.")
        if message.running:
            return message
        if message.unsaved:
            raise Refused(409, "Still saving", "This answer is not stored yet: retry once it is.")
        if not message.retryable:
            # An answer with text is kept: Regenerate or Continue (chat_ui/versions.py).
            raise Refused(
                409,
                "Nothing to retry",
                "This answer is kept: Regenerate makes a new version of it, Continue goes on.",
            )
        try:
            reopened = await self._db.reopen(self.owner, message_id, self._claim())
        except Stale as exc:
            raise Refused(409, "Already answering", "This answer is being written.") from exc
        reset = RETRY_RESET.model_copy(update={"revision": reopened.revision + 1})
        message = await self._db.update_message(self.owner, message_id, reset)
        chat.replace(message)
        self._generations.start(self.owner, chat, message)
        return message
