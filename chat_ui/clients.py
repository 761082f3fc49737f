"""HTTP clients for db_api (chats and messages) and lm_api (any OpenAI-compatible server).

Both wrap one pooled httpx.AsyncClient created in the app's lifespan. Failures become
three exceptions the routes turn into pages: DbUnavailable (503), NotFound (404) and
LmError (the answer is marked error with a readable reason).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
from httpx_sse import SSEError, aconnect_sse
from pydantic import BaseModel, TypeAdapter, ValidationError

from chat_ui.contracts import (
    Chat,
    ChatPatch,
    ChatSummary,
    Message,
    MessagePatch,
    Role,
    Status,
)

log = logging.getLogger("chat_ui.clients")

_CHAT_LIST = TypeAdapter(list[ChatSummary])


class DbUnavailable(Exception):
    """db_api did not answer, or answered with a server error."""


class NotFound(Exception):
    """The chat or message does not exist for this owner."""


class DbRejected(Exception):
    """db_api refused the input (4xx other than 404); carries its message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return resp.text[:300]
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(str(d.get("msg", d)) for d in detail if isinstance(d, dict)) or str(detail)
    return str(detail)


class DbApi:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _call(
        self, method: str, path: str, owner: str | None, json: object = None, **kw: Any
    ) -> httpx.Response:
        headers = {"X-Owner": owner} if owner else {}
        try:
            resp = await self._client.request(method, path, headers=headers, json=json, **kw)
        except httpx.HTTPError as exc:
            log.warning("db_api %s %s failed: %r", method, path, exc)
            raise DbUnavailable(str(exc) or type(exc).__name__) from exc
        if resp.status_code == 404:
            raise NotFound(path)
        if resp.status_code >= 500 or resp.status_code in (401, 403):
            # 401/403 mean chat_ui and db_api disagree on the internal token: an operator
            # problem, shown to the person as "storage unavailable", logged for the operator.
            log.error(
                "db_api %s %s answered %s: %s", method, path, resp.status_code, resp.text[:300]
            )
            raise DbUnavailable(f"db_api answered {resp.status_code}")
        if resp.status_code >= 400:
            raise DbRejected(resp.status_code, _detail(resp))
        return resp

    async def health(self) -> bool:
        try:
            resp = await self._client.get("/health", timeout=3.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def list_chats(self, owner: str, limit: int = 100) -> list[ChatSummary]:
        resp = await self._call("GET", "/chats", owner, params={"limit": limit})
        return _CHAT_LIST.validate_json(resp.content)

    async def create_chat(self, owner: str) -> ChatSummary:
        resp = await self._call("POST", "/chats", owner, json={})
        return ChatSummary.model_validate_json(resp.content)

    async def get_chat(self, owner: str, chat_id: UUID) -> Chat:
        resp = await self._call("GET", f"/chats/{chat_id}", owner)
        return Chat.model_validate_json(resp.content)

    async def update_chat(self, owner: str, chat_id: UUID, changes: ChatPatch) -> ChatSummary:
        resp = await self._call("PATCH", f"/chats/{chat_id}", owner, json=changes.body())
        return ChatSummary.model_validate_json(resp.content)

    async def delete_chat(self, owner: str, chat_id: UUID) -> None:
        await self._call("DELETE", f"/chats/{chat_id}", owner)

    async def add_message(
        self, owner: str, chat_id: UUID, role: Role, content: str, status: Status = "complete"
    ) -> Message:
        body = {"role": role, "content": content, "status": status}
        resp = await self._call("POST", f"/chats/{chat_id}/messages", owner, json=body)
        return Message.model_validate_json(resp.content)

    async def update_message(self, owner: str, message_id: UUID, changes: MessagePatch) -> Message:
        resp = await self._call("PATCH", f"/messages/{message_id}", owner, json=changes.body())
        return Message.model_validate_json(resp.content)


class LmError(Exception):
    """lm_api failed; `message` is fit to show to the person."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def context_exceeded(self) -> bool:
        return self.code == "context_length_exceeded"


@dataclass
class Delta:
    """One streamed piece: text and/or usage (the last chunk carries usage)."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class ModelInfo:
    id: str
    n_ctx: int | None


def _lm_error(resp_status: int, body: bytes) -> LmError:
    message, code = "", None
    try:
        err = json.loads(body).get("error") or {}
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            code = err.get("code") or err.get("type")
        else:
            message = str(err)
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")[:300]
    if resp_status == 503:
        reason = "The model is busy or still loading; try again in a moment."
        return LmError(f"{reason} ({message})" if message else reason, status=503, code=code)
    if not message:
        message = f"the model server answered {resp_status}"
    return LmError(
        f"The model server refused the request: {message}", status=resp_status, code=code
    )


# lm_api may restart with another model or context size; re-ask now and then.
MODEL_INFO_TTL_S = 60.0


class LmApi:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._model: ModelInfo | None = None
        self._model_at = 0.0

    async def health(self) -> bool:
        try:
            resp = await self._client.get("models", timeout=3.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def model_info(self, wanted: str = "") -> ModelInfo | None:
        """The model to use and its context size, cached once lm_api has answered."""
        fresh = time.monotonic() - self._model_at < MODEL_INFO_TTL_S
        if self._model is not None and fresh and (not wanted or self._model.id == wanted):
            return self._model
        try:
            resp = await self._client.get("models", timeout=5.0)
            models = resp.json().get("data", []) if resp.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        chosen = next((m for m in models if m.get("id") == wanted), None) if wanted else None
        if chosen is None and models:
            chosen = models[0]
        if chosen is None:
            return None
        meta = chosen.get("meta") or {}
        n_ctx = meta.get("n_ctx") if isinstance(meta, dict) else None
        info = ModelInfo(
            id=wanted or str(chosen.get("id")),
            n_ctx=int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None,
        )
        self._model, self._model_at = info, time.monotonic()
        return info

    async def stream_chat(
        self, model: str, messages: list[dict[str, str]], max_tokens: int
    ) -> AsyncIterator[Delta]:
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with aconnect_sse(self._client, "POST", "chat/completions", json=body) as source:
                if source.response.status_code != 200:
                    raise _lm_error(source.response.status_code, await source.response.aread())
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        return
                    try:
                        chunk = _Chunk.model_validate_json(event.data)
                    except ValidationError:
                        continue
                    if chunk.error is not None:
                        err = chunk.error
                        msg = err.get("message") if isinstance(err, dict) else str(err)
                        raise LmError(f"The model failed while answering: {msg}")
                    yield chunk.delta()
        except SSEError as exc:
            raise LmError(
                f"The model server answered something else than a stream ({exc})."
            ) from exc
        except httpx.TimeoutException as exc:
            raise LmError("The model server did not answer in time.") from exc
        except httpx.HTTPError as exc:
            raise LmError(f"The model server cannot be reached ({type(exc).__name__}).") from exc
        # A stream that ends without [DONE] was cut off.
        raise LmError("The model server closed the stream before the answer was complete.")


class _ChunkDelta(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    delta: _ChunkDelta | None = None


class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Chunk(BaseModel):
    """One `data:` event of an OpenAI chat completion stream (or its error event)."""

    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: dict[str, object] | str | None = None

    def delta(self) -> Delta:
        text = "".join(c.delta.content for c in self.choices if c.delta and c.delta.content)
        delta = Delta(text=text)
        if self.usage is not None:
            delta.prompt_tokens = self.usage.prompt_tokens
            delta.completion_tokens = self.usage.completion_tokens
        return delta
