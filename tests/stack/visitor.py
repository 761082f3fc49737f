"""A person using Parlor over plain HTTP (no JavaScript): forms, cookies, CSRF tokens and
the answer's event stream, exactly as a browser would send them through nginx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from httpx_sse import EventSource, ServerSentEvent

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
STREAM = re.compile(r'sse-connect="(/chats/([0-9a-f-]+)/messages/([0-9a-f-]+)/stream[^"]*)"')


class Visitor:
    def __init__(self, base_url: str) -> None:
        # Generous read timeout: a deadline for a stuck test, not a timing assertion.
        self.http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(120.0, connect=10.0))
        self.csrf = ""

    def close(self) -> None:
        self.http.close()

    def get_page(self, path: str) -> httpx.Response:
        r = self.http.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:500])
        match = CSRF.search(r.text)
        assert match, f"no CSRF token on {path}"
        self.csrf = match.group(1)
        return r

    def post_form(self, path: str, **fields: str) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf, **fields})

    def login(self, name: str) -> None:
        self.get_page("/")
        r = self.post_form("/login", name=name)
        assert r.status_code == 303 and r.headers["location"].endswith("/chats"), r.text[:300]
        page = self.get_page("/chats")
        assert name in page.text

    def new_chat(self) -> str:
        r = self.post_form("/chats")
        assert r.status_code == 303, r.text[:300]
        match = re.fullmatch(r".*/chats/([0-9a-f-]{36})", r.headers["location"])
        assert match, r.headers["location"]
        return match.group(1)

    def send(self, chat_id: str, content: str) -> str:
        """Send a message the no-JS way (POST, then the chat page); the answer's id."""
        r = self.post_form(f"/chats/{chat_id}/messages", content=content)
        assert r.status_code == 303, (r.status_code, r.text[:300])
        page = self.get_page(f"/chats/{chat_id}")
        streams = STREAM.findall(page.text)
        assert streams, "the chat page shows no running answer"
        _url, stream_chat, message_id = streams[-1]
        assert stream_chat == chat_id
        return str(message_id)

    @contextmanager
    def stream(self, chat_id: str, message_id: str) -> Iterator[Iterator[ServerSentEvent]]:
        """The answer's event stream (through nginx), as parsed SSE events."""
        path = f"/chats/{chat_id}/messages/{message_id}/stream"
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "gzip"}
        with self.http.stream("GET", path, headers=headers) as r:
            assert r.status_code == 200, r.read()[:300]
            assert r.headers["content-type"].startswith("text/event-stream")
            yield EventSource(r).iter_sse()

    def stop(self, chat_id: str, message_id: str) -> httpx.Response:
        return self.post_form(f"/chats/{chat_id}/messages/{message_id}/stop")
