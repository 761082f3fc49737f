"""No answer lost, no failure silent (issue 10), against the fakes: durable final saves,
ordered writes, unstorable characters, true end reasons, token counting and shrinking,
what the page is told while it waits, bad stream offsets, body limits, sessions."""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable, Iterator

import pytest

from chat_ui.session import COOKIE_NAME
from tests.chat_ui.conftest import Browser, Event, LiveServer, eventually, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm, dense_tokens

FULL = "Hello, world!"


@pytest.fixture
def open_browser(make_ui: Callable[..., LiveServer]) -> Iterator[Callable[..., Browser]]:
    """A logged-in browser on a chat_ui with these settings."""
    opened: list[Browser] = []

    def make(**settings: object) -> Browser:
        server = make_ui(**settings)
        browser = Browser(server.url)
        opened.append(browser)
        browser.login("Ada")
        return browser

    yield make
    for browser in opened:
        browser.close()


def held_answer(b: Browser, fake_lm: FakeLm, hold_after: int = 2) -> tuple[str, str]:
    """Send a message whose answer is held after `hold_after` tokens: (chat, answer)."""
    fake_lm.hold_after = hold_after
    chat = b.new_chat()
    assert b.send(chat, "Hi").status_code == 303
    assert fake_lm.held.wait(timeout=10)
    return chat, message_ids(b.get(f"/chats/{chat}").text)[0]


def stream_until_done(b: Browser, chat: str, mid: str, **kw: str) -> list[Event]:
    events: list[Event] = []
    for ev in b.events(f"/chats/{chat}/messages/{mid}/stream", **kw):  # type: ignore[arg-type]
        events.append(ev)
        if ev.event == "done":
            break
    return events


# --- 1. the final state is kept until db_api takes it ----------------------------------------


