"""What chat_ui reads from db_api, as typed models (db_api's ChatOut, MessageOut, ...).

db_api owns the contract (its OpenAPI page at /docs); these models name the fields
chat_ui uses and ignore the others, so db_api can grow without breaking chat_ui.
Timestamps stay the ISO strings db_api sends: chat_ui only shows and orders them.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["system", "user", "assistant"]
# The one spelling of a message's state.
Status = Literal["complete", "pending", "streaming", "interrupted", "error"]
# An answer still being written by a generation.
RUNNING: frozenset[Status] = frozenset({"pending", "streaming"})
# An answer that will not change any more (Retry starts it over).
FINAL: frozenset[Status] = frozenset({"complete", "interrupted", "error"})


class _Read(BaseModel):
    # Fields db_api adds later are ignored until chat_ui needs them.
    model_config = ConfigDict(extra="ignore")


class Message(_Read):
    id: uuid.UUID
    chat_id: uuid.UUID
    role: Role
    content: str = ""
    status: Status = "complete"
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    generation_ms: float | None = None
    created_at: str = ""
    updated_at: str = ""

    @property
    def running(self) -> bool:
        return self.role == "assistant" and self.status in RUNNING


class ChatSummary(_Read):
    """A chat as the sidebar lists it (GET /chats)."""

    id: uuid.UUID
    title: str | None = None
    system_prompt: str | None = None
    model: str | None = None
    created_at: str = ""
    updated_at: str = ""


class Chat(ChatSummary):
    """A chat with its messages, oldest first (GET /chats/{id})."""

    messages: list[Message] = []

    def find(self, message_id: uuid.UUID) -> Message | None:
        return next((m for m in self.messages if m.id == message_id), None)

    def replace(self, message: Message) -> None:
        """Put `message` in place of the stored message with the same id."""
        self.messages = [message if m.id == message.id else m for m in self.messages]

    @property
    def running(self) -> bool:
        return any(m.running for m in self.messages)


class MessagePatch(BaseModel):
    """A write to one message (PATCH /messages/{id}): only the fields set are sent, and a
    field set to None clears it."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    status: Status | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    generation_ms: float | None = None

    def body(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude_unset=True)


class ChatPatch(BaseModel):
    """A change to a chat (PATCH /chats/{id}): only the fields set are sent."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    system_prompt: str | None = None

    def body(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude_unset=True)
