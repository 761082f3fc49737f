"""chat_ui under a real uvicorn (in a thread, so SSE truly streams) with fake backends."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from chat_ui.config import Settings
from chat_ui.main import create_app
from tests.chat_ui.fakes import FakeDb, FakeLm
from tests.support import free_port, wait_healthy

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


class LiveServer:
    def __init__(self, settings: Settings, db: FakeDb, lm: FakeLm) -> None:
        self.app = create_app(settings, db_transport=db.transport(), lm_transport=lm.transport())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        wait_healthy(self.url + "/health", deadline_s=20)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclass
class Event:
    event: str
    data: str
    id: str | None


class Browser:
    """One browser: its own cookie jar, the CSRF token of the last page it saw."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=20)
        self.csrf = ""

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, **kw: Any) -> httpx.Response:
        resp = self.client.get(url, **kw)
        match = CSRF_META.search(resp.text)
        if match:
            self.csrf = match.group(1)
        return resp

    def post(
        self, url: str, data: dict[str, str] | None = None, *, htmx: bool = False, **kw: Any
    ) -> httpx.Response:
        form = dict(data or {})
        headers = dict(kw.pop("headers", {}))
        if htmx:
            headers.setdefault("HX-Request", "true")
            headers.setdefault("X-CSRF-Token", self.csrf)
        else:
            form.setdefault("csrf_token", self.csrf)
        return self.client.post(url, data=form, headers=headers, **kw)

    def login(self, name: str) -> httpx.Response:
        self.get("/")
        resp = self.post("/login", {"name": name})
        assert resp.status_code == 303, resp.text
        self.get("/chats")
        return resp

    def new_chat(self) -> str:
        resp = self.post("/chats")
        assert resp.status_code == 303, resp.text
        location = resp.headers["location"]
        self.get(location)
        return location.rsplit("/", 1)[1]

    def send(self, chat_id: str, text: str, *, htmx: bool = False) -> httpx.Response:
        return self.post(f"/chats/{chat_id}/messages", {"content": text}, htmx=htmx)

    def events(self, url: str, headers: dict[str, str] | None = None) -> Iterator[Event]:
        """SSE events of `url`, parsed as a browser's EventSource would, until it closes."""
        with self.client.stream("GET", url, headers=headers) as resp:
            assert resp.status_code == 200, resp.read()
            event, last_id = "message", None
            data: list[str] = []
            for line in resp.iter_lines():
                if line == "":
                    if data:
                        yield Event(event, "\n".join(data), last_id)
                    event, data = "message", []
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    last_id = value

    def follow(self, chat_id: str, message_id: str, after: int = 0) -> tuple[Shown, Event]:
        """The answer as the page showed it just before the final `done` event, and that."""
        shown = Shown()
        url = f"/chats/{chat_id}/messages/{message_id}/stream?after={after}"
        for ev in self.events(url):
            if ev.event == "done":
                return shown, ev
            shown.apply(ev)
        raise AssertionError("stream closed without a done event")

    def follow_live(
        self, chat_id: str, message_id: str, release: Callable[[], None]
    ) -> tuple[Shown, Event]:
        """Follow an answer held after its first token: `release` it once the stream
        has shown that token, so the rest arrives live."""
        shown = Shown()
        url = f"/chats/{chat_id}/messages/{message_id}/stream"
        for ev in self.events(url):
            if ev.event == "done":
                return shown, ev
            shown.apply(ev)
            if ev.event == "token" and len(shown.events) == 2:
                release()
        raise AssertionError("stream closed without a done event")


class Shown:
    """An answer's body as a page shows it while it streams, from the `sync`, `token` and
    `block` events applied as htmx applies them (see _message.html)."""

    SYNC = re.compile(r'<div class="md-tail" id="tail-[0-9a-f-]+">(.*)</div>\Z', re.S)
    OOB = re.compile(r'<div id="tail-[0-9a-f-]+" hx-swap-oob="innerHTML">(.*)</div>\Z', re.S)

    def __init__(self) -> None:
        self.blocks = ""  # rendered Markdown blocks
        self.tail = ""  # escaped text of the block being written
        self.events: list[Event] = []

    def apply(self, ev: Event) -> None:
        self.events.append(ev)
        if ev.event == "sync":
            match = self.SYNC.search(ev.data)
            assert match, ev.data
            self.blocks, self.tail = ev.data[: match.start()], match.group(1)
        elif ev.event == "token":
            self.tail += ev.data
        elif ev.event == "block":
            match = self.OOB.search(ev.data)
            assert match, ev.data
            self.blocks += ev.data[: match.start()]
            self.tail = match.group(1)

    @property
    def html(self) -> str:
        return self.blocks + self.tail

    @property
    def text(self) -> str:
        """What a person reads: the blocks' text, then the tail's."""
        return html.unescape(re.sub(r"<[^>]*>", "", self.blocks)) + html.unescape(self.tail)


BODY = re.compile(
    r'<div class="msg-body md">(.*?)</div>\s*(?:<p class="msg-|<div class="msg-footer)', re.S
)


def final_body(done: Event) -> str:
    """The rendered body in a `done` bubble."""
    match = BODY.search(done.data)
    assert match, done.data
    return match.group(1)


@pytest.fixture
def fake_db() -> FakeDb:
    return FakeDb()


@pytest.fixture
def fake_lm() -> Iterator[FakeLm]:
    lm = FakeLm()
    yield lm
    lm.release()  # never leave a held stream (and its waiting thread) behind
    lm.release_again()


@pytest.fixture
def make_ui(fake_db: FakeDb, fake_lm: FakeLm) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(**overrides: Any) -> LiveServer:
        settings = Settings(
            db_api_url="http://db_api",
            lm_api_url="http://lm_api/v1",
            secret_key="test-secret-0123456789",
            # Off unless a test turns it on: a title request would be one more model call.
            **{"model_titles": False, **overrides},
        )
        server = LiveServer(settings, fake_db, fake_lm)
        server.start()
        servers.append(server)
        return server

    yield make
    fake_lm.release()
    fake_lm.release_again()
    for server in servers:
        server.stop()


@pytest.fixture
def ui(make_ui: Callable[..., LiveServer]) -> LiveServer:
    return make_ui()


@pytest.fixture
def browsers(ui: LiveServer) -> Iterator[Callable[[], Browser]]:
    opened: list[Browser] = []

    def new() -> Browser:
        b = Browser(ui.url)
        opened.append(b)
        return b

    yield new
    for b in opened:
        b.close()


@pytest.fixture
def browser(browsers: Callable[[], Browser]) -> Browser:
    return browsers()


def eventually(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    """Poll `condition` until true, failing at the deadline (no fixed sleeps)."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)  # poll interval


def message_ids(page_html: str, role: str = "assistant") -> list[str]:
    return re.findall(rf'<article id="msg-([0-9a-f-]+)" class="msg msg-{role}', page_html)
