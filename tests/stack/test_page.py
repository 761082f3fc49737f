"""The page as a person meets it, in real Chromium through nginx: on a phone and a desktop,
light and dark, with and without JavaScript. Layout (no sideways scrolling, the drawer,
44 px touch targets), copy buttons, Markdown rendered while it streams, focus and labels,
and axe-core's accessibility rules.

Answers that must contain Markdown (a code block) come from `scripted_model`, an
OpenAI-compatible server with a fixed answer that pauses where the test says; everything
else runs on the real stack. Screenshots of each state go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack.conftest import QUICK_TOKENS, stack_on
from tests.support import REPO, Stack, run_service

pytestmark = pytest.mark.slow

SHOTS = REPO / "test-artifacts" / "screenshots"
CHAT_PAGE = re.compile(r".*/chats/([0-9a-f-]{36})(?:/live)?$")
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844), "narrow": (320, 640)}
LONG_TITLE = ("A very long chat title " + "that keeps going " * 11)[:197] + "end"  # 200 chars
TOUCH = 44


@dataclass
class Scripted:
    """The stack with chat_ui asking `scripted_model` (lm_api still runs, unused)."""

    stack: Stack
    model_url: str

    @property
    def url(self) -> str:
        return self.stack.url

    def release(self) -> None:
        """Let the scripted answer go on to its next pause."""
        httpx.post(self.model_url + "/release").raise_for_status()

    def wait_paused(self, gate: int, deadline_s: float = 120.0) -> None:
        """Poll until the answer waits at its `gate`-th pause."""
        end = time.monotonic() + deadline_s
        while httpx.get(self.model_url + "/waiting").json()["gate"] != gate:
            if time.monotonic() > end:
                raise TimeoutError(f"the scripted answer never reached pause {gate}")
            time.sleep(0.05)  # poll interval

    def finish(self) -> None:
        """Let the answer run to its end."""
        for gate in (1, 2):
            self.wait_paused(gate)
            self.release()


@pytest.fixture(scope="session")
def scripted(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Iterator[Scripted]:
    work = tmp_path_factory.mktemp("scripted-stack")
    logs = work / "logs"
    logs.mkdir()
    with (
        run_service("scripted_model", "tests.stack.scripted_model:app", {}, logs) as model,
        stack_on(
            work,
            f"sqlite:///{work / 'parlor.db'}",
            toy_model,
            QUICK_TOKENS,
            ui_env={"CHAT_UI_LM_API_URL": model.url + "/v1"},
        ) as stack,
    ):
        yield Scripted(stack, model.url)


def wait_until(page: Any, script: str, deadline_s: float = 60.0) -> None:
    """Poll `script` in the page until it is true (works with the page's JavaScript off,
    where Playwright's wait_for_function cannot run)."""
    end = time.monotonic() + deadline_s
    while not page.evaluate(script):
        if time.monotonic() > end:
            raise TimeoutError(script)
        time.sleep(0.05)  # poll interval


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_page(
    browser: Any, *, size: str = "desktop", scheme: str = "light", js: bool = True
) -> tuple[Any, Any]:
    width, height = VIEWPORTS[size]
    context = browser.new_context(
        viewport={"width": width, "height": height},
        color_scheme=scheme,
        java_script_enabled=js,
        has_touch=size != "desktop",
    )
    return context, context.new_page()


def login(page: Any, url: str, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/")
    page.fill("#name", name)
    page.click("#login-button")
    expect(page).to_have_url(re.compile(r".*/chats$"))


def start_chat(page: Any, text: str) -> tuple[str, Any]:
    """A new chat as "+ New chat" starts one: its first message creates it (without
    JavaScript the page is then the one streamed while the answer is written).
    (The chat's id, its answer's locator.)"""
    from playwright.sync_api import expect

    page.goto(re.sub(r"/chats.*$", "", page.url) + "/chats")
    page.fill("#composer-input", text)
    page.click("#send")
    expect(page).to_have_url(CHAT_PAGE)
    match = CHAT_PAGE.match(page.url)
    assert match
    answer = page.locator(".msg-assistant").last
    expect(answer).to_be_attached()
    return match.group(1), answer


def send(page: Any, text: str) -> Any:
    """Send `text`; the locator of its answer."""
    from playwright.sync_api import expect

    count = page.locator(".msg-assistant").count()
    page.fill("#composer-input", text)
    page.click("#send")
    expect(page.locator(".msg-assistant")).to_have_count(count + 1)
    return page.locator(".msg-assistant").last


def overflow(page: Any) -> int:
    """How far the page scrolls sideways (0: not at all)."""
    return int(
        page.evaluate(
            "() => document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"
        )
    )


def within_viewport(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    width = page.viewport_size["width"]
    height = page.viewport_size["height"]
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= width + 0.5
        and box["y"] + box["height"] <= height + 0.5
    )


def small_targets(page: Any, selectors: list[str]) -> list[str]:
    """The visible elements among `selectors` smaller than 44 x 44 px."""
    small = []
    for selector in selectors:
        for i in range(page.locator(selector).count()):
            element = page.locator(selector).nth(i)
            if not element.is_visible():
                continue
            box = element.bounding_box()
            if box["width"] < TOUCH - 0.5 or box["height"] < TOUCH - 0.5:
                small.append(f"{selector}[{i}] {box['width']:.0f}x{box['height']:.0f}")
    return small


# --- layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("js", [True, False], ids=["js", "no-js"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "phone", "narrow"])
def test_layout_with_a_long_title(
    browser: Any, quick_stack: Stack, size: str, scheme: str, js: bool
) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser, size=size, scheme=scheme, js=js)
    name = f"{size}-{scheme}-{'js' if js else 'nojs'}"
    try:
        login(page, quick_stack.url, "Ada " + name)
        chat, answer = start_chat(page, "Hello " + "word " * 60)
        expect(answer).to_have_attribute("data-status", "complete")
        page.click("#chat-settings summary")
        page.fill("#chat-title", LONG_TITLE)
        page.click("#rename")
        expect(page.locator("#chat-heading")).to_have_text(LONG_TITLE)
        expect(page.locator("#composer-input")).to_be_visible()

        # Nothing scrolls sideways; the title is cut with an ellipsis, not wrapped wide.
        assert overflow(page) <= 0, name
        heading = page.locator("#chat-heading")
        assert heading.evaluate("h => h.scrollWidth > h.clientWidth"), "the title is not cut"
        for control in ("#send", "#delete-chat", "#composer-input"):
            assert within_viewport(page, control), (name, control)
        shot(page, f"layout-{name}")

        sidebar = page.locator("#sidebar")
        if size == "desktop":
            expect(sidebar).to_be_visible()
            expect(page.locator(".drawer-open")).to_be_hidden()
            assert within_viewport(page, "#logout")
            return

        # A phone: the sidebar is a drawer, closed until the ☰ button opens it.
        expect(sidebar).to_be_hidden()
        assert small_targets(page, ["#send", "#delete-chat", ".drawer-open"]) == []
        page.click(".drawer-open")
        expect(sidebar).to_be_visible()
        # It slides in: wait until it is all on screen.
        wait_until(
            page, "() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0"
        )
        expect(page.locator("#logout")).to_be_visible()
        expect(page.locator(f'.chat-item[data-chat-id="{chat}"] .chat-title')).to_have_text(
            LONG_TITLE
        )
        for control in ("#new-chat", "#logout", ".drawer-close"):
            assert within_viewport(page, control), (name, control)
        title = page.locator(f'.chat-item[data-chat-id="{chat}"] .chat-title')
        assert title.evaluate("t => t.scrollWidth > t.clientWidth"), "the entry is not cut"
        assert overflow(page) <= 0, name
        assert (
            small_targets(
                page,
                ["#new-chat", "#logout", ".drawer-close", ".chat-link", ".chat-menu summary"],
            )
            == []
        )
        shot(page, f"drawer-open-{name}")
        page.click(".drawer-close")
        expect(sidebar).to_be_hidden()
    finally:
        context.close()


# --- copy -----------------------------------------------------------------------------------


def scripted_chat(page: Any, scripted: Scripted, name: str) -> Any:
    """Log in, send one message; the answer's locator, complete."""
    from playwright.sync_api import expect

    login(page, scripted.url, name)
    _, answer = start_chat(page, "Show me a function")
    scripted.finish()
    expect(answer).to_have_attribute("data-status", "complete")
    return answer


def test_copy_a_message_and_a_code_block(browser: Any, scripted: Scripted) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=scripted.url)
    try:
        answer = scripted_chat(page, scripted, "Copier")
        code = answer.locator(".code-block")
        expect(code.locator(".code-lang")).to_have_text("python")  # the language is shown
        code.get_by_role("button", name="Copy this python code").click()
        expect(code.locator(".copy")).to_have_text("Copied")
        clip = page.evaluate("() => navigator.clipboard.readText()")
        assert clip == "def double(x):\n    return x * 2  # <twice>"
        shot(page, "copy-code")

        answer.get_by_role("button", name="Copy this answer").click()
        clip = page.evaluate("() => navigator.clipboard.readText()")
        assert clip.startswith("Here is a function that doubles a number:")
        assert "return x * 2" in clip and clip.endswith("That is all.")
        page.locator(".msg-user").get_by_role("button", name="Copy your message").click()
        assert page.evaluate("() => navigator.clipboard.readText()") == "Show me a function"
    finally:
        context.close()


