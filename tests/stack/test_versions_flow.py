"""A conversation is a tree, over the real services through nginx, with plain HTTP forms
(what a browser without JavaScript sends): edit a question and switch back and forth,
regenerate an answer, continue an answer cut at the length limit. What db_api stores is
read through its own API; the synthetic model always answers exactly max_tokens tokens,
so every answer ends cut at the length limit."""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from parlor.stack import run_stack
from tests.stack.visitor import Visitor
from tests.support import Stack

pytestmark = pytest.mark.slow

# The session key run_stack gives chat_ui (to read the owner key from the cookie).
SECRET = str(inspect.signature(run_stack).parameters["secret_key"].default)
ARTICLE = re.compile(r'<article id="msg-([0-9a-f-]+)" class="msg msg-(user|assistant)')
SWITCHER = re.compile(r'<span class="version-count" aria-hidden="true">(\d+ / \d+)</span>')


@pytest.fixture(params=["quick_stack", "postgres_stack"], ids=["sqlite", "postgres"])
def stack(request: pytest.FixtureRequest) -> Stack:
    stack: Stack = request.getfixturevalue(request.param)
    return stack


class Person(Visitor):
    """A visitor who also reads what db_api stores for them."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack.url)
        self.db = httpx.Client(
            base_url=stack.db.url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30
        )

    def close(self) -> None:
        self.db.close()
        super().close()

    def owner(self) -> str:
        data = URLSafeTimedSerializer(SECRET, salt="parlor-session").loads(
            self.http.cookies["parlor"]
        )
        return hashlib.sha256(f"{data['k']}\0{data['n']}".encode()).hexdigest()

    def stored(self, message_id: str) -> dict[str, Any]:
        r = self.db.get(f"/messages/{message_id}", headers={"X-Owner": self.owner()})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def branch(self, chat_id: str) -> list[tuple[str, str]]:
        """The page's messages, in order: (id, role)."""
        return ARTICLE.findall(self.get_page(f"/chats/{chat_id}").text)

    def done(self, chat_id: str, message_id: str) -> str:
        """Follow the answer to its end; the `done` bubble."""
        with self.stream(chat_id, message_id) as events:
            for event in events:
                if event.event == "done":
                    assert 'data-status="complete"' in event.data, event.data[:500]
                    return event.data
        raise AssertionError("the stream ended without a done event")

    def ask(self, chat_id: str, text: str) -> tuple[str, str]:
        """Send, wait for the answer; (question id, answer id)."""
        answer = self.send(chat_id, text)
        self.done(chat_id, answer)
        question = [m for m, role in self.branch(chat_id) if role == "user"][-1]
        return question, answer

    def newest_answer(self, chat_id: str) -> str:
        return [m for m, role in self.branch(chat_id) if role == "assistant"][-1]


@pytest.fixture
def person(stack: Stack) -> Iterator[Person]:
    p = Person(stack)
    yield p
    p.close()


def switcher_of(page: str, message_id: str) -> str | None:
    bubble = page.split(f'id="msg-{message_id}"', 1)[1].split("</article>", 1)[0]
    match = SWITCHER.search(bubble)
    return match.group(1) if match else None


