"""Two chat_ui replicas behind real nginx (round-robin), over one real db_api: an answer
written by one replica is followed to the same end from the other, a reload may land on
either, Stop works from either, and when one replica is killed mid-answer its answer ends
`interrupted` (reason lease_expired) once its lease lapses while the other keeps serving.

The model is `scripted_model` (an OpenAI-compatible server that pauses at gates until
the test releases it), so "mid-answer" is a state the test holds, not a moment it hopes
to catch; the leases are short (CHAT_UI_LEASE_S=6, renewed every 0.5 s: a replica stalled
for 5 s on a busy machine still keeps its answers) so the killed replica's lease lapses
within the test.
"""

from __future__ import annotations

import contextlib
import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from parlor.stack import migrate
from parlor.supervisor import LOOPBACK, Service, ServiceSpec, free_port, uvicorn_command
from tests.chat_ui.conftest import Event, Shown, final_body
from tests.stack import scripted_model
from tests.stack.nginx_process import require_nginx
from tests.support import fresh_postgres_database, postgres_server_url, run_nginx, run_service

pytestmark = pytest.mark.slow

TOKEN = "replicas-internal-token"
SECRET = "replicas-secret-0123456789abcdef"
LEASE_S = 6.0
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
STREAM = re.compile(r'sse-connect="(/chats/[0-9a-f-]+/messages/([0-9a-f-]+)/stream[^"]*)"')
# The scripted answer up to its first pause: what is saved while it waits there.
BEFORE_GATE = "".join(scripted_model.ANSWER[: scripted_model.ANSWER.index(scripted_model.GATE)])
DEADLINE_S = 60.0  # for a stuck test on a busy machine, not a timing check


def eventually(condition: Any, what: str, deadline_s: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline_s} s")
        time.sleep(0.05)  # poll interval


@dataclass
class Replicas:
    nginx: str
    a: Service
    b: Service
    db: Service
    model: str

    def release(self) -> None:
        httpx.post(self.model + "/release").raise_for_status()

    def paused_at(self, gate: int) -> None:
        eventually(
            lambda: httpx.get(self.model + "/waiting").json()["gate"] == gate,
            f"the scripted answer pausing at gate {gate}",
        )

    def drain(self) -> None:
        """Release paused answers until none waits: a dead replica's request may pass
        several gates before the model server notices its client is gone."""

        def nothing_waits() -> bool:
            if httpx.get(self.model + "/waiting").json()["gate"] == 0:
                return True
            self.release()
            return False

        eventually(nothing_waits, "no scripted answer waiting")

    def stored(self, owner: str, message_id: str) -> dict[str, Any]:
        """The answer as db_api holds it."""
        r = httpx.get(
            f"{self.db.url}/messages/{message_id}",
            headers={"X-Owner": owner, "Authorization": f"Bearer {TOKEN}"},
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


def chat_ui(name: str, port: int, db_url: str, model_url: str) -> ServiceSpec:
    env = {
        "CHAT_UI_DB_API_URL": db_url,
        "CHAT_UI_LM_API_URL": model_url + "/v1",
        "CHAT_UI_INTERNAL_TOKEN": TOKEN,
        "CHAT_UI_SECRET_KEY": SECRET,
        "CHAT_UI_REPLICA_NAME": name,
        "CHAT_UI_LEASE_S": str(LEASE_S),
        "CHAT_UI_LEASE_RENEW_S": "0.5",
    }
    return ServiceSpec(
        name,
        uvicorn_command("chat_ui.main:app", port, log_level="warning"),
        f"http://{LOOPBACK}:{port}",
        env,
        port=port,
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def replicas(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Replicas]:
    """The stack on SQLite, and on PostgreSQL (whose clock grants and judges the leases)
    when TEST_DATABASE_URL is set."""
    require_nginx()
    work = tmp_path_factory.mktemp("replicas")
    logs = work / "logs"
    logs.mkdir()
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database_url = f"sqlite:///{work / 'parlor.db'}"
        else:
            server = postgres_server_url()
            if server is None:
                pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL to run on")
            database_url = stack.enter_context(fresh_postgres_database(server))
        migrate(database_url)
        db_env = {"DB_API_DATABASE_URL": database_url, "DB_API_INTERNAL_TOKEN": TOKEN}
        db = stack.enter_context(run_service("db_api", "db_api.main:app", db_env, logs))
        model = stack.enter_context(
            run_service("scripted_model", "tests.stack.scripted_model:app", {}, logs)
        )
        uis = []
        for name in ("ui-a", "ui-b"):
            service = Service(chat_ui(name, free_port(), db.url, model.url), log=logs / name)
            service.start()
            stack.callback(service.stop)
            service.wait_healthy()
            uis.append(service)
        url, _nginx, _config = stack.enter_context(
            run_nginx(work / "nginx", [ui.url for ui in uis])
        )
        yield Replicas(nginx=url, a=uis[0], b=uis[1], db=db, model=model.url)


class Person:
    """One browser (its cookies, its CSRF token) that can talk to nginx or, to pick the
    replica, to either chat_ui directly: the cookie is valid on both (same secret)."""

    def __init__(self, replicas: Replicas, name: str) -> None:
        self.r = replicas
        self.http = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0))
        self.csrf = ""
        self.page(replicas.nginx, "/")
        resp = self.post(replicas.nginx, "/login", name=name)
        assert resp.status_code == 303, resp.text[:300]
        self.page(replicas.nginx, "/chats")  # the logged-in session's CSRF token
        self.owner = owner_of(self.http)

    def close(self) -> None:
        self.http.close()

    def page(self, base: str, path: str) -> str:
        resp = self.http.get(base + path)
        assert resp.status_code == 200, (base, path, resp.status_code, resp.text[:300])
        match = CSRF.search(resp.text)
        if match:
            self.csrf = match.group(1)
        return resp.text

    def post(self, base: str, path: str, *, htmx: bool = False, **form: str) -> httpx.Response:
        headers = {"HX-Request": "true", "X-CSRF-Token": self.csrf} if htmx else {}
        return self.http.post(base + path, data={"csrf_token": self.csrf, **form}, headers=headers)

    def ask_on(self, base: str, question: str) -> tuple[str, str]:
        """A new chat whose question is sent to the replica at `base`; (chat, answer),
        once the answer waits at its first pause with that text saved."""
        resp = self.post(base, "/chats")
        assert resp.status_code == 303, resp.text[:300]
        chat = resp.headers["location"].rsplit("/", 1)[1]
        resp = self.post(base, f"/chats/{chat}/messages", content=question)
        assert resp.status_code == 303, resp.text[:300]
        page = self.page(base, f"/chats/{chat}")
        streams = STREAM.findall(page)
        assert streams, page
        self.owner = owner_of(self.http)
        answer = streams[-1][1]
        self.r.paused_at(1)
        eventually(
            lambda: self.r.stored(self.owner, answer)["content"] == BEFORE_GATE,
            "the partial answer saved",
        )
        return chat, answer

    def events(self, base: str, url: str) -> Iterator[Event]:
        """The SSE events of the stream at `url` (from a page's sse-connect)."""
        with self.http.stream("GET", base + html.unescape(url)) as resp:
            assert resp.status_code == 200, resp.read()[:300]
            event, last_id = "message", None
            data: list[str] = []
            for line in resp.iter_lines():
                if line == "":
                    if data:
                        yield Event(event, "\n".join(data), last_id)
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("id:"):
                    last_id = line[3:].strip()

    def stream_of(self, base: str, chat: str, answer: str) -> str:
        """The stream URL the chat page served by `base` opens for the running answer."""
        page = self.page(base, f"/chats/{chat}")
        urls = [str(url) for url, mid in STREAM.findall(page) if mid == answer]
        assert urls, f"the answer is not running on {base}: {page[-2000:]}"
        return urls[0]


