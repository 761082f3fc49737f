"""Faults in the middle of an answer, against the real services: what the page was shown,
and what the database holds afterwards (every question, every answer's final text and
its true status), with no response >= 500 on the visitor's side.

Each scenario runs PARLOR_FAULT_RUNS times (1 by default); `bench/reliability.py`
counts how many held.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from chat_ui.render import markdown_html
from tests.faults.fake_openai import STORABLE
from tests.faults.harness import Answer, FaultStack, Visitor, eventually

pytestmark = pytest.mark.slow

# Enough streamed text to be sure the answer is in its middle.
MIDWAY = 12


def stored_turn(stack: FaultStack, visitor: Visitor, answer: Answer) -> dict[str, Any]:
    """The stored answer, once settled; its question must be stored before it."""
    owner = visitor.owner()
    message = stack.storage.settled(owner, answer.message_id)
    chat = stack.storage.chat(owner, answer.chat_id)
    ids = [m["id"] for m in chat["messages"]]
    assert answer.message_id in ids
    question = chat["messages"][ids.index(answer.message_id) - 1]
    assert (question["role"], question["content"]) == ("user", answer.question)
    return message


def test_model_server_killed_mid_answer(healed: FaultStack, run: int) -> None:
    v = healed.visitor(f"lm-killed-{run}")
    answer = v.send(v.new_chat(), "Tell me a long story.")
    with v.events(answer) as events:
        assert v.midway(answer, events, MIDWAY), answer.done_html
        healed.lm.kill()
        assert v.follow(answer, events)
    assert (answer.done_status, answer.done_reason) == ("error", "model_unreachable")
    stored = stored_turn(healed, v, answer)
    assert (stored["status"], stored["reason"]) == ("error", "model_unreachable")
    assert stored["content"] == answer.streamed and len(answer.streamed) >= MIDWAY
    assert v.server_errors() == []


def test_storage_killed_mid_answer_and_back_after_it_ends(healed: FaultStack, run: int) -> None:
    v = healed.visitor(f"db-killed-{run}")
    answer = v.send(v.new_chat(), "Tell me a long story.")
    with v.events(answer) as events:
        assert v.midway(answer, events, MIDWAY), answer.done_html
        healed.db.kill()
        assert v.follow(answer, events)
    # The whole answer was shown; the page says it is not saved yet.
    assert answer.done_status == "complete" and "Saving is pending" in answer.done_html
    bubble = v.http.get(
        f"/chats/{answer.chat_id}/messages/{answer.message_id}", headers={"HX-Request": "true"}
    )
    assert bubble.status_code == 200 and "Saving is pending" in bubble.text
    healed.db.start()
    stored = stored_turn(healed, v, answer)
    assert stored["status"] == "complete" and stored["content"] == answer.streamed
    eventually(
        lambda: (
            "Saving is pending"
            not in v.http.get(
                f"/chats/{answer.chat_id}/messages/{answer.message_id}",
                headers={"HX-Request": "true"},
            ).text
        ),
        what="the page's bubble saved",
    )
    assert v.server_errors() == []


def test_slow_storage_keeps_what_was_shown(healed: FaultStack, run: int) -> None:
    """db_api's traffic held 0-300 ms each way: answers shown complete are stored
    complete, with the text shown (a late partial write never wins)."""
    healed.proxy.enabled = True
    visitors = [healed.visitor(f"slow-{run}-{i}") for i in range(3)]

    def converse(v: Visitor) -> list[Answer]:
        chat = v.new_chat()
        answers = []
        for question in ("First question.", "Second question."):
            answer = v.send(chat, question)
            with v.events(answer) as events:
                assert v.follow(answer, events)
            answers.append(answer)
        return answers

    with concurrent.futures.ThreadPoolExecutor(len(visitors)) as pool:
        results = list(pool.map(converse, visitors))
    healed.proxy.enabled = False
    for v, answers in zip(visitors, results, strict=True):
        for answer in answers:
            assert answer.done_status == "complete"
            stored = stored_turn(healed, v, answer)
            assert stored["status"] == "complete"
            if answer.streamed:  # followed while it was written
                assert stored["content"] == answer.streamed
            else:
                # A quick model can end the answer before its stream opens (the page
                # took its time through the slow storage): the `done` it got shows the
                # stored text, rendered.
                assert markdown_html(stored["content"]) in answer.done_html
        assert v.server_errors() == []


def test_database_connections_terminated_mid_answer(healed: FaultStack, run: int) -> None:
    if not healed.database_url.startswith("postgresql"):
        pytest.skip("pg_terminate_backend needs PostgreSQL (TEST_DATABASE_URL)")
    v = healed.visitor(f"pg-terminated-{run}")
    answer = v.send(v.new_chat(), "Tell me a long story.")
    engine = sa.create_engine(healed.database_url, isolation_level="AUTOCOMMIT")
    try:
        with v.events(answer) as events:
            assert v.midway(answer, events, MIDWAY), answer.done_html
            with engine.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert v.follow(answer, events)
    finally:
        engine.dispose()
    assert killed >= 1
    assert answer.done_status == "complete"
    stored = stored_turn(healed, v, answer)
    assert (stored["status"], stored["content"]) == ("complete", answer.streamed)
    assert v.server_errors() == []


def test_chat_ui_killed_mid_answer(healed: FaultStack, run: int) -> None:
    v = healed.visitor(f"ui-killed-{run}")
    answer = v.send(v.new_chat(), "Tell me a long story.")
    owner = v.owner()
    try:
        with v.events(answer) as events:
            assert v.midway(answer, events, MIDWAY), answer.done_html
            # Killed once part of the answer is stored (what a restart can show).
            eventually(lambda: healed.storage.message(owner, answer.message_id)["content"])
            healed.ui.kill()
            v.follow(answer, events)
    except httpx.HTTPError:
        pass  # the stream broke with the process: expected
    healed.ui.start()
    # Still logged in (the session is stored), and the answer says what happened.
    page = v.page(f"/chats/{answer.chat_id}")
    assert f'id="msg-{answer.message_id}"' in page
    assert 'data-reason="server_restarted"' in page
    stored = stored_turn(healed, v, answer)
    assert (stored["status"], stored["reason"]) == ("interrupted", "server_restarted")
    # What was stored and what was shown are the same text (either may run a little
    # further: the process died between a write and a send).
    shown, kept = answer.streamed, stored["content"]
    assert kept and kept[: len(shown)] == shown[: len(kept)]
    assert [s for s in v.server_errors() if not s[0].endswith("/stream")] == []


def test_browser_disconnects_mid_answer(healed: FaultStack, run: int) -> None:
    v = healed.visitor(f"gone-{run}")
    answer = v.send(v.new_chat(), "Tell me a long story.")
    with v.events(answer) as events:
        assert v.midway(answer, events, MIDWAY), answer.done_html
    # Nobody is listening: the answer goes on and is stored whole.
    stored = stored_turn(healed, v, answer)
    assert stored["status"] == "complete" and stored["completion_tokens"]
    again = Answer(answer.chat_id, answer.message_id, answer.question)
    with v.events(again) as events:
        assert v.follow(again, events)
    assert again.done_status == "complete"
    assert v.server_errors() == []


def test_model_server_stalls_mid_answer(healed: FaultStack, run: int) -> None:
    v = healed.visitor(f"lm-stalled-{run}")
    answer = v.send(v.new_chat(), "Tell me a long story.")
    with v.events(answer) as events:
        assert v.midway(answer, events, MIDWAY), answer.done_html
        healed.lm.pause()
        try:
            assert v.follow(answer, events)
        finally:
            healed.lm.resume()
    assert any("not answering" in notice for notice in answer.notices), answer.notices
    assert (answer.done_status, answer.done_reason) == ("error", "model_stalled")
    stored = stored_turn(healed, v, answer)
    assert (stored["status"], stored["reason"]) == ("error", "model_stalled")
    assert stored["content"] == answer.streamed
    assert v.server_errors() == []


def test_model_output_with_nul_and_lone_surrogates(garbage_stack: FaultStack, run: int) -> None:
    v = garbage_stack.visitor(f"garbage-{run}")
    answer = v.send(v.new_chat(), "Say something odd.")
    with v.events(answer) as events:
        assert v.follow(answer, events)
    assert answer.done_status == "complete"
    assert answer.streamed == STORABLE
    stored = stored_turn(garbage_stack, v, answer)
    assert (stored["status"], stored["content"]) == ("complete", STORABLE)
    assert v.server_errors() == []
