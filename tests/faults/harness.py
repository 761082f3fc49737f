"""The fault suite's stack: db_api, lm_api (or a fake OpenAI server), chat_ui and nginx
as real processes on loopback, each of which a test can kill, pause and start again on
the same port; a proxy that delays db_api's traffic; a visitor that remembers every
status it was answered; and a reader of what the database holds (through db_api)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import importlib
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource
from itsdangerous import URLSafeTimedSerializer

from parlor.supervisor import Service, uvicorn_spec
from tests.support import free_port, run_nginx

TOKEN = "faults-internal-token"
SECRET = "faults-secret-0123456789abcdef"
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
STREAM = re.compile(r'sse-connect="/chats/([0-9a-f-]+)/messages/([0-9a-f-]+)/stream')
STATUS = re.compile(r'data-status="([a-z]+)"')
REASON = re.compile(r'data-reason="([a-z_]*)"')


def eventually(condition: Any, deadline_s: float = 60.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something true; fail at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {deadline_s} s")
        time.sleep(0.05)  # poll interval


class Proc(Service):
    """One service as a uvicorn process on a port that stays its own across restarts,
    which a test can kill, pause and start again."""

    def __init__(self, name: str, app: str, env: Mapping[str, str], log_dir: Path) -> None:
        # A loaded machine may take minutes to start a service.
        spec = uvicorn_spec(name, app, env, deadline_s=300.0)
        super().__init__(spec, log=log_dir / f"{name}.log")
        assert spec.port is not None
        self.port = spec.port
        self.starts = 0

    def start(self) -> None:
        """Start it (again) on its port and wait until it is healthy."""
        assert self.log is not None
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1} ---\n".encode())
        super().start()
        self.starts += 1
        self.wait_healthy()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=30)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.alive():
            # A paused process must run again to hear the request to stop.
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
        super().stop(timeout_s)

    def ensure_running(self) -> None:
        if not self.alive():
            self.start()

    def log_text(self) -> str:
        assert self.log is not None
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class DelayProxy:
    """A TCP proxy that holds each piece of traffic, both ways, for a random 0-`max_s`
    seconds while `enabled` (order kept within a connection, not across them)."""

    def __init__(self, upstream_port: int, max_s: float = 0.3) -> None:
        self.upstream_port = upstream_port
        self.max_s = max_s
        self.enabled = False
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="delay-proxy")
        self._server: asyncio.AbstractServer | None = None
        self._rng = random.Random(0)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        assert self._ready.wait(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.enabled:
                    await asyncio.sleep(self._rng.uniform(0, self.max_s))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))


@dataclass
class Answer:
    """What the visitor saw of one answer."""

    chat_id: str
    message_id: str
    question: str
    streamed: str = ""
    done_status: str | None = None
    done_reason: str | None = None
    done_html: str = ""
    notices: list[str] = field(default_factory=list)


class Visitor:
    """A person on the chat through nginx, without JavaScript, plus the event stream a
    page would follow; every response's status is kept in `statuses`."""

    def __init__(self, base_url: str) -> None:
        self.statuses: list[tuple[str, int]] = []
        self.http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(120.0, connect=10.0),
            event_hooks={"response": [self._record]},
        )
        self.csrf = ""

    def _record(self, response: httpx.Response) -> None:
        self.statuses.append(
            (f"{response.request.method} {response.request.url.path}", response.status_code)
        )

    def close(self) -> None:
        self.http.close()

    def server_errors(self) -> list[tuple[str, int]]:
        return [(what, status) for what, status in self.statuses if status >= 500]

    def page(self, path: str) -> str:
        r = self.http.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        match = CSRF.search(r.text)
        if match:
            self.csrf = match.group(1)
        return r.text

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf, **fields})

    def login(self, name: str) -> None:
        self.page("/")
        r = self.post("/login", name=name)
        assert r.status_code == 303, (r.status_code, r.text[:300])
        self.page("/chats")

    def new_chat(self) -> str:
        r = self.post("/chats")
        assert r.status_code == 303, (r.status_code, r.text[:300])
        return r.headers["location"].rsplit("/", 1)[1]

    def send(self, chat_id: str, question: str) -> Answer:
        r = self.post(f"/chats/{chat_id}/messages", content=question)
        assert r.status_code == 303, (r.status_code, r.text[:300])
        page = self.page(f"/chats/{chat_id}")
        streams = STREAM.findall(page)
        assert streams, "the chat page shows no running answer"
        return Answer(chat_id=chat_id, message_id=streams[-1][1], question=question)

    @contextlib.contextmanager
    def events(self, answer: Answer) -> Iterator[Iterator[Any]]:
        url = f"/chats/{answer.chat_id}/messages/{answer.message_id}/stream"
        with self.http.stream("GET", url, headers={"Accept": "text/event-stream"}) as r:
            self._record(r)
            assert r.status_code == 200, r.status_code
            yield EventSource(r).iter_sse()

    def follow(self, answer: Answer, events: Iterator[Any], *, until_chars: int = 0) -> bool:
        """Read `events` into `answer`: until `until_chars` streamed (True), or to the end
        (`done`: True; the stream closing first: False)."""
        for ev in events:
            if ev.event == "token":
                answer.streamed += html.unescape(ev.data)
                if until_chars and len(answer.streamed) >= until_chars:
                    return True
            elif ev.event == "notice":
                answer.notices.append(html.unescape(ev.data))
            elif ev.event == "done":
                answer.done_html = ev.data
                status = STATUS.search(ev.data)
                reason = REASON.search(ev.data)
                answer.done_status = status.group(1) if status else None
                answer.done_reason = reason.group(1) if reason else None
                return True
        return False

    def midway(self, answer: Answer, events: Iterator[Any], chars: int = 12) -> bool:
        """Read until `chars` of the answer are streamed; False if it ended before."""
        return self.follow(answer, events, until_chars=chars) and answer.done_status is None

    def owner(self) -> str:
        """The owner key db_api scopes this visitor's chats by (from its cookie)."""
        data = URLSafeTimedSerializer(SECRET, salt="parlor-session").loads(
            self.http.cookies["parlor"]
        )
        return hashlib.sha256(f"{data['k']}\0{data['n']}".encode()).hexdigest()