def test_edit_then_switch_back_and_forth(stack: Stack, person: Person) -> None:
    person.login("Tree editor")
    chat = person.new_chat()
    q1, a1 = person.ask(chat, "Tell me about rivers")
    q2, a2 = person.ask(chat, "And about stones?")
    old = {m: person.stored(m) for m in (q1, a1, q2, a2)}

    # The edit form, then the edit: the same words asked again as a new version.
    form = person.get_page(f"/chats/{chat}/messages/{q1}/edit")
    assert ">Tell me about rivers</textarea>" in form.text
    r = person.post_form(f"/chats/{chat}/messages/{q1}/edit", content="Tell me about rivers")
    assert r.status_code == 303 and r.headers["location"] == f"/chats/{chat}/live"
    new_answer = person.newest_answer(chat)
    person.done(chat, new_answer)
    branch = person.branch(chat)
    assert len(branch) == 2 and new_answer not in (a1, a2)
    new_q = branch[0][0]
    assert new_q != q1
    stored = person.stored(new_q)
    assert stored["parent_id"] is None and (stored["version"], stored["versions"]) == (2, 2)
    # Its answer was asked exactly what the first one was: the current branch only.
    assert person.stored(new_answer)["prompt_tokens"] == old[a1]["prompt_tokens"]
    page = person.get_page(f"/chats/{chat}").text
    assert switcher_of(page, new_q) == "2 / 2" and "And about stones?" not in page

    # Back to version 1: the old question and everything after it, untouched.
    r = person.post_form(f"/chats/{chat}/messages/{new_q}/version", version="1")
    assert r.status_code == 303 and r.headers["location"] == f"/chats/{chat}"
    assert person.branch(chat) == [(q1, "user"), (a1, "assistant"), (q2, "user"), (a2, "assistant")]
    for message_id, before in old.items():
        after = person.stored(message_id)
        assert (after["content"], after["status"]) == (before["content"], before["status"])
    assert switcher_of(person.get_page(f"/chats/{chat}").text, q1) == "1 / 2"

    # And forth again.
    r = person.post_form(f"/chats/{chat}/messages/{q1}/version", version="2")
    assert r.status_code == 303
    assert [m for m, _ in person.branch(chat)] == [new_q, new_answer]

    # A version out of range changes nothing (asked of the message shown, or of one of
    # the branch left, as a second tab would).
    for message_id in (new_q, q1):
        r = person.post_form(f"/chats/{chat}/messages/{message_id}/version", version="3")
        assert r.status_code == 422 and "there is no 3" in r.text
    assert [m for m, _ in person.branch(chat)] == [new_q, new_answer]


def test_regenerate_keeps_both_versions(stack: Stack, person: Person) -> None:
    person.login("Tree regenerator")
    chat = person.new_chat()
    question, first = person.ask(chat, "Say something")
    before = person.stored(first)
    r = person.post_form(f"/chats/{chat}/messages/{first}/regenerate")
    assert r.status_code == 303 and r.headers["location"] == f"/chats/{chat}/live"
    second = person.newest_answer(chat)
    assert second != first
    person.done(chat, second)
    again = person.stored(second)
    assert again["parent_id"] == before["parent_id"] == question
    assert (again["version"], again["versions"]) == (2, 2)
    assert again["sibling_ids"] == [first, second]
    # Asked with the question alone, not with the answer it stands beside.
    assert again["prompt_tokens"] == before["prompt_tokens"]
    kept = person.stored(first)
    assert (kept["content"], kept["status"]) == (before["content"], "complete")
    assert switcher_of(person.get_page(f"/chats/{chat}").text, second) == "2 / 2"
    r = person.post_form(f"/chats/{chat}/messages/{second}/version", version="1")
    assert r.status_code == 303 and [m for m, _ in person.branch(chat)] == [question, first]


def test_continue_after_a_length_cut_appends_to_the_same_answer(
    stack: Stack, person: Person
) -> None:
    person.login("Tree continuer")
    chat = person.new_chat()
    _, answer = person.ask(chat, "Write at length")
    cut = person.stored(answer)
    assert cut["finish_reason"] == "length" and cut["completion_tokens"] == stack.max_tokens
    page = person.get_page(f"/chats/{chat}").text
    assert "Cut at the length limit" in page and 'class="continue"' in page

    stack.wait_idle()
    tokens = stack.lm_metric("lm_api_completion_tokens_total")
    r = person.post_form(f"/chats/{chat}/messages/{answer}/continue")
    assert r.status_code == 303 and r.headers["location"] == f"/chats/{chat}/live"
    offsets: list[int] = []
    with person.stream(chat, answer) as events:
        for event in events:
            if event.event in ("token", "block") and event.id:
                offsets.append(int(event.id))
            if event.event == "done":
                assert 'data-status="complete"' in event.data
                break
    # Streamed from the start (after=0): the text already there, then what follows it.
    assert offsets == sorted(offsets) and all(o >= len(cut["content"]) for o in offsets)
    more = person.stored(answer)
    assert more["content"].startswith(cut["content"]) and len(more["content"]) > len(cut["content"])
    assert more["revision"] > cut["revision"] and more["finish_reason"] == "length"
    # The partial answer was part of the prompt; the model wrote max_tokens more.
    assert more["prompt_tokens"] > cut["prompt_tokens"]
    assert stack.lm_metric("lm_api_completion_tokens_total") == tokens + stack.max_tokens
    # The same message, not a new one.
    assert [m for m, role in person.branch(chat) if role == "assistant"] == [answer]
    assert more["versions"] == 1
