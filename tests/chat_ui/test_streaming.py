"""Answers: background generation, SSE replay and re-attach, stop, errors, retry."""

from __future__ import annotations

import html
from collections.abc import Callable

import pytest

from tests.chat_ui.conftest import Browser, LiveServer, eventually, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm

FULL = "Hello, world!"


@pytest.fixture
def ada(browser: Browser) -> Browser:
    browser.login("Ada")
    return browser


def start(ada: Browser, fake_lm: FakeLm, *, hold_after: int | None = 2) -> tuple[str, str]:
    """Send a message whose answer is held after `hold_after` tokens; (chat id, answer id)."""
    fake_lm.hold_after = hold_after
    chat = ada.new_chat()
    assert ada.send(chat, "Hi").status_code == 303
    if hold_after is not None:
        assert fake_lm.held.wait(timeout=10)
    return chat, message_ids(ada.get(f"/chats/{chat}").text)[0]


def test_send_stores_the_user_message_first_and_answers(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat, mid = start(ada, fake_lm, hold_after=None)
    _, done = ada.follow(chat, mid)
    stored = fake_db.messages[mid]
    assert stored["content"] == FULL and stored["status"] == "complete"
    assert stored["prompt_tokens"] == 7 and stored["completion_tokens"] == 4
    assert stored["ttft_ms"] is not None and stored["generation_ms"] is not None
    assert "<p>Hello, world!</p>" in done.data and 'data-status="complete"' in done.data
    sent = fake_lm.requests[0]
    assert sent["stream"] is True and sent["model"] == "fake-model"
    assert sent["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi"},
    ]
    assert fake_db.chats[fake_db.messages[mid]["chat_id"]]["title"] == "Hi"


def test_stream_replays_then_follows(ada: Browser, fake_lm: FakeLm) -> None:
    chat, mid = start(ada, fake_lm)
    events = ada.events(f"/chats/{chat}/messages/{mid}/stream")
    first = next(events)
    assert (first.event, html.unescape(first.data), first.id) == ("token", "Hello, ", "7")
    fake_lm.release()
    rest = list(events)
    text = html.unescape("".join(e.data for e in rest if e.event == "token"))
    assert first.data + text == FULL
    assert rest[-1].event == "done"