def test_without_javascript_no_copy_buttons_and_code_stays_selectable(
    browser: Any, scripted: Scripted
) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser, js=False)
    try:
        login(page, scripted.url, "No script")
        start_chat(page, "Show me a function")
        scripted.finish()
        answer = page.locator(".msg-assistant").last
        expect(answer).to_have_attribute("data-status", "complete")
        expect(answer.locator(".code-lang")).to_have_text("python")
        expect(page.locator(".copy")).to_have_count(page.locator(".copy[hidden]").count())
        for i in range(page.locator(".copy").count()):
            expect(page.locator(".copy").nth(i)).to_be_hidden()
        pre = answer.locator("pre")
        assert pre.evaluate("p => getComputedStyle(p).userSelect") != "none"
        pre.select_text()
        assert "def double(x):" in page.evaluate("() => String(getSelection())")
        shot(page, "no-js-code-block")
    finally:
        context.close()


# --- accessibility ----------------------------------------------------------------------------


def axe_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("theme", ["light", "dark", "chosen-dark"])
def test_axe_finds_no_serious_violation(browser: Any, scripted: Scripted, theme: str) -> None:
    """Login, chats, a chat with code (while streaming and done), its settings, delete,
    an error page, the phone drawer; and the settings and search pages where they exist."""
    from playwright.sync_api import expect

    scheme = "dark" if theme == "dark" else "light"
    context, page = open_page(browser, scheme=scheme)
    if theme == "chosen-dark":
        context.add_cookies([{"name": "theme", "value": "dark", "url": scripted.url}])
    found: dict[str, list[str]] = {}
    try:
        page.goto(scripted.url + "/")
        found["login"] = axe_violations(page)
        login(page, scripted.url, "Axel")
        found["chats"] = axe_violations(page)
        chat, answer = start_chat(page, "Show me a function")
        scripted.wait_paused(1)
        expect(answer.locator(".code-block")).to_be_visible()
        found["streaming"] = axe_violations(page)
        # The page streamed without JavaScript, as it stands mid-answer (axe itself needs
        # JavaScript: the same markup, read by a page that has it).
        live = context.new_page()
        live.goto(f"{scripted.url}/chats/{chat}/live", wait_until="commit")
        expect(live.locator(".live-answer .code-block")).to_be_visible()
        found["live"] = axe_violations(live)
        shot(live, f"axe-live-{theme}")
        scripted.release()
        scripted.wait_paused(2)
        scripted.release()
        expect(answer).to_have_attribute("data-status", "complete")
        expect(live.locator(".live-done")).to_be_attached()
        live.close()
        found["chat"] = axe_violations(page)
        shot(page, f"axe-chat-{theme}")
        page.click("#chat-settings summary")
        found["chat settings"] = axe_violations(page)
        page.locator(f'.chat-item[data-chat-id="{chat}"] .chat-menu summary').click()
        found["sidebar menu"] = axe_violations(page)
        page.goto(f"{scripted.url}/chats/{chat}/delete")
        found["delete"] = axe_violations(page)
        page.goto(scripted.url + "/chats/00000000-0000-0000-0000-000000000000")
        found["error"] = axe_violations(page)
        for path in ("/settings", "/search?q=function"):
            if page.goto(scripted.url + path).status == 200:
                found[path] = axe_violations(page)
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{scripted.url}/chats/{chat}")
        page.click(".drawer-open")
        wait_until(
            page, "() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0"
        )
        found["phone drawer"] = axe_violations(page)
        shot(page, f"axe-drawer-{theme}")
    finally:
        context.close()
    assert {page: v for page, v in found.items() if v} == {}


