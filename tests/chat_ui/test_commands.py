"""Slash commands, plan mode and model titles in chat_ui, over the fakes: every command
with and without htmx, the bad arguments, and that nothing of it reaches the model."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest

from chat_ui import commands
from chat_ui.titles import clean_title
from tests.chat_ui.conftest import Browser, LiveServer, eventually, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm

NOTE = re.compile(
    r'<div id="command-note" class="command-note[^"]*" role="(\w+)">(.*?)</div>', re.S
)


@pytest.fixture
def ada(browser: Browser) -> Browser:
    browser.login("Ada")
    return browser


def note_of(page: str) -> tuple[str, str]:
    """(role, text) of the command note in a page or fragment."""
    match = NOTE.search(page)
    assert match, page[-3000:]
    return match.group(1), html.unescape(re.sub(r"<[^>]*>", " ", match.group(2)))


def composer_text(page: str) -> str:
    match = re.search(r'<textarea id="composer-input"[^>]*>(.*?)</textarea>', page, re.S)
    assert match
    return html.unescape(match.group(1))


def answered_chat(ada: Browser, fake_lm: FakeLm) -> str:
    """A chat with one finished answer."""
    chat = ada.new_chat()
    ada.send(chat, "first question")
    eventually(lambda: len(fake_lm.requests) == 1)
    page = ada.get(f"/chats/{chat}").text
    (answer,) = message_ids(page)
    ada.follow(chat, answer)
    return chat


# --- the parser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "word", "argument", "known"),
    [
        ("/help", "help", "", True),
        ("/HELP", "help", "", True),
        ("/model  big   one ", "model", "big one", True),
        ("/plan on", "plan", "on", True),
        ("/clear_role", "clear_role", "", True),
        ("/modle gpt", "modle", "gpt", False),
        ("/title two\nlines", "title", "two lines", True),
    ],
)
def test_commands_are_parsed(text: str, word: str, argument: str, known: bool) -> None:
    parsed = commands.parse(text)
    assert parsed is not None
    assert (parsed.word, parsed.argument, parsed.command is not None) == (word, argument, known)


@pytest.mark.parametrize(
    "text",
    ["/etc/hosts please explain", " /help", "hello /help", "/", "//comment", "/usr.local", "x"],
)
def test_messages_that_are_not_commands(text: str) -> None:
    assert commands.parse(text) is None


def test_suggestions_match_the_typed_prefix() -> None:
    assert [c.name for c in commands.suggest("/")] == [c.name for c in commands.COMMANDS]
    assert [c.name for c in commands.suggest("/mo")] == ["models", "model"]
    assert [c.name for c in commands.suggest("/CL")] == ["clear", "clear_role"]
    assert commands.suggest("/model x") == []
    assert commands.suggest("hello") == []
    assert commands.suggest("/etc/") == []


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ('"Rivers and Stones"', "Rivers and Stones"),
        ("Title: **A quiet day.**\nmore text", "A quiet day"),
        (
            "\n\n  one two three four five six seven eight nine ten",
            "one two three four five six seven eight",
        ),
        ("# ...", None),
        ("", None),
        ("x" * 200, "x" * 59 + "…"),
        ("bell\x07ring", "bell ring"),
    ],
)
def test_model_titles_are_cleaned(raw: str, title: str | None) -> None:
    assert clean_title(raw) == title


# --- each command, without and with htmx ------------------------------------------------------


def test_help_without_javascript_and_nothing_reaches_the_model(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    resp = ada.send(chat, "/help")
    assert resp.status_code == 200
    role, text = note_of(resp.text)
    assert role == "status"
    for c in commands.COMMANDS:
        assert c.usage in text
    assert "new, empty chat" in text and "begin it with a space" in text
    assert composer_text(resp.text) == ""
    # Not a turn, not a model call, not a title.
    assert fake_lm.requests == []
    assert [m for m in fake_db.messages.values() if m["chat_id"] == chat] == []
    assert fake_db.chats[chat]["title"] is None
    # Not stored: the next page has no note.
    assert 'id="command-note"' not in ada.get(f"/chats/{chat}").text


def test_help_with_htmx_answers_the_message_box(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    resp = ada.send(chat, "/help", htmx=True)
    assert resp.status_code == 200
    assert resp.headers["hx-retarget"] == "#composer"
    assert resp.headers["hx-reswap"] == "outerHTML"
    assert '<form id="composer"' in resp.text
    assert "/clear_role" in note_of(resp.text)[1]
    assert 'id="chat-heading"' in resp.text and 'hx-swap-oob="true"' in resp.text
    assert fake_lm.requests == []


def test_help_on_the_new_chat_page_makes_no_chat(ada: Browser, fake_db: FakeDb) -> None:
    resp = ada.post("/chats", {"content": "/help"})
    assert resp.status_code == 200 and "/model NAME" in note_of(resp.text)[1]
    assert fake_db.chats == {}
    resp = ada.post("/chats", {"content": "/plan on"})
    assert resp.status_code == 422
    assert "send a message first" in note_of(resp.text)[1]
    assert composer_text(resp.text) == "/plan on"
    assert fake_db.chats == {}
    # With htmx the message box is answered in place, and still posts to /chats.
    resp = ada.post("/chats", {"content": "/models"}, htmx=True)
    assert resp.status_code == 200 and resp.headers["hx-retarget"] == "#composer"
    assert 'action="/chats"' in resp.text and "fake-model" in note_of(resp.text)[1]
    assert fake_db.chats == {}


def test_unknown_command_answers_the_list_and_keeps_the_text(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    for htmx in (False, True):
        resp = ada.send(chat, "/modle big", htmx=htmx)
        assert resp.status_code == 422
        role, text = note_of(resp.text)
        assert role == "alert" and "/modle is not a command" in text and "/model NAME" in text
        assert composer_text(resp.text) == "/modle big"
    assert fake_lm.requests == [] and fake_db.chats[chat]["title"] is None


def test_a_path_is_sent_to_the_model(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    assert ada.send(chat, "/etc/hosts please explain").status_code == 303
    eventually(lambda: len(fake_lm.requests) == 1)
    assert fake_lm.requests[0]["messages"][-1]["content"] == "/etc/hosts please explain"


def test_models_and_model(ada: Browser, fake_lm: FakeLm, fake_db: FakeDb, ui: LiveServer) -> None:
    fake_lm.other_models = ["big-model.gguf", "Other"]
    ui.app.state.lm.forget_models()  # the list the login's page kept
    chat = ada.new_chat()
    text = note_of(ada.send(chat, "/models").text)[1]
    assert "fake-model" in text and "big-model.gguf" in text and "the default" in text

    for bad in ("/model", "/model nope"):
        resp = ada.send(chat, bad, htmx=True)
        assert resp.status_code == 422 and "big-model.gguf" in note_of(resp.text)[1]
        assert composer_text(resp.text) == bad
    assert fake_db.chats[chat]["model"] is None

    resp = ada.send(chat, "/model BIG-MODEL.gguf")
    assert resp.status_code == 200 and "big-model.gguf" in note_of(resp.text)[1]
    assert fake_db.chats[chat]["model"] == "big-model.gguf"
    assert fake_lm.requests == []
    # The next answer is asked of that model.
    ada.send(chat, "and now?")
    eventually(lambda: len(fake_lm.requests) == 1)
    assert fake_lm.requests[0]["model"] == "big-model.gguf"


def test_a_chat_without_a_model_is_answered_by_the_default(
    ada: Browser, fake_lm: FakeLm, ui: LiveServer
) -> None:
    """Not by the last model another chat (or a planner) asked for."""
    fake_lm.other_models = ["big"]
    ui.app.state.lm.forget_models()  # the list the login's page kept
    first = ada.new_chat()
    ada.send(first, "/model big")
    ada.send(first, "q")
    eventually(lambda: len(fake_lm.requests) == 1)
    ada.follow(first, message_ids(ada.get(f"/chats/{first}").text)[0])
    second = ada.new_chat()
    ada.send(second, "q")
    eventually(lambda: len(fake_lm.requests) == 2)
    assert [r["model"] for r in fake_lm.requests] == ["big", "fake-model"]


def test_model_when_the_model_server_is_away(ada: Browser, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    fake_lm.down = True
    resp = ada.send(chat, "/model x")
    assert resp.status_code == 503 and "cannot be reached" in note_of(resp.text)[1]
    assert composer_text(resp.text) == "/model x"


def test_roles_role_and_clear_role(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb, ui: LiveServer
) -> None:
    chat = ada.new_chat()
    assert "no roles yet" in note_of(ada.send(chat, "/roles").text)[1]
    assert "no role named" in note_of(ada.send(chat, "/role Poet").text)[1]
    fake_lm.other_models = ["big"]
    ui.app.state.lm.forget_models()  # the list the login's page kept
    owner = fake_db.chats[chat]["owner"]
    fake_db.presets = {
        p["id"]: p
        for p in [
            {
                "id": "00000000-0000-4000-8000-000000000001",
                "owner": owner,
                "name": "Poet",
                "system_prompt": "Answer in verse.",
                "model": "big",
                "params": {"temperature": 1.2},
            },
            {
                "id": "00000000-0000-4000-8000-000000000002",
                "owner": "someone else",
                "name": "Spy",
                "system_prompt": "secret",
                "model": None,
                "params": {},
            },
        ]
    }
    text = note_of(ada.send(chat, "/roles").text)[1]
    assert "Poet" in text and "Spy" not in text
    resp = ada.send(chat, "/role Spy", htmx=True)
    assert resp.status_code == 422 and "Poet" in note_of(resp.text)[1]
    assert ada.send(chat, "/role").status_code == 422

    ada.send(chat, "/plan on")
    resp = ada.send(chat, "/role poet")
    assert resp.status_code == 200 and "Poet" in note_of(resp.text)[1]
    stored = fake_db.chats[chat]
    assert stored["system_prompt"] == "Answer in verse." and stored["model"] == "big"
    assert stored["params"] == {"plan_mode": True, "temperature": 1.2}

    resp = ada.send(chat, "/clear_role", htmx=True)
    assert resp.status_code == 200 and "Role cleared" in note_of(resp.text)[1]
    stored = fake_db.chats[chat]
    assert stored["system_prompt"] is None and stored["model"] is None
    assert stored["params"] == {"plan_mode": True}
    assert fake_lm.requests == []


def test_plan_on_off_and_bad_arguments(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm, ui: LiveServer
) -> None:
    chat = ada.new_chat()
    for bad in ("/plan", "/plan maybe"):
        resp = ada.send(chat, bad)
        assert resp.status_code == 422 and "/plan on" in note_of(resp.text)[1]
    assert fake_db.chats[chat]["params"] == {}
    assert "Plan mode is on" in note_of(ada.send(chat, "/plan ON", htmx=True).text)[1]
    assert fake_db.chats[chat]["params"] == {"plan_mode": True}
    assert "off" in note_of(ada.send(chat, "/plan off").text)[1]
    assert fake_db.chats[chat]["params"] == {"plan_mode": False}
    # A planner model of its own: checked against the model server's list.
    fake_lm.other_models = ["Planner"]
    ui.app.state.lm.forget_models()  # the list the login's page kept
    for bad in ("/plan on nope", "/plan off Planner"):
        resp = ada.send(chat, bad, htmx=True)
        assert resp.status_code == 422 and composer_text(resp.text) == bad
    assert "Planner" in note_of(ada.send(chat, "/plan on nope").text)[1]
    assert fake_db.chats[chat]["params"] == {"plan_mode": False}
    assert "Planner writes" in note_of(ada.send(chat, "/plan on planner").text)[1]
    assert fake_db.chats[chat]["params"] == {"plan_mode": True, "planner_model": "Planner"}
    # Off keeps the planner for next time; plain "on" goes back to the chat's own model.
    ada.send(chat, "/plan off")
    assert fake_db.chats[chat]["params"] == {"plan_mode": False, "planner_model": "Planner"}
    assert "own model" in note_of(ada.send(chat, "/plan on").text)[1]
    assert fake_db.chats[chat]["params"] == {"plan_mode": True}
    assert fake_lm.requests == []


def test_title(ada: Browser, fake_db: FakeDb, fake_lm: FakeLm) -> None:
    chat = ada.new_chat()
    resp = ada.send(chat, "/title")
    assert resp.status_code == 422 and "/title TEXT" in note_of(resp.text)[1]
    resp = ada.send(chat, "/title " + "t" * 201)
    assert resp.status_code == 422 and "at most 200" in note_of(resp.text)[1]
    assert fake_db.chats[chat]["title"] is None
    resp = ada.send(chat, "/title  Trip   to Lyon", htmx=True)
    assert resp.status_code == 200
    assert fake_db.chats[chat]["title"] == "Trip to Lyon"
    assert fake_db.chats[chat]["title_source"] == "user"
    # The heading and the sidebar follow (out of band).
    assert re.search(r'<h1 id="chat-heading"[^>]*hx-swap-oob="true">Trip to Lyon</h1>', resp.text)
    assert 'id="sidebar"' in resp.text and fake_lm.requests == []


def test_clear_starts_a_new_chat_with_the_same_settings(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm, ui: LiveServer
) -> None:
    fake_lm.other_models = ["big"]
    ui.app.state.lm.forget_models()  # the list the login's page kept
    chat = answered_chat(ada, fake_lm)
    ada.send(chat, "/model big")
    ada.send(chat, "/plan on")
    ada.post(f"/chats/{chat}/system-prompt", {"system_prompt": "Be brief."})
    before = set(fake_db.chats)
    resp = ada.send(chat, "/clear")
    assert resp.status_code == 303
    (new,) = set(fake_db.chats) - before
    assert resp.headers["location"] == f"/chats/{new}?note=cleared"
    stored = fake_db.chats[new]
    assert (stored["model"], stored["system_prompt"], stored["params"]) == (
        "big",
        "Be brief.",
        {"plan_mode": True},
    )
    page = ada.get(resp.headers["location"]).text
    assert "same model, role and settings" in note_of(page)[1]
    assert message_ids(page) == []
    # The old chat is untouched, and the model was asked nothing more.
    assert len([m for m in fake_db.messages.values() if m["chat_id"] == chat]) == 2
    assert len(fake_lm.requests) == 1
    assert ada.send(new, "/clear", htmx=True).headers["hx-redirect"].startswith("/chats/")
    # A note key that is not one of Parlor's shows nothing.
    assert 'id="command-note"' not in ada.get(f"/chats/{new}?note=<b>hi</b>").text


def test_commands_need_the_csrf_token(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    resp = ada.client.post(f"/chats/{chat}/messages", data={"content": "/title Hacked"})
    assert resp.status_code == 403
    assert fake_db.chats[chat]["title"] is None


def test_commands_on_another_persons_chat_are_not_found(
    browsers: Callable[[], Browser], fake_db: FakeDb
) -> None:
    ada, bob = browsers(), browsers()
    ada.login("Ada")
    bob.login("Bob")
    chat = ada.new_chat()
    assert bob.send(chat, "/title Mine").status_code == 404
    assert fake_db.chats[chat]["title"] is None


def test_storage_away_keeps_the_command(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    fake_db.down = True
    resp = ada.send(chat, "/plan on", htmx=True)
    assert resp.status_code == 503
    assert composer_text(resp.text) == "/plan on"


def test_suggest_route(ada: Browser) -> None:
    resp = ada.get("/commands/suggest", params={"content": "/ro"}, headers={"HX-Request": "true"})
    assert resp.status_code == 200
    fills = re.findall(r'data-fill="([^"]*)"', resp.text)
    assert fills == ["/roles", "/role "]
    assert 'role="listbox"' in resp.text
    empty = ada.get("/commands/suggest", params={"content": "hello"})
    assert empty.status_code == 200 and "command-suggestion" not in empty.text


def test_suggested_arguments(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb, ui: LiveServer
) -> None:
    fake_lm.other_models = ["big-model.gguf", "bigger"]
    ui.app.state.lm.forget_models()  # the list the login's page kept
    chat = ada.new_chat()
    owner = fake_db.chats[chat]["owner"]
    fake_db.presets = {
        p["id"]: p
        for p in [
            {
                "id": "00000000-0000-4000-8000-000000000003",
                "owner": owner,
                "name": "Code reviewer",
                "system_prompt": None,
                "model": None,
                "params": {},
            },
        ]
    }

    def fills(text: str) -> list[str]:
        resp = ada.get("/commands/suggest", params={"content": text})
        assert resp.status_code == 200
        return [html.unescape(f) for f in re.findall(r'data-fill="([^"]*)"', resp.text)]

    assert fills("/model ") == ["/model fake-model", "/model big-model.gguf", "/model bigger"]
    assert fills("/model BIG") == ["/model big-model.gguf", "/model bigger"]
    assert fills("/role code r") == ["/role Code reviewer"]
    assert fills("/plan o") == ["/plan on", "/plan off"]
    assert fills("/plan on b") == ["/plan on big-model.gguf", "/plan on bigger"]
    # What is typed whole is not offered again (Tab leaves it alone).
    assert fills("/plan on") == [] and fills("/models") == []
    assert fills("/model") == ["/models", "/model "]
    assert fills("/title x") == [] and fills("/model nothing") == []
    # The model list is kept a while (LmApi.list_models): a model server gone away
    # meanwhile still has its models suggested.
    fake_lm.down = True
    assert "/model bigger" in fills("/model ")
    assert fake_lm.requests == []


def test_the_composer_asks_for_suggestions(ada: Browser) -> None:
    page = ada.get("/chats").text
    assert 'hx-get="/commands/suggest"' in page and 'id="command-suggestions"' in page


# --- plan mode ----------------------------------------------------------------------------


def test_plan_mode_plans_then_answers_with_the_plan(
    ada: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    ada.send(chat, "/plan on")
    ada.send(chat, "How do rivers form?")
    eventually(lambda: len(fake_lm.requests) == 2)
    planner, answerer = fake_lm.requests
    assert "plan" in planner["messages"][0]["content"]
    assert planner["messages"][-1] == {"role": "user", "content": "How do rivers form?"}
    assert "Hello, world!" in answerer["messages"][0]["content"]  # the plan, in context
    page = ada.get(f"/chats/{chat}").text
    (answer,) = message_ids(page)
    _shown, done = ada.follow(chat, answer)
    assert 'class="msg-plan"' in done.data and "Hello, world!" in done.data
    eventually(lambda: fake_db.messages[answer]["status"] == "complete")
    assert fake_db.messages[answer]["plan"] == "Hello, world!"
    assert fake_db.messages[answer]["content"] == "Hello, world!"


def test_plan_mode_without_javascript_shows_the_plan_as_it_is_written(
    ada: Browser, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    ada.send(chat, "/plan on")
    fake_lm.hold_after = 2
    assert ada.send(chat, "q").headers["location"] == f"/chats/{chat}/live"
    assert fake_lm.held.wait(10)
    with ada.client.stream("GET", f"/chats/{chat}/live") as page:
        assert page.status_code == 200
        received = ""
        chunks = page.iter_text()
        while "Hello, " not in received:
            received += next(chunks)
        # The plan so far, open, before any answer text.
        assert '<details class="msg-plan" open><summary>Plan</summary>' in received
        fake_lm.release()
        received += "".join(chunks)
    (answer,) = message_ids(received)
    live = received[received.index(f'<article id="live-{answer}"') :]
    live = live[: live.index(f'<article id="msg-{answer}"')]
    plan = re.search(r'<div class="plan-body">(.*?)</div></details><div class="md-tail">', live)
    assert plan and plan.group(1) == "Hello, world!"
    assert "Hello, world!" in live[plan.end() :]  # then the answer
    final = received[received.index(f'<article id="msg-{answer}"') :]
    assert 'data-status="complete"' in final and '<details class="msg-plan">' in final


def test_plan_mode_uses_the_planner_model(ada: Browser, fake_lm: FakeLm, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    fake_db.chats[chat]["params"] = {"plan_mode": True, "planner_model": "planner"}
    ada.send(chat, "q")
    eventually(lambda: len(fake_lm.requests) == 2)
    assert [r["model"] for r in fake_lm.requests] == ["planner", "fake-model"]


def test_stop_during_the_plan_stops_both(ada: Browser, fake_lm: FakeLm, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    ada.send(chat, "/plan on")
    fake_lm.hold_after = 2
    ada.send(chat, "q")
    assert fake_lm.held.wait(10)
    page = ada.get(f"/chats/{chat}").text
    (answer,) = message_ids(page)
    # A reload mid-plan shows the plan so far; the stream starts with it.
    assert re.search(rf'id="plan-{answer}"[^>]*>Hello, </div>', page)
    first = []
    for event in ada.events(f"/chats/{chat}/messages/{answer}/stream"):
        first.append(event)
        if len(first) == 2:
            break
    assert [e.event for e in first] == ["sync", "plan"] and first[1].data == "Hello, "
    resp = ada.post(f"/chats/{chat}/messages/{answer}/stop", {}, htmx=True)
    assert resp.status_code == 200 and 'data-status="interrupted"' in resp.text
    fake_lm.release()
    stored = fake_db.messages[answer]
    assert stored["status"] == "interrupted" and stored["content"] == ""
    assert stored["plan"] == "Hello, "
    assert len(fake_lm.requests) == 1  # the answer was never asked for


def test_retry_plans_again(ada: Browser, fake_lm: FakeLm, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    ada.send(chat, "/plan on")
    fake_lm.fail_after = 1
    ada.send(chat, "q")
    eventually(lambda: any(m["status"] == "error" for m in fake_db.messages.values()))
    (answer,) = message_ids(ada.get(f"/chats/{chat}").text)
    fake_lm.fail_after = None
    assert ada.post(f"/chats/{chat}/messages/{answer}/retry", {}).status_code == 303
    eventually(lambda: fake_db.messages[answer]["status"] == "complete")
    assert fake_db.messages[answer]["plan"] == "Hello, world!"


# --- model titles -------------------------------------------------------------------------


@pytest.fixture
def titling(make_ui: Callable[..., LiveServer]) -> Browser:
    ui = make_ui(model_titles=True)
    b = Browser(ui.url)
    b.login("Ada")
    return b


def test_the_model_titles_the_chat_after_the_first_answer(
    titling: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.tokens = ["Rivers", " of", " the", " world", "!"]
    chat = titling.new_chat()
    titling.send(chat, "How do rivers form in the mountains?")
    eventually(lambda: fake_db.chats[chat]["title_source"] == "model")
    assert fake_db.chats[chat]["title"] == "Rivers of the world"
    title_request = fake_lm.requests[1]
    assert "title" in title_request["messages"][0]["content"]
    assert "How do rivers form" in title_request["messages"][1]["content"]
    # Only after the first answer.
    titling.send(chat, "second")
    eventually(lambda: len(fake_lm.requests) == 3)
    titling.get(f"/chats/{chat}")
    assert len(fake_lm.requests) == 3
    assert "Rivers of the world" in titling.get("/chats").text


def test_a_name_the_person_gave_is_never_replaced(
    titling: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    fake_lm.hold_after = 2
    chat = titling.new_chat()
    titling.send(chat, "question")
    assert fake_lm.held.wait(10)
    titling.send(chat, "/title My own name")
    fake_lm.release()
    eventually(lambda: len(fake_lm.requests) == 2)  # the title was asked for ...
    # ... and its write came (first words, the person's name, the model's title) ...
    eventually(lambda: fake_db.calls.count(("PATCH", f"/chats/{chat}")) == 3)
    assert fake_db.chats[chat]["title"] == "My own name"  # ... and was refused
    assert fake_db.chats[chat]["title_source"] == "user"


def test_a_failed_title_keeps_the_first_words(
    titling: Browser, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat = titling.new_chat()
    fake_lm.hold_after = 2
    titling.send(chat, "What is a comet?")
    assert fake_lm.held.wait(10)
    # The answer is streaming already: the refusal is for the title's request.
    fake_lm.refusals = [(500, "internal", "boom")]
    fake_lm.release()
    eventually(lambda: fake_lm.refusals == [] and len(fake_lm.requests) == 2)
    assert fake_db.chats[chat]["title"] == "What is a comet?"
    assert fake_db.chats[chat]["title_source"] == "auto"
