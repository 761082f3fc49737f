"""What chat_ui reads from db_api, as typed models (db_api's ChatOut, MessageOut, ...).

db_api owns the contract (its OpenAPI page at /docs); these models name the fields
chat_ui uses and ignore the others, so db_api can grow without breaking chat_ui.
Timestamps stay the ISO strings db_api sends: chat_ui only shows and orders them.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from db_contract import RUNNING, FinishReason, Reason, Role, Status, TitleSource

# What the page says about an answer that ended for this reason, when it has no error text.
REASON_TEXT: dict[str, str] = {
    "stopped": "Stopped by you.",
    "model_unreachable": "The model server could not be reached.",
    "model_error": "The model server failed while answering.",
    "model_stalled": "The model server stopped sending anything.",
    "context_exceeded": "The conversation is too long for the model.",
    "storage_unreachable": "Parlor could not reach its storage.",
    "server_restarted": "Cut off when Parlor restarted.",
    "lease_expired": "Cut off: the server writing it went away.",
}


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with what db_api cannot store (NUL, lone UTF-16 surrogates) replaced by
    U+FFFD, everything else kept. One character for one: offsets into the text hold."""
    if "\x00" not in text:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return text
    return _UNSTORABLE.sub("\ufffd", text)


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
    parent_id: uuid.UUID | None = None
    # Grows with every write; a write must carry a greater one (db_api answers 409).
    revision: int = 0
    finish_reason: str | None = None
    reason: str | None = None
    model: str | None = None
    # Its place among its siblings (the versions of this turn, oldest first).
    version: int = 1
    versions: int = 1
    sibling_ids: list[uuid.UUID] = []
    # The sampling settings it was generated with (see ChatParams).
    params: dict[str, Any] | None = None
    # The plan a planner model wrote before this answer (plan mode), shown folded above it.
    plan: str | None = None
    # The generation's claim on a running answer (chat_ui/leases.py), and a Stop asked
    # for by a replica that does not write it.
    lease_owner: str | None = None
    lease_until: str | None = None
    stop_requested: bool = False
    # chat_ui's own, never stored: this final state is held in memory because db_api
    # has not taken it yet (it is retried until it does).
    unsaved: bool = False

    @property
    def running(self) -> bool:
        return self.role == "assistant" and self.status in RUNNING

    # What may be done with a finished answer, one rule each (see chat_ui/versions.py):
    # an attempt that left nothing worth keeping is retried in place; an answer with text
    # is regenerated as a new version (the old one kept); one cut short goes on.
    @property
    def retryable(self) -> bool:
        return (
            self.role == "assistant"
            and not self.unsaved
            and (self.status == "error" or (self.status == "interrupted" and not self.content))
        )

    @property
    def regenerable(self) -> bool:
        return (
            self.role == "assistant"
            and not self.unsaved
            and bool(self.content)
            and self.status in ("complete", "interrupted")
        )

    @property
    def cut_by_length(self) -> bool:
        return (
            self.role == "assistant"
            and self.status == "complete"
            and (self.finish_reason == "length")
        )

    @property
    def continuable(self) -> bool:
        return self.regenerable and (self.status == "interrupted" or self.cut_by_length)

    @property
    def end_note(self) -> str:
        """Why an interrupted or failed answer ended, in words."""
        if self.status == "error":
            return self.error or REASON_TEXT.get(self.reason or "", "The answer failed.")
        if self.status == "interrupted":
            if self.reason in REASON_TEXT:
                return REASON_TEXT[self.reason]
            return f"Stopped — {self.error}" if self.error else "Stopped."
        return ""


class ChatParams(BaseModel):
    """A chat's (or a role's) sampling settings as db_api stores them (`params`); None
    means the model server's default. Keys chat_ui does not know are kept as they are."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    plan_mode: bool | None = None
    planner_model: str | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ChatSummary(_Read):
    """A chat as the sidebar lists it (GET /chats)."""

    id: uuid.UUID
    title: str | None = None
    system_prompt: str | None = None
    model: str | None = None
    params: ChatParams = Field(default_factory=ChatParams)
    created_at: str = ""
    updated_at: str = ""
    # Who gave the title: "auto" (first words), "model" or "user" (never replaced).
    title_source: TitleSource = "auto"

    @property
    def plan_mode(self) -> bool:
        return self.params.plan_mode is True

    @property
    def planner_model(self) -> str | None:
        return self.params.planner_model or None


class Chat(ChatSummary):
    """A chat with its messages, oldest first (GET /chats/{id})."""

    messages: list[Message] = []
    # Only a window of the current branch was read (chat_ui.window): more lie above
    # the first message / below the last one.
    has_earlier: bool = False
    has_later: bool = False

    def find(self, message_id: uuid.UUID) -> Message | None:
        return next((m for m in self.messages if m.id == message_id), None)

    def replace(self, message: Message) -> None:
        """Put `message` in place of the stored message with the same id."""
        self.messages = [message if m.id == message.id else m for m in self.messages]

    @property
    def running(self) -> bool:
        return any(m.running for m in self.messages)

    @property
    def unsaved(self) -> bool:
        return any(m.unsaved for m in self.messages)


class Page(_Read):
    """What one page shows, read in one request (GET /page, see chat_ui.window): a chat's
    latest window (None when no chat was asked for), the newest chats, the roles."""

    chat: Chat | None = None
    chats: list[ChatSummary] = []
    presets: list[Preset] = []


class Turn(_Read):
    """What POST /chats/{id}/turns answers: the stored question and its pending answer."""

    user: Message
    assistant: Message


class _Write(BaseModel):
    """A request body chat_ui sends: only the fields set are sent (a field set to None
    is sent as null, which clears it)."""

    # A misspelled field is chat_ui's bug: caught here, not dropped on the way.
    model_config = ConfigDict(extra="forbid")

    def body(self) -> dict[str, object]:
        return self.model_dump(mode="json", exclude_unset=True)


class MessagePatch(_Write):
    """A write to one message (PATCH /messages/{id}): only the fields set are sent, and a
    field set to None clears it."""

    content: str | None = None
    status: Status | None = None
    error: str | None = None
    reason: Reason | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    generation_ms: float | None = None
    revision: int | None = None
    model: str | None = None
    params: dict[str, Any] | None = None
    plan: str | None = None
    # Control fields: writing only these does not move the revision (see leases.py).
    lease_owner: str | None = None
    lease_s: float | None = None
    stop_requested: bool | None = None


class ChatPatch(_Write):
    """A change to a chat (PATCH /chats/{id}): only the fields set are sent."""

    title: str | None = None
    system_prompt: str | None = None
    model: str | None = None
    params: dict[str, Any] | None = None
    title_source: TitleSource | None = None


class Preset(_Read):
    """A role (db_api's preset): a person's named system prompt, model and settings."""

    id: uuid.UUID
    name: str
    system_prompt: str | None = None
    model: str | None = None
    params: ChatParams = Field(default_factory=ChatParams)
    created_at: str = ""
    updated_at: str = ""


class PresetWrite(_Write):
    """A new role, or a change to one (POST /presets, PATCH /presets/{id}): only the
    fields set are sent; None clears system_prompt or model."""

    name: str | None = None
    system_prompt: str | None = None
    model: str | None = None
    params: dict[str, Any] | None = None
