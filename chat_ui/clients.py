"""HTTP clients for db_api (chats, messages, sessions) and lm_api (any OpenAI-compatible
server).

Both wrap one pooled httpx.AsyncClient created in the app's lifespan. Failures become
exceptions the routes turn into pages: DbUnavailable (503), NotFound (404), DbRejected
(the input was refused; Stale when a newer write is already stored) and LmError (the
answer ends in error, with a readable message and a reason code).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal
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
    Page,
    Preset,
    PresetWrite,
    Turn,
)
from db_contract import Reason

log = logging.getLogger("chat_ui.clients")

_CHAT_LIST = TypeAdapter(list[ChatSummary])
_PRESET_LIST = TypeAdapter(list[Preset])
# The roles a page offers (db_api's own bound on one list of presets).
MAX_ROLES = 500
# How long db_api may take to store an imported file (nginx's /import allows as much).
IMPORT_TIMEOUT_S = 600.0


class DbUnavailable(Exception):
    """db_api did not answer, or answered with a server error."""


class NotFound(Exception):
    """The chat, message or session does not exist for this owner."""


class DbRejected(Exception):
    """db_api refused the input (4xx other than 404); carries its message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Stale(DbRejected):
    """409: db_api holds a newer state of the message (`stored`, when it said)."""

    def __init__(self, detail: str, stored: Message | None) -> None:
        super().__init__(409, detail)
        self.stored = stored


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        return resp.text[:300]
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(str(d.get("msg", d)) for d in detail if isinstance(d, dict)) or str(detail)
    return str(detail)


def _stored(resp: httpx.Response) -> Message | None:
    try:
        return Message.model_validate(resp.json().get("message"))
    except (ValueError, AttributeError, ValidationError):
        return None


class Place(Enum):
    """Where a new message goes when no parent is named: after the chat's current leaf."""

    CURRENT_LEAF = "current_leaf"


