"""A conversation is a tree, in real Chromium through nginx on the real services: continue
an answer cut at the length limit, edit a question inline, switch versions back and
forth, regenerate an answer; reload in the middle of a regenerated answer; a change
refused while an answer is written (the typed edit kept); and the same flows with
JavaScript disabled (plain forms and links, full pages).

Every wait is one of Playwright's auto-waiting assertions: no sleeps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack.conftest import WAIT_MS
from tests.stack.test_browser import (
    answer_text_length,
    login,
    shot,
    start_chat,
    wait_longer_than,
)
from tests.support import Stack

pytestmark = pytest.mark.slow


def body_length(page: Any, message_id: str) -> int:
    return int(
        page.evaluate(f"document.querySelector('#msg-{message_id} .msg-body').textContent.length")
    )


def wait_complete_and_longer(page: Any, message_id: str, length: int) -> None:
    """Wait until the answer is complete again with a body longer than `length`."""
    page.wait_for_function(
        "([id, n]) => { const e = document.querySelector("
        "'#msg-' + id + '[data-status=complete] .msg-body');"
        " return e !== null && e.textContent.length > n; }",
        arg=[message_id, length],
        timeout=WAIT_MS,
    )


def message_id(locator: Any) -> str:
    value = locator.get_attribute("id")
    assert value and value.startswith("msg-")
    return str(value[4:])


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    yield ctx
    ctx.close()


def test_tree_in_the_browser(context: Any, quick_stack: Stack) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    login(page, quick_stack.url, "Tree in Chromium")
    start_chat(page, "Tell me about rivers")
    answer = page.locator(".msg-assistant").last
    expect(answer).to_have_attribute("data-status", "complete")
    # The synthetic model always stops at the length limit: the answer says so.
    expect(answer.locator(".msg-cut")).to_contain_text("Cut at the length limit")
    first = message_id(answer)
    cut = body_length(page, first)
    shot(page, "20-tree-cut-at-length")

    # Continue: the same answer grows, streamed in place.
    answer.locator("button.continue").click()
    wait_complete_and_longer(page, first, cut)
    expect(page.locator(".msg-assistant")).to_have_count(1)
    continued = body_length(page, first)
    shot(page, "21-tree-continued")

    # Edit the question inline (no page change); Escape cancels, as Cancel does.
    url = page.url
    edit = page.locator(".msg-user").last.get_by_role("link", name="Edit your message")
    edit.click()
    box = page.locator(".msg-editing textarea")
    expect(box).to_be_focused()
    box.press("Escape")
    expect(page.locator(".msg-editing")).to_have_count(0)
    expect(page.locator(".msg-user").last).to_contain_text("Tell me about rivers")
    # Then the edit itself, answered as version 2.
    page.locator(".msg-user").last.get_by_role("link", name="Edit your message").click()
    expect(box).to_have_value("Tell me about rivers")
    assert page.url == url
    shot(page, "22-tree-editing")
    box.fill("Tell me about stones")
    page.get_by_role("button", name="Save and answer").click()
    question = page.locator(".msg-user").last
    expect(question).to_contain_text("Tell me about stones")
    expect(question.locator(".version-count")).to_have_text("2 / 2")
    expect(question.get_by_role("button", name="Next version")).to_be_disabled()
    expect(page.locator(".msg-assistant").last).to_have_attribute("data-status", "complete")
    second = message_id(page.locator(".msg-assistant").last)
    assert second != first
    shot(page, "23-tree-edited")

    # Back to version 1: the old question and its continued answer; then forth again.
    question.get_by_role("button", name="Previous version").click()
    expect(page.locator(".msg-user").last).to_contain_text("Tell me about rivers")
    expect(page.locator(f"#msg-{first}")).to_be_visible()
    assert body_length(page, first) == continued
    expect(page.locator(".msg-user .version-count")).to_have_text("1 / 2")
    expect(page.locator(".msg-user").get_by_text("Version 1 of 2")).to_have_count(1)
    shot(page, "24-tree-switched-back")
    # Focus stays on the switcher (on the arrow still usable): forth again by keyboard.
    expect(page.locator(".msg-user").get_by_role("button", name="Next version")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".msg-user").last).to_contain_text("Tell me about stones")
    expect(page.locator(".msg-user").get_by_role("button", name="Previous version")).to_be_focused()
    expect(page.locator(f"#msg-{second}")).to_be_visible()

    # Regenerate: a second version of the answer; the first stays one click away.
    page.locator(f"#msg-{second}").get_by_role("button", name="Regenerate").click()
    regenerated = page.locator(".msg-assistant").last
    expect(regenerated.locator(".version-count")).to_have_text("2 / 2")
    expect(regenerated).to_have_attribute("data-status", "complete")
    third = message_id(regenerated)
    assert third not in (first, second)
    shot(page, "25-tree-regenerated")
    regenerated.get_by_role("button", name="Previous version").click()
    expect(page.locator(f"#msg-{second}")).to_be_visible()
    expect(page.locator(f"#msg-{second} .version-count")).to_have_text("1 / 2")
    # The branch shown is the chat's: a reload shows the same.
    page.reload()
    expect(page.locator(f"#msg-{second}")).to_be_visible()
    expect(page.locator(".msg-user").last).to_contain_text("Tell me about stones")


def test_reload_during_a_regenerated_answer_and_a_refused_edit(
    context: Any, slow_stack: Stack
) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    login(page, slow_stack.url, "Tree under load")
    chat_id = start_chat(page, "Tell me a long story")
    try:
        live = ".msg-assistant:last-of-type .msg-live"
        expect(page.locator(live)).not_to_be_empty()
        page.click(".msg-assistant:last-of-type button.stop")
        stopped = page.locator(".msg-assistant").last
        expect(stopped).to_have_attribute("data-status", "interrupted")
        first = message_id(stopped)

        # Regenerate the stopped answer; reload while the new version is written.
        stopped.get_by_role("button", name="Regenerate").click()
        expect(page.locator(live)).not_to_be_empty()
        before = wait_longer_than(page, live, answer_text_length(page, live))
        page.reload()
        expect(page.locator(".msg-assistant")).to_have_count(1)
        after = answer_text_length(page, live)
        assert after >= before  # nothing lost
        wait_longer_than(page, live, after)  # and it goes on
        shot(page, "26-tree-regenerated-reloaded")

        # An edit while the answer is written is refused, the typed text kept.
        page.locator(".msg-user").last.get_by_role("link", name="Edit your message").click()
        page.locator(".msg-editing textarea").fill("A shorter story")
        page.get_by_role("button", name="Save and answer").click()
        expect(page.locator(".msg-editing .form-error")).to_contain_text("still being written")
        expect(page.locator(".msg-editing textarea")).to_have_value("A shorter story")
        shot(page, "27-tree-edit-refused")
        page.get_by_role("link", name="Cancel").click()
        expect(page.locator(".msg-editing")).to_have_count(0)

        page.click(".msg-assistant:last-of-type button.stop")
        regenerated = page.locator(".msg-assistant").last
        expect(regenerated).to_have_attribute("data-status", "interrupted")
        expect(regenerated.locator(".version-count")).to_have_text("2 / 2")
        regenerated.get_by_role("button", name="Previous version").click()
        expect(page.locator(f"#msg-{first}")).to_be_visible()
    finally:
        # Deleting the chat stops whatever it still runs (a failed test leaves nothing).
        csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
        page.request.post(
            f"{slow_stack.url}/chats/{chat_id}/delete", form={"csrf_token": csrf or ""}
        )


def test_tree_without_javascript(browser: Any, quick_stack: Stack) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1200, "height": 800}
    )
    page = context.new_page()
    try:
        login(page, quick_stack.url, "Tree without scripts")
        chat_id = start_chat(page, "Hello without scripts")
        answer = page.locator(".msg-assistant[data-status]").last
        expect(answer).to_have_attribute("data-status", "complete")
        first = message_id(answer)
        cut = body_length(page, first)

        # Continue: a plain form, then the page streamed while the answer grows.
        answer.locator("button.continue").click()
        expect(page.locator(f"#msg-{first}")).to_have_attribute("data-status", "complete")
        assert body_length(page, first) > cut

        # Edit: its own page, then the chat with version 2.
        page.locator(".msg-user").last.get_by_role("link", name="Edit your message").click()
        expect(page).to_have_url(re.compile(rf".*/chats/{chat_id}/messages/[0-9a-f-]+/edit$"))
        page.fill("textarea[name=content]", "Hello again without scripts")
        page.get_by_role("button", name="Save and answer").click()
        expect(page.locator(".msg-user").last).to_contain_text("Hello again without scripts")
        expect(page.locator(".msg-assistant[data-status]").last).to_have_attribute(
            "data-status", "complete"
        )
        expect(page.locator(".msg-user .version-count")).to_have_text("2 / 2")
        shot(page, "28-tree-no-js-edited")

        # Switch back: a form post, then the chat page.
        page.locator(".msg-user").get_by_role("button", name="Previous version").click()
        expect(page.locator(".msg-user").last).to_contain_text("Hello without scripts")
        expect(page.locator(f"#msg-{first}")).to_be_visible()

        # Regenerate: version 2 of the answer.
        page.locator(f"#msg-{first}").get_by_role("button", name="Regenerate").click()
        regenerated = page.locator(".msg-assistant[data-status]").last
        expect(regenerated).to_have_attribute("data-status", "complete")
        expect(regenerated.locator(".version-count")).to_have_text("2 / 2")
        assert message_id(regenerated) != first
        regenerated.get_by_role("button", name="Previous version").click()
        expect(page.locator(f"#msg-{first}")).to_be_visible()
        shot(page, "29-tree-no-js-switched")
    finally:
        context.close()