def test_final_state_waits_in_memory_until_storage_is_back(
    open_browser: Callable[..., Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    b = open_browser(flush_interval_s=3600, save_retry_max_s=0.5)
    chat, mid = held_answer(b, fake_lm)
    events = b.events(f"/chats/{chat}/messages/{mid}/stream")
    assert next(events).event == "sync"  # following the answer:
    assert next(events).event == "token"  # "Hello, "
    fake_db.down = True
    fake_lm.release()
    rest = list(events)
    assert html.unescape("".join(e.data for e in rest if e.event == "token")) == "world!"
    done = rest[-1]
    assert done.event == "done" and 'data-status="complete"' in done.data
    assert "Hello, world!" in done.data and "Saving is pending" in done.data
    # Far more tries than a short retry loop would make: still kept, still shown.
    eventually(lambda: fake_db.failed.count(("PATCH", f"/messages/{mid}")) >= 6)
    bubble = b.client.get(f"/chats/{chat}/messages/{mid}", headers={"HX-Request": "true"})
    assert bubble.status_code == 200 and "Saving is pending" in bubble.text
    assert "Hello, world!" in bubble.text and 'hx-trigger="every 3s"' in bubble.text
    assert fake_db.messages[mid]["status"] == "pending"
    fake_db.down = False
    eventually(lambda: fake_db.messages[mid]["status"] == "complete", deadline_s=30)
    assert fake_db.messages[mid]["content"] == FULL
    bubble = b.client.get(f"/chats/{chat}/messages/{mid}", headers={"HX-Request": "true"})
    assert "Saving is pending" not in bubble.text and 'data-status="complete"' in bubble.text
    page = b.get(f"/chats/{chat}").text
    assert "<p>Hello, world!</p>" in page and "http-equiv" not in page


# --- 2. writes of one answer apply in order -------------------------------------------------


def test_a_late_partial_write_never_overwrites_the_final_one(
    open_browser: Callable[..., Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    b = open_browser(flush_interval_s=0.001)
    # A partial write reaches db_api only after the final one, even when chat_ui gave
    # up on it (as a slow network may deliver it).
    fake_db.partials_after_final = True
    chat, mid = held_answer(b, fake_lm)
    eventually(lambda: fake_db.waiting_partials >= 1)
    fake_lm.release()
    b.follow(chat, mid)
    eventually(lambda: len(fake_db.refused) >= 1)
    stored = fake_db.messages[mid]
    assert (stored["status"], stored["content"]) == ("complete", FULL)
    assert all(p["status"] == "streaming" for _, p in fake_db.refused)
    revisions = [p["revision"] for m, p in fake_db.patches if m == mid]
    assert revisions == sorted(set(revisions)) and None not in revisions


# --- 3. characters that cannot be stored ------------------------------------------------------


def test_nul_and_lone_surrogates_are_replaced_and_the_rest_kept(
    browser: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.tokens = ["Hi", "\x00", " there", "\ud800", "!", " \U0001f600"]
    fake_lm.hold_after = 1
    browser.login("Ada")
    chat = browser.new_chat()
    browser.send(chat, "a\x00b")
    mid = message_ids(browser.get(f"/chats/{chat}").text)[0]
    shown, done = browser.follow_live(chat, mid, fake_lm.release)
    text = shown.text.strip()
    assert text == "Hi\ufffd there\ufffd! \U0001f600"
    assert 'data-status="complete"' in done.data
    stored = fake_db.messages[mid]
    assert (stored["status"], stored["content"]) == ("complete", text)
    user = next(m for m in fake_db.messages.values() if m["role"] == "user")
    assert user["content"] == "a\ufffdb"


# --- 4. true end reasons ----------------------------------------------------------------------


def test_each_end_has_its_true_reason_in_storage_and_page(
    browser: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    browser.login("Ada")
    chat, mid = held_answer(browser, fake_lm)
    browser.post(f"/chats/{chat}/messages/{mid}/stop")
    assert fake_db.messages[mid]["reason"] == "stopped"
    page = browser.get(f"/chats/{chat}").text
    assert 'data-reason="stopped"' in page and "Stopped by you." in page

    fake_lm.release()
    fake_lm.hold_after = None
    fake_lm.fail_after = 2
    browser.send(chat, "again")
    mid = message_ids(browser.get(f"/chats/{chat}").text)[-1]
    _, done = browser.follow(chat, mid)
    assert fake_db.messages[mid]["reason"] == "model_error"
    assert 'data-reason="model_error"' in done.data

    fake_lm.fail_after = None
    fake_lm.down = True
    browser.send(chat, "and again")
    mid = message_ids(browser.get(f"/chats/{chat}").text)[-1]
    _, done = browser.follow(chat, mid)
    assert fake_db.messages[mid]["reason"] == "model_unreachable"
    assert "cannot be reached" in done.data


def test_an_answer_no_process_writes_ends_as_server_restarted(
    browser: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    import httpx

    browser.login("Ada")
    chat = browser.new_chat()
    owner = fake_db.chats[chat]["owner"]
    with httpx.Client(transport=fake_db.sync_transport(), base_url="http://db") as client:
        turn = client.post(
            f"/chats/{chat}/turns", headers={"X-Owner": owner}, json={"content": "q"}
        )
    mid = turn.json()["assistant"]["id"]
    page = browser.get(f"/chats/{chat}").text
    assert 'data-reason="server_restarted"' in page and "restarted" in page
    stored = fake_db.messages[mid]
    assert (stored["status"], stored["reason"]) == ("interrupted", "server_restarted")
    assert ("POST", f"/messages/{mid}/expire") in fake_db.calls
    assert fake_lm.requests == []


def test_a_silent_model_server_ends_the_answer_as_stalled(
    open_browser: Callable[..., Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    b = open_browser(lm_stall_s=7.5)
    # The fake cannot be silent on a real socket; it raises what httpx raises when the
    # read timeout (lm_stall_s, checked below) runs out. tests/faults stalls a real one.
    fake_lm.stall_after = 2
    chat = b.new_chat()
    b.send(chat, "Hi")
    mid = message_ids(b.get(f"/chats/{chat}").text)[0]
    _, done = b.follow(chat, mid)
    assert 'data-status="error"' in done.data and 'data-reason="model_stalled"' in done.data
    assert "sent nothing for 7.5 s" in done.data
    stored = fake_db.messages[mid]
    assert (stored["status"], stored["reason"], stored["content"]) == (
        "error",
        "model_stalled",
        "Hello, ",
    )
    assert fake_lm.read_timeouts[-1] == 7.5


def test_shutdown_interrupts_with_reason_server_restarted(
    make_ui: Callable[..., LiveServer], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    server = make_ui()
    b = Browser(server.url)
    try:
        b.login("Ada")
        _, mid = held_answer(b, fake_lm)
    finally:
        b.close()
    server.server.should_exit = True
    eventually(lambda: fake_db.messages[mid]["status"] == "interrupted")
    assert fake_db.messages[mid]["reason"] == "server_restarted"
    fake_lm.release()
    server.stop()


# --- 5. tokens counted by the model's tokenizer, or shrink until it fits ---------------------


def test_token_dense_history_is_dropped_by_count_when_the_server_counts(
    open_browser: Callable[..., Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.n_ctx = 4096
    fake_lm.tokenizer = dense_tokens
    fake_lm.enforce_context = True
    b = open_browser()
    chat = b.new_chat()
    # ~1 token per character, where the estimate says 3: counted, the answer still fits
    # (it gets the room that is left).
    b.send(chat, "x" * 3800)
    first = message_ids(b.get(f"/chats/{chat}").text)[-1]
    _, done = b.follow(chat, first)
    assert 'data-status="complete"' in done.data
    assert fake_lm.requests[-1]["max_tokens"] < 512
    for question in ("next", "and next"):
        b.send(chat, question)
        mid = message_ids(b.get(f"/chats/{chat}").text)[-1]
        _, done = b.follow(chat, mid)
        assert 'data-status="complete"' in done.data, done.data
        sent = fake_lm.requests[-1]["messages"]
        assert sent[-1] == {"role": "user", "content": question}
        assert all(m["content"] != "x" * 3800 for m in sent)
    assert not any(r[0] == 400 for r in fake_lm.refusals)
    assert fake_lm.tokenized and set(fake_lm.chat_ids) == {chat}


def test_token_dense_history_is_shrunk_away_when_the_server_cannot_count(
    open_browser: Callable[..., Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.n_ctx = 4096
    fake_lm.enforce_context = True  # and no /tokenize: 404
    b = open_browser()
    chat = b.new_chat()
    b.send(chat, "x" * 3800)
    first = message_ids(b.get(f"/chats/{chat}").text)[-1]
    _, done = b.follow(chat, first)
    # That question alone is too long for this model: a true reason, and Retry.
    assert 'data-reason="context_exceeded"' in done.data and 'class="retry"' in done.data
    assert fake_db.messages[first]["reason"] == "context_exceeded"
    for question in ("next", "and next"):
        b.send(chat, question)
        mid = message_ids(b.get(f"/chats/{chat}").text)[-1]
        _, done = b.follow(chat, mid)
        assert 'data-status="complete"' in done.data, done.data
        assert fake_lm.requests[-1]["messages"][-1] == {"role": "user", "content": question}


# --- 6. the page says what it waits for --------------------------------------------------------


def test_the_page_is_told_when_the_model_server_stops_answering_and_recovers(
    open_browser: Callable[..., Browser], fake_lm: FakeLm
) -> None:
    b = open_browser(lm_quiet_s=0.2)
    chat, mid = held_answer(b, fake_lm)
    fake_lm.down = True  # its health check now fails too
    events = b.events(f"/chats/{chat}/messages/{mid}/stream")
    notices: list[str] = []
    for ev in events:
        if ev.event == "notice":
            notices.append(ev.data)
            if "not answering" in ev.data:
                break
    assert notices and "not answering" in notices[-1]
    fake_lm.down = False
    fake_lm.release()
    rest = list(events)
    assert rest[-1].event == "done" and 'data-status="complete"' in rest[-1].data


def test_the_page_is_told_when_storage_is_away_mid_answer(
    open_browser: Callable[..., Browser], fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    b = open_browser(flush_interval_s=0.01)
    fake_lm.hold_again_after = 3
    chat, mid = held_answer(b, fake_lm, hold_after=1)
    events = b.events(f"/chats/{chat}/messages/{mid}/stream")
    next(events)
    fake_db.down = True
    fake_lm.release()  # more text comes, and cannot be written
    assert fake_lm.held_again.wait(timeout=10)
    notice = next(e for e in events if e.event == "notice")
    assert "Storage cannot be reached" in notice.data
    fake_db.down = False
    fake_lm.release_again()
    assert list(events)[-1].event == "done"
    eventually(lambda: fake_db.messages[mid]["status"] == "complete")
    assert fake_db.messages[mid]["content"] == FULL


# --- 8. stream offsets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "last_event_id"),
    [("9" * 5000, None), ("-1", None), ("abc", None), ("0", "9" * 5000), ("0", "x"), ("1e3", None)],
)
def test_bad_stream_offsets_are_400_before_any_work(
    browsers: Callable[[], Browser],
    fake_db: FakeDb,
    after: str,
    last_event_id: str | None,
) -> None:
    ada, visitor = browsers(), browsers()
    ada.login("Ada")
    chat = ada.new_chat()
    url = f"/chats/{chat}/messages/{chat}/stream?after={urllib.parse.quote(after)}"
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    for who in (ada, visitor):
        before = list(fake_db.calls)
        resp = who.client.get(url, headers=headers)
        assert resp.status_code == 400, resp.text[:200]
        assert fake_db.calls == before  # refused before storage was asked anything


# --- 9. body limits ---------------------------------------------------------------------------


def test_a_message_within_the_character_limit_is_never_refused_for_its_bytes(
    ui: LiveServer, browser: Browser, fake_db: FakeDb
) -> None:
    browser.login("Ada")
    chat = browser.new_chat()
    text = "漢" * 50_000 + "😀" * 50_000  # 100,000 characters: 9 and 12 bytes each, encoded
    resp = browser.send(chat, text)
    assert resp.status_code == 303, resp.text[:300]
    assert any(m["content"] == text for m in fake_db.messages.values())


def test_a_too_large_message_without_javascript_gets_its_text_back(
    ui: LiveServer, browser: Browser, fake_db: FakeDb
) -> None:
    browser.login("Ada")
    chat = browser.new_chat()
    text = "漢" * 150_000  # over the byte limit and the character limit
    assert len(urllib.parse.urlencode({"content": text})) > ui.app.state.settings.body_limit
    resp = browser.send(chat, text)
    assert resp.status_code == 422
    assert "at most 100000 characters" in resp.text and text in resp.text
    assert fake_db.messages == {}


# --- 10. sessions -------------------------------------------------------------------------------


def test_logout_ends_the_session_for_every_copy_of_the_cookie(
    browsers: Callable[[], Browser], fake_db: FakeDb
) -> None:
    ada, thief = browsers(), browsers()
    ada.login("Ada")
    chat = ada.new_chat()
    thief.client.cookies.set(COOKIE_NAME, ada.client.cookies[COOKIE_NAME])
    assert thief.get(f"/chats/{chat}").status_code == 200  # a copy works while logged in
    assert ada.post("/logout").status_code == 303
    for url in ("/chats", f"/chats/{chat}"):
        resp = thief.get(url)
        assert resp.status_code == 303 and resp.headers["location"] == "/"
    ended = thief.client.get(f"/chats/{chat}/messages/{chat}/stream")
    assert ended.status_code == 200 and "session ended" in ended.text
    assert fake_db.sessions == {}


def test_login_rotates_the_session(browser: Browser, fake_db: FakeDb) -> None:
    browser.login("Ada")
    first = browser.client.cookies[COOKIE_NAME]
    (first_sid,) = fake_db.sessions
    browser.post("/logout")
    browser.login("Ada")
    (second_sid,) = fake_db.sessions
    assert second_sid != first_sid and browser.client.cookies[COOKIE_NAME] != first
    # Logging in as someone else without logging out ends the first login too.
    browser.get("/")
    browser.post("/login", {"name": "Grace"})
    assert list(fake_db.sessions) != [second_sid] and len(fake_db.sessions) == 1


def test_every_model_server_call_names_the_chat(
    browser: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    browser.login("Ada")
    chat = browser.new_chat()
    browser.send(chat, "hi")
    browser.follow(chat, message_ids(browser.get(f"/chats/{chat}").text)[0])
    assert fake_lm.chat_ids and set(fake_lm.chat_ids) == {chat}


def test_an_answer_stopped_before_its_task_ever_ran_still_ends(
    fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    """Stop (or a chat's deletion) in the same instant as the send: the task is cancelled
    before its first step, so its own cleanup never runs; stop must end it anyway."""
    import asyncio

    import httpx

    from chat_ui.clients import DbApi, LmApi
    from chat_ui.config import Settings
    from chat_ui.contracts import Chat, Turn
    from chat_ui.generation import Generations
    from chat_ui.metrics import Metrics

    async def scenario() -> tuple[str, str | None]:
        async with (
            httpx.AsyncClient(transport=fake_db.transport(), base_url="http://db") as db_http,
            httpx.AsyncClient(transport=fake_lm.transport(), base_url="http://lm/v1/") as lm_http,
        ):
            db = DbApi(db_http)
            gens = Generations(Settings(), db, LmApi(lm_http), Metrics())
            chat = await db.create_chat("owner")
            resp = await db_http.post(
                f"/chats/{chat.id}/turns", headers={"X-Owner": "owner"}, json={"content": "q"}
            )
            turn = Turn.model_validate_json(resp.content)
            gen = gens.start("owner", Chat(id=chat.id, messages=[turn.user]), turn.assistant)
            stopped = await gens.stop(turn.assistant.id, "owner")
            assert stopped is gen and gen.final is not None
            stored = fake_db.messages[str(turn.assistant.id)]
            return stored["status"], stored["reason"]

    assert asyncio.run(scenario()) == ("interrupted", "stopped")
    assert fake_lm.requests == []
