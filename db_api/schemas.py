"""Request and response bodies of the REST contract (see DESIGN "Data").

Length limits come from settings, which differ per app instance, so each input model
names the setting that bounds each text field (`LIMITS`) and `check_limits` enforces it
in the handler; the static checks (types, NUL bytes, enums, ranges) are plain pydantic.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, get_args

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from db_api.config import Settings

Role = Literal["system", "user", "assistant"]
Status = Literal["complete", "pending", "streaming", "interrupted", "error"]

# Columns are 32-bit integers on every backend; larger counts are a client bug.
INT32_MAX = 2_147_483_647
# A day in milliseconds is already absurd for one answer; it bounds the float columns.
MAX_MS = 86_400_000.0


def _storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and neither backend can encode a lone UTF-16
    # surrogate (JSON allows "\ud800"): both would otherwise fail deep in the driver.
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (it contains a lone surrogate)") from exc
    return value


# Whitespace as JSON Schema (ECMA-262 `\s`) defines it, so that the published patterns
# below and the checks here agree on what "blank" means.
_WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_VISIBLE = re.compile(f"[^{_WHITESPACE}]")


def is_blank(value: str) -> bool:
    return _VISIBLE.search(value) is None


def _not_blank(value: str) -> str:
    if is_blank(value):
        raise ValueError("must not be empty or only whitespace; send null to clear it")
    return value


# The published schema states the same rules, so a fuzzer (or a client generator)
# knows what will be accepted. Lone surrogates cannot be expressed in JSON Schema.
TEXT_SCHEMA: dict[str, Any] = {"type": "string", "pattern": "^[^\\u0000]*$"}
NON_BLANK_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$",
}

StorableText = Annotated[str, AfterValidator(_storable_text), WithJsonSchema(TEXT_SCHEMA)]
NonBlankText = Annotated[
    str,
    AfterValidator(_storable_text),
    AfterValidator(_not_blank),
    WithJsonSchema(NON_BLANK_SCHEMA),
]


def _json_number(value: object) -> object:
    # JSON's types as JSON Schema reads them: true/false and "12" are not numbers
    # (pydantic's lax mode would take them as 1/0/12), while 3.0 is the integer 3.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


# The validator comes last so that it runs first, before the constrained number.
TokenCount = Annotated[int, Field(ge=0, le=INT32_MAX), BeforeValidator(_json_number)]
Millis = Annotated[
    float, Field(ge=0, le=MAX_MS, allow_inf_nan=False), BeforeValidator(_json_number)
]


class _Input(BaseModel):
    # Unknown fields are a client bug (a typo would silently drop data): reject them.
    model_config = ConfigDict(extra="forbid")
    # field name -> the Settings attribute holding its maximum length
    LIMITS: ClassVar[dict[str, str]] = {}


class ChatCreate(_Input):
    title: NonBlankText | None = None
    system_prompt: StorableText | None = None
    model: NonBlankText | None = None
    LIMITS = {
        "title": "max_title_chars",
        "system_prompt": "max_message_chars",
        "model": "max_model_chars",
    }


class ChatUpdate(ChatCreate):
    """Only the fields sent are changed; null clears a field."""


class MessageCreate(_Input):
    # The emptiness rule of check_content, stated in the schema as well.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {
                "properties": {
                    "role": {"const": "assistant"},
                    "status": {"enum": ["pending", "streaming", "interrupted", "error"]},
                },
                "required": ["role", "status"],
            },
            "else": {"properties": {"content": NON_BLANK_SCHEMA}},
        }
    )

    role: Role
    content: StorableText
    status: Status = "complete"
    LIMITS = {"content": "max_message_chars"}

    def check_content(self) -> None:
        # A pending/streaming assistant message starts empty and fills as tokens come;
        # any other empty message is a mistake.
        if not is_blank(self.content) or (self.role == "assistant" and self.status != "complete"):
            return
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "content"),
                    "msg": "content must not be empty (only an assistant message that is "
                    "not yet complete may start empty)",
                }
            ]
        )


class MessageUpdate(_Input):
    """Only the fields sent are changed. content and status cannot be null;
    error, token counts and timings can (null clears them)."""

    # Leaving content/status out means "no change"; an explicit null is a 422 (and the
    # published schema says string, not nullable).
    content: Annotated[StorableText | None, WithJsonSchema(TEXT_SCHEMA)] = None
    status: Annotated[
        Status | None, WithJsonSchema({"type": "string", "enum": list(get_args(Status))})
    ] = None
    error: StorableText | None = None
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None
    ttft_ms: Millis | None = None
    generation_ms: Millis | None = None
    LIMITS = {"content": "max_message_chars", "error": "max_message_chars"}

    @field_validator("content", "status", mode="before")
    @classmethod
    def _not_null(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            raise ValueError(f"{info.field_name} cannot be null; leave it out to keep it")
        return value


class ChatOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str | None
    system_prompt: str | None
    model: str | None
    created_at: datetime
    updated_at: datetime


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    chat_id: uuid.UUID
    role: Role
    content: str
    status: Status
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: float | None
    generation_ms: float | None
    created_at: datetime
    updated_at: datetime


class ChatWithMessages(ChatOut):
    messages: list[MessageOut]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


def check_limits(body: _Input, settings: Settings) -> None:
    """Reject text fields longer than their configured limit, in FastAPI's 422 shape."""
    errors: list[dict[str, Any]] = []
    for name, setting in body.LIMITS.items():
        value = getattr(body, name)
        limit = int(getattr(settings, setting))
        if isinstance(value, str) and len(value) > limit:
            errors.append(
                {
                    "type": "string_too_long",
                    "loc": ("body", name),
                    "msg": f"{name} is {len(value)} characters long; the limit is {limit}",
                    "ctx": {"max_length": limit},
                }
            )
    if errors:
        raise RequestValidationError(errors)
