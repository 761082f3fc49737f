"""CSRF, XSS, security headers and request size limits."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest

from tests.chat_ui.conftest import Browser, LiveServer, final_body, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm

XSS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">x</a>',
    '"><svg onload=alert(1)>',
]
MODEL_XSS = (
    "Hi <script>alert(1)</script> <img src=x onerror=alert(1)>\n\n"
    "[click](javascript:alert(1)) ![i](javascript:alert(2)) "
    '<a href="javascript:alert(3)">raw</a>\n\n'
    "```html\n<script>alert(4)</script>\n```\n"
)


class _ActiveContent(HTMLParser):
    """Collects what a browser would execute: scripts, on* handlers, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and not re.fullmatch(r"/static/[\w.-]+\.js", values.get("src") or ""):
            self.found.append(f"script {values}")
        if tag in ("svg", "iframe", "object", "embed"):
            self.found.append(tag)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag} {name}")
            if name in ("href", "src", "action", "formaction") and value is not None:
                if re.sub(r"\s", "", value).lower().startswith(("javascript:", "data:text")):
                    self.found.append(f"{tag} {name}={value}")


def assert_no_active_content(html: str) -> None:
    parser = _ActiveContent()
    parser.feed(html)
    assert parser.found == []


# --- CSRF -------------------------------------------------------------------------------


@pytest.fixture
def ada(browser: Browser) -> Browser:
    browser.login("Ada")
    return browser


def test_write_without_token_is_refused(ada: Browser, fake_db: FakeDb) -> None:
    resp = ada.client.post("/chats", data={})
    assert resp.status_code == 403
    assert "This form has expired" in resp.text
    assert fake_db.chats == {}


def test_write_with_wrong_token_is_refused(ada: Browser, fake_db: FakeDb) -> None:
    resp = ada.client.post("/chats", data={"csrf_token": "forged"})
    assert resp.status_code == 403
    resp = ada.client.post("/chats", headers={"X-CSRF-Token": "forged", "HX-Request": "true"})
    assert resp.status_code == 403
    assert fake_db.chats == {}


def test_token_of_another_session_is_refused(
    browsers: Callable[[], Browser], fake_db: FakeDb
) -> None:
    ada, mallory = browsers(), browsers()
    ada.login("Ada")
    mallory.login("Mallory")
    resp = ada.client.post("/chats", data={"csrf_token": mallory.csrf})
    assert resp.status_code == 403
    assert fake_db.chats == {}


def test_token_from_before_login_is_refused_after(browser: Browser, fake_db: FakeDb) -> None:
    browser.get("/")
    old = browser.csrf
    browser.post("/login", {"name": "Ada"})
    assert browser.client.post("/chats", data={"csrf_token": old}).status_code == 403


