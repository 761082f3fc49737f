"""Search, import and export in real Chromium through nginx, on the real services:
import a ChatGPT export through the upload form, find a word deep inside it with the
search box (Ctrl+K, results as one types), open the result at its message (scrolled to,
highlighted), search without JavaScript, and download the exports.

Every wait is one of Playwright's auto-waiting assertions: no sleeps.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, Stack

pytestmark = pytest.mark.slow

TURNS = 20  # 40 messages: the one searched for is far above the newest
SHOTS = REPO / "test-artifacts" / "screenshots"


@pytest.fixture(params=["quick_stack", "postgres_stack"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """The stack on SQLite, then on PostgreSQL (skipped without TEST_DATABASE_URL)."""
    value: Stack = request.getfixturevalue(request.param)
    return value


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def chatgpt_export(title: str, needle_turn: int) -> list[dict[str, Any]]:
    """One conversation of TURNS question/answer pairs; turn `needle_turn` mentions nginx.
    The last answer has two versions (the second current)."""
    mapping: dict[str, Any] = {"root": {"id": "root", "message": None, "parent": None}}
    parent = "root"
    for turn in range(TURNS):
        for role in ("user", "assistant"):
            key = f"{role[0]}{turn}"
            text = f"{role} turn {turn}: " + "filler words about other things. " * 8
            if turn == needle_turn and role == "assistant":
                text = "Set proxy_buffering off in the nginx location block."
            if turn == TURNS - 1 and role == "assistant":
                text = "A first version of the answer, about zebras."
            mapping[key] = {
                "id": key,
                "parent": parent,
                "message": {
                    "author": {"role": role},
                    "create_time": 1_700_000_000 + turn * 60 + (role == "assistant"),
                    "content": {"content_type": "text", "parts": [text]},
                    "recipient": "all",
                },
            }
            parent = key
    mapping["again"] = {
        "id": "again",
        "parent": f"u{TURNS - 1}",
        "message": {
            "author": {"role": "assistant"},
            "create_time": 1_700_009_999,
            "content": {"content_type": "text", "parts": ["A second version of the answer."]},
        },
    }
    return [
        {
            "id": str(uuid.uuid4()),
            "title": title,
            "create_time": 1_700_000_000,
            "mapping": mapping,
            "current_node": "again",
        }
    ]


def login(page: Any, url: str, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/")
    page.fill("#name", name)
    page.click("#login-button")
    expect(page).to_have_url(re.compile(r".*/chats$"))


def import_through_the_form(page: Any, url: str, path: Path) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/transfer")
    page.set_input_files("#import-file", str(path))
    page.click("#import-submit")
    expect(page.locator("#import-report")).to_contain_text("1 chat imported")


def test_import_search_and_open_at_the_message(browser: Any, stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    export = tmp_path / "conversations.json"
    export.write_text(json.dumps(chatgpt_export("Proxy notes", needle_turn=3)))
    context = browser.new_context(viewport={"width": 1200, "height": 700}, accept_downloads=True)
    page = context.new_page()
    try:
        login(page, stack.url, f"searcher-{uuid.uuid4().hex[:8]}")
        import_through_the_form(page, stack.url, export)
        # The same file again adds nothing.
        import_through_the_form_again = page.locator("#import-file")
        import_through_the_form_again.set_input_files(str(export))
        page.click("#import-submit")
        expect(page.locator("#import-report")).to_contain_text("0 chats imported, 1 skipped")

        # Ctrl+K focuses the search box; results come as one types.
        page.locator("body").click()
        page.keyboard.press("Control+k")
        box = page.locator("#search-input")
        expect(box).to_be_focused()
        page.keyboard.type("ngin")
        first = page.locator("#search-results .search-hit").first
        expect(first).to_be_visible()
        expect(first.locator(".search-title")).to_have_text("Proxy notes")
        expect(first.locator(".search-snippet mark")).to_have_text("nginx")
        expect(page.locator("#search-results mark").first).to_have_text("nginx")
        shot(page, "search-as-you-type")

        # The result opens the chat at the message: in view and highlighted.
        first.locator("a").click()
        expect(page).to_have_url(re.compile(r".*/chats/[0-9a-f-]{36}\?at=[0-9a-f-]{36}#msg-"))
        target_id = page.url.rsplit("#", 1)[1]
        target = page.locator(f"#{target_id}")
        expect(target).to_contain_text("proxy_buffering off")
        expect(target).to_be_in_viewport()
        outline = target.evaluate("e => getComputedStyle(e).outlineStyle")
        assert outline == "solid"
        # The newest message is out of view: the page really was scrolled to the hit.
        expect(page.locator(".msg").last).not_to_be_in_viewport()
        shot(page, "search-result-opened")

        # A word only in the version not shown: the result shows that version first.
        page.locator("#search-input").fill("zebra")
        other = page.locator("#search-results .search-hit a").first
        expect(other).to_have_attribute("href", re.compile(r"^/search/open/"))
        other.click()
        expect(page).to_have_url(re.compile(r".*#msg-"))
        chosen = page.locator(f"#{page.url.rsplit('#', 1)[1]}")
        expect(chosen).to_contain_text("about zebras")
        expect(chosen).to_be_in_viewport()
        expect(page.locator("#messages")).not_to_contain_text("A second version of the answer.")

        # Downloads: all chats as JSON (the imported tree, importable), one as Markdown.
        page.goto(stack.url + "/transfer")
        shot(page, "import-export-page")
        with page.expect_download() as download:
            page.click("#export-all")
        exported = json.loads(Path(download.value.path()).read_text())
        (chat,) = exported["chats"]
        assert chat["title"] == "Proxy notes" and len(chat["messages"]) == TURNS * 2 + 1
        with page.expect_download() as download:
            page.locator(".export-md").first.click()
        markdown = Path(download.value.path()).read_text()
        assert markdown.startswith("# Proxy notes") and "## Other versions" in markdown
    finally:
        context.close()


def test_search_without_javascript(browser: Any, stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    export = tmp_path / "conversations.json"
    export.write_text(json.dumps(chatgpt_export("Plain form chat", needle_turn=1)))
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        login(page, stack.url, f"nojs-{uuid.uuid4().hex[:8]}")
        import_through_the_form(page, stack.url, export)
        page.fill("#search-input", "proxy_buf")
        page.click("#search-submit")
        expect(page).to_have_url(re.compile(r".*/search\?q=proxy_buf$"))
        result = page.locator("#search-page-results .search-hit").first
        expect(result.locator(".search-title")).to_have_text("Plain form chat")
        expect(result.locator("mark").first).to_have_text("proxy")
        result.locator("a").click()
        target_id = page.url.rsplit("#", 1)[1]
        expect(page.locator(f"#{target_id}")).to_contain_text("proxy_buffering off")
    finally:
        context.close()
