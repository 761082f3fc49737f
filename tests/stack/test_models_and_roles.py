"""Several models, per-chat settings and roles on the real services through nginx: lm_api
serving a models directory of two synthetic GGUFs (and stories260K where ../shared has
it), chat_ui's settings form and roles page over plain HTTP, and the model picker in
real Chromium. What reached lm_api is read from its /metrics (requests and the sampling
they set, per model); what the answer recorded from its stats line."""

from __future__ import annotations

import contextlib
import html
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parlor.paths import SHARED
from parlor.stack import Stack
from tests.stack.conftest import QUICK_TOKENS, stack_on
from tests.stack.visitor import Visitor
from tests.support import REPO, fresh_postgres_database, postgres_server_url

STORIES = SHARED / "models" / "stories260K.gguf"
SHOTS = REPO / "test-artifacts" / "screenshots"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Path:
    """alpha (the default), beta (other weights) and stories260K when present."""
    from parlor.synth import write_gguf

    models = tmp_path_factory.mktemp("several-models")
    shutil.copy(toy_model, models / "alpha.gguf")
    write_gguf(models / "beta.gguf", preset="toy", seed=1)
    if STORIES.is_file():
        shutil.copy(STORIES, models / "stories260K.gguf")
    return models


@contextlib.contextmanager
def several_models(work: Path, database_url: str, models: Path) -> Iterator[Stack]:
    """lm_api on the models directory, one model loaded at a time (a switch swaps them)."""
    with stack_on(
        work,
        database_url,
        models / "alpha.gguf",
        QUICK_TOKENS,
        lm_env={"LM_API_MAX_LOADED": "1", "LM_API_N_CTX": "512"},
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def models_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("models-stack")
    with several_models(work, f"sqlite:///{work / 'parlor.db'}", models_dir) as stack:
        yield stack


@pytest.fixture(scope="module")
def pg_models_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    server = postgres_server_url()
    if server is None:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL to run the stack on")
    work = tmp_path_factory.mktemp("models-pg-stack")
    with fresh_postgres_database(server) as url, several_models(work, url, models_dir) as stack:
        yield stack


@pytest.fixture(params=["models_stack", "pg_models_stack"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The stack on SQLite, then on PostgreSQL (skipped without TEST_DATABASE_URL)."""
    value: Stack = request.getfixturevalue(request.param)
    return value


def person(stack: Stack) -> Visitor:
    v = Visitor(stack.url)
    v.login(f"person-{uuid.uuid4().hex[:8]}")
    return v


@pytest.fixture
def visitor(models_stack: Stack) -> Iterator[Visitor]:
    v = person(models_stack)
    yield v
    v.close()


@pytest.fixture
def any_visitor(any_stack: Stack) -> Iterator[Visitor]:
    v = person(any_stack)
    yield v
    v.close()


def lm_sample(stack: Stack, name: str, model: str) -> float:
    """A per-model sample of lm_api's /metrics (0 when not exported yet)."""
    text = httpx.get(stack.lm.url + "/metrics", trust_env=False).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def answered(v: Visitor, chat: str, question: str) -> str:
    """Send, follow the answer's stream to its end; the stats line under it, as text."""
    message = v.send(chat, question)
    with v.stream(chat, message) as events:
        for event in events:
            if event.event == "done":
                assert 'data-status="complete"' in event.data, event.data[:500]
                break
        else:
            pytest.fail("the stream ended without a done event")
    page = v.get_page(f"/chats/{chat}").text
    bubble = page[page.index(f'id="msg-{message}"') :]
    stats = re.search(r'<p class="msg-stats".*?</p>', bubble, re.S)
    assert stats, "no stats line under the answer"
    return html.unescape(re.sub(r"<[^>]+>", "", stats.group(0)))


def model_options(page: str) -> list[str]:
    select = re.search(r'<select id="setting-model" name="model".*?</select>', page, re.S)
    assert select, page[:500]
    return re.findall(r'<option value="([^"]*)"', select.group(0))


def test_the_picker_lists_the_models_and_switching_makes_the_next_answer_that_models(
    models_stack: Stack, visitor: Visitor
) -> None:
    chat = visitor.new_chat()
    options = model_options(visitor.get_page(f"/chats/{chat}").text)
    assert {"", "alpha", "beta"} <= set(options)
    assert ("stories260K" in options) == STORIES.is_file()

    before = {m: lm_sample(models_stack, "lm_api_model_requests_total", m) for m in options}
    first = answered(visitor, chat, "Hello there")
    assert first.startswith("alpha") and f"{QUICK_TOKENS} tokens" in first
    assert lm_sample(models_stack, "lm_api_model_requests_total", "alpha") == before["alpha"] + 1

    saved = visitor.post_form(
        f"/chats/{chat}/settings", model="beta", temperature="0.7", top_p="", max_tokens="5"
    )
    assert saved.status_code == 303, saved.text[:500]
    temperature = lm_sample(models_stack, "lm_api_requested_temperature_sum", "beta")
    second = answered(visitor, chat, "And now?")
    assert second.startswith("beta"), second
    # The synthetic models always write exactly max_tokens tokens.
    assert "temperature 0.7" in second and "max 5 tokens" in second and "· 5 tokens" in second
    assert lm_sample(models_stack, "lm_api_model_requests_total", "beta") == before["beta"] + 1
    assert lm_sample(models_stack, "lm_api_requested_temperature_sum", "beta") == pytest.approx(
        temperature + 0.7
    )
    # Still one answer for alpha: the switch sent nothing more its way.
    assert lm_sample(models_stack, "lm_api_model_requests_total", "alpha") == before["alpha"] + 1


def test_stories260k_answers_when_chosen(models_stack: Stack, visitor: Visitor) -> None:
    if not STORIES.is_file():
        pytest.skip(f"{STORIES} is absent")
    chat = visitor.new_chat()
    visitor.get_page(f"/chats/{chat}")
    assert visitor.post_form(f"/chats/{chat}/settings", model="stories260K").status_code == 303
    count = lm_sample(models_stack, "lm_api_model_requests_total", "stories260K")
    assert answered(visitor, chat, "Once upon a time").startswith("stories260K")
    assert lm_sample(models_stack, "lm_api_model_requests_total", "stories260K") == count + 1


@pytest.mark.parametrize(
    "bad",
    [
        {"model": "no-such-model"},
        {"temperature": "-1"},
        {"temperature": "99"},
        {"top_p": "2"},
        {"max_tokens": "0"},
        {"max_tokens": "99999999"},
        {"temperature": "hot"},
    ],
)
def test_bad_settings_are_a_4xx_and_change_nothing(
    any_visitor: Visitor, bad: dict[str, str]
) -> None:
    visitor = any_visitor
    chat = visitor.new_chat()
    visitor.get_page(f"/chats/{chat}")
    good = {"model": "beta", "temperature": "0.4", "top_p": "", "max_tokens": "9"}
    assert visitor.post_form(f"/chats/{chat}/settings", **good).status_code == 303
    refused = visitor.post_form(f"/chats/{chat}/settings", **{**good, **bad})
    assert refused.status_code == 422, refused.text[:500]
    assert "Nothing was changed" in refused.text
    page = visitor.get_page(f"/chats/{chat}").text
    assert '<option value="beta" selected>' in page
    assert 'id="setting-temperature"' in page and 'value="0.4"' in page and 'value="9"' in page


def role_id(v: Visitor, name: str) -> str:
    page = v.get_page("/roles").text
    found = re.search(
        rf'data-role-id="([0-9a-f-]+)">\s*<div class="role-head">\s*'
        rf'<strong class="role-name">{re.escape(name)}</strong>',
        page,
    )
    assert found, page[-2000:]
    return found.group(1)


def test_roles_created_applied_and_edited(any_stack: Stack, any_visitor: Visitor) -> None:
    models_stack, visitor = any_stack, any_visitor
    visitor.get_page("/roles")
    made = visitor.post_form(
        "/roles", name="Terse", system_prompt="Answer briefly.", model="beta", temperature="0.2"
    )
    assert made.status_code == 303, made.text[:500]
    role = role_id(visitor, "Terse")

    # Applied to a chat: the next answer comes from its model with its settings.
    chat = visitor.new_chat()
    visitor.get_page(f"/chats/{chat}")
    assert visitor.post_form(f"/chats/{chat}/role", role=role).status_code == 303
    page = visitor.get_page(f"/chats/{chat}").text
    assert "Answer briefly." in page and '<option value="beta" selected>' in page
    temperature = lm_sample(models_stack, "lm_api_requested_temperature_sum", "beta")
    assert answered(visitor, chat, "Hi").startswith("beta · temperature 0.2")
    assert lm_sample(models_stack, "lm_api_requested_temperature_sum", "beta") == pytest.approx(
        temperature + 0.2
    )

    # Edited: the roles page shows the new settings; a chat started from it has them.
    visitor.get_page(f"/roles/{role}")
    changes = {"name": "Terse", "system_prompt": "One line only.", "model": "alpha"}
    edited = visitor.post_form(f"/roles/{role}", **changes, max_tokens="7")
    assert edited.status_code == 303, edited.text[:500]
    assert "alpha · max tokens 7" in visitor.get_page("/roles").text
    started = visitor.post_form(f"/roles/{role}/chat")
    assert started.status_code == 303
    new_chat = started.headers["location"].rsplit("/", 1)[1]
    assert "One line only." in visitor.get_page(f"/chats/{new_chat}").text
    assert answered(visitor, new_chat, "Hi").startswith("alpha · max 7 tokens · 7 tokens")


def test_bad_roles_are_refused_and_another_persons_role_is_a_404(
    any_stack: Stack, any_visitor: Visitor
) -> None:
    models_stack, visitor = any_stack, any_visitor
    visitor.get_page("/roles")
    assert visitor.post_form("/roles", name="Mine").status_code == 303
    duplicate = visitor.post_form("/roles", name="Mine", system_prompt="typed text")
    assert duplicate.status_code == 409
    assert "already have a role named" in html.unescape(duplicate.text)
    assert "typed text" in duplicate.text
    long_name = visitor.post_form("/roles", name="n" * 10_000)
    assert long_name.status_code == 422
    assert "at most 100 characters" in long_name.text
    assert visitor.post_form("/roles", name="Hot", temperature="99").status_code == 422
    page = visitor.get_page("/roles").text
    assert page.count('class="role-name"') == 1
    role = role_id(visitor, "Mine")

    other = Visitor(models_stack.url)
    try:
        other.login(f"other-{uuid.uuid4().hex[:8]}")
        assert "Mine" not in other.get_page("/roles").text
        assert other.http.get(f"/roles/{role}").status_code == 404
        assert other.post_form(f"/roles/{role}", name="Taken").status_code == 404
        assert other.post_form(f"/roles/{role}/delete").status_code == 404
        their_chat = other.new_chat()
        assert other.post_form(f"/chats/{their_chat}/role", role=role).status_code == 404
    finally:
        other.close()
    assert role_id(visitor, "Mine") == role

    # Deleted after its confirmation page.
    assert visitor.get_page(f"/roles/{role}/delete").status_code == 200
    assert visitor.post_form(f"/roles/{role}/delete").status_code == 303
    assert "No roles yet" in visitor.get_page("/roles").text


def test_the_model_select_in_chromium(browser: Any, models_stack: Stack) -> None:
    """Change the model with the select (htmx saves the panel in place), then the next
    answer's stats line names it and lm_api counted it."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    try:
        page.goto(models_stack.url + "/")
        page.fill("#name", f"chromium-{uuid.uuid4().hex[:8]}")
        page.click("#login-button")
        expect(page).to_have_url(re.compile(r".*/chats$"))
        page.fill("#composer-input", "First question")
        page.click("#send")
        expect(page.locator(".msg-assistant .msg-stats").first).to_contain_text("alpha")

        page.click("#chat-settings summary")
        page.select_option("#setting-model", "beta")
        page.fill("#setting-temperature", "0.9")
        page.click("#save-settings")
        expect(page.locator("#settings-saved")).to_be_visible()
        expect(page.locator("#setting-model")).to_have_value("beta")

        count = lm_sample(models_stack, "lm_api_model_requests_total", "beta")
        page.fill("#composer-input", "Second question")
        page.click("#send")
        stats = page.locator(".msg-assistant .msg-stats")
        expect(stats).to_have_count(2)
        expect(stats.nth(1)).to_contain_text("beta")
        expect(stats.nth(1)).to_contain_text("temperature 0.9")
        shot(page, "models-01-settings-and-stats")
        assert lm_sample(models_stack, "lm_api_model_requests_total", "beta") == count + 1

        # A bad value through the form: the message in the panel, the page unchanged.
        page.fill("#setting-temperature", "")
        page.evaluate("document.querySelector('#setting-temperature').removeAttribute('max')")
        page.fill("#setting-temperature", "99")
        page.click("#save-settings")
        expect(page.locator("#settings-error")).to_contain_text("Temperature")
        shot(page, "models-02-refused")
        page.reload()
        expect(page.locator("#setting-temperature")).to_have_value("0.9")

        # The roles page, with a role, and a chat started as it.
        page.goto(models_stack.url + "/roles")
        page.fill("#role-name", "Careful reviewer")
        page.fill("#role-system-prompt", "Review the code you are given, point by point.")
        page.select_option("#role-model", "beta")
        page.fill("#role-temperature", "0.3")
        page.click("#save-role")
        item = page.locator(".role-item", has_text="Careful reviewer")
        expect(item).to_contain_text("beta · temperature 0.3")
        shot(page, "models-03-roles")
        item.locator("button.role-chat").click()
        expect(page).to_have_url(re.compile(r".*/chats/[0-9a-f-]{36}$"))
        page.click("#chat-settings summary")
        expect(page.locator("#system-prompt")).to_have_value(
            "Review the code you are given, point by point."
        )
        expect(page.locator("#setting-model")).to_have_value("beta")
    finally:
        context.close()
