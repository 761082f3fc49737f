"""Login, logout, cookies and the isolation of owners."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from chat_ui.config import Settings
from chat_ui.session import COOKIE_NAME
from tests.chat_ui.conftest import Browser, LiveServer, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm

SECRET = "test-secret-0123456789"


def test_login_page_then_chats(browser: Browser) -> None:
    page = browser.get("/")
    assert page.status_code == 200
    assert 'id="login-form"' in page.text and 'name="name"' in page.text
    assert browser.get("/chats").headers["location"] == "/"  # not logged in yet
    browser.login("  Ada   Lovelace ")
    chats = browser.get("/chats")
    assert chats.status_code == 200
    assert '<strong id="user-name">Ada Lovelace</strong>' in chats.text  # trimmed, collapsed
    assert browser.get("/").headers["location"] == "/chats"


def test_cookie_flags(browser: Browser) -> None:
    browser.get("/")
    resp = browser.post("/login", {"name": "Ada"})
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=" in cookie
    assert "secure" not in cookie  # plain http
    # Behind nginx terminating TLS the cookie is Secure.
    browser.get("/chats")
    resp = browser.post("/logout", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in resp.headers["set-cookie"].lower()


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "a\x01b"])
def test_bad_names_are_refused_clearly(browser: Browser, name: str) -> None:
    browser.get("/")
    resp = browser.post("/login", {"name": name})
    assert resp.status_code == 422
    assert 'class="form-error"' in resp.text
    assert browser.get("/chats").status_code == 303  # still logged out


def test_two_people_see_only_their_chats(browsers: Callable[[], Browser]) -> None:
    ada, bob = browsers(), browsers()
    ada.login("Ada")
    bob.login("Bob")
    chat = ada.new_chat()
    ada.send(chat, "secret plans")
    assert "secret plans" in ada.get("/chats").text
    assert "secret plans" not in bob.get("/chats").text
    assert bob.get(f"/chats/{chat}").status_code == 404
    assert bob.post(f"/chats/{chat}/rename", {"title": "mine"}).status_code == 404
    assert bob.post(f"/chats/{chat}/delete").status_code == 404
    assert bob.send(chat, "hijack").status_code == 404
    assert ada.get(f"/chats/{chat}").status_code == 200


def test_same_name_other_browser_is_someone_else(
    browsers: Callable[[], Browser], fake_db: FakeDb
) -> None:
    first, second = browsers(), browsers()
    first.login("Ada")
    second.login("Ada")
    chat = first.new_chat()
    assert second.get(f"/chats/{chat}").status_code == 404
    assert f"/chats/{chat}" not in second.get("/chats").text
    second.new_chat()
    assert len(fake_db.owners()) == 2


def test_same_name_same_browser_finds_its_chats_after_logout(browser: Browser) -> None:
    browser.login("Ada")
    chat = browser.new_chat()
    assert browser.post("/logout").headers["location"] == "/"
    assert browser.get(f"/chats/{chat}").status_code == 303  # logged out
    browser.login("Ada")
    assert browser.get(f"/chats/{chat}").status_code == 200
    browser.post("/logout")
    browser.login("Grace")  # another name in the same browser: another owner
    assert browser.get(f"/chats/{chat}").status_code == 404


def test_tampered_cookie_is_logged_out(browser: Browser) -> None:
    browser.login("Ada")
    value = browser.client.cookies[COOKIE_NAME]
    browser.client.cookies.clear()
    browser.client.cookies.set(COOKIE_NAME, value[:-3] + ("AAA" if value[-3:] != "AAA" else "BBB"))
    resp = browser.get("/chats")
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    page = browser.get("/")
    assert page.status_code == 200 and 'id="login-form"' in page.text


def test_cookie_forged_with_another_secret_is_logged_out(browser: Browser) -> None:
    forged = URLSafeTimedSerializer("not-the-secret", salt="parlor-session").dumps(
        {"k": "0" * 32, "c": "x", "n": "Ada", "t": int(time.time())}
    )
    browser.client.cookies.set(COOKIE_NAME, forged)
    assert browser.get("/chats").status_code == 303


def test_expired_login_is_logged_out(browser: Browser) -> None:
    old = URLSafeTimedSerializer(SECRET, salt="parlor-session").dumps(
        {"k": "0" * 32, "c": "x", "n": "Ada", "t": int(time.time()) - 30 * 24 * 3600}
    )
    browser.client.cookies.set(COOKIE_NAME, old)
    assert browser.get("/chats").status_code == 303


def test_expired_cookie_signature_is_logged_out(browser: Browser) -> None:
    class OldSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 500 * 24 * 3600

    old = URLSafeTimedSerializer(SECRET, salt="parlor-session", signer=OldSigner).dumps(
        {"k": "0" * 32, "c": "x", "n": "Ada", "t": int(time.time())}
    )
    browser.client.cookies.set(COOKIE_NAME, old)
    assert browser.get("/chats").status_code == 303


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValueError, match="CHAT_UI_SECRET_KEY"):
        Settings(env="production")
    assert Settings(env="production", secret_key="s" * 32).env == "production"


def test_internal_token_is_sent_to_db_api(
    fake_db: FakeDb, make_ui: Callable[..., LiveServer]
) -> None:
    fake_db.token = "tok-123"
    server = make_ui(internal_token="tok-123")
    b = Browser(server.url)
    try:
        b.login("Ada")
        assert b.new_chat()
    finally:
        b.close()


def test_another_owner_cannot_follow_stop_or_retry_an_answer(
    browsers: Callable[[], Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    ada, bob = browsers(), browsers()
    ada.login("Ada")
    bob.login("Bob")
    fake_lm.hold_after = 2
    chat = ada.new_chat()
    ada.send(chat, "private question")
    assert fake_lm.held.wait(timeout=10)
    mid = message_ids(ada.get(f"/chats/{chat}").text)[0]
    events = list(bob.events(f"/chats/{chat}/messages/{mid}/stream"))
    assert [e.event for e in events] == ["done"]
    assert "no longer exists" in events[0].data and "Hello" not in events[0].data
    assert bob.post(f"/chats/{chat}/messages/{mid}/stop").status_code == 404
    assert bob.post(f"/chats/{chat}/messages/{mid}/retry").status_code == 404
    fake_lm.release()
    _, done = ada.follow(chat, mid)
    assert 'data-status="complete"' in done.data  # Bob's stop did nothing
