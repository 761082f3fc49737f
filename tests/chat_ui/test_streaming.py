"""Answers: background generation, SSE replay and re-attach, stop, errors, retry."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chat_ui.conftest import (
    Browser,
    LiveServer,
    Shown,
    eventually,
    final_body,
    message_ids,
)
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
    shown = Shown()
    shown.apply(next(events))  # the body as shown so far: nothing yet
    assert shown.events[0].event == "sync" and shown.html == ""
    shown.apply(next(events))
    assert (shown.events[1].event, shown.tail, shown.events[1].id) == ("token", "Hello, ", "7")
    fake_lm.release()
    rest = list(events)
    for ev in rest[:-1]:
        shown.apply(ev)
    assert rest[-1].event == "done"
    assert shown.text.strip() == FULL
    # The last block came rendered before `done`, which changes nothing visible.
    assert shown.tail == "" and shown.blocks == final_body(rest[-1]) == "<p>Hello, world!</p>\n"


def test_markdown_blocks_arrive_rendered_while_the_answer_streams(
    ada: Browser, fake_lm: FakeLm
) -> None:
    fake_lm.tokens = ["Some **bold**", " text.\n\n", "```py\nx = 1\n", "```\n", "\nThe end."]
    chat, mid = start(ada, fake_lm, hold_after=4)
    events = ada.events(f"/chats/{chat}/messages/{mid}/stream")
    shown = Shown()
    while not shown.events or "code-block" not in shown.blocks:
        shown.apply(next(events))
    # Held before the last token: the paragraph and the code block are already rendered.
    assert shown.blocks.startswith("<p>Some <strong>bold</strong> text.</p>")
    assert '<span class="code-lang">py</span>' in shown.blocks and shown.tail == ""
    assert all(ev.event != "done" for ev in shown.events)
    fake_lm.release()
    rest = list(events)
    for ev in rest[:-1]:
        shown.apply(ev)
    assert shown.blocks == final_body(rest[-1])
    sent = "".join(ev.data for ev in shown.events if ev.event == "block")
    assert sent.count('<div class="code-block">') == 1 and sent.count("<p>") == 2  # once each


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
        shown = Shown()
        for ev in seen[:-1]:
            shown.apply(ev)
        assert shown.text.strip() == FULL and shown.blocks == final_body(seen[-1])
        assert [e.event for e in seen].count("done") == 1
    assert len(fake_lm.requests) == 1  # one generation, however many listeners


def test_reload_before_any_flush_shows_the_text_so_far(
    make_ui: Callable[..., LiveServer], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    # Nothing flushed yet: storage holds an empty answer, but the page shows the text as
    # this process has it, and its stream follows on from there.
    server = make_ui(flush_interval_s=3600)
    b = Browser(server.url)
    try:
        b.login("Ada")
        chat, mid = start(b, fake_lm)
        assert all(
            m["content"] == "" for m in fake_db.messages.values() if m["role"] == "assistant"
        )
        page = b.get(f"/chats/{chat}").text
        assert f'<div class="md-tail" id="tail-{mid}">Hello, </div>' in page
        assert f"/chats/{chat}/messages/{mid}/stream?after=7" in page
        assert "http-equiv" not in page  # no refreshing
        shown, done = b.follow_live(chat, mid, fake_lm.release)
        assert shown.text.strip() == FULL and shown.blocks == final_body(done)
    finally:
        b.close()


def test_last_event_id_resumes_after_a_dropped_connection(ada: Browser, fake_lm: FakeLm) -> None:
    chat, mid = start(ada, fake_lm)
    url = f"/chats/{chat}/messages/{mid}/stream"
    events = ada.events(url)
    assert next(events).event == "sync"
    first = next(events)  # then the connection drops
    assert first.id == "7"
    # Say the browser had only got the first 5 characters when it dropped: EventSource
    # reconnects with Last-Event-ID, which wins over the page's ?after=, and the stream
    # first puts the body back as it was at that point.
    resumed = ada.events(url + "?after=0", headers={"Last-Event-ID": "5"})
    shown = Shown()
    shown.apply(next(resumed))
    assert (shown.events[0].event, shown.html) == ("sync", "Hello")
    shown.apply(next(resumed))
    assert (shown.events[1].data, shown.events[1].id) == (", ", "7")
    fake_lm.release()
    for ev in resumed:
        if ev.event != "done":
            shown.apply(ev)
    assert shown.text.strip() == FULL


def test_a_reconnect_that_replays_text_shown_already_does_not_double_it(
    ada: Browser, fake_lm: FakeLm
) -> None:
    # htmx reconnects with a new EventSource: the page's ?after=0, no Last-Event-ID.
    chat, mid = start(ada, fake_lm)
    url = f"/chats/{chat}/messages/{mid}/stream?after=0"
    shown = Shown()
    events = ada.events(url)
    shown.apply(next(events))
    shown.apply(next(events))
    assert shown.html == "Hello, "
    again = ada.events(url)
    shown.apply(next(again))  # sync: the body from the start
    shown.apply(next(again))
    assert shown.html == "Hello, "
    fake_lm.release()


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
        assert f'<div class="md-tail" id="tail-{mid}">Hello, </div>' in page
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
    # Its text is kept: it goes on (Continue) or gets a new version (Regenerate).
    assert 'class="continue"' in resp.text and 'class="regenerate"' in resp.text
    assert 'class="retry"' not in resp.text
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
    assert "http-equiv" not in page and 'class="continue"' in page
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
