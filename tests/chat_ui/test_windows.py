"""A long chat's page shows a window of it: the latest 50 messages, earlier ones a window
at a time (htmx fragments, or plain pages without JavaScript), `?at=` the window around a
message far back; the sidebar lists the newest chats and links to all of them. Against
the stand-in db_api, which pages the branch as db_api does."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from chat_ui import chat_list, render_cache
from chat_ui.window import WINDOW
from tests.chat_ui.conftest import Browser
from tests.chat_ui.fakes import FakeDb, FakeLm

ARTICLE = re.compile(r'<article id="msg-([0-9a-f-]{36})"')


def seed(fake_db: FakeDb, chat_id: str, count: int) -> list[str]:
    """`count` finished messages, alternating questions and answers; their ids in order."""
    owner = fake_db.chats[chat_id]["owner"]
    ids = []
    with httpx.Client(transport=fake_db.sync_transport(), base_url="http://db") as db:
        for i in range(count):
            role = "user" if i % 2 == 0 else "assistant"
            body = {"role": role, "content": f"message {i}: **{role}**"}
            resp = db.post(f"/chats/{chat_id}/messages", json=body, headers={"X-Owner": owner})
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
    return ids


def shown(html: str) -> list[str]:
    return ARTICLE.findall(html)


@pytest.fixture
def long_chat(browser: Browser, fake_db: FakeDb) -> tuple[str, list[str]]:
    browser.login("ada")
    chat_id = browser.new_chat()
    return chat_id, seed(fake_db, chat_id, 120)


def test_a_long_chat_opens_with_its_latest_window(
    browser: Browser, long_chat: tuple[str, list[str]]
) -> None:
    chat_id, ids = long_chat
    page = browser.get(f"/chats/{chat_id}")
    assert page.status_code == 200
    assert shown(page.text) == ids[-WINDOW:]
    assert f'href="/chats/{chat_id}/earlier?before={ids[-WINDOW]}"' in page.text
    assert 'hx-trigger="intersect once, click once"' in page.text
    assert "Show later messages" not in page.text  # the window reaches the newest


def test_earlier_messages_without_javascript(
    browser: Browser, long_chat: tuple[str, list[str]]
) -> None:
    chat_id, ids = long_chat
    page = browser.get(f"/chats/{chat_id}/earlier?before={ids[-WINDOW]}")
    assert page.status_code == 200 and "<html" in page.text
    assert shown(page.text) == ids[-2 * WINDOW : -WINDOW]
    # A page of earlier messages leads on up, back down, and to the latest.
    assert f"/chats/{chat_id}/earlier?before={ids[-2 * WINDOW]}" in page.text
    assert f'href="/chats/{chat_id}/later?after={ids[-WINDOW - 1]}"' in page.text
    assert f'class="show-latest" href="/chats/{chat_id}"' in page.text
    top = browser.get(f"/chats/{chat_id}/earlier?before={ids[-2 * WINDOW]}")
    assert shown(top.text) == ids[: -2 * WINDOW]
    assert "Show earlier messages" not in top.text  # the first message is shown
    down = browser.get(f"/chats/{chat_id}/later?after={ids[-WINDOW - 1]}")
    assert shown(down.text) == ids[-WINDOW:] and "Show later messages" not in down.text


def test_earlier_messages_with_htmx_come_as_a_fragment_with_the_next_edge(
    browser: Browser, long_chat: tuple[str, list[str]]
) -> None:
    chat_id, ids = long_chat
    htmx = {"HX-Request": "true"}
    part = browser.get(f"/chats/{chat_id}/earlier?before={ids[-WINDOW]}", headers=htmx)
    assert part.status_code == 200 and "<html" not in part.text
    assert shown(part.text) == ids[-2 * WINDOW : -WINDOW]
    # The next edge comes first, in place of the one that asked.
    assert part.text.lstrip().startswith('<div class="window-edge window-earlier"')
    assert f"before={ids[-2 * WINDOW]}" in part.text
    last = browser.get(f"/chats/{chat_id}/earlier?before={ids[-2 * WINDOW]}", headers=htmx)
    assert shown(last.text) == ids[: -2 * WINDOW] and "window-earlier" not in last.text


def test_at_opens_the_window_around_a_message_far_back(
    browser: Browser, long_chat: tuple[str, list[str]]
) -> None:
    chat_id, ids = long_chat
    target = ids[60]  # 60 messages back
    page = browser.get(f"/chats/{chat_id}?at={target}")
    assert page.status_code == 200
    window = shown(page.text)
    # Half the window above the message (it included), the rest below.
    assert window == ids[60 - WINDOW // 2 : 60 + WINDOW // 2]
    assert target in window
    assert "Show earlier messages" in page.text and "Show later messages" in page.text
    # Near the start: the window begins at the first message, no edge above.
    first = browser.get(f"/chats/{chat_id}?at={ids[1]}")
    assert shown(first.text) == ids[:WINDOW] and "Show earlier messages" not in first.text


def test_at_a_message_that_is_gone_opens_the_latest_window(
    browser: Browser, long_chat: tuple[str, list[str]]
) -> None:
    chat_id, ids = long_chat
    page = browser.get(f"/chats/{chat_id}?at=00000000-0000-4000-8000-000000000000")
    assert page.status_code == 200 and shown(page.text) == ids[-WINDOW:]
    assert browser.get(f"/chats/{chat_id}?at=not-an-id").status_code == 400
    missing = "00000000-0000-4000-8000-000000000001"
    assert browser.get(f"/chats/{missing}?at={ids[0]}").status_code == 404


def test_an_edge_whose_message_is_gone(browser: Browser, long_chat: tuple[str, list[str]]) -> None:
    chat_id, _ = long_chat
    gone = "00000000-0000-4000-8000-000000000000"
    part = browser.get(f"/chats/{chat_id}/earlier?before={gone}", headers={"HX-Request": "true"})
    assert part.status_code == 200 and "reload the chat" in part.text
    plain = browser.get(f"/chats/{chat_id}/later?after={gone}")
    assert plain.status_code == 303 and plain.headers["location"] == f"/chats/{chat_id}"
    assert browser.get(f"/chats/{chat_id}/earlier").status_code == 400  # no cursor


def test_a_short_chat_has_no_edges(browser: Browser, fake_db: FakeDb) -> None:
    browser.login("ada")
    chat_id = browser.new_chat()
    ids = seed(fake_db, chat_id, 4)
    page = browser.get(f"/chats/{chat_id}")
    assert shown(page.text) == ids and "window-edge" not in page.text


def test_another_persons_chat_stays_hidden(
    browsers: Callable[[], Browser], fake_db: FakeDb
) -> None:
    ada, bob = browsers(), browsers()
    ada.login("ada")
    chat_id = ada.new_chat()
    ids = seed(fake_db, chat_id, 60)
    bob.login("bob")
    assert bob.get(f"/chats/{chat_id}?at={ids[3]}").status_code == 404
    theirs = bob.get(f"/chats/{chat_id}/earlier?before={ids[-1]}", headers={"HX-Request": "true"})
    assert ids[0] not in theirs.text


def test_a_second_view_of_a_page_renders_no_markdown(
    browser: Browser, long_chat: tuple[str, list[str]]
) -> None:
    chat_id, _ = long_chat
    first = browser.get(f"/chats/{chat_id}")
    misses = render_cache.CACHE.misses, render_cache.BUBBLES.misses
    hits = render_cache.BUBBLES.hits
    second = browser.get(f"/chats/{chat_id}")
    assert second.status_code == 200
    # Neither Markdown nor a bubble is rendered again: every message of the window is kept.
    assert (render_cache.CACHE.misses, render_cache.BUBBLES.misses) == misses
    assert render_cache.BUBBLES.hits == hits + WINDOW
    # ... and the page is the same page.
    assert second.text == first.text


def test_the_sidebar_lists_the_newest_chats_and_links_to_all(
    browser: Browser, fake_db: FakeDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser.login("ada")
    first = browser.new_chat()
    owner = fake_db.chats[first]["owner"]
    with httpx.Client(transport=fake_db.sync_transport(), base_url="http://db") as db:
        for i in range(chat_list.SIDEBAR_CHATS + 9):
            db.post("/chats", json={"title": f"Trip {i}"}, headers={"X-Owner": owner})
    page = browser.get("/chats")
    assert page.text.count('class="chat-item') == chat_list.SIDEBAR_CHATS
    assert 'href="/all-chats"' in page.text and "Trip 58" in page.text
    assert ">Trip 8<" not in page.text  # among the oldest: only on the pages of all chats
    monkeypatch.setattr(chat_list, "PAGE", 40)
    one = browser.get("/all-chats")
    assert one.status_code == 200 and one.text.count('<li><a class="chat-link"') == 40
    assert 'href="/all-chats?offset=40"' in one.text and "Newer chats" not in one.text
    two = browser.get("/all-chats?offset=40")
    assert two.text.count('<li><a class="chat-link"') == chat_list.SIDEBAR_CHATS + 10 - 40
    assert "Trip 0<" in two.text and "Older chats" not in two.text
    assert 'href="/all-chats?offset=0"' in two.text
    assert browser.get("/all-chats?offset=-1").status_code == 400


def test_few_chats_need_no_link_to_all(browser: Browser) -> None:
    browser.login("ada")
    browser.new_chat()
    assert "/all-chats" not in browser.get("/chats").text


def test_a_long_chat_streams_its_answer_in_its_latest_window(
    browser: Browser, long_chat: tuple[str, list[str]], fake_lm: FakeLm
) -> None:
    """The page streamed without JavaScript and a reload mid-answer show the latest
    window with the running answer at its end; its stream re-attaches as before."""
    chat_id, ids = long_chat
    fake_lm.tokens = ["Part one.\n\n", "Part two."]
    fake_lm.hold_after = 1
    assert browser.send(chat_id, "One more?").status_code == 303
    assert fake_lm.held.wait(timeout=10)
    with browser.client.stream("GET", f"/chats/{chat_id}/live") as live:
        assert live.status_code == 200
        received = ""
        chunks = live.iter_text()
        while 'id="composer-input"' not in received or "Part one." not in received:
            received += next(chunks)
        # The window: the 48 latest stored messages and the question (the answer is
        # written below them, in its live slot).
        assert shown(received)[:-1] == ids[-(WINDOW - 2) :] and len(shown(received)) == 49
        assert 'id="live-' in received
        assert "Show earlier messages" in received
        reload = browser.get(f"/chats/{chat_id}")
        window = shown(reload.text)
        assert len(window) == WINDOW and window[:-2] == ids[-(WINDOW - 2) :]
        answer = window[-1]
        assert f"/chats/{chat_id}/messages/{answer}/stream" in reload.text
        fake_lm.release()
        received += "".join(chunks)
    assert received.rstrip().endswith("</html>")
    _, done = browser.follow(chat_id, answer)
    assert done.event == "done" and "Part two." in done.data


def test_a_kept_page_shows_each_change_and_each_persons_own_token(
    browsers: Callable[[], Browser], fake_db: FakeDb
) -> None:
    """Bubbles are kept between views (render_cache.BUBBLES): a write to a message, a
    version added beside it and a new message all show at once, and each person's page
    carries their own CSRF token only."""
    ada, bob = browsers(), browsers()
    ada.login("ada")
    chat_id = ada.new_chat()
    ids = seed(fake_db, chat_id, 4)
    owner = fake_db.chats[chat_id]["owner"]
    assert "message 3: <strong>assistant</strong>" in ada.get(f"/chats/{chat_id}").text
    with httpx.Client(transport=fake_db.sync_transport(), base_url="http://db") as db:
        headers = {"X-Owner": owner}
        db.patch(f"/messages/{ids[3]}", json={"content": "rewritten **answer**"}, headers=headers)
        page = ada.get(f"/chats/{chat_id}").text
        assert "rewritten <strong>answer</strong>" in page and "message 3:" not in page
        # A second version of the first answer (below the same question): its switcher
        # appears on the branch now shown.
        body = {"role": "assistant", "content": "another take", "parent_id": ids[0]}
        db.post(f"/chats/{chat_id}/messages", json=body, headers=headers).raise_for_status()
        page = ada.get(f"/chats/{chat_id}").text
        assert "another take" in page and 'class="version-count" aria-hidden="true">2 / 2<' in page
        question = {"role": "user", "content": "one more"}
        db.post(f"/chats/{chat_id}/messages", json=question, headers=headers).raise_for_status()
        assert "one more" in ada.get(f"/chats/{chat_id}").text
    bob.login("bob")
    bobs = bob.new_chat()
    seed(fake_db, bobs, 4)
    ada_page, bob_page = ada.get(f"/chats/{chat_id}").text, bob.get(f"/chats/{bobs}").text
    assert ada.csrf and bob.csrf and ada.csrf != bob.csrf
    assert ada.csrf in ada_page and bob.csrf not in ada_page
    assert bob.csrf in bob_page and ada.csrf not in bob_page
    assert "\x00" not in ada_page + bob_page


def test_a_page_is_one_read_of_db_api(
    browser: Browser, fake_db: FakeDb, long_chat: tuple[str, list[str]]
) -> None:
    """The chat's window, the sidebar and the roles come in one request (GET /page);
    a window at a message comes first, then the page's lists in one more."""
    chat_id, ids = long_chat
    browser.get(f"/chats/{chat_id}")  # the login's check is kept a while (SessionStore)
    for url, reads in (
        (f"/chats/{chat_id}", [("GET", "/page")]),
        ("/chats", [("GET", "/page")]),
        (f"/chats/{chat_id}?at={ids[3]}", [("GET", f"/chats/{chat_id}"), ("GET", "/page")]),
    ):
        before = len(fake_db.calls)
        page = browser.get(url)
        assert page.status_code == 200 and 'class="chat-item' in page.text
        assert [c for c in fake_db.calls[before:] if not c[1].startswith("/sessions")] == reads, url
    assert ids[3] in shown(browser.get(f"/chats/{chat_id}?at={ids[3]}").text)
