"""A person's session in real Chromium (Debian's /usr/bin/chromium, driven by Playwright)
through nginx: login, new chat, send, watch the answer grow, stop, reload during an answer,
rename, delete; and the core flow with JavaScript disabled.

Screenshots of the main states go to test-artifacts/screenshots/. Every wait is one of
Playwright's auto-waiting assertions: no sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack.conftest import WAIT_MS
from tests.support import REPO, Stack

pytestmark = pytest.mark.slow

SHOTS = REPO / "test-artifacts" / "screenshots"
CHAT_URL = re.compile(r".*/chats/([0-9a-f-]{36})(?:/live)?$")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(page: Any, url: str, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/")
    page.fill("#name", name)
    page.click("#login-button")
    expect(page).to_have_url(re.compile(r".*/chats$"))
    expect(page.locator("#user-name")).to_have_text(name)


def start_chat(page: Any, text: str) -> str:
    """ "+ New chat", then the first message, which creates the chat; its id."""
    from playwright.sync_api import expect

    page.click("#new-chat")
    expect(page).to_have_url(re.compile(r".*/chats$"))
    page.fill("#composer-input", text)
    page.click("#send")
    expect(page).to_have_url(CHAT_URL)
    match = CHAT_URL.match(page.url)
    assert match
    return match.group(1)


def answer_text_length(page: Any, selector: str) -> int:
    return len(page.locator(selector).inner_text())


def wait_longer_than(page: Any, selector: str, length: int) -> int:
    """Wait until the element's text is longer than `length`; its new length."""
    page.wait_for_function(
        "([sel, n]) => { const e = document.querySelector(sel);"
        " return e !== null && e.textContent.length > n; }",
        arg=[selector, length],
        timeout=WAIT_MS,
    )
    return answer_text_length(page, selector)


@pytest.fixture
def leftover_chats() -> list[str]:
    """Chats a test may leave with an answer running, deleted afterwards (see `page`)."""
    return []


@pytest.fixture
def page(browser: Any, slow_stack: Stack, leftover_chats: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    yield page
    # A failed test must not leave a long answer running for the next one: deleting a
    # chat stops its generations.
    for chat_id in leftover_chats:
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        page.request.post(
            f"{slow_stack.url}/chats/{chat_id}/delete", form={"csrf_token": csrf or ""}
        )
    context.close()


def test_chat_in_the_browser(page: Any, slow_stack: Stack, leftover_chats: list[str]) -> None:
    from playwright.sync_api import expect

    url = slow_stack.url
    login(page, url, "Ada")
    shot(page, "01-empty-state")
    # A new chat starts with its first message: the question appears, the answer
    # streams in and grows.
    chat_id = start_chat(page, "Tell me about rivers")
    leftover_chats.append(chat_id)
    expect(page.locator(".msg-user").last).to_contain_text("Tell me about rivers")
    answer = page.locator(".msg-assistant").last
    live = ".msg-assistant:last-of-type .msg-live"
    expect(answer.locator(".msg-live")).not_to_be_empty()
    first = answer_text_length(page, live)
    second = wait_longer_than(page, live, first)
    third = wait_longer_than(page, live, second)
    assert 0 < first < second < third
    expect(answer).to_have_attribute("data-status", re.compile("pending|streaming"))
    shot(page, "02-answer-streaming")

    # Stop: the partial answer stays, marked interrupted, with a way on (Continue) and
    # a way to ask again (Regenerate, keeping it).
    page.click(".msg-assistant:last-of-type button.stop")
    expect(answer).to_have_attribute("data-status", "interrupted")
    expect(answer.locator(".msg-note")).to_contain_text("Stopped")
    expect(answer.locator("button.continue")).to_be_visible()
    expect(answer.locator("button.regenerate")).to_be_visible()
    assert len(answer.locator(".msg-body").inner_text()) > 0
    shot(page, "03-answer-stopped")

    # Reload while an answer runs: the page shows the text so far and keeps following.
    page.fill("#composer-input", "And about stones?")
    page.click("#send")
    expect(page.locator(".msg-assistant")).to_have_count(2)
    expect(page.locator(live)).not_to_be_empty()
    before_reload = wait_longer_than(page, live, answer_text_length(page, live))
    page.reload()
    expect(page.locator(".msg-assistant")).to_have_count(2)
    after_reload = answer_text_length(page, live)
    assert after_reload >= before_reload  # nothing lost
    wait_longer_than(page, live, after_reload)  # and it continues
    shot(page, "04-reloaded-still-streaming")
    page.click(".msg-assistant:last-of-type button.stop")
    expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "interrupted")

    # Rename, then delete.
    page.click("#chat-settings summary")
    page.fill("#chat-title", "Rivers and stones")
    page.click("#rename")
    expect(page.locator("#chat-heading")).to_have_text("Rivers and stones")
    expect(page.locator("#chat-list")).to_contain_text("Rivers and stones")
    shot(page, "05-renamed")
    page.click("#delete-chat")
    expect(page.locator("#confirm-delete")).to_be_visible()
    shot(page, "06-confirm-delete")
    page.click("#confirm-delete")
    expect(page).to_have_url(re.compile(r".*/chats$"))
    expect(page.locator("#chat-list")).not_to_contain_text("Rivers and stones")
    leftover_chats.clear()


def test_core_flow_without_javascript(browser: Any, quick_stack: Stack) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1200, "height": 800}
    )
    page = context.new_page()
    try:
        login(page, quick_stack.url, "Grace")
        start_chat(page, "Hello without scripts")
        # The POST redirects to the chat's page streamed while the answer is written.
        expect(page.locator(".msg-user").last).to_contain_text("Hello without scripts")
        answer = page.locator(".msg-assistant[data-status]").last
        expect(answer).to_have_attribute("data-status", "complete")
        expect(answer.locator(".msg-body")).not_to_be_empty()
        shot(page, "07-no-js-answered")
        page.locator("#chat-settings summary").click()
        page.fill("#chat-title", "Plain HTML")
        page.click("#rename")
        expect(page.locator("#chat-heading")).to_have_text("Plain HTML")
        page.click("#delete-chat")
        page.click("#confirm-delete")
        expect(page).to_have_url(re.compile(r".*/chats$"))
        expect(page.locator("#chat-list")).not_to_contain_text("Plain HTML")
    finally:
        context.close()