def owner_of(http: httpx.Client) -> str:
    """The owner key db_api scopes this browser's chats by, read from its cookie by
    chat_ui's own session code."""
    from starlette.requests import Request

    from chat_ui.config import Settings
    from chat_ui.session import COOKIE_NAME, SessionCodec

    cookie = f"{COOKIE_NAME}={http.cookies[COOKIE_NAME]}".encode()
    request = Request({"type": "http", "headers": [(b"cookie", cookie)]})
    session, _ = SessionCodec(Settings(secret_key=SECRET)).load(request)
    assert session.owner is not None
    return session.owner


def finish_and_follow(person: Person, base: str, url: str) -> tuple[Shown, Event]:
    """Follow the stream at `url` on `base` while letting the answer run to its end."""
    shown, gates = Shown(), [1, 2]
    for ev in person.events(base, url):
        if ev.event == "done":
            return shown, ev
        shown.apply(ev)
        if ev.event == "sync" and gates:
            # The stream shows what is saved; now let the answer go on.
            for gate in gates:
                person.r.paused_at(gate)
                person.r.release()
            gates = []
    raise AssertionError("the stream closed without a done event")


@pytest.fixture
def person(replicas: Replicas, request: pytest.FixtureRequest) -> Iterator[Person]:
    p = Person(replicas, request.node.name[:40])
    yield p
    p.close()


def test_an_answer_written_by_one_replica_is_followed_to_the_same_end_from_the_other(
    replicas: Replicas, person: Person
) -> None:
    a, b = replicas.a.url, replicas.b.url
    chat, answer = person.ask_on(a, "Write a function.")
    url = person.stream_of(b, chat, answer)
    assert f"after={len(BEFORE_GATE)}" in url  # B shows what A saved
    shown, done = finish_and_follow(person, b, url)
    assert 'data-status="complete"' in done.data
    # Exactly the answer the model wrote, and exactly the `done` A gives.
    stored = replicas.stored(person.owner, answer)
    assert (stored["status"], stored["content"]) == ("complete", scripted_model.TEXT)
    done_on_a = next(e for e in person.events(a, url) if e.event == "done")
    assert done.data == done_on_a.data
    assert shown.blocks == final_body(done)
    assert stored["lease_owner"].startswith("ui-a/")