class DbApi:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _call(
        self, method: str, path: str, owner: str | None, json: object = None, **kw: Any
    ) -> httpx.Response:
        headers = {"X-Owner": owner} if owner else {}
        headers.update(kw.pop("headers", {}))
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
        if resp.status_code == 409:
            raise Stale(_detail(resp), _stored(resp))
        if resp.status_code >= 400:
            raise DbRejected(resp.status_code, _detail(resp))
        return resp

    async def health(self) -> bool:
        try:
            resp = await self._client.get("/health", timeout=3.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def list_chats(self, owner: str, limit: int = 100, offset: int = 0) -> list[ChatSummary]:
        params = {"limit": limit, "offset": offset}
        resp = await self._call("GET", "/chats", owner, params=params)
        return _CHAT_LIST.validate_json(resp.content)

    async def get_page(
        self, owner: str, chat_id: UUID | None, *, limit: int, chats: int, presets: int
    ) -> Page:
        """A page's reads in one round trip: the chat's latest `limit` messages (a
        missing chat raises NotFound), the newest `chats` chats, the first `presets` roles."""
        params: dict[str, str | int] = {"limit": limit, "chats": chats, "presets": presets}
        if chat_id is not None:
            params["chat"] = str(chat_id)
        resp = await self._call("GET", "/page", owner, params=params)
        return Page.model_validate_json(resp.content)

    async def create_chat(self, owner: str, settings: ChatPatch | None = None) -> ChatSummary:
        body = settings.body() if settings is not None else {}
        resp = await self._call("POST", "/chats", owner, json=body)
        return ChatSummary.model_validate_json(resp.content)

    async def get_chat(
        self, owner: str, chat_id: UUID, window: dict[str, str | int] | None = None
    ) -> Chat:
        """The chat with its whole current branch, or the window of it that `window`'s
        query parameters (limit and one cursor, see chat_ui.window) ask for."""
        resp = await self._call("GET", f"/chats/{chat_id}", owner, params=window)
        return Chat.model_validate_json(resp.content)

    async def update_chat(self, owner: str, chat_id: UUID, changes: ChatPatch) -> ChatSummary:
        resp = await self._call("PATCH", f"/chats/{chat_id}", owner, json=changes.body())
        return ChatSummary.model_validate_json(resp.content)

    async def delete_chat(self, owner: str, chat_id: UUID) -> None:
        await self._call("DELETE", f"/chats/{chat_id}", owner)

    async def add_turn(
        self,
        owner: str,
        chat_id: UUID,
        content: str,
        lease: Mapping[str, object] | None = None,
        *,
        parent: UUID | Literal[Place.CURRENT_LEAF] | None = Place.CURRENT_LEAF,
    ) -> Turn:
        """The question and its pending answer, stored in one transaction: after the
        current leaf, or below `parent` (None: a new first question), as an edit does; the
        answer leased from the start with `lease` (lease_owner and lease_s)."""
        body: dict[str, object] = {"content": content, **(lease or {})}
        if parent is not Place.CURRENT_LEAF:
            body["parent_id"] = str(parent) if parent is not None else None
        resp = await self._call("POST", f"/chats/{chat_id}/turns", owner, json=body)
        return Turn.model_validate_json(resp.content)

    async def add_answer(
        self, owner: str, chat_id: UUID, parent: UUID, lease: Mapping[str, object] | None = None
    ) -> Message:
        """A pending answer below `parent` (a question): another version of its answer,
        leased from the start with `lease`."""
        body = {
            "role": "assistant",
            "status": "pending",
            "content": "",
            "parent_id": str(parent),
            **(lease or {}),
        }
        resp = await self._call("POST", f"/chats/{chat_id}/messages", owner, json=body)
        return Message.model_validate_json(resp.content)

    async def get_message(self, owner: str, message_id: UUID) -> Message:
        resp = await self._call("GET", f"/messages/{message_id}", owner)
        return Message.model_validate_json(resp.content)

    async def update_message(self, owner: str, message_id: UUID, changes: MessagePatch) -> Message:
        resp = await self._call("PATCH", f"/messages/{message_id}", owner, json=changes.body())
        return Message.model_validate_json(resp.content)

    async def reopen(
        self, owner: str, message_id: UUID, lease: Mapping[str, object] | None = None
    ) -> Message:
        """A finished answer set back to pending (revision + 1), to be written again
        (leased at once with `lease`)."""
        body = dict(lease or {})
        resp = await self._call("POST", f"/messages/{message_id}/reopen", owner, json=body)
        return Message.model_validate_json(resp.content)

    async def expire(
        self,
        owner: str,
        message_id: UUID,
        reason: Reason,
        error: str,
        lease_owner: str | None = None,
    ) -> Message:
        """Mark a running answer interrupted, unless a live generation holds its lease
        (then Stale); a lease held under `lease_owner` (the caller's own) does not count."""
        body: dict[str, object] = {"reason": reason, "error": error}
        if lease_owner is not None:
            body["lease_owner"] = lease_owner
        resp = await self._call("POST", f"/messages/{message_id}/expire", owner, json=body)
        return Message.model_validate_json(resp.content)

    async def create_session(self, owner: str) -> str:
        resp = await self._call("POST", "/sessions", owner, json={})
        return str(resp.json()["id"])

    async def session_alive(self, owner: str, session_id: str) -> bool:
        try:
            await self._call("GET", f"/sessions/{session_id}", owner)
        except NotFound:
            return False
        except DbRejected:  # a malformed id: no such session
            return False
        return True

    async def delete_session(self, owner: str, session_id: str) -> None:
        try:
            await self._call("DELETE", f"/sessions/{session_id}", owner)
        except (NotFound, DbRejected):
            pass  # already gone, or never was

    # Roles (db_api's presets), owner-scoped like chats.

    async def list_presets(self, owner: str) -> list[Preset]:
        resp = await self._call("GET", "/presets", owner, params={"limit": MAX_ROLES})
        return _PRESET_LIST.validate_json(resp.content)

    async def get_preset(self, owner: str, preset_id: UUID) -> Preset:
        resp = await self._call("GET", f"/presets/{preset_id}", owner)
        return Preset.model_validate_json(resp.content)

    async def create_preset(self, owner: str, preset: PresetWrite) -> Preset:
        resp = await self._call("POST", "/presets", owner, json=preset.body())
        return Preset.model_validate_json(resp.content)

    async def update_preset(self, owner: str, preset_id: UUID, changes: PresetWrite) -> Preset:
        resp = await self._call("PATCH", f"/presets/{preset_id}", owner, json=changes.body())
        return Preset.model_validate_json(resp.content)

    async def delete_preset(self, owner: str, preset_id: UUID) -> None:
        await self._call("DELETE", f"/presets/{preset_id}", owner)

    # Search, export and import (issue 14): answers are handed on as db_api wrote them.

    async def search(self, owner: str, q: str, *, limit: int, offset: int) -> Any:
        params = {"q": q, "limit": limit, "offset": offset}
        return (await self._call("GET", "/search", owner, params=params)).json()

    async def import_file(self, owner: str, content: AsyncIterator[bytes], size: int | None) -> Any:
        """Forward an uploaded file to db_api as it is read (db_api bounds its size)."""
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        # A large history takes a while to store (about 30 s for 50 000 messages here).
        timeout = httpx.Timeout(self._client.timeout.connect, read=IMPORT_TIMEOUT_S)
        resp = await self._call(
            "POST", "/import", owner, content=content, headers=headers, timeout=timeout
        )
        return resp.json()

    async def select_branch(
        self, owner: str, chat_id: UUID, message_id: UUID, version: int | None = None
    ) -> None:
        """Make the branch through `message_id` (or its `version`-th sibling) the one the
        chat shows."""
        body: dict[str, object] = {"message_id": str(message_id)}
        if version is not None:
            body["version"] = version
        await self._call("POST", f"/chats/{chat_id}/current", owner, json=body)

    async def open_export(
        self, owner: str, path: str, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """db_api's export answer, opened for streaming: the caller reads and closes it."""
        request = self._client.build_request("GET", path, params=params, headers={"X-Owner": owner})
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DbUnavailable(str(exc) or type(exc).__name__) from exc
        if resp.status_code != 200:
            await resp.aread()
            await resp.aclose()
            if resp.status_code == 404:
                raise NotFound(path)
            if resp.status_code >= 500 or resp.status_code in (401, 403):
                raise DbUnavailable(f"db_api answered {resp.status_code}")
            raise DbRejected(resp.status_code, _detail(resp))
        return resp


class LmError(Exception):
    """lm_api failed; `message` is fit to show to the person, `reason` is its code."""

    def __init__(
        self,
        message: str,
        *,
        reason: Reason = "model_error",
        status: int | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason
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
    finish_reason: str | None = None


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
        text = "The model is busy or still loading; try again in a moment."
        return LmError(f"{text} ({message})" if message else text, status=503, code=code)
    if not message:
        message = f"the model server answered {resp_status}"
    return LmError(
        f"The model server refused the request: {message}",
        reason="context_exceeded" if code == "context_length_exceeded" else "model_error",
        status=resp_status,
        code=code,
    )


# lm_api may restart with another model or context size; re-ask now and then.
MODEL_INFO_TTL_S = 60.0
# The model picker's list: short, so a model copied into lm_api's directory shows soon.
MODEL_LIST_TTL_S = 10.0
# ...and after the server could not list its models, how long pages go without the list.
MODEL_LIST_RETRY_S = 5.0
MODEL_LIST_TIMEOUT_S = 3.0
# How long to believe a server has no /tokenize before asking again.
NO_TOKENIZER_TTL_S = 300.0
TOKEN_COUNT_CACHE = 4096


def _chat_header(chat_id: UUID | None) -> dict[str, str]:
    # Lets a router in front of several model servers keep a chat on one of them.
    return {"X-Chat-Id": str(chat_id)} if chat_id is not None else {}


class LmApi:
    def __init__(self, client: httpx.AsyncClient, *, stall_s: float = 60.0) -> None:
        self._client = client
        self._stall_s = stall_s
        self._model_list: list[str] | None = None
        self._listed_at = -math.inf  # never asked yet
        self._listing = asyncio.Lock()
        # What model_info answered, per model asked for ("": the server's default), and when.
        self._models: dict[str, tuple[ModelInfo, float]] = {}
        # POST /tokenize lives at the server's root, beside /v1 (as llama-server has it).
        root = str(client.base_url).rstrip("/").removesuffix("/v1")
        self._tokenize_url = f"{root}/tokenize"
        self._no_tokenizer_until = 0.0
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()

    async def health(self, timeout_s: float = 3.0, chat_id: UUID | None = None) -> bool:
        try:
            resp = await self._client.get(
                "models", timeout=timeout_s, headers=_chat_header(chat_id)
            )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def list_models(self) -> list[str] | None:
        """The ids the model server lists (GET /v1/models), or None when it cannot be
        asked right now. Kept for MODEL_LIST_TTL_S: every chat page shows the list."""
        async with self._listing:  # one request at a time; the others get its answer
            now = time.monotonic()
            fresh_s = MODEL_LIST_TTL_S if self._model_list is not None else MODEL_LIST_RETRY_S
            if now - self._listed_at < fresh_s:
                return self._model_list
            try:
                resp = await self._client.get("models", timeout=MODEL_LIST_TIMEOUT_S)
                data = resp.json().get("data", []) if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):
                data = None
            self._listed_at = time.monotonic()
            if not isinstance(data, list):
                # Pages go on without the list; a server away is not asked at every page.
                self._model_list = None
                return None
            ids = [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
            self._model_list = ids
            return ids

    def forget_models(self) -> None:
        """Ask the server again next time (a name not in the kept list may be new)."""
        self._model_list, self._listed_at = None, -math.inf

    async def model_info(self, wanted: str = "", chat_id: UUID | None = None) -> ModelInfo | None:
        """The model to use and its context size, cached once lm_api has answered."""
        # Kept per name: the default ("") is never answered with the last model some chat
        # asked for (a planner, another chat's model).
        cached = self._models.get(wanted)
        if cached is not None and time.monotonic() - cached[1] < MODEL_INFO_TTL_S:
            return cached[0]
        try:
            resp = await self._client.get("models", timeout=5.0, headers=_chat_header(chat_id))
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
        self._models[wanted] = (info, time.monotonic())
        return info

    async def count_tokens(
        self, model: str, messages: list[dict[str, str]], chat_id: UUID | None = None
    ) -> int | None:
        """The prompt's length in the model's own tokens (POST /tokenize with messages),
        or None when the server has no such endpoint or cannot say right now."""
        if time.monotonic() < self._no_tokenizer_until:
            return None
        key = (model, json.dumps(messages, ensure_ascii=False))
        if key in self._counts:
            self._counts.move_to_end(key)
            return self._counts[key]
        try:
            resp = await self._client.post(
                self._tokenize_url,
                json={"messages": messages, "model": model},
                headers=_chat_header(chat_id),
                timeout=httpx.Timeout(30.0, connect=5.0),
            )
        except httpx.HTTPError as exc:
            log.warning("tokenize failed: %r", exc)
            return None
        if resp.status_code in (404, 405, 501):
            # Not every OpenAI-compatible server counts tokens: estimate instead.
            self._no_tokenizer_until = time.monotonic() + NO_TOKENIZER_TTL_S
            return None
        if resp.status_code != 200:
            return None
        try:
            count = _TokenCount.model_validate_json(resp.content).total
        except ValidationError:
            self._no_tokenizer_until = time.monotonic() + NO_TOKENIZER_TTL_S
            return None
        self._counts[key] = count
        if len(self._counts) > TOKEN_COUNT_CACHE:
            self._counts.popitem(last=False)
        return count

    async def stream_chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        chat_id: UUID | None = None,
        sampling: dict[str, float] | None = None,
    ) -> AsyncIterator[Delta]:
        """The answer's pieces; `sampling` (temperature, top_p) goes into the request as
        OpenAI names them, a setting left out is the server's default."""
        body = {
            **(sampling or {}),
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        # A server silent for stall_s (not even a keep-alive) is stalled.
        timeout = httpx.Timeout(self._client.timeout.connect, read=self._stall_s)
        try:
            async with aconnect_sse(
                self._client,
                "POST",
                "chat/completions",
                json=body,
                headers=_chat_header(chat_id),
                timeout=timeout,
            ) as source:
                if source.response.status_code != 200:
                    raise _lm_error(source.response.status_code, await source.response.aread())
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        return
                    try:
                        # json, not pydantic's parser: that one refuses a lone surrogate
                        # ("\ud800"), which must cost one character, not the chunk.
                        chunk = _Chunk.model_validate(json.loads(event.data))
                    except (ValueError, ValidationError):
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
        except httpx.ReadTimeout as exc:
            raise LmError(
                f"The model server sent nothing for {self._stall_s:g} s.", reason="model_stalled"
            ) from exc
        except httpx.TimeoutException as exc:
            raise LmError(
                "The model server did not answer in time.", reason="model_unreachable"
            ) from exc
        except httpx.HTTPError as exc:
            raise LmError(
                f"The model server cannot be reached ({type(exc).__name__}).",
                reason="model_unreachable",
            ) from exc
        # A stream that ends without [DONE] was cut off.
        raise LmError(
            "The model server closed the stream before the answer was complete.",
            reason="model_unreachable",
        )


class _TokenCount(BaseModel):
    tokens: list[int] = []
    count: int | None = None

    @property
    def total(self) -> int:
        return self.count if self.count is not None else len(self.tokens)


class _ChunkDelta(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    delta: _ChunkDelta | None = None
    finish_reason: str | None = None


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
        for choice in self.choices:
            if choice.finish_reason:
                delta.finish_reason = choice.finish_reason
        if self.usage is not None:
            delta.prompt_tokens = self.usage.prompt_tokens
            delta.completion_tokens = self.usage.completion_tokens
        return delta
