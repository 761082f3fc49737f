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
    model_validator,
)

from db_api.config import Settings
from db_contract import FinishReason, Reason, Role, Status, TitleSource

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
Revision = Annotated[int, Field(ge=0, le=INT32_MAX), BeforeValidator(_json_number)]
Version = Annotated[int, Field(ge=1, le=INT32_MAX), BeforeValidator(_json_number)]
# A generation's claim on an answer lasts at most an hour between renewals.
MAX_LEASE_S = 3600.0
LeaseSeconds = Annotated[
    float, Field(gt=0, le=MAX_LEASE_S, allow_inf_nan=False), BeforeValidator(_json_number)
]
# Who holds a lease: a chat_ui replica's name, as printable ASCII like an owner key.
LEASE_OWNER_PATTERN = r"^[\x20-\x7e]{1,128}$"
LeaseOwner = Annotated[str, Field(pattern=LEASE_OWNER_PATTERN)]
StrictBool = Annotated[bool, Field(strict=True)]

# Sampling settings: the ranges every OpenAI-compatible server accepts.
Temperature = Annotated[
    float, Field(ge=0, le=2, allow_inf_nan=False), BeforeValidator(_json_number)
]
TopP = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), BeforeValidator(_json_number)]
MaxTokens = Annotated[int, Field(ge=1, le=32_768), BeforeValidator(_json_number)]
# Names: non-blank text of a fixed greatest length (the schema states both).
MAX_MODEL_NAME = 256
MODEL_NAME_SCHEMA = WithJsonSchema({**NON_BLANK_SCHEMA, "maxLength": MAX_MODEL_NAME})
ModelName = Annotated[NonBlankText, Field(max_length=MAX_MODEL_NAME), MODEL_NAME_SCHEMA]
MAX_PRESET_NAME = 100
PRESET_NAME_SCHEMA = WithJsonSchema({**NON_BLANK_SCHEMA, "maxLength": MAX_PRESET_NAME})
PresetName = Annotated[NonBlankText, Field(max_length=MAX_PRESET_NAME), PRESET_NAME_SCHEMA]
# Free-form values of what an answer was generated with (seed, top_k, ...).
MAX_PARAM_KEYS = 32
MAX_PARAM_NAME = 64
ParamScalar = Annotated[
    StrictBool
    | Annotated[int, Field(strict=True, ge=-(2**53), le=2**53)]
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | Annotated[
        str,
        Field(max_length=MAX_MODEL_NAME),
        AfterValidator(_storable_text),
        WithJsonSchema({**TEXT_SCHEMA, "maxLength": MAX_MODEL_NAME}),
    ]
    | None,
    Field(union_mode="left_to_right"),
]


def _not_null(value: object, info: ValidationInfo) -> object:
    """For an update's fields that can be left out but not cleared."""
    if value is None:
        raise ValueError(f"{info.field_name} cannot be null; leave it out to keep it")
    return value


class _Input(BaseModel):
    # Unknown fields are a client bug (a typo would silently drop data): reject them.
    model_config = ConfigDict(extra="forbid")
    # field name -> the Settings attribute holding its maximum length
    LIMITS: ClassVar[dict[str, str]] = {}

    def changes(self, settings: Settings) -> dict[str, Any]:
        """The fields sent, as column values: texts within their configured limits (else
        422), settings (params) in their stored form."""
        check_limits(self, settings)
        fields = self.model_dump(exclude_unset=True)
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, ChatParams):
                fields[name] = value.stored()
        return fields