def test_focus_labels_and_busy_state(browser: Any, scripted: Scripted) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser)
    try:
        login(page, scripted.url, "Focus")
        _, answer = start_chat(page, "Show me a function")
        scripted.wait_paused(1)
        # A chat opens with the message box focused; the skip link leads there too.
        expect(page.locator("#composer-input")).to_be_focused()
        skip = page.locator("body > :first-child")
        expect(skip).to_have_class("skip-link")
        skip.focus()
        expect(skip).to_be_visible()
        page.keyboard.press("Enter")
        expect(page.locator("#composer-input")).to_be_focused()

        # While it is written: busy for screen readers, Send waits, Stop is named for it.
        expect(answer).to_have_attribute("aria-busy", "true")
        expect(page.locator("#send")).to_be_disabled()
        stop = page.get_by_role("button", name="Stop this answer")
        expect(stop).to_have_count(1)
        stop.focus()
        stop.press("Enter")
        expect(answer).to_have_attribute("data-status", "interrupted")
        expect(answer).not_to_have_attribute("aria-busy", "true")
        expect(page.locator("#composer-input")).to_be_focused()  # not lost on <body>
        expect(page.locator("#send")).to_be_enabled()
        # It had text: Regenerate (a new version) and Continue, not Retry.
        expect(page.get_by_role("button", name="Continue this answer")).to_have_count(1)
        expect(page.get_by_role("button", name="Retry this answer")).to_have_count(0)
    finally:
        context.close()


