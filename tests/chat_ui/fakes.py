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
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import httpx

from chat_ui.contracts import Message
from db_contract import FINAL, RUNNING, Status

STATUSES = set(get_args(Status))
# Writes of only these steer a generation and leave the revision alone (as in db_api).
CONTROL_FIELDS = {"lease_owner", "lease_s", "stop_requested"}


def _unstorable(value: object) -> bool:
    """What db_api refuses (422): NUL, or a lone surrogate."""
    if not isinstance(value, str):
        return False
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class FakeDb:
    """db_api's contract, in memory: chats whose messages form a tree (a chat answers its
    current branch, each message with its versions; POST /current switches), turns,
    message writes ordered by revision (409 for an older one, or for a final answer set
    running again), reopen, expire, sessions."""

    def __init__(self, token: str = "") -> None:
        self.token = token
        self.chats: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, str] = {}  # id -> owner
        self.presets: dict[str, dict[str, Any]] = {}
        self.down = False
        # Partial writes (status streaming) reach the store only once a final write has,
        # whatever happens to the request that carried them (as on a slow network).
        self.partials_after_final = False
        self.waiting_partials = 0
        self._final_landed: asyncio.Event | None = None
        # Calls made while down (method, path).
        self.failed: list[tuple[str, str]] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        # Writes of only control fields (lease renewals, Stop from another replica).
        self.control: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[str, dict[str, Any]]] = []  # 409s
        self.calls: list[tuple[str, str]] = []
        self.reopened: list[str] = []  # ids of answers reopened, in order
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def transport(self) -> httpx.MockTransport:
        """For chat_ui (async)."""
        return httpx.MockTransport(self.handle_async)

    def sync_transport(self) -> httpx.MockTransport:
        """For a test seeding data with a plain httpx.Client."""
        return httpx.MockTransport(self.handle)

    def _now(self) -> str:
        # Strictly increasing, so "most recent first" is deterministic.
        self._clock += timedelta(milliseconds=1)
        return self._clock.isoformat()

    def _chat_json(self, chat: dict[str, Any], with_messages: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in chat.items() if k != "owner"}
        if with_messages:
            out["messages"] = [self._out(m) for m in self.path(chat["id"])]
        return out

    def path(self, chat_id: str) -> list[dict[str, Any]]:
        """The chat's current branch, oldest first."""
        path: list[dict[str, Any]] = []
        at = self.chats[chat_id]["current_leaf_id"]
        while at is not None and at in self.messages:
            path.append(self.messages[at])
            at = self.messages[at]["parent_id"]
        return path[::-1]

    def siblings(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        """The versions of a message's turn, itself included, oldest first."""
        same = [
            m
            for m in self.messages.values()
            if m["chat_id"] == msg["chat_id"] and m["parent_id"] == msg["parent_id"]
        ]
        return sorted(same, key=lambda m: m["created_at"])

    def _out(self, msg: dict[str, Any]) -> dict[str, Any]:
        ids = [m["id"] for m in self.siblings(msg)]
        return {
            **msg,
            "version": ids.index(msg["id"]) + 1,
            "versions": len(ids),
            "sibling_ids": ids,
        }

    def _newest_below(self, msg: dict[str, Any]) -> dict[str, Any]:
        below = [m for m in self.messages.values() if m["parent_id"] == msg["id"]]
        newest = [self._newest_below(m) for m in below]
        return max([msg, *newest], key=lambda m: m["created_at"])

    def _parent(self, chat: dict[str, Any], body: dict[str, Any]) -> str | httpx.Response | None:
        """A new message's parent: `parent_id` when sent (a message of this chat, or null
        for a first turn), else the chat's current leaf."""
        if "parent_id" not in body:
            return str(chat["current_leaf_id"]) if chat["current_leaf_id"] else None
        parent = body["parent_id"]
        if parent is not None and self.messages.get(parent, {}).get("chat_id") != chat["id"]:
            return httpx.Response(404, json={"detail": "parent message not found"})
        return str(parent) if parent is not None else None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.failed.append((request.method, request.url.path))
            raise httpx.ConnectError("db_api is down", request=request)
        with self._lock:
            self.calls.append((request.method, request.url.path))
            return self._route(request)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if self._final_landed is None:
            self._final_landed = asyncio.Event()
        if request.method == "PATCH" and body.get("status") in FINAL:
            response = self.handle(request)
            if response.status_code == 200:
                self._final_landed.set()
            return response
        if self.partials_after_final and body.get("status") == "streaming":
            late = asyncio.ensure_future(self._late(request, self._final_landed))
            return await asyncio.shield(late)
        return self.handle(request)

    async def _late(self, request: httpx.Request, final: asyncio.Event) -> httpx.Response:
        self.waiting_partials += 1
        await final.wait()
        return self.handle(request)

    def _new_message(
        self, chat: dict[str, Any], role: str, content: str, status: str, parent: str | None
    ) -> dict[str, Any]:
        now = self._now()
        # Every other field takes the contract's default (null counts and timings).
        msg = Message(
            id=uuid.uuid4(),
            chat_id=chat["id"],
            role=role,  # type: ignore[arg-type]
            content=content,
            status=status,  # type: ignore[arg-type]
            parent_id=uuid.UUID(parent) if parent else None,
            created_at=now,
            updated_at=now,
        ).model_dump(mode="json", exclude={"unsaved"})
        self.messages[msg["id"]] = msg
        chat["updated_at"] = now
        chat["current_leaf_id"] = msg["id"]
        return msg

    def _message_of(self, owner: str, message_id: str) -> dict[str, Any] | None:
        msg = self.messages.get(message_id)
        if msg is None or self.chats[msg["chat_id"]]["owner"] != owner:
            return None
        return msg

    def _conflict(self, msg: dict[str, Any], detail: str) -> httpx.Response:
        return httpx.Response(409, json={"detail": detail, "message": self._out(msg)})

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
        if any(_unstorable(v) for v in body.values()):
            return httpx.Response(422, json={"detail": "text must not contain NUL"})
        parts = path.strip("/").split("/")
        if parts == ["page"] and method == "GET":
            return self._page(request)
        if parts[0] == "sessions":
            return self._sessions(owner, method, parts)
        if parts[0] == "presets":
            return self._presets(owner, method, parts, body)
        if parts == ["chats"] and method == "GET":
            mine = [c for c in self.chats.values() if c["owner"] == owner]
            mine.sort(key=lambda c: c["updated_at"], reverse=True)
            offset = int(request.url.params.get("offset", 0))
            mine = mine[offset : offset + int(request.url.params.get("limit", 50))]
            return httpx.Response(200, json=[self._chat_json(c) for c in mine])
        if parts == ["chats"] and method == "POST":
            now = self._now()
            chat = {
                "id": str(uuid.uuid4()),
                "owner": owner,
                "title": body.get("title"),
                "system_prompt": body.get("system_prompt"),
                "model": body.get("model"),
                "params": body.get("params") or {},
                "title_source": body.get("title_source", "auto"),
                "current_leaf_id": None,
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
                return self._window(chat, request.url.params)
            if len(parts) == 2 and method == "PATCH":
                if body.get("title_source") == "model" and chat["title_source"] == "user":
                    return httpx.Response(409, json={"detail": "the chat was named by its owner"})
                for key in ("title", "system_prompt", "model", "params", "title_source"):
                    if key in body:
                        chat[key] = body[key]
                chat["updated_at"] = self._now()
                return httpx.Response(200, json=self._chat_json(chat))
            if len(parts) == 2 and method == "DELETE":
                del self.chats[chat["id"]]
                for mid in [m for m, v in self.messages.items() if v["chat_id"] == chat["id"]]:
                    del self.messages[mid]
                return httpx.Response(204)
            if parts[2:] == ["turns"] and method == "POST":
                if not str(body.get("content", "")).strip():
                    return httpx.Response(422, json={"detail": "content must not be empty"})
                parent = self._parent(chat, body)
                if isinstance(parent, httpx.Response):
                    return parent
                user = self._new_message(chat, "user", body["content"], "complete", parent)
                answer = self._new_message(chat, "assistant", "", "pending", user["id"])
                self._lease(answer, body)
                return httpx.Response(
                    201, json={"user": self._out(user), "assistant": self._out(answer)}
                )
            if parts[2:] == ["current"] and method == "POST":
                chosen = self._message_of(owner, str(body.get("message_id")))
                if chosen is None or chosen["chat_id"] != chat["id"]:
                    return httpx.Response(404, json={"detail": "message not found"})
                versions = self.siblings(chosen)
                version = body.get("version")
                if version is not None:
                    if not 1 <= version <= len(versions):
                        return httpx.Response(422, json={"detail": "version out of range"})
                    chosen = versions[version - 1]
                chat["current_leaf_id"] = self._newest_below(chosen)["id"]
                return httpx.Response(200, json=self._chat_json(chat, with_messages=True))
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
                parent = self._parent(chat, body)
                if isinstance(parent, httpx.Response):
                    return parent
                msg = self._new_message(chat, body["role"], body.get("content", ""), status, parent)
                self._lease(msg, body)
                return httpx.Response(201, json=self._out(msg))
        if parts[0] == "messages" and len(parts) >= 2:
            found_msg = self._message_of(owner, parts[1])
            if found_msg is None:
                return httpx.Response(404, json={"detail": "message not found"})
            msg = found_msg
            if len(parts) == 2 and method == "GET":
                return httpx.Response(200, json=self._out(msg))
            if len(parts) == 2 and method == "PATCH":
                return self._patch(msg, body)
            if parts[2:] == ["reopen"] and method == "POST":
                if msg["role"] != "assistant" or msg["status"] in RUNNING:
                    return self._conflict(msg, "not a finished answer")
                # Its text and counts stay; its end is cleared.
                msg.update(
                    status="pending",
                    revision=msg["revision"] + 1,
                    error=None,
                    reason=None,
                    finish_reason=None,
                    stop_requested=False,
                    lease_owner=None,
                    lease_until=None,
                )
                self._lease(msg, body)
                self.reopened.append(msg["id"])
                return httpx.Response(200, json=self._out(msg))
            if parts[2:] == ["expire"] and method == "POST":
                if msg["status"] not in RUNNING:
                    return self._conflict(msg, "not running")
                if self.lease_live(msg) and msg["lease_owner"] != body.get("lease_owner"):
                    held = f"a live generation holds its lease ({msg['lease_owner']})"
                    return self._conflict(msg, held)
                msg.update(
                    status="interrupted",
                    reason=body["reason"],
                    error=body.get("error"),
                    revision=msg["revision"] + 1,
                )
                return httpx.Response(200, json=self._out(msg))
        return httpx.Response(404, json={"detail": "Not Found"})

    def _page(self, request: httpx.Request) -> httpx.Response:
        """GET /page: what GET /chats/{id}?limit=, GET /chats and GET /presets answer, in
        one (a missing chat is the page's 404)."""
        params = request.url.params

        def read(path: str, query: dict[str, str]) -> httpx.Response:
            url = request.url.copy_with(path=path, params=query)
            return self._route(httpx.Request("GET", url, headers=request.headers))

        chat = None
        if "chat" in params:
            window = read(f"/chats/{params['chat']}", {"limit": params.get("limit", "50")})
            if window.status_code != 200:
                return window
            chat = window.json()
        chats = read("/chats", {"limit": params.get("chats", "50")}).json()
        presets = read("/presets", {"limit": params.get("presets", "200")}).json()
        return httpx.Response(200, json={"chat": chat, "chats": chats, "presets": presets})

    def _window(self, chat: dict[str, Any], params: httpx.QueryParams) -> httpx.Response:
        """GET /chats/{id}: the current branch (the path up from the current leaf), or
        the window of it that `limit` and one of `before`, `after`, `around` ask for."""
        path = self.path(chat["id"])
        ids = [m["id"] for m in path]
        limit = int(params["limit"]) if "limit" in params else len(path)
        start, end = max(0, len(path) - limit), len(path)
        for name in ("before", "after", "around"):
            cursor = params.get(name)
            if cursor is None:
                continue
            if cursor not in ids:
                return httpx.Response(404, json={"detail": f"message `{name}` not found"})
            i = ids.index(cursor)
            if name == "before":
                start, end = max(0, i - limit), i
            elif name == "after":
                start, end = i + 1, min(len(path), i + 1 + limit)
            else:
                below = min(len(path) - i - 1, limit - 1 - limit // 2)
                start = max(0, i + 1 + below - limit)
                end = min(len(path), start + limit)
        out = self._chat_json(chat)
        out.update(
            messages=[self._out(m) for m in path[start:end]],
            has_earlier=start > 0,
            has_later=end < len(path),
        )
        return httpx.Response(200, json=out)

    def _patch(self, msg: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
        if "status" in body and body["status"] not in STATUSES:
            return httpx.Response(422, json={"detail": "bad status"})
        revision = body.pop("revision", None)
        if revision is not None and revision <= msg["revision"]:
            self.refused.append((msg["id"], dict(body, revision=revision)))
            return self._conflict(msg, "an older write")
        if msg["status"] in FINAL and body.get("status") in RUNNING:
            self.refused.append((msg["id"], dict(body, revision=revision)))
            return self._conflict(msg, "a final answer cannot run again")
        control = revision is None and set(body) <= CONTROL_FIELDS
        written = self.control if control else self.patches
        written.append((msg["id"], dict(body, revision=revision)))
        self._lease(msg, body)
        msg.update({k: v for k, v in body.items() if k not in ("lease_owner", "lease_s")})
        if revision is not None:
            msg["revision"] = revision
        elif not control:
            msg["revision"] += 1
        msg["updated_at"] = self._now()
        return httpx.Response(200, json=self._out(msg))

    def _presets(
        self, owner: str, method: str, parts: list[str], body: dict[str, Any]
    ) -> httpx.Response:
        """db_api's /presets: names unique per owner (409), at most 100 characters."""
        if len(str(body.get("name", ""))) > 100:
            return httpx.Response(422, json={"detail": "name is too long"})

        def taken(name: object, other_than: str | None = None) -> bool:
            return any(
                p["owner"] == owner and p["name"] == name and p["id"] != other_than
                for p in self.presets.values()
            )

        def out(preset: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in preset.items() if k != "owner"}

        if parts == ["presets"] and method == "GET":
            mine = sorted(
                (p for p in self.presets.values() if p["owner"] == owner), key=lambda p: p["name"]
            )
            return httpx.Response(200, json=[out(p) for p in mine])
        if parts == ["presets"] and method == "POST":
            if taken(body.get("name")):
                return httpx.Response(409, json={"detail": "a preset of that name exists"})
            now = self._now()
            preset = {
                "id": str(uuid.uuid4()),
                "owner": owner,
                "name": body["name"],
                "system_prompt": body.get("system_prompt"),
                "model": body.get("model"),
                "params": body.get("params") or {},
                "created_at": now,
                "updated_at": now,
            }
            self.presets[preset["id"]] = preset
            return httpx.Response(201, json=out(preset))
        found = self.presets.get(parts[1]) if len(parts) == 2 else None
        if found is None or found["owner"] != owner:
            return httpx.Response(404, json={"detail": "preset not found"})
        if method == "GET":
            return httpx.Response(200, json=out(found))
        if method == "PATCH":
            if "name" in body and taken(body["name"], found["id"]):
                return httpx.Response(409, json={"detail": "a preset of that name exists"})
            found.update(body)
            found["updated_at"] = self._now()
            return httpx.Response(200, json=out(found))
        if method == "DELETE":
            del self.presets[found["id"]]
            return httpx.Response(204)
        return httpx.Response(405, json={"detail": "not allowed"})

    @staticmethod
    def _lease(msg: dict[str, Any], body: dict[str, Any]) -> None:
        """lease_owner and lease_s of a write, as db_api stores them (lease_until on the
        real clock: chat_ui judges leases by it)."""
        if "lease_owner" in body:
            msg["lease_owner"] = body["lease_owner"]
        if "lease_s" in body:
            seconds = body["lease_s"]
            until = None if seconds is None else datetime.now(UTC) + timedelta(seconds=seconds)
            msg["lease_until"] = None if until is None else until.isoformat()

    @staticmethod
    def lease_live(msg: dict[str, Any]) -> bool:
        until = msg.get("lease_until")
        return until is not None and datetime.fromisoformat(until) > datetime.now(UTC)

    def lapse(self, message_id: str) -> None:
        """The lease of this answer ran out (its replica died long enough ago)."""
        self.messages[message_id]["lease_until"] = (
            datetime.now(UTC) - timedelta(seconds=1)
        ).isoformat()

    def _sessions(self, owner: str, method: str, parts: list[str]) -> httpx.Response:
        if parts == ["sessions"] and method == "POST":
            sid = str(uuid.uuid4())
            self.sessions[sid] = owner
            return httpx.Response(201, json={"id": sid})
        if len(parts) == 2 and self.sessions.get(parts[1]) == owner:
            if method == "GET":
                return httpx.Response(200, json={"id": parts[1]})
            if method == "DELETE":
                del self.sessions[parts[1]]
                return httpx.Response(204)
        return httpx.Response(404, json={"detail": "no such session"})

    def owners(self) -> set[str]:
        return {c["owner"] for c in self.chats.values()}


def dense_tokens(messages: list[dict[str, str]]) -> int:
    """A tokenizer for text that is one token per character (like 'xxxx...')."""
    return sum(len(m["content"]) + 4 for m in messages)


class FakeLm:
    """An OpenAI-compatible streaming server whose behaviour each test sets."""

    def __init__(self) -> None:
        self.tokens: list[str] = ["Hello", ", ", "world", "!"]
        self.n_ctx: int | None = 4096
        self.model_id = "fake-model"
        # More models /v1/models lists after model_id.
        self.other_models: list[str] = []
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
        # A second hold, later in the same stream (released by release_again()).
        self.hold_again_after: int | None = None
        self.held_again = threading.Event()
        self._release_again = threading.Event()
        # Every request's X-Chat-Id header (None when absent), in order.
        self.chat_ids: list[str | None] = []
        # POST /tokenize: absent (404) unless set; then each prompt counts this many tokens.
        self.tokenizer: Callable[[list[dict[str, str]]], int] | None = None
        self.tokenized: list[list[dict[str, str]]] = []
        # Stop sending after this many tokens, as a stalled server whose silence ran
        # out chat_ui's read timeout would.
        self.stall_after: int | None = None
        self.read_timeouts: list[float | None] = []
        # Refuse prompts longer than n_ctx (counted as `tokenizer`, or 1 token per char).
        self.enforce_context = False
        # The finish_reason of a stream that runs to its end ("length": cut at max_tokens).
        self.finish_reason = "stop"

    def release(self) -> None:
        self._release.set()

    def release_again(self) -> None:
        self._release_again.set()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("lm_api is down", request=request)
        path = request.url.path
        if not path.endswith("/models") or "x-chat-id" in request.headers:
            # What an answer asks (health checks of chat_ui itself name no chat).
            self.chat_ids.append(request.headers.get("x-chat-id"))
        if path == "/tokenize" and self.tokenizer is not None:
            messages = json.loads(request.content)["messages"]
            self.tokenized.append(messages)
            count = self.tokenizer(messages)
            return httpx.Response(200, json={"tokens": list(range(count)), "count": count})
        if path.endswith("/models"):
            meta = {"n_ctx": self.n_ctx} if self.n_ctx else {}
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": [
                        {"id": model, "object": "model", "owned_by": "test", "meta": meta}
                        for model in [self.model_id, *self.other_models]
                    ],
                },
            )
        if path.endswith("/chat/completions"):
            body = json.loads(request.content)
            self.requests.append(body)
            self.read_timeouts.append(request.extensions.get("timeout", {}).get("read"))
            if self.enforce_context and self.n_ctx is not None:
                count = (self.tokenizer or dense_tokens)(body["messages"])
                if count + body["max_tokens"] > self.n_ctx:
                    self.refusals.insert(
                        0, (400, "context_length_exceeded", f"{count} tokens is too many")
                    )
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
            if self.hold_again_after is not None and i == self.hold_again_after:
                self.held_again.set()
                await asyncio.to_thread(self._release_again.wait)
            if self.stall_after is not None and i == self.stall_after:
                raise httpx.ReadTimeout("the model server went silent")
            if self.fail_after is not None and i == self.fail_after:
                yield b'data: {"error": {"message": "the model crashed", "code": "internal"}}\n\n'
                return
            yield self._chunk(content=token)
        data = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": self.model_id,
            "choices": [{"index": 0, "delta": {}, "finish_reason": self.finish_reason}],
        }
        yield f"data: {json.dumps(data)}\n\n".encode()
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(self.tokens),
            "total_tokens": 7 + len(self.tokens),
        }
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
