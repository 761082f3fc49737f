"""A conversation is a tree (chat_ui/versions.py): edit a question, regenerate an answer,
continue a cut one, switch versions; with and without htmx, and the refusals."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.chat_ui.conftest import Browser, LiveServer, eventually, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm

FULL = "Hello, world!"


@pytest.fixture
def ada(browser: Browser) -> Browser:
    browser.login("Ada")
    return browser


def answered(ada: Browser, chat: str, text: str) -> tuple[str, str]:
    """Send `text` and wait for its answer; (question id, answer id)."""
    assert ada.send(chat, text).status_code == 303
    page = ada.get(f"/chats/{chat}").text
    answer = message_ids(page)[-1]
    _, done = ada.follow(chat, answer)
    assert 'data-status="complete"' in done.data
    return message_ids(page, "user")[-1], answer


def shown(ada: Browser, chat: str) -> str:
    return ada.get(f"/chats/{chat}").text


def latest_answer(ada: Browser, chat: str) -> str:
    return message_ids(shown(ada, chat))[-1]


def switcher(page: str, message_id: str) -> str | None:
    """The "n / m" the message shows, or None without a switcher."""
    bubble = page.split(f'id="msg-{message_id}"', 1)[1].split("</article>", 1)[0]
    match = re.search(r'<span class="version-count" aria-hidden="true">(\d+ / \d+)</span>', bubble)
    return match.group(1) if match else None


def last_prompt(fake_lm: FakeLm) -> list[dict[str, str]]:
    return [m for m in fake_lm.requests[-1]["messages"] if m["role"] != "system"]


# --- edit --------------------------------------------------------------------------------


def test_edit_without_javascript_keeps_the_old_branch(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    q1, a1 = answered(ada, chat, "First question")
    q2, a2 = answered(ada, chat, "Second question")

    form = ada.get(f"/chats/{chat}/messages/{q1}/edit")
    assert form.status_code == 200 and "<html" in form.text
    assert ">First question</textarea>" in form.text and "Save and answer" in form.text

    resp = ada.post(f"/chats/{chat}/messages/{q1}/edit", {"content": "First, edited"})
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}/live"
    new_answer = latest_answer(ada, chat)
    ada.follow(chat, new_answer)
    # Only the current path is asked about: the edited question alone.
    assert last_prompt(fake_lm) == [{"role": "user", "content": "First, edited"}]

    page = shown(ada, chat)
    new_q = message_ids(page, "user")
    assert len(new_q) == 1 and new_q[0] != q1
    assert "First, edited" in page and "Second question" not in page
    assert switcher(page, new_q[0]) == "2 / 2"
    assert "Version 2 of 2" in page and 'aria-label="Previous version"' in page

    # Back to version 1: the old question and everything after it, intact.
    resp = ada.post(f"/chats/{chat}/messages/{new_q[0]}/version", {"version": "1"})
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}"
    page = shown(ada, chat)
    assert message_ids(page, "user") == [q1, q2] and message_ids(page) == [a1, a2]
    assert switcher(page, q1) == "1 / 2" and switcher(page, q2) is None
    assert len(fake_db.messages) == 6


def test_edit_with_htmx_swaps_the_question_for_its_form_then_the_branch(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    q1, _ = answered(ada, chat, "Hi")
    form = ada.get(f"/chats/{chat}/messages/{q1}/edit", headers={"HX-Request": "true"})
    assert form.status_code == 200 and "<html" not in form.text
    assert form.text.lstrip().startswith(f'<article id="msg-{q1}"')
    assert 'hx-post="/chats/' in form.text and 'hx-target="#messages"' in form.text

    fake_lm.hold_after = 1
    resp = ada.post(f"/chats/{chat}/messages/{q1}/edit", {"content": "Hi again"}, htmx=True)
    assert resp.status_code == 200 and "<html" not in resp.text
    # The redrawn branch: the new question (version 2 of 2) and its answer, streaming.
    assert "Hi again" in resp.text and "sse-connect" in resp.text
    users = message_ids(resp.text, "user")
    assert len(users) == 1 and users[0] != q1 and switcher(resp.text, users[0]) == "2 / 2"
    fake_lm.release()
    _, done = ada.follow(chat, message_ids(resp.text)[0])
    assert FULL in done.data


def test_cancel_an_edit_shows_the_question_again(ada: Browser) -> None:
    chat = ada.new_chat()
    q1, _ = answered(ada, chat, "Keep me")
    resp = ada.get(f"/chats/{chat}/messages/{q1}", headers={"HX-Request": "true"})
    assert resp.status_code == 200 and f'id="msg-{q1}"' in resp.text and "Keep me" in resp.text
    form = ada.get(f"/chats/{chat}/messages/{q1}/edit").text
    assert f'href="/chats/{chat}"' in form  # Cancel without JavaScript: back to the chat


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [("   \n ", 422, "Type a message first."), ("x" * 40, 422, "at most 30 characters")],
    ids=["blank", "too-long"],
)
def test_a_bad_edit_is_refused_with_the_text_kept(
    make_ui: Callable[..., LiveServer],
    fake_db: FakeDb,
    content: str,
    status: int,
    reason: str,
    htmx: bool,
) -> None:
    server = make_ui(max_message_chars=30)
    b = Browser(server.url)
    try:
        b.login("Ada")
        chat = b.new_chat()
        q1, _ = answered(b, chat, "Short")
        before = {k: dict(v) for k, v in fake_db.messages.items()}
        resp = b.post(f"/chats/{chat}/messages/{q1}/edit", {"content": content}, htmx=htmx)
        assert resp.status_code == status and reason in resp.text
        if content.strip():
            assert content in resp.text  # nothing typed is lost
        if htmx:
            assert resp.headers["HX-Retarget"] == f"#msg-{q1}"
        assert fake_db.messages == before
    finally:
        b.close()


# --- regenerate --------------------------------------------------------------------------


def test_regenerate_makes_a_second_version_and_keeps_the_first(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    q1, a1 = answered(ada, chat, "Tell me")
    page = shown(ada, chat)
    assert 'class="regenerate"' in page and 'class="retry"' not in page
    fake_lm.tokens = ["Another", " answer"]
    resp = ada.post(f"/chats/{chat}/messages/{a1}/regenerate", htmx=True)
    assert resp.status_code == 200 and "sse-connect" in resp.text
    a2 = message_ids(resp.text)[-1]
    assert a2 != a1 and message_ids(resp.text, "user") == [q1]
    _, done = ada.follow(chat, a2)
    assert "Another answer" in done.data
    # Asked with the question only, not the answer it replaces.
    assert last_prompt(fake_lm) == [{"role": "user", "content": "Tell me"}]
    assert fake_db.messages[a1]["content"] == FULL
    assert fake_db.messages[a2]["parent_id"] == fake_db.messages[a1]["parent_id"] == q1

    page = shown(ada, chat)
    assert message_ids(page) == [a2] and switcher(page, a2) == "2 / 2"
    resp = ada.post(f"/chats/{chat}/messages/{a2}/version", {"version": "1"}, htmx=True)
    assert resp.status_code == 200 and message_ids(resp.text) == [a1]
    assert FULL in resp.text and switcher(resp.text, a1) == "1 / 2"
    assert message_ids(shown(ada, chat)) == [a1]


def test_regenerate_without_javascript_goes_to_the_streamed_page(
    ada: Browser, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    _, a1 = answered(ada, chat, "Tell me")
    resp = ada.post(f"/chats/{chat}/messages/{a1}/regenerate")
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}/live"
    # The streamed page (or, the answer done already, the chat page it leads to).
    live = ada.client.get(resp.headers["location"], follow_redirects=True)
    assert live.status_code == 200 and FULL in live.text
    answers = [m["id"] for m in fake_db.messages.values() if m["role"] == "assistant"]
    assert len(answers) == 2 and answers[0] == a1
    eventually(lambda: fake_db.messages[answers[1]]["status"] == "complete")
    page = shown(ada, chat)
    assert message_ids(page) == [answers[1]] and switcher(page, answers[1]) == "2 / 2"


def test_retry_is_only_for_an_attempt_that_left_nothing(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    _, a1 = answered(ada, chat, "Tell me")
    resp = ada.post(f"/chats/{chat}/messages/{a1}/retry")
    assert resp.status_code == 409 and "Regenerate" in resp.text


# --- continue ----------------------------------------------------------------------------


def test_continue_after_the_length_limit_appends_to_the_same_answer(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    fake_lm.finish_reason = "length"
    chat = ada.new_chat()
    _, a1 = answered(ada, chat, "Write a lot")
    page = shown(ada, chat)
    assert "Cut at the length limit" in page and 'class="continue"' in page
    revision = fake_db.messages[a1]["revision"]
    count = len(fake_db.messages)

    fake_lm.tokens = [" and", " more"]
    fake_lm.finish_reason = "stop"
    fake_lm.hold_after = 1
    resp = ada.post(f"/chats/{chat}/messages/{a1}/continue", htmx=True)
    assert resp.status_code == 200
    # The same answer, running again, its stream following on from the stored text.
    assert f'id="msg-{a1}"' in resp.text and f"stream?after={len(FULL)}" in resp.text
    assert FULL in resp.text
    assert fake_lm.held.wait(timeout=10)
    # A reload in the middle shows the text so far and follows from there.
    eventually(lambda: f"stream?after={len(FULL) + 4}" in shown(ada, chat))
    assert "Hello, world! and" in shown(ada, chat)
    fake_lm.release()
    _, done = ada.follow(chat, a1, after=len(FULL) + 4)
    assert done.data.count("Hello") == 1  # the stored part once, then what followed it
    assert "Hello, world! and more" in done.data and "Cut at the length limit" not in done.data
    assert fake_db.messages[a1]["content"] == FULL + " and more"
    assert fake_db.messages[a1]["status"] == "complete"
    assert fake_db.messages[a1]["finish_reason"] == "stop"
    assert len(fake_db.messages) == count  # an append, not a new message
    # The partial answer went to the model as the last, open assistant turn.
    assert last_prompt(fake_lm) == [
        {"role": "user", "content": "Write a lot"},
        {"role": "assistant", "content": FULL},
    ]
    # Its writes went on in revision order, after the ones before.
    revisions = [p["revision"] for mid, p in fake_db.patches if mid == a1]
    later = [r for r in revisions if r > revision]
    assert later and later == sorted(later) and fake_db.refused == []


def test_only_the_latest_answer_goes_on(ada: Browser, fake_db: FakeDb, fake_lm: FakeLm) -> None:
    fake_lm.finish_reason = "length"
    chat = ada.new_chat()
    _, a1 = answered(ada, chat, "One")
    _, a2 = answered(ada, chat, "Two")
    before = {k: dict(v) for k, v in fake_db.messages.items()}
    resp = ada.post(f"/chats/{chat}/messages/{a1}/continue")
    assert resp.status_code == 409 and "Only the latest answer" in resp.text
    assert fake_db.messages == before and fake_db.reopened == []
    # Both say they were cut; the page hides the earlier one's Continue (CSS), and the
    # latest one goes on.
    assert shown(ada, chat).count("Cut at the length limit") == 2
    assert ada.post(f"/chats/{chat}/messages/{a2}/continue").status_code == 303
    assert fake_db.reopened == [a2]


def test_continue_a_stopped_answer_then_stop_it_again(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    fake_lm.hold_after = 2
    chat = ada.new_chat()
    ada.send(chat, "Hi")
    assert fake_lm.held.wait(timeout=10)
    a1 = latest_answer(ada, chat)
    ada.post(f"/chats/{chat}/messages/{a1}/stop")
    assert fake_db.messages[a1]["status"] == "interrupted"
    assert fake_db.messages[a1]["content"] == "Hello, "

    # Without JavaScript: Continue goes to the page that streams the answer (held again
    # after two tokens: the fake's hold is not released until the test ends).
    fake_lm.held.clear()
    resp = ada.post(f"/chats/{chat}/messages/{a1}/continue")
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}/live"
    assert fake_lm.held.wait(timeout=10)
    stopped = ada.post(f"/chats/{chat}/messages/{a1}/stop", htmx=True)
    assert 'data-status="interrupted"' in stopped.text
    # Both runs' text, kept, in the same message.
    assert fake_db.messages[a1]["content"] == "Hello, Hello, "
    assert fake_db.reopened == [a1]
    assert last_prompt(fake_lm)[-1] == {"role": "assistant", "content": "Hello, "}


# --- refusals ----------------------------------------------------------------------------


def test_nothing_starts_while_an_answer_is_written(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    q1, a1 = answered(ada, chat, "First")
    fake_lm.hold_after = 1
    ada.send(chat, "Second")
    assert fake_lm.held.wait(timeout=10)
    before = {k: dict(v) for k, v in fake_db.messages.items() if v["id"] != latest(fake_db)}
    # An edit keeps what was typed, with the reason.
    resp = ada.post(f"/chats/{chat}/messages/{q1}/edit", {"content": "Typed while busy"})
    assert resp.status_code == 409
    assert "still being written" in resp.text and "Typed while busy" in resp.text
    resp = ada.post(f"/chats/{chat}/messages/{q1}/edit", {"content": "Typed while busy"}, htmx=True)
    assert resp.status_code == 409 and "Typed while busy" in resp.text
    for action, data in [("regenerate", {}), ("continue", {}), ("version", {"version": "1"})]:
        resp = ada.post(f"/chats/{chat}/messages/{a1}/{action}", data, htmx=True)
        assert resp.status_code == 409, action
        assert "still being written" in resp.text and resp.headers["HX-Retarget"] == "#flash"
    after = {k: v for k, v in fake_db.messages.items() if v["id"] != latest(fake_db)}
    assert after == before
    fake_lm.release()


def test_an_answer_written_on_a_branch_not_shown_still_holds_the_chat(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    q1, a1 = answered(ada, chat, "First")
    fake_lm.hold_after = 1
    assert ada.post(f"/chats/{chat}/messages/{a1}/regenerate").status_code == 303
    assert fake_lm.held.wait(timeout=10)
    running = latest(fake_db)
    # Another way to switch (a search result opened) shows version 1 meanwhile.
    fake_db.chats[chat]["current_leaf_id"] = a1
    assert message_ids(shown(ada, chat)) == [a1]
    resp = ada.post(f"/chats/{chat}/messages/{q1}/edit", {"content": "Edited meanwhile"})
    assert resp.status_code == 409 and "Edited meanwhile" in resp.text
    assert ada.post(f"/chats/{chat}/messages/{a1}/regenerate").status_code == 409
    resp = ada.send(chat, "Sent meanwhile")
    assert resp.status_code == 409 and "Sent meanwhile" in resp.text
    assert fake_db.messages[running]["status"] in ("pending", "streaming")
    assert len(fake_db.messages) == 3
    fake_lm.release()


def latest(fake_db: FakeDb) -> str:
    return str(max(fake_db.messages.values(), key=lambda m: m["created_at"])["id"])


def test_unknown_and_foreign_messages_are_404_and_change_nothing(
    browsers: Callable[[], Browser], fake_db: FakeDb
) -> None:
    ada, bob = browsers(), browsers()
    ada.login("Ada")
    bob.login("Bob")
    chat = ada.new_chat()
    q1, a1 = answered(ada, chat, "Private")
    before = {k: dict(v) for k, v in fake_db.messages.items()}
    unknown = "00000000-0000-4000-8000-000000000000"
    for who, target in [(bob, q1), (bob, a1), (ada, unknown)]:
        assert who.get(f"/chats/{chat}/messages/{target}/edit").status_code == 404
        for action, data in [
            ("edit", {"content": "mine now"}),
            ("regenerate", {}),
            ("continue", {}),
            ("version", {"version": "1"}),
        ]:
            resp = who.post(f"/chats/{chat}/messages/{target}/{action}", data)
            assert resp.status_code == 404, (action, target)
            assert "Private" not in resp.text
    assert fake_db.messages == before


def test_what_cannot_be_done_to_a_message_is_refused(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    q1, a1 = answered(ada, chat, "Question")
    before = {k: dict(v) for k, v in fake_db.messages.items()}
    cases = [
        (f"/chats/{chat}/messages/{a1}/edit", {"content": "x"}, 409, "Only your own messages"),
        (f"/chats/{chat}/messages/{q1}/regenerate", {}, 409, "Only an answer"),
        (f"/chats/{chat}/messages/{q1}/continue", {}, 409, "Only an answer"),
        # A complete answer that was not cut: nothing to continue.
        (f"/chats/{chat}/messages/{a1}/continue", {}, 409, "cut at the length limit"),
        (f"/chats/{chat}/messages/{a1}/version", {"version": "2"}, 422, "1 version(s)"),
        (f"/chats/{chat}/messages/{a1}/version", {"version": "0"}, 422, "no 0"),
        (f"/chats/{chat}/messages/{a1}/version", {"version": "two"}, 422, "number"),
        (f"/chats/{chat}/messages/{a1}/version", {}, 422, "number"),
    ]
    for url, data, status, text in cases:
        resp = ada.post(url, data)
        assert resp.status_code == status and text in resp.text, (url, data, resp.text[-500:])
    assert ada.get(f"/chats/{chat}/messages/{a1}/edit").status_code == 409
    assert fake_db.messages == before


def test_every_tree_route_checks_the_csrf_token(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    q1, a1 = answered(ada, chat, "Question")
    before = {k: dict(v) for k, v in fake_db.messages.items()}
    for path in [
        f"/chats/{chat}/messages/{q1}/edit",
        f"/chats/{chat}/messages/{a1}/regenerate",
        f"/chats/{chat}/messages/{a1}/continue",
        f"/chats/{chat}/messages/{a1}/version",
    ]:
        resp = ada.client.post(path, data={"content": "x", "version": "1", "csrf_token": "bad"})
        assert resp.status_code == 403, path
    assert fake_db.messages == before