class ChatParams(_Input):
    """A chat's (or a preset's) sampling settings; a key left out (or null) means the
    model server's default."""

    temperature: Temperature | None = None
    top_p: TopP | None = None
    max_tokens: MaxTokens | None = None
    plan_mode: StrictBool | None = None
    planner_model: ModelName | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class GenerationParams(ChatParams):
    """What an answer was generated with: the chat's settings, plus any other sampling
    values the caller records (JSON scalars under short names)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "maxProperties": MAX_PARAM_KEYS,
            "propertyNames": {
                "minLength": 1,
                "maxLength": MAX_PARAM_NAME,
                "pattern": "^[^\\u0000]*$",
            },
        },
    )
    __pydantic_extra__: dict[str, ParamScalar] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if len(data) > MAX_PARAM_KEYS:
                raise ValueError(f"at most {MAX_PARAM_KEYS} params")
            for key in data:
                if not isinstance(key, str) or not 1 <= len(key) <= MAX_PARAM_NAME:
                    raise ValueError(f"param names are 1 to {MAX_PARAM_NAME} characters long")
                _storable_text(key)
        return data

    def stored(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ChatCreate(_Input):
    title: NonBlankText | None = None
    system_prompt: StorableText | None = None
    model: NonBlankText | None = None
    params: ChatParams = Field(default_factory=ChatParams)
    title_source: TitleSource = "auto"
    LIMITS = {
        "title": "max_title_chars",
        "system_prompt": "max_message_chars",
        "model": "max_model_chars",
    }


class ChatUpdate(ChatCreate):
    """Only the fields sent are changed; null clears a text field. `params` replaces the
    stored settings as a whole ({} for all defaults). A title_source of "model" is
    refused (409) once the person named the chat (title_source "user")."""


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
    # Absent: a child of the chat's current leaf; null: a new first turn.
    parent_id: uuid.UUID | None = None
    model: ModelName | None = None
    params: GenerationParams | None = None
    lease_owner: LeaseOwner | None = None
    lease_s: LeaseSeconds | None = None
    LIMITS = {"content": "max_message_chars", "model": "max_model_chars"}

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


class TurnCreate(_Input):
    """A question and its pending answer, stored together."""

    content: NonBlankText
    # Absent: the question follows the chat's current leaf; null: a new first turn.
    parent_id: uuid.UUID | None = None
    # What the answer will be generated with.
    model: ModelName | None = None
    params: GenerationParams | None = None
    # The generation that will write the answer may claim it from the start.
    lease_owner: LeaseOwner | None = None
    lease_s: LeaseSeconds | None = None
    LIMITS = {"content": "max_message_chars", "model": "max_model_chars"}


class MessageUpdate(_Input):
    """Only the fields sent are changed. content, status, revision and stop_requested
    cannot be null; the others can (null clears them)."""

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
    revision: Annotated[
        Revision | None, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": INT32_MAX})
    ] = None
    finish_reason: FinishReason | None = None
    reason: Reason | None = None
    model: ModelName | None = None
    params: GenerationParams | None = None
    plan: StorableText | None = None
    lease_owner: LeaseOwner | None = None
    lease_s: LeaseSeconds | None = None
    stop_requested: Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})] = None
    LIMITS = {
        "content": "max_message_chars",
        "error": "max_message_chars",
        "plan": "max_message_chars",
        "model": "max_model_chars",
    }

    _reject_null = field_validator(
        "content", "status", "revision", "stop_requested", mode="before"
    )(_not_null)


class ReopenBody(_Input):
    lease_owner: LeaseOwner | None = None
    lease_s: LeaseSeconds | None = None


class ExpireBody(_Input):
    reason: Reason
    error: StorableText | None = None
    # The caller's own lease name: a live lease held under it counts as expired too (the
    # caller restarted, so the generation that took it is gone).
    lease_owner: LeaseOwner | None = None
    LIMITS = {"error": "max_message_chars"}


class BranchSelect(_Input):
    """Show the branch through `message_id`, or through its `version`-th sibling."""

    message_id: uuid.UUID
    version: Version | None = None


class _PresetSettings(_Input):
    system_prompt: StorableText | None = None
    model: ModelName | None = None
    params: ChatParams = Field(default_factory=ChatParams)
    LIMITS = {"system_prompt": "max_message_chars", "model": "max_model_chars"}


class PresetCreate(_PresetSettings):
    """A role: a named system prompt, model and sampling settings (name unique per owner)."""

    name: PresetName


class PresetUpdate(_PresetSettings):
    """Only the fields sent are changed; null clears system_prompt or model."""

    name: Annotated[PresetName | None, PRESET_NAME_SCHEMA] = None

    _reject_null = field_validator("name", mode="before")(_not_null)


class ChatOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str | None
    system_prompt: str | None
    model: str | None
    created_at: datetime
    updated_at: datetime
    current_leaf_id: uuid.UUID | None
    params: dict[str, Any]
    title_source: TitleSource


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    chat_id: uuid.UUID
    parent_id: uuid.UUID | None
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
    # Its place among its siblings (the versions of this turn), oldest first.
    version: int
    versions: int
    sibling_ids: list[uuid.UUID]
    revision: int
    finish_reason: FinishReason | None
    reason: Reason | None
    model: str | None
    params: dict[str, Any] | None
    plan: str | None
    lease_owner: str | None
    lease_until: datetime | None
    stop_requested: bool

    @classmethod
    def of(cls, message: Any, sibling_ids: list[uuid.UUID]) -> MessageOut:
        """A stored message with its place among its siblings (itself included)."""
        computed = {"version", "versions", "sibling_ids"}
        stored = {name: getattr(message, name) for name in cls.model_fields if name not in computed}
        return cls.model_validate(
            {
                **stored,
                "version": sibling_ids.index(message.id) + 1,
                "versions": len(sibling_ids),
                "sibling_ids": sibling_ids,
            }
        )


class ChatWithMessages(ChatOut):
    """The chat with its current branch, oldest first (or the window asked for)."""

    messages: list[MessageOut]
    # More messages above the first one returned (ask again with before=its id).
    has_earlier: bool
    # More messages of the branch below the last one returned (ask with after=its id).
    has_later: bool = False


class TurnOut(BaseModel):
    user: MessageOut
    assistant: MessageOut


class MessageConflict(BaseModel):
    """409: the write was refused; `message` is what is stored."""

    detail: str
    message: MessageOut


class PresetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    system_prompt: str | None
    model: str | None
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime


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
