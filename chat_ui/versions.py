"""A conversation is a tree: edit a question, regenerate an answer, continue a cut answer,
switch between versions.

The rules, once:
- *Edit* stores the new text as a sibling of the question (the same parent) with a pending
  answer below it, in one db_api transaction; the old question and everything after it
  stay, one switch away.
- *Regenerate* asks again for an answer that has text (complete, or stopped part way): a
  new pending sibling of it, the old one kept. *Retry* (conversation.py) is for an attempt
  that left nothing worth keeping (an error, or nothing written): it starts over in place.
- *Continue* goes on with the latest answer when it was cut at the length limit or stopped:
  the same message is reopened and the generation appends to its text (the partial answer
  is sent as the last, open assistant turn). It streams, re-attaches and stops like any
  answer.
- *Switch* shows another version's branch (db_api: the newest path below that version).
- One answer at a time in a chat: while one is written, each of these is refused (409),
  as a new message is. The history sent to the model is the current path only: what
  db_api answers for the chat.
"""

from __future__ import annotations

from uuid import UUID

from chat_ui.clients import DbRejected, DbUnavailable, NotFound, Stale
from chat_ui.contracts import Chat, Message
from chat_ui.conversation import STORAGE_AWAY, Conversation, Refused, SendRefused

BUSY_TITLE = "An answer is being written"
BUSY = "An answer is still being written in this chat: wait for it to finish, or stop it."
ONLY_LATEST = "Only the latest answer can be continued. Regenerate makes a new version of this one."


class Versions(Conversation):
    """The tree operations of one owner's conversations (the routes in routes/versions.py)."""

    def _busy(self, chat: Chat) -> bool:
        # The running answer may be on a branch not shown (switched to from a search
        # result meanwhile): this process knows what it writes.
        return chat.running or self._generations.running_in(chat.id, self.owner)

    async def _idle_chat(self, chat_id: UUID) -> Chat:
        chat = await self.load(chat_id)
        if self._busy(chat):
            raise Refused(409, BUSY_TITLE, BUSY)
        return chat

    @staticmethod
    def _shown(chat: Chat, message_id: UUID) -> Message:
        """A message of the branch the chat shows; only those can be edited or answered
        again (what the page offers)."""
        message = chat.find(message_id)
        if message is None:
            raise NotFound(str(message_id))
        return message

    @staticmethod
    def _before(chat: Chat, message: Message) -> list[Message]:
        return chat.messages[: chat.messages.index(message)]

    async def question(self, chat_id: UUID, message_id: UUID) -> Message:
        """A question of the branch shown, to edit."""
        message = self._shown(await self.load(chat_id), message_id)
        if message.role != "user":
            raise Refused(409, "Not a question", "Only your own messages can be edited.")
        return message

    async def edit(self, chat_id: UUID, message_id: UUID, content: str) -> Chat:
        """A new version of the question `message_id`, answered; the chat on its branch.
        Raises SendRefused (the typed text kept) or NotFound."""
        content = self._cleaned(content)
        try:
            chat = await self.load(chat_id)
            question = self._shown(chat, message_id)
            if question.role != "user":
                raise SendRefused(409, "Only your own messages can be edited.", content)
            if self._busy(chat):
                raise SendRefused(409, BUSY + " Your edit is kept below.", content)
            turn = await self._db.add_turn(
                self.owner, chat_id, content, self._claim(), parent=question.parent_id
            )
        except DbUnavailable as exc:
            raise SendRefused(503, STORAGE_AWAY, content) from exc
        except DbRejected as exc:
            raise SendRefused(422, exc.detail, content) from exc
        return await self._answer(chat, self._before(chat, question), [turn.user, turn.assistant])

    async def regenerate(self, chat_id: UUID, message_id: UUID) -> Chat:
        """A new version of the answer `message_id`, being written; the chat on its branch."""
        chat = await self._idle_chat(chat_id)
        answer = self._shown(chat, message_id)
        if not answer.regenerable:
            raise Refused(409, "Nothing to regenerate", _why_not(answer, "regenerated"))
        if answer.parent_id is None:
            raise Refused(409, "Nothing to regenerate", "This answer has no question.")
        try:
            fresh = await self._db.add_answer(self.owner, chat_id, answer.parent_id, self._claim())
        except DbRejected as exc:
            raise Refused(422, "Could not regenerate", exc.detail) from exc
        return await self._answer(chat, self._before(chat, answer), [fresh])

    async def continue_answer(self, chat_id: UUID, message_id: UUID) -> Message:
        """Reopen an answer cut at the length limit (or stopped) and go on writing it."""
        chat = await self._idle_chat(chat_id)
        answer = self._shown(chat, message_id)
        if not answer.continuable:
            raise Refused(409, "Nothing to continue", _why_not(answer, "continued"))
        if chat.messages[-1].id != answer.id:
            # Later turns were written after it: going on with it would change what they
            # answered. A new version of it (Regenerate) starts a branch instead.
            raise Refused(409, "Nothing to continue", ONLY_LATEST)
        try:
            reopened = await self._db.reopen(self.owner, message_id, self._claim())
        except Stale as exc:
            raise Refused(409, BUSY_TITLE, BUSY) from exc
        except DbRejected as exc:
            raise Refused(422, "Could not continue", exc.detail) from exc
        chat.replace(reopened)
        self._generations.start(self.owner, chat, reopened)
        return reopened

    async def switch(self, chat_id: UUID, message_id: UUID, version: int) -> Chat:
        """Show the branch through version `version` (1-based) of the message `message_id`:
        one of the branch shown, or of another branch of the chat (a page left open in a
        second tab still switches)."""
        chat = await self._idle_chat(chat_id)
        shown = chat.find(message_id)
        count = f"{shown.versions} version(s)" if shown is not None else "fewer versions"
        no_such = Refused(
            422, "No such version", f"This message has {count}: there is no {version}."
        )
        if version < 1 or (shown is not None and version > shown.versions):
            raise no_such
        try:
            await self._db.select_branch(self.owner, chat_id, message_id, version)
        except DbRejected as exc:
            raise no_such from exc
        return await self.load(chat_id)

    async def _answer(self, chat: Chat, kept: list[Message], added: list[Message]) -> Chat:
        """The chat on its new branch (`kept`, then `added`), its new answer started."""
        chat.messages = [*kept, *added]
        self._generations.start(self.owner, chat, added[-1])
        return chat


def _why_not(answer: Message, done: str) -> str:
    if answer.role != "assistant":
        return f"Only an answer can be {done}."
    if answer.unsaved:
        return f"This answer is not stored yet: it can be {done} once it is."
    if answer.running:
        return BUSY
    if done == "continued":
        return "Only an answer cut at the length limit or stopped part way can be continued."
    return "This answer has no text to keep: Retry answers again in its place."
