"""The OpenAI-compatible request and response bodies lm_api speaks.

Requests accept (and ignore) OpenAI fields lm_api does not use, because OpenAI clients
send them, but the fields it uses are type-checked strictly: "5" is not a number here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from lm_api.engines.sampling import (
    DEFAULT_MIN_P,
    DEFAULT_REPEAT_LAST_N,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    Sampling,
)

# OpenAI's limit on logit_bias entries.
MAX_LOGIT_BIAS = 300

StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict()]  # accepts ints too, rejects strings
StrictStr = Annotated[str, Strict()]
StrictBool = Annotated[bool, Strict()]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, Any]:
        # Chat templates know system/user/assistant; "developer" is OpenAI's new "system".
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    # Sampling: OpenAI's fields plus llama-server's (top_k, min_p, repeat_penalty,
    # repeat_last_n), with llama.cpp's defaults; applied in llama.cpp's order
    # (lm_api.engines.sampling).
    temperature: StrictFloat = Field(default=DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    top_k: StrictInt = Field(default=DEFAULT_TOP_K, ge=0)
    top_p: StrictFloat = Field(default=DEFAULT_TOP_P, gt=0.0, le=1.0)
    min_p: StrictFloat = Field(default=DEFAULT_MIN_P, ge=0.0, le=1.0)
    repeat_penalty: StrictFloat = Field(default=1.0, gt=0.0, le=2.0)
    repeat_last_n: StrictInt = Field(default=DEFAULT_REPEAT_LAST_N, ge=-1)
    frequency_penalty: StrictFloat = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: StrictFloat = Field(default=0.0, ge=-2.0, le=2.0)
    # OpenAI's shape: {"<token id>": bias}, bias from -100 (never) to 100 (always).
    logit_bias: dict[StrictStr, Annotated[StrictFloat, Field(ge=-100.0, le=100.0)]] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(default=None, ge=-1, le=0xFFFFFFFF)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = Field(default=1, ge=1, le=1)

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            if len(v) > MAX_LOGIT_BIAS:
                raise ValueError(f"at most {MAX_LOGIT_BIAS} tokens")
            bad = [k for k in v if not k.isascii() or not k.isdigit()]
            if bad:
                raise ValueError(f"keys must be token ids (integers), not {bad[0]!r}")
        return v

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def sampling(self) -> Sampling:
        return Sampling(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
            logit_bias=tuple((int(k), v) for k, v in (self.logit_bias or {}).items()),
        )

    def wanted_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_tokens is None else self.max_tokens


class TokenizeRequest(BaseModel):
    """llama-server's `{content, add_special?}`, or `{messages, model?}`: the prompt a
    completion of these messages would read, built by the same chat template."""

    model_config = ConfigDict(extra="ignore")

    content: StrictStr | None = None
    add_special: StrictBool = False
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    model: StrictStr | None = None

    @model_validator(mode="after")
    def _content_or_messages(self) -> TokenizeRequest:
        if (self.content is None) == (self.messages is None):
            raise ValueError("give either content or messages")
        return self


class TokenizeResponse(BaseModel):
    tokens: list[int]


class PromptTokens(BaseModel):
    tokens: list[int]
    count: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelMeta(BaseModel):
    n_ctx: int  # the context lm_api gives each answer
    n_ctx_train: int | None = None  # what the GGUF says it was trained with
    size_bytes: int | None = None
    quantization: str | None = None  # e.g. "Q4_K_M", "F16"
    architecture: str | None = None
    loaded: bool = False
    state: Literal["unloaded", "loading", "ready", "failed"] = "unloaded"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "parlor"
    meta: ModelMeta


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
