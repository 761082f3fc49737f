"""The whole stack over HTTP through nginx: login, new chat, send, stream, done; and the
proof that nginx does not hold the stream back."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from chat_ui.main import STATIC
from tests.stack.visitor import Visitor
from tests.support import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(params=["quick_stack", "postgres_stack"], ids=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest) -> Stack:
    stack: Stack = request.getfixturevalue(request.param)
    return stack


@pytest.fixture
def visitor(stack: Stack) -> Iterator[Visitor]:
    v = Visitor(stack.url)
    yield v
    v.close()


def test_login_chat_send_stream_done(stack: Stack, visitor: Visitor) -> None:
    visitor.login("Ada")
    chat_id = visitor.new_chat()
    stack.wait_idle()
    before = stack.lm_metric("lm_api_completion_tokens_total")
    message_id = visitor.send(chat_id, "Hello through nginx")

    offsets: list[int] = []
    kinds: list[str] = []
    with visitor.stream(chat_id, message_id) as events:
        for event in events:
            kinds.append(event.event)
            if event.event in ("token", "block") and event.id:
                offsets.append(int(event.id))
            elif event.event == "done":
                done = event.data
                break
        else:
            pytest.fail("the stream ended without a done event")
    # A 32-token answer may be finished before the stream opens: then `done` alone.
    # Otherwise first the answer's body as shown so far, then its text (`token`) and its
    # complete Markdown blocks (`block`), each with the offset into the answer a
    # reconnect resumes from.
    if kinds != ["done"]:
        assert kinds[0] == "sync" and offsets and offsets == sorted(offsets)
    assert f'id="msg-{message_id}"' in done
    assert 'data-status="complete"' in done
    # Synthetic models always answer exactly max_tokens tokens.
    assert stack.lm_metric("lm_api_completion_tokens_total") == before + stack.max_tokens

    # The page now shows the finished answer, titled by the first message.
    page = visitor.get_page(f"/chats/{chat_id}")
    assert "Hello through nginx" in page.text
    assert re.search(rf'id="msg-{message_id}"[^>]*data-status="complete"', page.text)
    assert "sse-connect" not in page.text

    # A finished answer's stream answers `done` at once: no second generation.
    with visitor.stream(chat_id, message_id) as events:
        kinds = [e.event for e in events]
    assert kinds == ["done"]
    assert stack.lm_metric("lm_api_completion_tokens_total") == before + stack.max_tokens


def test_another_browser_with_the_same_name_sees_nothing(stack: Stack) -> None:
    first, second = Visitor(stack.url), Visitor(stack.url)
    try:
        first.login("Grace")
        chat_id = first.new_chat()
        second.login("Grace")
        assert second.http.get(f"/chats/{chat_id}").status_code == 404
        assert chat_id not in second.get_page("/chats").text
    finally:
        first.close()
        second.close()


def test_a_write_without_csrf_token_is_refused(stack: Stack, visitor: Visitor) -> None:
    visitor.login("Mallory")
    r = visitor.http.post("/chats", data={})
    assert r.status_code == 403


def test_stream_passes_nginx_unbuffered_and_uncompressed(quick_stack: Stack) -> None:
    visitor = Visitor(quick_stack.url)
    try:
        visitor.login("Headers")
        chat_id = visitor.new_chat()
        message_id = visitor.send(chat_id, "headers please")
        path = f"/chats/{chat_id}/messages/{message_id}/stream"
        # chat_ui asks nginx not to buffer; nginx consumes that header.
        direct = httpx.get(quick_stack.ui.url + path, cookies=visitor.http.cookies, timeout=60)
        assert direct.headers["x-accel-buffering"] == "no"
        proxied = visitor.http.get(path, headers={"Accept-Encoding": "gzip"})
        assert proxied.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in proxied.headers
        assert "x-accel-buffering" not in proxied.headers
        assert "event: done" in proxied.text
    finally:
        visitor.close()


def test_static_files_are_served_by_nginx(quick_stack: Stack) -> None:
    page = httpx.get(quick_stack.url + "/")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any(a.startswith("/static/htmx-") for a in assets)
    for asset in assets:
        r = httpx.get(quick_stack.url + asset)
        assert r.status_code == 200, asset
        assert r.content == (STATIC / asset.removeprefix("/static/").split("?")[0]).read_bytes()
        # nginx's cache policy (chat_ui's own static route sets no such header).
        assert r.headers["cache-control"] in ("no-cache", "public, max-age=31536000, immutable")
    htmx = next(a for a in assets if a.startswith("/static/htmx-2"))
    r = httpx.get(quick_stack.url + htmx)
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "cache-control" not in httpx.get(quick_stack.ui.url + htmx).headers


def test_first_token_arrives_while_generation_runs(slow_stack: Stack) -> None:
    """Unbuffered, shown by order of events rather than by a clock: when the first token
    event reaches the client through nginx, lm_api is still generating that answer (it
    counts tokens only at the end); after `done`, all max_tokens were generated."""
    visitor = Visitor(slow_stack.url)
    try:
        visitor.login("Proof")
        chat_id = visitor.new_chat()
        slow_stack.wait_idle()
        before = slow_stack.lm_metric("lm_api_completion_tokens_total")
        message_id = visitor.send(chat_id, "Tell me a long story")
        token_events = 0
        with visitor.stream(chat_id, message_id) as events:
            for event in events:
                if event.event in ("token", "block"):
                    token_events += 1
                    if token_events == 1:
                        assert slow_stack.lm_metric("lm_api_generation_in_progress") == 1
                        assert slow_stack.lm_metric("lm_api_completion_tokens_total") == before
                        page = visitor.get_page(f"/chats/{chat_id}")
                        assert re.search(
                            rf'id="msg-{message_id}"[^>]*data-status="(pending|streaming)"',
                            page.text,
                        )
                elif event.event == "done":
                    assert 'data-status="complete"' in event.data
                    break
        assert token_events > 1
        after = slow_stack.lm_metric("lm_api_completion_tokens_total")
        assert after == before + slow_stack.max_tokens
        assert slow_stack.lm_metric("lm_api_generation_in_progress") == 0
    finally:
        visitor.close()