# --- theme, jump to latest ----------------------------------------------------------------------


@pytest.mark.parametrize("js", [True, False], ids=["js", "no-js"])
def test_theme_switch_is_kept_in_a_cookie(browser: Any, quick_stack: Stack, js: bool) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser, js=js)
    try:
        login(page, quick_stack.url, "Theo")
        html = page.locator("html")
        expect(html).not_to_have_attribute("data-theme", re.compile(".*"))
        page.check('#theme-form input[value="dark"]')
        if not js:
            page.click("#theme-form .theme-apply")
        expect(html).to_have_attribute("data-theme", "dark")
        background = page.evaluate(
            "() => getComputedStyle(document.documentElement).backgroundColor"
        )
        assert background == "rgb(23, 23, 26)"
        page.reload()
        expect(html).to_have_attribute("data-theme", "dark")
        expect(page.locator('#theme-form input[value="dark"]')).to_be_checked()
        shot(page, f"theme-dark-{'js' if js else 'nojs'}")
        page.check('#theme-form input[value="system"]')
        if not js:
            page.click("#theme-form .theme-apply")
        expect(html).not_to_have_attribute("data-theme", re.compile(".*"))
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        assert cookies.get("theme") == "system"
    finally:
        context.close()


def test_jump_to_latest_when_scrolled_up_during_an_answer(browser: Any, scripted: Scripted) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser, size="phone")
    try:
        login(page, scripted.url, "Scroller")
        _, answer = start_chat(page, "Show me a function\n" + "and a long question\n" * 40)
        scripted.wait_paused(1)
        expect(answer.locator(".code-block")).to_be_visible()
        jump = page.locator("#jump-latest")
        expect(jump).to_be_hidden()  # at the bottom: nothing to jump to
        page.locator("#scroller").evaluate("s => { s.scrollTop = -400; }")
        expect(jump).to_be_visible()
        shot(page, "jump-to-latest")
        jump.click()
        expect(jump).to_be_hidden()
        assert page.locator("#scroller").evaluate("s => Math.abs(s.scrollTop)") < 2
        scripted.release()
        scripted.wait_paused(2)
        scripted.release()
        expect(answer).to_have_attribute("data-status", "complete")
    finally:
        context.close()


