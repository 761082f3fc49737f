"""Without JavaScript: the page streamed while an answer is written (no refresh), a new
chat started with its first message, one answer at a time, and the small routes (/login,
the theme switch)."""

from __future__ import annotations

import re

import pytest

from tests.chat_ui.conftest import Browser, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm


@pytest.fixture
def ada(browser: Browser) -> Browser:
    browser.login("Ada")
    return browser


def test_no_js_send_streams_the_answer_into_one_growing_page(ada: Browser, fake_lm: FakeLm) -> None:
    fake_lm.tokens = ["Some **bold** text.\n\n", "```py\nx = 1\n```\n", "\nThe end."]
    fake_lm.hold_after = 2
    chat = ada.new_chat()
    resp = ada.send(chat, "Hello?")
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}/live"
    assert fake_lm.held.wait(timeout=10)
    with ada.client.stream("GET", f"/chats/{chat}/live") as page:
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["x-accel-buffering"] == "no"
        received = ""
        chunks = page.iter_text()
        # The answer is held after its first two pieces: the page so far has them
        # (rendered: both blocks are complete) but not its end.
        while "code-block" not in received:
            received += next(chunks)
        assert "<p>Some <strong>bold</strong> text.</p>" in received
        assert "</html>" not in received and "live-done" not in received
        assert "http-equiv" not in received  # no refresh, ever
        # The message box is already there (and keeps what is typed), Stop in it.
        assert 'id="composer-input"' in received and 'aria-label="Stop this answer"' in received
        assert received.index('id="composer-input"') < received.index('id="messages"')
        fake_lm.release()
        received += "".join(chunks)
    assert received.rstrip().endswith("</html>") and 'class="live-done"' in received
    mid = message_ids(received)[0]
    final = received[received.index(f'<article id="msg-{mid}"') :]
    assert 'data-status="complete"' in final and "<p>The end.</p>" in final
    # Each block was written once into the growing page, before the finished bubble.
    live = received[received.index(f'<article id="live-{mid}"') : received.index(final)]
    assert live.count("<strong>bold</strong>") == 1 and live.count('class="code-block"') == 1


def test_live_page_of_a_finished_answer_is_the_chat_page(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    ada.send(chat, "Hello?")
    ada.follow(chat, message_ids(ada.get(f"/chats/{chat}").text)[0])
    resp = ada.get(f"/chats/{chat}/live")
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}"


def test_a_running_answer_on_the_chat_page_links_to_its_live_page(
    ada: Browser, fake_lm: FakeLm
) -> None:
    fake_lm.hold_after = 1
    chat = ada.new_chat()
    ada.send(chat, "Hello?")
    assert fake_lm.held.wait(timeout=10)
    page = ada.get(f"/chats/{chat}").text
    assert f'<noscript><a class="follow-link" href="/chats/{chat}/live">' in page
    assert "http-equiv" not in page


def test_send_while_an_answer_is_written_is_refused_with_the_text_kept(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.hold_after = 1
    chat = ada.new_chat()
    ada.send(chat, "First")
    assert fake_lm.held.wait(timeout=10)
    second = ada.send(chat, "Second, too early", htmx=True)
    assert second.status_code == 409 and second.headers["hx-retarget"] == "#composer"
    assert "Second, too early" in second.text and "still being written" in second.text
    plain = ada.send(chat, "Second, too early")
    assert plain.status_code == 409 and "Second, too early" in plain.text
    assert [m["content"] for m in fake_db.messages.values() if m["role"] == "user"] == ["First"]
    assert len(fake_lm.requests) == 1


def test_stop_from_the_message_box_keeps_what_was_typed(ada: Browser, fake_lm: FakeLm) -> None:
    fake_lm.hold_after = 1
    chat = ada.new_chat()
    ada.send(chat, "Hello?")
    assert fake_lm.held.wait(timeout=10)
    mid = message_ids(ada.get(f"/chats/{chat}").text)[0]
    resp = ada.post(f"/chats/{chat}/messages/{mid}/stop", {"content": "my next <question>"})
    assert resp.status_code == 200
    assert "my next &lt;question&gt;</textarea>" in resp.text
    assert 'data-status="interrupted"' in resp.text


def test_a_new_chat_starts_with_its_first_message(ada: Browser, fake_db: FakeDb) -> None:
    page = ada.get("/chats").text
    assert 'action="/chats"' in page and 'id="composer-input"' in page
    assert '<a id="new-chat" class="new-chat button-link" href="/chats">' in page
    resp = ada.post("/chats", {"content": "Plan a trip to Lisbon"})
    assert resp.status_code == 303
    match = re.fullmatch(r"/chats/([0-9a-f-]{36})/live", resp.headers["location"])
    assert match
    chat = fake_db.chats[match.group(1)]
    assert chat["title"] == "Plan a trip to Lisbon"
    users = [m for m in fake_db.messages.values() if m["role"] == "user"]
    assert [m["content"] for m in users] == ["Plan a trip to Lisbon"]
    htmx = ada.post("/chats", {"content": "Another one"}, htmx=True)
    assert htmx.status_code == 204 and htmx.headers["hx-redirect"].startswith("/chats/")


def test_an_empty_first_message_creates_no_chat(ada: Browser, fake_db: FakeDb) -> None:
    resp = ada.post("/chats", {"content": "   "})
    assert resp.status_code == 422 and "Type a message first." in resp.text
    fragment = ada.post("/chats", {"content": ""}, htmx=True)
    assert fragment.status_code == 422 and fragment.headers["hx-retarget"] == "#composer"
    assert fake_db.chats == {}


def test_get_login_goes_to_the_login_page(browser: Browser) -> None:
    resp = browser.get("/login")
    assert resp.status_code == 303 and resp.headers["location"] == "/"


def test_theme_form_without_javascript(ada: Browser) -> None:
    chat = ada.new_chat()
    page = ada.get(f"/chats/{chat}").text
    assert "data-theme" not in page.split("<head>")[0]
    resp = ada.post(
        "/theme", {"theme": "dark"}, headers={"Referer": f"{ada.client.base_url}/chats/{chat}"}
    )
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}"
    assert "theme=dark" in resp.headers["set-cookie"]
    page = ada.get(f"/chats/{chat}").text
    assert '<html lang="en" data-theme="dark">' in page
    assert '<input type="radio" name="theme" value="dark" checked>' in page
    # Back to the page the form was on, never elsewhere ("//host" would leave the site).
    sneaky = {"Referer": f"{ada.client.base_url}//evil.example/x"}
    bad = ada.post("/theme", {"theme": "<x>"}, headers=sneaky)
    assert bad.status_code == 303 and bad.headers["location"] == "/chats"
    assert "set-cookie" not in bad.headers or "theme=" not in bad.headers["set-cookie"]
