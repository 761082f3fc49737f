"""The no-JavaScript flows, chat management, db_api down, /health and /metrics."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.chat_ui.conftest import Browser, LiveServer, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm


@pytest.fixture
def ada(browser: Browser) -> Browser:
    browser.login("Ada")
    return browser


def test_new_chats_are_listed_most_recent_first_with_title_and_age(ada: Browser) -> None:
    first = ada.new_chat()
    ada.send(first, "first question")
    second = ada.new_chat()
    ada.send(second, "second question " + "x" * 100)
    page = ada.get("/chats").text
    titles = re.findall(r'<span class="chat-title">([^<]*)</span>', page)
    assert titles[0].startswith("second question") and titles[0].endswith("…")
    assert len(titles[0]) <= 60
    assert titles[1] == "first question"
    assert page.count('class="chat-age"') == 2


def test_rename_and_the_title_sticks(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    assert ada.get(f"/chats/{chat}").text.count("New chat") >= 1
    resp = ada.post(f"/chats/{chat}/rename", {"title": "  Travel   plans "})
    assert resp.status_code == 303
    assert fake_db.chats[chat]["title"] == "Travel plans"
    ada.send(chat, "this does not rename it")
    assert fake_db.chats[chat]["title"] == "Travel plans"
    assert ada.post(f"/chats/{chat}/rename", {"title": "  "}).status_code == 422
    assert ada.post(f"/chats/{chat}/rename", {"title": "t" * 201}).status_code == 422
    assert fake_db.chats[chat]["title"] == "Travel plans"


def test_delete_asks_first_then_deletes(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    confirm = ada.get(f"/chats/{chat}/delete")
    assert confirm.status_code == 200
    assert 'id="delete-form"' in confirm.text and 'id="confirm-delete"' in confirm.text
    assert chat in fake_db.chats  # asking deletes nothing
    resp = ada.post(f"/chats/{chat}/delete")
    assert resp.status_code == 303 and resp.headers["location"] == "/chats"
    assert chat not in fake_db.chats
    assert ada.get(f"/chats/{chat}").status_code == 404


def test_delete_while_answering_stops_the_answer(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.hold_after = 1
    chat = ada.new_chat()
    ada.send(chat, "hi")
    assert fake_lm.held.wait(timeout=10)
    assert ada.post(f"/chats/{chat}/delete").status_code == 303
    assert fake_db.messages == {}


def test_system_prompt_is_used_and_resettable(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    resp = ada.post(f"/chats/{chat}/system-prompt", {"system_prompt": "Answer in French."})
    assert resp.status_code == 303
    assert "Answer in French." in ada.get(f"/chats/{chat}").text
    ada.send(chat, "Hi")
    ada.follow(chat, message_ids(ada.get(f"/chats/{chat}").text)[0])
    assert fake_lm.requests[-1]["messages"][0] == {"role": "system", "content": "Answer in French."}
    ada.post(f"/chats/{chat}/system-prompt", {"system_prompt": ""})
    assert fake_db.chats[chat]["system_prompt"] is None  # back to the default


def test_history_is_sent_in_order(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    for question in ("one", "two"):
        ada.send(chat, question)
        ada.follow(chat, message_ids(ada.get(f"/chats/{chat}").text)[-1])
    roles = [(m["role"], m["content"]) for m in fake_lm.requests[-1]["messages"]]
    assert roles == [
        ("system", "You are a helpful assistant."),
        ("user", "one"),
        ("assistant", "Hello, world!"),
        ("user", "two"),
    ]


def test_logout_and_login_forms_work_without_js(browser: Browser) -> None:
    login_page = browser.get("/").text
    assert '<form id="login-form" class="login-form" method="post" action="/login">' in login_page
    browser.login("Ada")
    page = browser.get("/chats").text
    assert 'id="logout-form"' in page and 'id="new-chat"' in page
    assert browser.post("/logout").status_code == 303
    assert browser.get("/chats").status_code == 303


# --- db_api down ----------------------------------------------------------------------------


def test_db_down_on_send_gives_the_text_back(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    fake_db.down = True
    typed = "A long thought I do not want to lose <3"
    resp = ada.send(chat, typed)
    assert resp.status_code == 503
    assert "Your message was not sent" in resp.text
    assert "A long thought I do not want to lose &lt;3</textarea>" in resp.text
    assert "Traceback" not in resp.text
    fragment = ada.send(chat, typed, htmx=True)
    assert fragment.status_code == 503
    assert fragment.headers["hx-retarget"] == "#composer"
    assert "A long thought I do not want to lose &lt;3</textarea>" in fragment.text
    fake_db.down = False
    assert fake_db.messages == {}


def test_db_down_pages_are_friendly_503(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    fake_db.down = True
    for url in ["/chats", f"/chats/{chat}"]:
        resp = ada.get(url)
        assert resp.status_code == 503
        assert "temporarily unavailable" in resp.text and "Traceback" not in resp.text
    resp = ada.post("/chats", htmx=True)
    assert resp.status_code == 503 and resp.headers["hx-retarget"] == "#flash"


def test_health_names_what_is_down(
    ui: LiveServer, fake_db: FakeDb, fake_lm: FakeLm, browser: Browser
) -> None:
    assert browser.get("/health").json() == {"status": "ok"}
    fake_db.down = True
    resp = browser.get("/health")
    assert resp.status_code == 503 and resp.json()["down"] == ["db_api"]
    fake_lm.down = True
    assert browser.get("/health").json()["down"] == ["db_api", "lm_api"]
    fake_db.down = False
    assert browser.get("/health").json()["down"] == ["lm_api"]


def test_metrics(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    ada.send(chat, "hi")
    ada.follow(chat, message_ids(ada.get(f"/chats/{chat}").text)[0])
    text = ada.get("/metrics").text
    assert (
        'chat_ui_requests_total{method="POST",route="/chats/{chat_id}/messages",status="303"}'
        in text
    )
    assert 'chat_ui_generations_total{outcome="complete"} 1.0' in text
    assert "chat_ui_active_generations 0.0" in text
    assert "chat_ui_sse_connections 0.0" in text


def test_static_files_are_served(browser: Browser) -> None:
    for name in [
        "htmx-2.0.11.min.js",
        "htmx-ext-sse-2.2.4.js",
        "parlor.js",
        "parlor.css",
        "pygments.css",
    ]:
        assert browser.get(f"/static/{name}").status_code == 200, name


# --- context ----------------------------------------------------------------------------------


def _seed_history(fake_db: FakeDb, chat: str, pairs: int, size: int) -> None:
    import httpx

    owner = fake_db.chats[chat]["owner"]
    client = httpx.Client(transport=fake_db.sync_transport(), base_url="http://db")
    for i in range(pairs):
        for role in ("user", "assistant"):
            client.post(
                f"/chats/{chat}/messages",
                headers={"X-Owner": owner},
                json={"role": role, "content": f"{role} {i} " + "z" * size},
            )


def test_long_history_is_trimmed_oldest_first(
    make_ui: Callable[..., LiveServer], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.n_ctx = 1000
    server = make_ui(max_tokens=200)
    b = Browser(server.url)
    try:
        b.login("Ada")
        chat = b.new_chat()
        _seed_history(fake_db, chat, pairs=20, size=300)
        b.send(chat, "latest question")
        b.follow(chat, message_ids(b.get(f"/chats/{chat}").text)[-1])
    finally:
        b.close()
    sent = fake_lm.requests[-1]
    assert sent["max_tokens"] == 200
    messages = sent["messages"]
    assert messages[0]["role"] == "system"
    assert messages[-1] == {"role": "user", "content": "latest question"}
    assert messages[1]["role"] == "user"
    assert 1 < len(messages) < 41
    assert messages[-2]["content"].startswith("assistant 19 ")  # newest kept, oldest dropped
    assert all(not m["content"].startswith("user 0 ") for m in messages)
    assert sum(len(m["content"]) for m in messages) // 3 <= 1000 - 200


def test_context_size_falls_back_to_the_setting(
    make_ui: Callable[..., LiveServer], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.n_ctx = None
    server = make_ui(context_tokens=600, max_tokens=100)
    b = Browser(server.url)
    try:
        b.login("Ada")
        chat = b.new_chat()
        _seed_history(fake_db, chat, pairs=10, size=300)
        b.send(chat, "q")
        b.follow(chat, message_ids(b.get(f"/chats/{chat}").text)[-1])
    finally:
        b.close()
    messages = fake_lm.requests[-1]["messages"]
    assert 2 <= len(messages) < 8
    assert messages[-1]["content"] == "q"


def test_context_exceeded_retries_once_with_less_history(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    _seed_history(fake_db, chat, pairs=10, size=3000)
    fake_lm.refusals = [(400, "context_length_exceeded", "prompt too long")]
    ada.send(chat, "q")
    _, done = ada.follow(chat, message_ids(ada.get(f"/chats/{chat}").text)[-1])
    assert 'data-status="complete"' in done.data
    first, second = fake_lm.requests
    assert len(second["messages"]) < len(first["messages"])
    assert second["messages"][-1]["content"] == "q"


def test_context_exceeded_to_the_end_is_a_readable_error(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    """Refused every time: older turns are dropped at each try, down to the question
    alone (never the same prompt twice), then the error says why."""
    chat = ada.new_chat()
    _seed_history(fake_db, chat, pairs=10, size=3000)
    fake_lm.refusals = [(400, "context_length_exceeded", "prompt too long")] * 50
    ada.send(chat, "q")
    mid = message_ids(ada.get(f"/chats/{chat}").text)[-1]
    _, done = ada.follow(chat, mid)
    assert 'data-status="error"' in done.data and "prompt too long" in done.data
    assert fake_db.messages[mid]["reason"] == "context_exceeded"
    sizes = [len(r["messages"]) for r in fake_lm.requests]
    assert len(sizes) >= 2 and sizes == sorted(set(sizes), reverse=True)
    assert fake_lm.requests[-1]["messages"][1:] == [{"role": "user", "content": "q"}]
    # With nothing left to drop, the question alone is asked once.
    fake_lm.requests.clear()
    fake_lm.refusals = [(400, "context_length_exceeded", "prompt too long")] * 2
    lone = ada.new_chat()
    ada.send(lone, "q")
    _, done = ada.follow(lone, message_ids(ada.get(f"/chats/{lone}").text)[-1])
    assert 'data-status="error"' in done.data and len(fake_lm.requests) == 1