# --- Markdown while it streams, with and without JavaScript -------------------------------------


def test_markdown_is_rendered_while_the_answer_streams(browser: Any, scripted: Scripted) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser)
    try:
        login(page, scripted.url, "Reader")
        _, answer = start_chat(page, "Show me a function")
        scripted.wait_paused(1)
        # Paused after the code block: it is already rendered, highlighted, with its
        # language, while the answer is still being written.
        expect(answer).to_have_attribute("aria-busy", "true")
        expect(answer.locator(".code-block .code-lang")).to_have_text("python")
        expect(answer.locator(".code-block pre .k").first).to_have_text("def")  # highlighted
        expect(answer.locator(".msg-body strong")).to_have_text("a function")
        assert "**" not in answer.locator(".msg-body").inner_text()
        shot(page, "streaming-code-block-rendered")
        scripted.release()
        scripted.wait_paused(2)
        # The paragraph is rendered; the list (which may go on) is still text.
        expect(answer.locator(".msg-body em")).to_have_text("any")
        expect(answer.locator(".md-tail")).to_contain_text("- `double(2)` is 4")
        blocks = answer.locator(".msg-body").evaluate(
            "b => b.innerHTML.slice(0, b.innerHTML.indexOf('<div class=\"md-tail\"'))"
        )
        assert "<em>any</em>" in blocks
        shot(page, "streaming-list-as-text")
        scripted.release()
        expect(answer).to_have_attribute("data-status", "complete")
        final = answer.locator(".msg-body").inner_html()
        assert final.startswith(blocks)  # what was rendered while streaming stays as it was
        expect(answer.locator(".msg-body li")).to_have_count(2)
        expect(page.locator("#send")).to_be_enabled()
    finally:
        context.close()