def test_foreign_origin_is_refused_even_with_token(ada: Browser, fake_db: FakeDb) -> None:
    resp = ada.post("/chats", headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403
    resp = ada.post("/chats", headers={"Referer": "https://evil.example/page"})
    assert resp.status_code == 403
    resp = ada.post("/chats", headers={"Origin": "null"})
    assert resp.status_code == 403
    assert fake_db.chats == {}
    same = ada.client.base_url
    ok = ada.post("/chats", headers={"Origin": f"{same.scheme}://{same.netloc.decode()}"})
    assert ok.status_code == 303


def test_origin_behind_a_proxy(ada: Browser) -> None:
    headers = {
        "Origin": "https://parlor.example",
        "Host": "parlor.example",
        "X-Forwarded-Proto": "https",
    }
    assert ada.post("/chats", headers=headers).status_code == 303


def test_login_needs_the_pre_session_token(browser: Browser) -> None:
    browser.get("/")
    assert browser.client.post("/login", data={"name": "Ada"}).status_code == 403
    resp = browser.post("/login", {"name": "Ada"}, headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403
    assert browser.get("/chats").status_code == 303  # still logged out


def test_every_unsafe_route_checks_the_token(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    ada.send(chat, "hello")
    mid = message_ids(ada.get(f"/chats/{chat}").text)[0]
    for path in [
        "/logout",
        "/chats",
        f"/chats/{chat}/messages",
        f"/chats/{chat}/rename",
        f"/chats/{chat}/delete",
        f"/chats/{chat}/system-prompt",
        f"/chats/{chat}/messages/{mid}/stop",
        f"/chats/{chat}/messages/{mid}/retry",
    ]:
        resp = ada.client.post(path, data={"content": "x", "title": "x", "csrf_token": "bad"})
        assert resp.status_code == 403, path
    assert ada.get(f"/chats/{chat}").status_code == 200  # still logged in, chat intact


# --- XSS --------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", XSS)
def test_xss_in_name_title_and_message_is_escaped(browser: Browser, payload: str) -> None:
    browser.login(payload[:64])
    chat = browser.new_chat()
    browser.send(chat, payload)
    page = browser.get(f"/chats/{chat}").text
    assert_no_active_content(page)
    assert "&lt;" in page  # shown, as text
    browser.post(f"/chats/{chat}/rename", {"title": payload})
    page = browser.get(f"/chats/{chat}").text
    assert_no_active_content(page)
    assert_no_active_content(browser.get(f"/chats/{chat}/delete").text)
    fragment = browser.send(chat, payload, htmx=True)
    assert fragment.status_code == 200
    assert_no_active_content(fragment.text)


def test_xss_in_model_output_is_sanitized(browser: Browser, fake_lm: FakeLm) -> None:
    fake_lm.tokens = [MODEL_XSS[i : i + 7] for i in range(0, len(MODEL_XSS), 7)]
    fake_lm.hold_after = 1
    browser.login("Ada")
    chat = browser.new_chat()
    browser.send(chat, "say something nasty")
    mid = message_ids(browser.get(f"/chats/{chat}").text)[0]
    shown, done = browser.follow_live(chat, mid, fake_lm.release)
    # Every event (text and rendered blocks alike) carried it inert.
    for ev in shown.events:
        assert_no_active_content(ev.data)
    assert "<script>" in shown.text and shown.blocks == final_body(done)
    assert_no_active_content(done.data)
    assert "&lt;script&gt;" in done.data  # shown as text, in the code block too
    page = browser.get(f"/chats/{chat}").text
    assert_no_active_content(page)


def test_token_events_are_escaped(browser: Browser, fake_lm: FakeLm) -> None:
    fake_lm.tokens = ["<b>", "bold", "</b>", "<img src=x onerror=alert(1)>"]
    fake_lm.hold_after = 1
    browser.login("Ada")
    chat = browser.new_chat()
    browser.send(chat, "hi")
    mid = message_ids(browser.get(f"/chats/{chat}").text)[0]
    raw = []
    for ev in browser.events(f"/chats/{chat}/messages/{mid}/stream"):
        if ev.event == "token":
            raw.append(ev.data)
            fake_lm.release()
    assert "".join(raw) == "&lt;b&gt;bold&lt;/b&gt;&lt;img src=x onerror=alert(1)&gt;"


# --- headers and limits -------------------------------------------------------------------


def test_security_headers_and_no_inline_script(ada: Browser) -> None:
    chat = ada.new_chat()
    for url in ["/", "/chats", f"/chats/{chat}", f"/chats/{chat}/delete"]:
        resp = ada.get(url)
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert re.search(r"<script(?![^>]*\ssrc=)[^>]*>", resp.text) is None, url
        assert " style=" not in resp.text


def test_oversized_body_is_413(ui: LiveServer, ada: Browser, fake_db: FakeDb) -> None:
    limit = ui.app.state.settings.body_limit
    chat = ada.new_chat()
    resp = ada.post(f"/chats/{chat}/rename", {"title": "x" * limit})
    assert resp.status_code == 413
    assert "too large" in resp.text
    fragment = ada.post(f"/chats/{chat}/rename", {"title": "x" * limit}, htmx=True)
    assert fragment.status_code == 413 and fragment.headers["hx-retarget"] == "#flash"
    # A message is read further, to give its text back, but not without end.
    assert ada.send(chat, "x" * limit * 5).status_code == 413
    assert fake_db.messages == {}
    assert fake_db.chats[chat]["title"] is None


def test_message_over_the_character_limit_keeps_the_text(ada: Browser) -> None:
    chat = ada.new_chat()
    resp = ada.send(chat, "y" * 100_001)
    assert resp.status_code == 422
    assert "at most 100000 characters" in resp.text
    assert "y" * 100_001 in resp.text  # given back, nothing lost


def test_empty_message_is_refused(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    resp = ada.send(chat, "   ")
    assert resp.status_code == 422
    assert fake_db.messages == {}


def test_malformed_ids_are_404_pages(ada: Browser) -> None:
    for url in ["/chats/not-a-uuid", "/chats/00000000-0000-0000-0000-000000000000", "/nowhere"]:
        resp = ada.get(url)
        assert resp.status_code == 404
        assert 'id="error-title"' in resp.text