def test_two_listeners_one_joining_mid_stream_see_the_text_once(
    browsers: Callable[[], Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    ada = browsers()
    ada.login("Ada")
    chat, mid = start(ada, fake_lm)
    url = f"/chats/{chat}/messages/{mid}/stream"
    first = ada.events(url)
    seen_first = [next(first)]
    # A second tab joins while the answer is held half-way.
    second = ada.events(url)
    seen_second = [next(second)]
    fake_lm.release()
    seen_first += list(first)
    seen_second += list(second)
    for seen in (seen_first, seen_second):
        assert html.unescape("".join(e.data for e in seen if e.event == "token")) == FULL
        assert [e.event for e in seen].count("done") == 1
    assert len(fake_lm.requests) == 1  # one generation, however many listeners


def test_reload_before_any_flush_replays_everything(
    make_ui: Callable[..., LiveServer], fake_lm: FakeLm
) -> None:
    # Nothing flushed yet: the page shows an empty bubble and the stream replays it all.
    server = make_ui(flush_interval_s=3600)
    b = Browser(server.url)
    try:
        b.login("Ada")
        chat, mid = start(b, fake_lm)
        page = b.get(f"/chats/{chat}").text
        assert 'sse-swap="token" hx-swap="beforeend"></div>' in page
        assert f"/chats/{chat}/messages/{mid}/stream?after=0" in page
        assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
        events = b.events(f"/chats/{chat}/messages/{mid}/stream?after=0")
        first = next(events)
        fake_lm.release()
        streamed = "".join(e.data for e in [first, *events] if e.event == "token")
        assert html.unescape(streamed) == FULL
    finally:
        b.close()


def test_last_event_id_resumes_after_a_dropped_connection(ada: Browser, fake_lm: FakeLm) -> None:
    chat, mid = start(ada, fake_lm)
    url = f"/chats/{chat}/messages/{mid}/stream"
    first = next(ada.events(url))  # then the connection drops
    assert first.id == "7"
    # Say the browser had only got the first 5 characters when it dropped: EventSource
    # reconnects with Last-Event-ID, which wins over the page's ?after=.
    resumed = ada.events(url + "?after=0", headers={"Last-Event-ID": "5"})
    again = next(resumed)
    assert (html.unescape(again.data), again.id) == (", ", "7")
    fake_lm.release()
    text = html.unescape("".join(e.data for e in resumed if e.event == "token"))
    assert "Hello" + ", " + text == FULL


def test_finished_answer_says_done_at_once_and_never_regenerates(
    ada: Browser, fake_lm: FakeLm
) -> None:
    chat, mid = start(ada, fake_lm, hold_after=None)
    ada.follow(chat, mid)
    for _ in range(2):
        events = list(ada.events(f"/chats/{chat}/messages/{mid}/stream"))
        assert [e.event for e in events] == ["done"]
        assert "Hello, world!" in events[0].data
    assert len(fake_lm.requests) == 1
    page = ada.get(f"/chats/{chat}").text
    assert "sse-connect" not in page and 'http-equiv="refresh"' not in page


def test_flushes_partial_text_while_streaming(
    make_ui: Callable[..., LiveServer], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    server = make_ui(flush_interval_s=0.001)
    b = Browser(server.url)
    try:
        b.login("Ada")
        chat, mid = start(b, fake_lm)
        # The stream is stalled (held) after two tokens: the clock still flushes them.
        eventually(lambda: fake_db.messages[mid]["content"] == "Hello, ")
        assert fake_db.messages[mid]["status"] == "streaming"
        page = b.get(f"/chats/{chat}").text
        assert 'sse-swap="token" hx-swap="beforeend">Hello, </div>' in page
        assert "stream?after=7" in page
        fake_lm.release()
        b.follow(chat, mid)
        assert fake_db.messages[mid]["status"] == "complete"
    finally:
        b.close()


def test_stop_keeps_the_partial_answer_as_interrupted(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat, mid = start(ada, fake_lm)
    resp = ada.post(f"/chats/{chat}/messages/{mid}/stop", htmx=True)
    assert resp.status_code == 200
    assert 'data-status="interrupted"' in resp.text and "Hello," in resp.text
    assert 'class="retry"' in resp.text
    assert fake_db.messages[mid]["status"] == "interrupted"
    assert fake_db.messages[mid]["content"] == "Hello, "
    events = list(ada.events(f"/chats/{chat}/messages/{mid}/stream"))
    assert [e.event for e in events] == ["done"] and "interrupted" in events[0].data


def test_stop_without_javascript_redirects(ada: Browser, fake_lm: FakeLm, fake_db: FakeDb) -> None:
    chat, mid = start(ada, fake_lm)
    resp = ada.post(f"/chats/{chat}/messages/{mid}/stop")
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}"
    page = ada.get(f"/chats/{chat}").text
    assert 'data-status="interrupted"' in page and "Stopped" in page
    assert "http-equiv" not in page


def test_lm_refusal_marks_error_and_retry_answers(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.refusals = [(503, "model_busy", "the queue is full")]
    chat, mid = start(ada, fake_lm, hold_after=None)
    _, done = ada.follow(chat, mid)
    assert 'data-status="error"' in done.data
    assert "busy" in done.data and 'class="retry"' in done.data
    assert fake_db.messages[mid]["status"] == "error"
    assert "busy" in fake_db.messages[mid]["error"]
    resp = ada.post(f"/chats/{chat}/messages/{mid}/retry", htmx=True)
    assert resp.status_code == 200 and "sse-connect" in resp.text
    _, done = ada.follow(chat, mid)
    assert 'data-status="complete"' in done.data and "Hello, world!" in done.data
    assert fake_db.messages[mid]["error"] is None
    # The retried answer was asked with the same history (the failed answer excluded).
    assert fake_lm.requests[-1]["messages"][-1] == {"role": "user", "content": "Hi"}


def test_failure_mid_stream_keeps_partial_text(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.fail_after = 2
    chat, mid = start(ada, fake_lm, hold_after=None)
    _, done = ada.follow(chat, mid)
    assert 'data-status="error"' in done.data and "the model crashed" in done.data
    assert fake_db.messages[mid]["content"] == "Hello, "


def test_lm_api_down_marks_error(ada: Browser, fake_lm: FakeLm, fake_db: FakeDb) -> None:
    fake_lm.down = True
    chat, mid = start(ada, fake_lm, hold_after=None)
    _, done = ada.follow(chat, mid)
    assert 'data-status="error"' in done.data and "cannot be reached" in done.data
    page = ada.get(f"/chats/{chat}").text
    assert "cannot be reached" in page and 'class="retry"' in page
    assert fake_db.messages[mid]["status"] == "error"


def test_orphaned_pending_answer_is_marked_interrupted(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    # A pending answer no task owns, as after a chat_ui restart.
    chat = ada.new_chat()
    owner = next(iter(fake_db.owners()))
    fake_db.chats[chat]["owner"] = owner
    import httpx

    client = httpx.Client(transport=fake_db.sync_transport(), base_url="http://db")
    client.post(
        f"/chats/{chat}/messages", headers={"X-Owner": owner}, json={"role": "user", "content": "q"}
    )
    mid = client.post(
        f"/chats/{chat}/messages",
        headers={"X-Owner": owner},
        json={"role": "assistant", "content": "partial", "status": "pending"},
    ).json()["id"]
    events = list(ada.events(f"/chats/{chat}/messages/{mid}/stream"))
    assert [e.event for e in events] == ["done"]
    assert 'data-status="interrupted"' in events[0].data and "partial" in events[0].data
    assert fake_db.messages[mid]["status"] == "interrupted"
    page = ada.get(f"/chats/{chat}").text
    assert "http-equiv" not in page and 'class="retry"' in page
    assert fake_lm.requests == []


def test_htmx_send_returns_fragments(ada: Browser, fake_lm: FakeLm) -> None:
    fake_lm.hold_after = 0
    chat = ada.new_chat()
    resp = ada.send(chat, "Hi <there>", htmx=True)
    assert resp.status_code == 200
    assert "<html" not in resp.text
    assert 'class="msg msg-user' in resp.text and "Hi &lt;there&gt;" in resp.text
    assert 'sse-connect="/chats/' in resp.text and 'sse-close="done"' in resp.text
    assert 'id="composer"' in resp.text and 'hx-swap-oob="true"' in resp.text
    assert 'id="sidebar"' in resp.text
    fake_lm.release()


def test_chat_ui_shutdown_interrupts_running_answers(
    make_ui: Callable[..., LiveServer], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    server = make_ui()
    b = Browser(server.url)
    try:
        b.login("Ada")
        _, mid = start(b, fake_lm)
    finally:
        b.close()
    server.server.should_exit = True
    eventually(lambda: fake_db.messages[mid]["status"] == "interrupted")
    assert fake_db.messages[mid]["content"] == "Hello, "
    fake_lm.release()  # frees the fake's waiting thread so the server can finish stopping
    server.stop()
    assert not server.thread.is_alive()
