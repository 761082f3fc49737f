"""Slash commands, plan mode and model titles over the real services (nginx, chat_ui,
db_api on SQLite, lm_api with real llama.cpp on several GGUF models): every command with
and without htmx, nothing of it reaching the model (lm_api's counters), `/model` choosing
the model of the next answer, plan mode with Stop during the plan and a reload during the
answer, and titles written by the model that never replace a name the person gave."""

from __future__ import annotations

import html
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from parlor.stack import Stack
from tests.stack.conftest import WAIT_MS, stack_on
from tests.stack.test_browser import shot
from tests.stack.test_page import axe_violations
from tests.stack.visitor import Visitor
from tests.support import SHARED

pytestmark = pytest.mark.slow

STORIES = SHARED / "models" / "stories260K.gguf"
NOTE = re.compile(r'<div id="command-note" class="command-note[^"]*" role="\w+">(.*?)</div>', re.S)
COMPOSER = re.compile(r'<textarea id="composer-input"[^>]*>(.*?)</textarea>', re.S)
# The longest a test waits for something to happen (a deadline, not a timing check).
DEADLINE_S = 120.0
MAX_TOKENS = 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack serving three synthetic models (stories260K too where present), model
    titles on."""
    from parlor.synth import write_gguf

    models = tmp_path_factory.mktemp("command-models")
    default = write_gguf(models / "toy.gguf", preset="toy", seed=0)
    write_gguf(models / "other.gguf", preset="toy", seed=1)
    write_gguf(models / "small.gguf", preset="small")
    if STORIES.is_file():
        shutil.copy(STORIES, models / STORIES.name)
    work = tmp_path_factory.mktemp("command-stack")
    with stack_on(
        work,
        f"sqlite:///{work / 'parlor.db'}",
        default,
        MAX_TOKENS,
        lm_env={"LM_API_MODELS_DIR": str(models)},
        ui_env={"CHAT_UI_MODEL_TITLES": "true"},
    ) as s:
        yield s


@pytest.fixture
def visitor(stack: Stack) -> Iterator[Visitor]:
    v = Visitor(stack.url)
    v.login("Keyboard")
    yield v
    v.close()


def completions(stack: Stack) -> float:
    """Chat completion requests lm_api has answered, whatever their status."""
    text = httpx.get(stack.lm.url + "/metrics", trust_env=False).text
    return sum(float(v) for v in re.findall(r"^lm_api_requests_total\{[^}]*\} (\S+)$", text, re.M))


def db(stack: Stack, method: str, path: str, owner: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.token}", "X-Owner": owner}
    return httpx.request(method, stack.db.url + path, headers=headers, trust_env=False, **kw)


def owner_of(stack: Stack, chat_id: str) -> str:
    """The owner key db_api stores for the chat (read from its SQLite file)."""
    path = stack.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT owner FROM chats WHERE id = ? OR id = ?", (chat_id, chat_id.replace("-", ""))
        ).fetchone()
    assert row, chat_id
    return str(row[0])


def stored_chat(stack: Stack, chat_id: str) -> dict[str, Any]:
    resp = db(stack, "GET", f"/chats/{chat_id}", owner_of(stack, chat_id))
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def until(condition: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not before the deadline: {what}")
        time.sleep(0.05)  # poll interval


def note(text: str) -> str:
    match = NOTE.search(text)
    assert match, text[-2000:]
    return html.unescape(re.sub(r"<[^>]*>", " ", match.group(1)))


def composer(text: str) -> str:
    match = COMPOSER.search(text)
    assert match
    return html.unescape(match.group(1))


def command(v: Visitor, chat_id: str, text: str, *, htmx: bool) -> httpx.Response:
    path = f"/chats/{chat_id}/messages"
    if htmx:
        headers = {"HX-Request": "true", "X-CSRF-Token": v.csrf}
        return v.http.post(path, data={"content": text}, headers=headers)
    return v.post_form(path, content=text)


def finish(v: Visitor, chat_id: str, message_id: str) -> str:
    """Follow the answer to its end; the `done` bubble."""
    with v.stream(chat_id, message_id) as events:
        for event in events:
            if event.event == "done":
                return event.data
    raise AssertionError("the stream ended without done")


def loaded(stack: Stack) -> list[str]:
    health = httpx.get(stack.lm.url + "/health", trust_env=False).json()
    return list(health["loaded"])


def empty_chat(v: Visitor) -> str:
    return v.new_chat()


# --- commands ----------------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True], ids=["plain-form", "htmx"])
def test_every_command_and_nothing_reaches_the_model(
    stack: Stack, visitor: Visitor, htmx: bool
) -> None:
    chat = empty_chat(visitor)
    owner = owner_of(stack, chat)
    name = f"Poet {htmx}"
    created = db(
        stack,
        "POST",
        "/presets",
        owner,
        json={
            "name": name,
            "system_prompt": "Answer in verse.",
            "model": "other",
            "params": {"temperature": 0.5},
        },
    )
    assert created.status_code == 201, created.text
    visitor.get_page(f"/chats/{chat}")
    stack.wait_idle()
    before = completions(stack)

    def run(text: str, status: int = 200) -> str:
        resp = command(visitor, chat, text, htmx=htmx)
        assert resp.status_code == status, (text, resp.status_code, resp.text[-800:])
        if htmx:
            assert resp.headers["hx-retarget"] == "#composer"
        # Done: the box is empty; refused: what was typed is still there.
        assert composer(resp.text) == ("" if status == 200 else text)
        return note(resp.text)

    assert "/clear_role" in run("/help") and "/plan on [NAME] | off" in run("/help")
    listed = run("/models")
    assert "toy" in listed and "other" in listed and "small" in listed
    assert "other" in run("/model other")
    assert stored_chat(stack, chat)["model"] == "other"
    assert name in run("/roles")
    assert name in run(f"/role {name.lower()}")
    chat_now = stored_chat(stack, chat)
    assert chat_now["system_prompt"] == "Answer in verse."
    assert chat_now["params"] == {"temperature": 0.5}
    assert "Role cleared" in run("/clear_role")
    chat_now = stored_chat(stack, chat)
    assert (chat_now["system_prompt"], chat_now["model"], chat_now["params"]) == (None, None, {})
    assert "Plan mode is on" in run("/plan on")
    assert stored_chat(stack, chat)["params"] == {"plan_mode": True}
    assert "off" in run("/plan off")
    assert stored_chat(stack, chat)["params"] == {"plan_mode": False}
    assert "Quiet title" in run("/title  Quiet   title")
    chat_now = stored_chat(stack, chat)
    assert (chat_now["title"], chat_now["title_source"]) == ("Quiet title", "user")

    # Bad commands and arguments: refused, listed, kept, nothing changed.
    assert "/model NAME" in run("/modle other", 422)
    assert "toy" in run("/model nope", 422)
    assert name in run("/role Nobody", 422)
    assert "/plan off" in run("/plan maybe", 422)
    assert "/title TEXT" in run("/title", 422)
    assert "at most" in run("/title " + "x" * 300, 422)
    chat_now = stored_chat(stack, chat)
    assert chat_now["title"] == "Quiet title" and chat_now["model"] is None
    assert chat_now["params"] == {"plan_mode": False} and chat_now["messages"] == []

    # /clear: a new empty chat with the same settings.
    command(visitor, chat, "/model other", htmx=htmx)
    resp = command(visitor, chat, "/clear", htmx=htmx)
    location = resp.headers["hx-redirect" if htmx else "location"]
    new = re.fullmatch(r"/chats/([0-9a-f-]{36})\?note=cleared", location)
    assert new, location
    assert "same model" in note(visitor.get_page(location).text)
    copied = stored_chat(stack, new.group(1))
    assert copied["model"] == "other" and copied["params"] == {"plan_mode": False}
    assert copied["messages"] == []

    # Not one request reached the model, and no turn was stored.
    assert completions(stack) == before
    assert stored_chat(stack, chat)["messages"] == []


def test_a_path_is_a_message(stack: Stack, visitor: Visitor) -> None:
    chat = empty_chat(visitor)
    stack.wait_idle()
    before = completions(stack)
    answer = visitor.send(chat, "/etc/hosts please explain")
    assert 'data-status="complete"' in finish(visitor, chat, answer)
    assert completions(stack) >= before + 1
    assert stored_chat(stack, chat)["messages"][0]["content"] == "/etc/hosts please explain"


def test_model_chooses_the_model_of_the_next_answer(stack: Stack, visitor: Visitor) -> None:
    target = STORIES.stem if STORIES.is_file() else "other"
    chat = empty_chat(visitor)
    for model in (target, "toy"):
        assert command(visitor, chat, f"/model {model}", htmx=False).status_code == 200
        answer = visitor.send(chat, f"Which model answers? ({model})")
        assert 'data-status="complete"' in finish(visitor, chat, answer)
        stack.wait_idle()
        # lm_api keeps one model loaded: the one that wrote this answer.
        assert loaded(stack) == [model]


# --- plan mode ---------------------------------------------------------------------------


def plan_chat(stack: Stack, v: Visitor, planner: str, model: str) -> str:
    chat = empty_chat(v)
    assert command(v, chat, f"/plan on {planner}", htmx=False).status_code == 200
    assert command(v, chat, f"/model {model}", htmx=False).status_code == 200
    params = stored_chat(stack, chat)["params"]
    assert params == {"plan_mode": True, "planner_model": planner}
    # The first message names the chat (so no model title is asked for in these tests).
    assert command(v, chat, "/title Plans", htmx=False).status_code == 200
    return chat


def test_plan_mode_end_to_end(stack: Stack, visitor: Visitor) -> None:
    chat = plan_chat(stack, visitor, planner="other", model="toy")
    stack.wait_idle()
    before = completions(stack)
    answer = visitor.send(chat, "How do rivers form?")
    kinds: list[str] = []
    with visitor.stream(chat, answer) as events:
        for event in events:
            kinds.append(event.event)
            if event.event == "done":
                done = event.data
                break
    assert 'data-status="complete"' in done and 'class="msg-plan"' in done
    stored = next(m for m in stored_chat(stack, chat)["messages"] if m["id"] == answer)
    assert stored["plan"] and stored["content"] and stored["status"] == "complete"
    assert html.escape(stored["plan"].split()[0]) in done
    # Two passes: the plan, then the answer.
    assert completions(stack) == before + 2
    page = visitor.get_page(f"/chats/{chat}").text
    assert '<details class="msg-plan">' in page


def test_stop_during_the_plan_stops_both(stack: Stack, visitor: Visitor) -> None:
    chat = plan_chat(stack, visitor, planner="small", model="toy")
    stack.wait_idle()
    before = completions(stack)
    answer = visitor.send(chat, "Tell me a long story")
    with visitor.stream(chat, answer) as events:
        for event in events:
            if event.event == "plan" and event.data:
                break
            assert event.event not in ("token", "block", "done"), event.event
    stopped = visitor.stop(chat, answer)
    assert stopped.status_code in (200, 303)
    stack.wait_idle()
    stored = next(m for m in stored_chat(stack, chat)["messages"] if m["id"] == answer)
    assert stored["status"] == "interrupted" and stored["reason"] == "stopped"
    assert stored["content"] == "" and stored["plan"]
    # Only the plan was asked for: the answer never started.
    assert completions(stack) == before + 1
    page = visitor.get_page(f"/chats/{chat}").text
    assert 'data-status="interrupted"' in page and '<details class="msg-plan">' in page


def test_reload_during_the_answer_after_the_plan(stack: Stack, visitor: Visitor) -> None:
    chat = plan_chat(stack, visitor, planner="toy", model="small")
    answer = visitor.send(chat, "Explain the tides")
    with visitor.stream(chat, answer) as events:
        for event in events:
            if event.event in ("token", "block"):
                break
            assert event.event != "done"
    # Reload mid-answer: the plan is shown whole, the answer so far, and it goes on.
    page = visitor.get_page(f"/chats/{chat}").text
    match = re.search(rf'id="plan-{answer}"[^>]*>([^<]+)</div>', page)
    assert match, "the reloaded page shows no plan"
    stream = re.search(
        rf'sse-connect="(/chats/{chat}/messages/{answer}/stream\?after=(\d+))"', page
    )
    assert stream, "the answer is not running any more"
    with visitor.http.stream("GET", html.unescape(stream.group(1))) as resp:
        body = resp.read().decode()
    assert "event: done" in body and 'data-status="complete"' in body
    stored = next(m for m in stored_chat(stack, chat)["messages"] if m["id"] == answer)
    assert stored["status"] == "complete" and stored["plan"]
    assert html.unescape(match.group(1)) == stored["plan"][: len(html.unescape(match.group(1)))]


# --- titles ------------------------------------------------------------------------------


def test_the_model_titles_a_new_chat(stack: Stack, visitor: Visitor) -> None:
    stack.wait_idle()
    before = completions(stack)
    resp = visitor.post_form("/chats", content="Where do comets come from?")
    assert resp.status_code == 303
    chat = re.search(r"/chats/([0-9a-f-]{36})", resp.headers["location"])
    assert chat
    chat_id = chat.group(1)
    # The answer, then the title: two requests to the model.
    until(lambda: completions(stack) == before + 2, "the title request")
    until(lambda: stored_chat(stack, chat_id)["title_source"] == "model", "a model title")
    title = stored_chat(stack, chat_id)["title"]
    assert title and title != "Where do comets come from?" and len(title) <= 60
    assert "\n" not in title and len(title.split()) <= 8
    assert html.escape(title) in visitor.get_page("/chats").text


def test_a_name_the_person_gave_is_never_replaced(stack: Stack, visitor: Visitor) -> None:
    stack.wait_idle()
    before = completions(stack)
    chat = empty_chat(visitor)
    assert command(visitor, chat, "/model small", htmx=False).status_code == 200
    answer = visitor.send(chat, "A first question")
    # Renamed while the first answer is written (the rename form, as a person would).
    assert visitor.post_form(f"/chats/{chat}/rename", title="Mine").status_code == 303
    assert 'data-status="complete"' in finish(visitor, chat, answer)
    # The model was asked for a title after the answer ...
    until(lambda: completions(stack) == before + 2, "the title request")
    stack.wait_idle()
    # ... and the person's name stays (db_api refused the model's).
    visitor.get_page(f"/chats/{chat}")
    stored = stored_chat(stack, chat)
    assert (stored["title"], stored["title_source"]) == ("Mine", "user")


# --- in Chromium -------------------------------------------------------------------------


def test_suggestions_and_a_command_in_the_browser(browser: Any, stack: Stack) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(stack.url + "/")
        page.fill("#name", "Chromium")
        page.click("#login-button")
        expect(page).to_have_url(re.compile(r".*/chats$"))
        visitor_chat = page.request.post(
            stack.url + "/chats",
            form={
                "csrf_token": page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
            },
            max_redirects=0,
        )
        location = visitor_chat.headers["location"]
        page.goto(stack.url + location)
        stack.wait_idle()
        before = completions(stack)

        box = page.locator("#composer-input")
        box.press_sequentially("/pl")
        expect(page.locator("#command-suggestions .command-suggestion")).to_have_count(1)
        shot(page, "command-suggestions")
        found = {"suggestions": axe_violations(page)}
        suggestion = page.locator("#command-suggestions .command-suggestion")
        expect(suggestion).to_have_count(1, timeout=WAIT_MS)
        expect(suggestion).to_contain_text("/plan on [NAME] | off")
        box.press("Tab")  # takes the suggestion
        expect(box).to_have_value("/plan ")
        expect(page.locator("#command-suggestions .command-suggestion")).to_have_count(0)
        box.press_sequentially("on")
        box.press("Enter")
        expect(page.locator("#command-note")).to_contain_text("Plan mode is on")
        expect(page.locator("#composer-input")).to_have_value("")
        assert page.locator("#messages .msg").count() == 0

        # From the keyboard alone: ArrowDown into the list, Enter takes one.
        box = page.locator("#composer-input")
        box.press_sequentially("/mo")
        expect(page.locator("#command-suggestions .command-suggestion")).to_have_count(2)
        box.press("ArrowDown")
        expect(page.locator("#command-suggestions .command-suggestion").first).to_be_focused()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        expect(box).to_have_value("/model ")
        expect(box).to_be_focused()
        # Then the models, as lm_api lists them; typing narrows them, Tab takes one.
        options = page.locator("#command-suggestions .command-suggestion")
        expect(options.filter(has_text="/model small")).to_have_count(1)
        box.press_sequentially("oth")
        expect(options).to_have_count(1)
        expect(options).to_contain_text("/model other")
        box.press("Tab")
        expect(box).to_have_value("/model other")
        box.press("Enter")
        expect(page.locator("#command-note")).to_contain_text("now answers with other")
        box = page.locator("#composer-input")
        box.press_sequentially("/model nope")
        box.press("Enter")
        expect(page.locator("#command-note")).to_contain_text("no model named")
        expect(page.locator("#composer-input")).to_have_value("/model nope")

        chat_id = location.rsplit("/", 1)[1]
        stored = stored_chat(stack, chat_id)
        assert stored["params"] == {"plan_mode": True} and stored["model"] == "other"
        assert stored["messages"] == [] and completions(stack) == before
        shot(page, "command-note")
        found["refused note"] = axe_violations(page)

        # Plan mode in the page: the plan folded above the answer.
        box.fill("/title Browser plans")
        box.press("Enter")
        expect(page.locator("#chat-heading")).to_have_text("Browser plans")
        page.locator("#composer-input").fill("Why is the sky blue?")
        page.locator("#composer-input").press("Enter")
        answer = page.locator('#messages .msg-assistant[data-status="complete"]')
        expect(answer).to_have_count(1)
        plan = answer.locator("details.msg-plan")
        expect(plan).to_be_visible()
        expect(plan.locator(".plan-body")).to_be_hidden()  # folded
        plan.locator("summary").click()
        expect(plan.locator(".plan-body")).to_be_visible()
        assert plan.locator(".plan-body").inner_text().strip()
        shot(page, "plan-mode")
        found["plan"] = axe_violations(page)
        assert {where: v for where, v in found.items() if v} == {}
        stack.wait_idle()
        assert completions(stack) == before + 2
    finally:
        context.close()
