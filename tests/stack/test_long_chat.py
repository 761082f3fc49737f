"""A 500-message chat on the real services through nginx: the page opens with the latest
window, earlier messages come a page at a time without JavaScript, `?at=` opens the
window around a message 400 back, a message sent from the long chat streams its answer
as before; and in real Chromium, scrolling up loads the earlier messages in place.

Every wait is a deadline poll or one of Playwright's auto-waiting assertions: no sleeps.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from chat_ui.window import WINDOW
from tests.stack.visitor import Visitor
from tests.support import Stack

pytestmark = pytest.mark.slow

ARTICLE = re.compile(r'<article id="msg-([0-9a-f-]{36})"')
LONG = 500


@pytest.fixture(params=["quick_stack", "postgres_stack"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The stack on SQLite, then on PostgreSQL (skipped without TEST_DATABASE_URL)."""
    value: Stack = request.getfixturevalue(request.param)
    return value


def owner_of(stack: Stack, chat_id: str) -> str:
    """The owner key chat_ui gave the chat (a hash only chat_ui can make)."""
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, owner FROM chats")).all()
    finally:
        engine.dispose()
    want = chat_id.replace("-", "")
    return next(str(owner) for row_id, owner in rows if str(row_id).replace("-", "") == want)


def seed(stack: Stack, chat_id: str, count: int) -> list[str]:
    """`count` finished messages written straight to db_api (fast); their ids in order."""
    headers = {"X-Owner": owner_of(stack, chat_id), "Authorization": f"Bearer {stack.token}"}
    ids = []
    with httpx.Client(base_url=stack.db.url, headers=headers, timeout=60) as db:
        for i in range(count):
            role = "user" if i % 2 == 0 else "assistant"
            text = f"Message number {i}." + (" Some `code` and **bold**." if i % 2 else "")
            resp = db.post(f"/chats/{chat_id}/messages", json={"role": role, "content": text})
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
    return ids


def shown(html: str) -> list[str]:
    return ARTICLE.findall(html)


def test_a_500_message_chat_opens_in_windows(stack: Stack) -> None:
    visitor = Visitor(stack.url)
    try:
        visitor.login(f"long-{uuid.uuid4().hex[:8]}")
        chat_id = visitor.new_chat()
        ids = seed(stack, chat_id, LONG)

        page = visitor.get_page(f"/chats/{chat_id}")
        assert shown(page.text) == ids[-WINDOW:]

        # Without JavaScript: "Show earlier messages" is a page of the window above.
        link = re.search(r'class="show-earlier" href="([^"]+)"', page.text)
        assert link, "no link to earlier messages"
        earlier = visitor.get_page(link.group(1).replace("&amp;", "&"))
        assert shown(earlier.text) == ids[-2 * WINDOW : -WINDOW]
        assert f'href="/chats/{chat_id}/later?after={ids[-WINDOW - 1]}"' in earlier.text

        # A search hit 400 messages back opens the window around it.
        target = ids[LONG - 400]
        at = visitor.get_page(f"/chats/{chat_id}?at={target}")
        window = shown(at.text)
        assert target in window and len(window) == WINDOW
        assert window == ids[LONG - 400 - WINDOW // 2 : LONG - 400 + WINDOW // 2]
        assert "Show earlier messages" in at.text and "Show later messages" in at.text

        # Sending from the long chat: the answer streams as before, then the latest
        # window holds it.
        answer_id = visitor.send(chat_id, "And one more question?")
        with visitor.stream(chat_id, answer_id) as events:
            kinds = [event.event for event in events]
        assert kinds[-1] == "done"
        after = visitor.get_page(f"/chats/{chat_id}")
        window = shown(after.text)
        assert len(window) == WINDOW and window[-1] == answer_id
        assert window[:-2] == ids[-WINDOW + 2 :]
    finally:
        visitor.close()


def test_scrolling_up_loads_earlier_messages(browser: Any, quick_stack: Stack) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    try:
        page.goto(quick_stack.url + "/")
        page.fill("#name", f"scroller-{uuid.uuid4().hex[:8]}")
        page.click("#login-button")
        expect(page).to_have_url(re.compile(r".*/chats$"))
        token = page.locator('meta[name="csrf-token"]').get_attribute("content")
        created = page.request.post(
            quick_stack.url + "/chats", form={"csrf_token": token or ""}, max_redirects=0
        )
        chat_id = created.headers["location"].rsplit("/", 1)[1]
        ids = seed(quick_stack, chat_id, 3 * WINDOW)

        page.goto(f"{quick_stack.url}/chats/{chat_id}")
        messages = page.locator("#messages > .msg")
        expect(messages).to_have_count(WINDOW)
        newest = page.locator(f"#msg-{ids[-1]}")
        expect(newest).to_be_in_viewport()

        # Scroll to the top of the conversation (the scroller is bottom-anchored: up is
        # negative): the edge comes into view and the window above is put in its place,
        # the message the person was reading staying in view.
        oldest_shown = page.locator(f"#msg-{ids[-WINDOW]}")
        scroller = page.locator("#scroller")
        to_top = "s => { s.scrollTop = -s.scrollHeight; }"
        scroller.evaluate(to_top)
        expect(oldest_shown).to_be_in_viewport()
        expect(messages).to_have_count(2 * WINDOW)
        expect(page.locator(f"#msg-{ids[-2 * WINDOW]}")).to_be_attached()
        expect(oldest_shown).to_be_in_viewport()
        expect(newest).not_to_be_in_viewport()
        scroller.evaluate(to_top)
        expect(messages).to_have_count(3 * WINDOW)
        expect(page.locator("#window-earlier")).to_have_count(0)  # the first message shown
        # In order, each once.
        order = page.locator("#messages > .msg").evaluate_all("els => els.map(e => e.id)")
        assert order == [f"msg-{i}" for i in ids]
        page.screenshot(path=str(_shots() / "long-chat-scrolled-up.png"))
    finally:
        context.close()


def _shots() -> Any:
    from tests.support import REPO

    path = REPO / "test-artifacts" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