def test_a_reload_may_land_on_either_replica_mid_answer(replicas: Replicas, person: Person) -> None:
    a, b, nginx = replicas.a.url, replicas.b.url, replicas.nginx
    chat, answer = person.ask_on(b, "Write a function.")
    # Reloads bouncing between the replicas (directly, and through nginx's round-robin):
    # each shows the answer still running, with its text so far, and never ends it.
    for base in (a, b, a, nginx, nginx, nginx, nginx):
        page = person.page(base, f"/chats/{chat}")
        assert re.search(rf'id="msg-{answer}"[^>]*data-status="streaming"', page), base
        assert "double" in page and "data-reason=" not in page
    stored = replicas.stored(person.owner, answer)
    assert stored["status"] == "streaming" and stored["lease_owner"].startswith("ui-b/")
    # The last reload's stream (on A, which does not write it) follows it to its end.
    shown, done = finish_and_follow(person, a, person.stream_of(a, chat, answer))
    assert 'data-status="complete"' in done.data and shown.blocks == final_body(done)
    page = person.page(nginx, f"/chats/{chat}")
    assert re.search(rf'id="msg-{answer}"[^>]*data-status="complete"', page)


def test_stop_from_the_replica_that_does_not_write_the_answer(
    replicas: Replicas, person: Person
) -> None:
    a, b = replicas.a.url, replicas.b.url
    chat, answer = person.ask_on(a, "Write a function.")
    person.page(b, f"/chats/{chat}")
    resp = person.post(b, f"/chats/{chat}/messages/{answer}/stop", htmx=True)
    assert resp.status_code == 200, resp.text[:300]
    assert 'data-status="interrupted"' in resp.text and 'data-reason="stopped"' in resp.text
    assert "double" in resp.text  # the partial text is kept
    stored = replicas.stored(person.owner, answer)
    assert (stored["status"], stored["reason"], stored["content"]) == (
        "interrupted",
        "stopped",
        BEFORE_GATE,
    )
    # A, which wrote it, shows the same end.
    page = person.page(a, f"/chats/{chat}")
    assert re.search(rf'id="msg-{answer}"[^>]*data-status="interrupted"', page)
    # The model server was let go: the next answer starts from the first pause.
    replicas.paused_at(0)


def test_a_killed_replica_s_answer_ends_when_its_lease_lapses_and_the_other_serves_on(
    replicas: Replicas, person: Person
) -> None:
    a, nginx = replicas.a, replicas.nginx
    chat, answer = person.ask_on(a.url, "Write a function.")
    url = person.stream_of(replicas.b.url, chat, answer)
    a.proc.kill()  # SIGKILL: no shutdown code runs, as when a machine dies
    a.proc.wait(timeout=30)
    try:
        # B was following it: its stream ends once the lease lapses, with that reason.
        done = next(e for e in person.events(replicas.b.url, url) if e.event == "done")
        assert 'data-status="interrupted"' in done.data
        assert 'data-reason="lease_expired"' in done.data
        assert "the server writing it went away" in done.data
        stored = replicas.stored(person.owner, answer)
        assert (stored["status"], stored["reason"], stored["content"]) == (
            "interrupted",
            "lease_expired",
            BEFORE_GATE,
        )
        # Through nginx, every page now comes from B, which answers a new question.
        page = person.page(nginx, f"/chats/{chat}")
        assert 'data-reason="lease_expired"' in page
        replicas.drain()  # the killed replica's request to the model, if still waiting
        resp = person.post(nginx, f"/chats/{chat}/messages", content="Again, please.")
        assert resp.status_code == 303, resp.text[:300]
        again = STREAM.findall(person.page(nginx, f"/chats/{chat}"))[-1]
        _, done = finish_and_follow(person, nginx, again[0])
        assert 'data-status="complete"' in done.data
        assert replicas.stored(person.owner, again[1])["lease_owner"].startswith("ui-b/")
    finally:
        a.start()  # back for whatever runs after
        a.wait_healthy()


def test_in_chromium_the_answer_streams_to_its_end_whichever_replica_serves_the_page(
    replicas: Replicas, browser: Any
) -> None:
    """With JavaScript (htmx's SSE): the page and its stream land on either replica as
    nginx deals them out, across reloads mid-answer, and the answer ends in place."""
    from playwright.sync_api import expect

    from tests.stack.test_browser import login, start_chat

    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    try:
        login(page, replicas.nginx, "Grace")
        start_chat(page, "Write a function.")
        replicas.paused_at(1)
        answer = page.locator("article.msg-assistant").last
        expect(answer).to_contain_text("double")
        answer_id = answer.get_attribute("id")
        assert answer_id is not None
        bubble = page.locator(f"#{answer_id}")
        for _ in range(4):  # round-robin: the page and its stream from either replica
            page.reload()
            expect(bubble).to_have_attribute("data-status", re.compile("pending|streaming"))
            expect(bubble).to_contain_text("double")
        replicas.release()
        replicas.paused_at(2)
        replicas.release()
        expect(bubble).to_have_attribute("data-status", "complete")
        expect(bubble).to_contain_text("That is all.")
        expect(bubble.locator("pre code")).to_contain_text("return x * 2")
    finally:
        context.close()
