"""Pure ASGI middleware (they leave SSE streaming untouched): body size limit, security
headers, request metrics."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat_ui.metrics import Metrics

# No inline script or style anywhere: htmx is configured through a meta tag, its indicator
# styles are off, and the page's own script is static/parlor.js.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


async def _send_413(scope: Scope, send: Send, limit: int) -> None:
    text = f"Request too large: the limit is {limit} bytes. Nothing was saved."
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    if (b"hx-request", b"true") in scope["headers"]:
        # Shown in the page's flash area rather than in the element that sent it.
        headers += [(b"hx-retarget", b"#flash"), (b"hx-reswap", b"innerHTML")]
    body = f'<div class="flash-message" role="alert">{text}</div>'.encode()
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# A send whose body is over the limit is still read up to this many times the limit, so
# that the page can hand the typed text back (the route refuses it as too long); nginx's
# client_max_body_size must stay above it.
RESCUE_FACTOR = 1.5
_SEND_PATH = re.compile(r"^/chats/[0-9a-fA-F-]{36}/messages$")


def _rescuable(scope: Scope) -> bool:
    """A message sent from the composer: too long, but its text must not be lost."""
    headers = dict(scope["headers"])
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return (
        scope["method"] == "POST"
        and content_type == b"application/x-www-form-urlencoded"
        and _SEND_PATH.match(scope["path"]) is not None
    )


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413 before any route reads them (a message
    sent from the composer is read up to RESCUE_FACTOR times the limit, so that its text
    can be given back)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(self.limit * RESCUE_FACTOR) if _rescuable(scope) else self.limit
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 18 or int(length) > limit:
                await _send_413(scope, send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit first, then replay.
        chunks: list[bytes] = []
        size = 0
        more = scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_413(scope, send, self.limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        if not chunks:
            await self.app(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityAndMetrics:
    """Add the security headers to every response and count it by route and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                existing = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in existing]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
