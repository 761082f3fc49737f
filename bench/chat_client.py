"""A person using Parlor through nginx, as a browser with htmx does: log in, open a chat,
send a message, follow its answer over chat_ui's SSE stream."""

from __future__ import annotations

import html
import re
import time

import httpx
from httpx_sse import connect_sse

from bench.streams import StreamTiming

_CSRF = re.compile(r'csrf[^>]*?(?:value|content)="([^"]+)"|"X-CSRF-Token"\s*:\s*"([^"]+)"')
_SSE_CONNECT = re.compile(r'sse-connect="([^"]+)"')
_CHAT_URL = re.compile(r"/chats/([0-9a-fA-F-]{36})")


class ChatUiError(RuntimeError):
    pass


class Person:
    """One browser: its own cookie jar, so each person is its own owner."""

    def __init__(self, base_url: str, name: str, *, timeout_s: float = 900.0) -> None:
        self.name = name
        self.client = httpx.Client(
            base_url=base_url, timeout=httpx.Timeout(timeout_s, connect=10.0)
        )
        self.csrf = ""

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Person:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remember_csrf(self, text: str) -> None:
        match = _CSRF.search(text)
        if match:
            self.csrf = html.unescape(match.group(1) or match.group(2))

    def _post(self, url: str, data: dict[str, str], *, htmx: bool = False) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf}
        if htmx:
            headers["HX-Request"] = "true"
        r = self.client.post(url, data={**data, "csrf_token": self.csrf}, headers=headers)
        if r.status_code >= 400:
            raise ChatUiError(f"POST {url}: HTTP {r.status_code}: {r.text[:300]}")
        return r

    def login(self) -> None:
        r = self.client.get("/")
        r.raise_for_status()
        self._remember_csrf(r.text)
        self._post("/login", {"name": self.name})
        page = self.client.get("/chats")
        page.raise_for_status()
        self._remember_csrf(page.text)

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.client.cookies.items())

    def new_chat(self) -> str:
        r = self._post("/chats", {})
        target = r.headers.get("location") or r.headers.get("hx-redirect") or ""
        match = _CHAT_URL.search(target)
        if not match:
            raise ChatUiError(f"new chat: no chat URL in {r.status_code} {target!r}")
        return match.group(1)

    def send(self, chat_id: str, content: str, *, max_tokens: int) -> StreamTiming:
        """Send `content` and follow the answer to its end. TTFT counts from the POST, as a
        person counts from pressing Send; `tokens` is max_tokens when the answer finished
        (synthetic models always write exactly that many)."""
        timing = StreamTiming(t_request=time.perf_counter())
        try:
            r = self._post(f"/chats/{chat_id}/messages", {"content": content}, htmx=True)
            match = _SSE_CONNECT.search(r.text)
            if not match:
                raise ChatUiError(f"no sse-connect in the answer to the message: {r.text[:300]}")
            fragments = self._follow(html.unescape(match.group(1)), timing)
        except (httpx.HTTPError, ChatUiError) as exc:
            timing.error = f"{type(exc).__name__}: {exc}"[:300]
            return timing
        if fragments == 0:
            timing.error = "the stream ended without text"
            return timing
        timing.tokens = max_tokens
        return timing

    def _follow(self, url: str, timing: StreamTiming) -> int:
        fragments = 0
        with connect_sse(self.client, "GET", url) as source:
            if source.response.status_code != 200:
                source.response.read()
                raise ChatUiError(f"stream: HTTP {source.response.status_code}")
            for event in source.iter_sse():
                if event.event in ("token", "block") and event.data:  # text, or rendered blocks
                    now = time.perf_counter()
                    if fragments == 0:
                        timing.t_first = now
                    timing.t_last = now
                    fragments += 1
                elif event.event == "done":
                    if "msg-error" in event.data or 'data-status="error"' in event.data:
                        raise ChatUiError(f"answer failed: {event.data[:300]}")
                    if fragments == 0:
                        # Finished before the stream attached: the whole answer appears
                        # now, which is when the person sees its first token.
                        timing.t_first = timing.t_last = time.perf_counter()
                        fragments = 1
                    break
        return fragments