def test_without_javascript_the_answer_grows_in_one_page(browser: Any, scripted: Scripted) -> None:
    """No refresh: one document that grows while the answer is written; Markdown blocks
    rendered as they complete; the message box keeps what is typed meanwhile."""
    from playwright.sync_api import expect

    context, page = open_page(browser, js=False)
    try:
        login(page, scripted.url, "Plain")
        start_chat(page, "Show me a function")
        scripted.wait_paused(1)
        live = page.locator(".live-answer")
        expect(live.locator(".code-block .code-lang")).to_have_text("python")
        expect(live.locator(".code-block")).to_be_visible()
        expect(live.locator("strong")).to_be_visible()
        expect(live.locator("strong")).to_have_text("a function")
        expect(live.locator(".typing")).to_be_visible()
        document = page.evaluate("() => performance.timeOrigin")
        assert page.locator(".live-done").count() == 0  # the page is still loading
        # Stop in place of Send while the answer runs; typing meanwhile is kept.
        expect(page.locator("#send")).to_be_hidden()
        expect(page.get_by_role("button", name="Stop this answer")).to_be_visible()
        page.fill("#composer-input", "A follow-up typed while it answers")
        shot(page, "no-js-streaming")
        scripted.release()
        scripted.wait_paused(2)
        expect(live.locator("em")).to_have_text("any")
        # The list may go on: shown as text, in the one tail that is visible.
        expect(live.locator(".md-tail:visible")).to_have_count(1)
        expect(live.locator(".md-tail:visible")).to_contain_text("- `double(2)` is 4")
        shot(page, "no-js-streaming-list-as-text")
        scripted.release()
        expect(page.locator(".live-done")).to_be_attached()
        answer = page.locator(".msg-assistant[data-status]").last
        expect(answer).to_have_attribute("data-status", "complete")
        expect(live).to_be_hidden()  # the finished answer took its place
        expect(answer.locator("li")).to_have_count(2)
        assert page.evaluate("() => performance.timeOrigin") == document  # same page
        expect(page.locator("#composer-input")).to_have_value("A follow-up typed while it answers")
        expect(page.locator("#send")).to_be_visible()
        assert overflow(page) <= 0
        shot(page, "no-js-streamed-complete")
    finally:
        context.close()


def test_without_javascript_stop_keeps_the_draft(browser: Any, scripted: Scripted) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser, js=False, size="phone")
    try:
        login(page, scripted.url, "Stopper")
        start_chat(page, "Show me a function")
        scripted.wait_paused(1)
        page.fill("#composer-input", "Never mind, another question")
        page.get_by_role("button", name="Stop this answer").click()
        answer = page.locator(".msg-assistant").last
        expect(answer).to_have_attribute("data-status", "interrupted")
        expect(answer.locator(".code-block")).to_be_visible()  # the partial answer stays
        expect(page.locator("#composer-input")).to_have_value("Never mind, another question")
        shot(page, "no-js-stopped-draft-kept")
    finally:
        context.close()


@pytest.mark.parametrize("js", [True, False], ids=["js", "no-js"])
def test_rename_and_delete_from_the_sidebar_entry(
    browser: Any, quick_stack: Stack, js: bool
) -> None:
    from playwright.sync_api import expect

    context, page = open_page(browser, size="phone", js=js)
    try:
        login(page, quick_stack.url, "Sid " + ("js" if js else "nojs"))
        chat, _ = start_chat(page, "A chat to rename")
        expect(page.locator(".msg-assistant[data-status]").last).to_have_attribute(
            "data-status", "complete"
        )
        entry = page.locator(f'.chat-item[data-chat-id="{chat}"]')
        page.click(".drawer-open")
        expect(page.locator(".chat-group").first).to_have_text("Today")
        menu = entry.locator("summary")
        expect(menu).to_have_attribute("aria-label", "Rename or delete “A chat to rename”")
        menu.click()
        entry.get_by_label("New title").fill("Renamed from the list")
        shot(page, f"sidebar-menu-{'js' if js else 'nojs'}")
        entry.get_by_role("button", name="Rename").click()
        expect(page.locator("#chat-heading")).to_have_text("Renamed from the list")
        page.click(".drawer-open")
        entry.locator("summary").click()
        delete = entry.locator("a.danger-link")
        expect(delete).to_have_text("Delete “Renamed from the list”…")
        delete.click()
        expect(page.locator("#confirm-delete")).to_be_visible()
        page.click("#confirm-delete")
        expect(page).to_have_url(re.compile(r".*/chats$"))
        expect(page.locator(f'.chat-item[data-chat-id="{chat}"]')).to_have_count(0)
    finally:
        context.close()