class Storage:
    """What the database holds, read through db_api (its contract, not its tables)."""

    def __init__(self, db_url: str) -> None:
        self.http = httpx.Client(
            base_url=db_url, timeout=10.0, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    def close(self) -> None:
        self.http.close()

    def chat(self, owner: str, chat_id: str) -> dict[str, Any]:
        r = self.http.get(f"/chats/{chat_id}", headers={"X-Owner": owner})
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return dict(r.json())

    def message(self, owner: str, message_id: str) -> dict[str, Any]:
        r = self.http.get(f"/messages/{message_id}", headers={"X-Owner": owner})
        assert r.status_code == 200, (r.status_code, r.text[:300])
        return dict(r.json())

    def settled(self, owner: str, message_id: str, deadline_s: float = 120.0) -> dict[str, Any]:
        """The answer once it is no longer pending or streaming."""

        def done() -> dict[str, Any] | None:
            try:
                msg = self.message(owner, message_id)
            except (httpx.HTTPError, AssertionError):
                return None
            return msg if msg["status"] not in ("pending", "streaming") else None

        return dict(eventually(done, deadline_s, f"answer {message_id} settled in storage"))


@dataclass
class FaultStack:
    url: str  # nginx
    db: Proc
    lm: Proc
    ui: Proc
    proxy: DelayProxy
    storage: Storage
    database_url: str
    nginx_log: Path

    def visitor(self, name: str) -> Visitor:
        v = Visitor(self.url)
        v.login(name)
        return v

    def heal(self) -> None:
        """Every service running again, the proxy quick (after a test that broke one)."""
        self.proxy.enabled = False
        for proc in (self.db, self.lm, self.ui):
            if proc.proc is not None and proc.proc.poll() is None:
                proc.resume()
            proc.ensure_running()


def _migrate(url: str) -> None:
    """Migrations, the one way db_api offers (db_api.migrate, or db_api.db before it)."""
    migrate: Callable[[str], None] | None = getattr(
        importlib.import_module("db_api.migrate"), "migrate", None
    )
    if migrate is None:
        migrate = importlib.import_module("db_api.db").upgrade_database
    migrate(url)


@contextlib.contextmanager
def fault_stack(
    work: Path,
    *,
    database_url: str,
    lm_app: str,
    lm_env: Mapping[str, str],
    ui_env: Mapping[str, str] | None = None,
) -> Iterator[FaultStack]:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _migrate(database_url)
    db = Proc(
        "db_api",
        "db_api.main:app",
        {"DB_API_DATABASE_URL": database_url, "DB_API_INTERNAL_TOKEN": TOKEN},
        logs,
    )
    lm = Proc("lm_api", lm_app, {"LM_API_INTERNAL_TOKEN": TOKEN, **lm_env}, logs)
    started: list[Proc] = []
    try:
        for proc in (db, lm):
            proc.start()
            started.append(proc)
        with DelayProxy(db.port) as proxy:
            ui = Proc(
                "chat_ui",
                "chat_ui.main:app",
                {
                    "CHAT_UI_DB_API_URL": proxy.url,
                    "CHAT_UI_LM_API_URL": lm.url + "/v1",
                    "CHAT_UI_INTERNAL_TOKEN": TOKEN,
                    "CHAT_UI_SECRET_KEY": SECRET,
                    **(ui_env or {}),
                },
                logs,
            )
            ui.start()
            started.append(ui)
            with run_nginx(work / "nginx", ui.url) as (url, _nginx, config):
                storage = Storage(db.url)
                try:
                    yield FaultStack(
                        url=url,
                        db=db,
                        lm=lm,
                        ui=ui,
                        proxy=proxy,
                        storage=storage,
                        database_url=database_url,
                        nginx_log=config.error_log,
                    )
                finally:
                    storage.close()
    finally:
        for proc in reversed(started):
            proc.stop()
