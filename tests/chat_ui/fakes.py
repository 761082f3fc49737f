"""Stand-ins for db_api and lm_api behind httpx.MockTransport (chat_ui's unit tests only;
the real services meet chat_ui in tests/stack).

FakeDb keeps chats in memory and honours X-Owner and the bearer token like db_api does.
FakeLm streams OpenAI chunks from a script the test controls: it can hold the stream
until the test releases it, fail mid-stream, or refuse with an OpenAI-shaped error.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import httpx

from chat_ui.contracts import Message, Status

STATUSES = set(get_args(Status))


class FakeDb:
    def __init__(self, token: str = "") -> None:
        self.token = token
        self.chats: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.down = False
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _now(self) -> str:
        # Strictly increasing, so "most recent first" is deterministic.
        self._clock += timedelta(milliseconds=1)
        return self._clock.isoformat()

    def _chat_json(self, chat: dict[str, Any], with_messages: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in chat.items() if k != "owner"}
        if with_messages:
            msgs = [m for m in self.messages.values() if m["chat_id"] == chat["id"]]
            out["messages"] = sorted(msgs, key=lambda m: m["created_at"])
        return out

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("db_api is down", request=request)
        with self._lock:
            return self._route(request)

    def _route(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        if path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"detail": "bad token"})
        owner = request.headers.get("x-owner")
        if not owner:
            return httpx.Response(422, json={"detail": "X-Owner header required"})
        body = json.loads(request.content) if request.content else {}
        parts = path.strip("/").split("/")
        if parts == ["chats"] and method == "GET":
            mine = [c for c in self.chats.values() if c["owner"] == owner]
            mine.sort(key=lambda c: c["updated_at"], reverse=True)
            return httpx.Response(200, json=[self._chat_json(c) for c in mine])
        if parts == ["chats"] and method == "POST":
            now = self._now()
            chat = {
                "id": str(uuid.uuid4()),
                "owner": owner,
                "title": body.get("title"),
                "system_prompt": body.get("system_prompt"),
                "model": body.get("model"),
                "created_at": now,
                "updated_at": now,
            }
            self.chats[chat["id"]] = chat
            return httpx.Response(201, json=self._chat_json(chat))
        if parts[0] == "chats" and len(parts) >= 2:
            found = self.chats.get(parts[1])
            if found is None or found["owner"] != owner:
                return httpx.Response(404, json={"detail": "chat not found"})
            chat = found
            if len(parts) == 2 and method == "GET":
                return httpx.Response(200, json=self._chat_json(chat, with_messages=True))
            if len(parts) == 2 and method == "PATCH":
                for key in ("title", "system_prompt", "model"):
                    if key in body:
                        chat[key] = body[key]
                chat["updated_at"] = self._now()
                return httpx.Response(200, json=self._chat_json(chat))
            if len(parts) == 2 and method == "DELETE":
                del self.chats[chat["id"]]
                for mid in [m for m, v in self.messages.items() if v["chat_id"] == chat["id"]]:
                    del self.messages[mid]
                return httpx.Response(204)
            if parts[2:] == ["messages"] and method == "POST":
                status = body.get("status", "complete")
                if body.get("role") not in ("user", "assistant", "system") or (
                    status not in STATUSES
                ):
                    return httpx.Response(422, json={"detail": "bad role or status"})
                if not body.get("content") and not (
                    body["role"] == "assistant" and status == "pending"
                ):
                    return httpx.Response(422, json={"detail": "content must not be empty"})
                now = self._now()
                # Every other field takes the contract's default (null counts and timings).
                msg = Message(
                    id=uuid.uuid4(),
                    chat_id=chat["id"],
                    role=body["role"],
                    content=body.get("content", ""),
                    status=status,
                    created_at=now,
                    updated_at=now,
                ).model_dump(mode="json")
                self.messages[msg["id"]] = msg
                chat["updated_at"] = now
                return httpx.Response(201, json=msg)
        if parts[0] == "messages" and len(parts) == 2 and method == "PATCH":
            stored = self.messages.get(parts[1])
            if stored is None or self.chats[stored["chat_id"]]["owner"] != owner:
                return httpx.Response(404, json={"detail": "message not found"})
            msg = stored
            if "status" in body and body["status"] not in STATUSES:
                return httpx.Response(422, json={"detail": "bad status"})
            self.patches.append((msg["id"], dict(body)))
            msg.update(body)
            msg["updated_at"] = self._now()
            return httpx.Response(200, json=msg)
        return httpx.Response(404, json={"detail": "Not Found"})

    def owners(self) -> set[str]:
        return {c["owner"] for c in self.chats.values()}


class FakeLm:
    """An OpenAI-compatible streaming server whose behaviour each test sets."""

    def __init__(self) -> None:
        self.tokens: list[str] = ["Hello", ", ", "world", "!"]
        self.n_ctx: int | None = 4096
        self.model_id = "fake-model"
        self.down = False
        # Hold the stream after this many tokens until release() (None: never hold).
        self.hold_after: int | None = None
        self._release = threading.Event()
        # Fail mid-stream (after this many tokens) with an error chunk.
        self.fail_after: int | None = None
        # Refuse up front: a list of (status, code, message), one per request, then succeed.
        self.refusals: list[tuple[int, str, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.held = threading.Event()  # set once the stream is waiting at hold_after

    def release(self) -> None:
        self._release.set()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("lm_api is down", request=request)
        path = request.url.path
        if path.endswith("/models"):
            meta = {"n_ctx": self.n_ctx} if self.n_ctx else {}
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": [
                        {"id": self.model_id, "object": "model", "owned_by": "test", "meta": meta}
                    ],
                },
            )
        if path.endswith("/chat/completions"):
            body = json.loads(request.content)
            self.requests.append(body)
            if self.refusals:
                status, code, message = self.refusals.pop(0)
                return httpx.Response(
                    status,
                    json={
                        "error": {
                            "message": message,
                            "type": "invalid_request_error",
                            "param": None,
                            "code": code,
                        }
                    },
                )
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=self._stream()
            )
        return httpx.Response(404, json={"error": {"message": "not found"}})

    def _chunk(self, **delta: Any) -> bytes:
        data = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": self.model_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        return f"data: {json.dumps(data)}\n\n".encode()

    async def _stream(self) -> AsyncIterator[bytes]:
        yield self._chunk(role="assistant")
        for i, token in enumerate(self.tokens):
            if self.hold_after is not None and i == self.hold_after:
                self.held.set()
                await asyncio.to_thread(self._release.wait)
            if self.fail_after is not None and i == self.fail_after:
                yield b'data: {"error": {"message": "the model crashed", "code": "internal"}}\n\n'
                return
            yield self._chunk(content=token)
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(self.tokens),
            "total_tokens": 7 + len(self.tokens),
        }
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
