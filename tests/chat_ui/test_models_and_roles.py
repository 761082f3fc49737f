"""A chat's model and sampling settings, roles, and the stats line under an answer
(chat_ui over the fakes; tests/stack/test_models_and_roles.py runs them on the real
services)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest

from tests.chat_ui.conftest import Browser, LiveServer, eventually, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm

BIG = "big-careful-model"


@pytest.fixture
def ada(browser: Browser, fake_lm: FakeLm) -> Browser:
    fake_lm.other_models = [BIG]
    browser.login("Ada")
    return browser


@pytest.fixture
def bob(browsers: Callable[[], Browser]) -> Browser:
    b = browsers()
    b.login("Bob")
    return b


def model_options(page: str) -> list[str]:
    select = re.search(r'<select id="setting-model" name="model".*?</select>', page, re.S)
    assert select, page
    return re.findall(r'<option value="([^"]*)"', select.group(0))


def answer_and_wait(b: Browser, chat: str, fake_db: FakeDb, text: str = "hi") -> dict[str, object]:
    b.send(chat, text)
    answer = message_ids(b.get(f"/chats/{chat}").text)[-1]
    eventually(lambda: fake_db.messages[answer]["status"] == "complete")
    return fake_db.messages[answer]


def test_the_model_picker_lists_what_the_model_server_lists(ada: Browser) -> None:
    chat = ada.new_chat()
    assert model_options(ada.get(f"/chats/{chat}").text) == ["", "fake-model", BIG]


def test_saved_settings_reach_the_model_and_the_answer_records_them(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    form = {"model": BIG, "temperature": "0.3", "top_p": "0.9", "max_tokens": "77"}
    resp = ada.post(f"/chats/{chat}/settings", form)
    assert resp.status_code == 303 and resp.headers["location"] == f"/chats/{chat}"
    stored = fake_db.chats[chat]
    assert stored["model"] == BIG
    assert stored["params"] == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 77}
    page = ada.get(f"/chats/{chat}").text
    assert re.search(rf'<option value="{BIG}" selected>', page)
    assert 'value="0.3"' in page and 'value="77"' in page

    answer = answer_and_wait(ada, chat, fake_db)
    sent = fake_lm.requests[-1]
    assert sent["model"] == BIG
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.3, 0.9, 77)
    assert answer["model"] == BIG
    assert answer["params"] == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 77}
    stats = re.search(r'<p class="msg-stats".*?</p>', ada.get(f"/chats/{chat}").text, re.S)
    assert stats, "no stats line under the answer"
    line = html.unescape(re.sub(r"<[^>]+>", "", stats.group(0)))
    assert BIG in line and "temperature 0.3" in line and "top p 0.9" in line
    assert "max 77 tokens" in line and "4 tokens" in line and "first token" in line


def test_default_settings_send_no_sampling_and_the_stats_name_the_servers_model(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    answer = answer_and_wait(ada, chat, fake_db)
    sent = fake_lm.requests[-1]
    assert "temperature" not in sent and "top_p" not in sent
    assert answer["model"] == "fake-model" and answer["params"] == {}
    line = re.search(r'<p class="msg-stats".*?</p>', ada.get(f"/chats/{chat}").text, re.S)
    assert line and "fake-model" in line.group(0) and "temperature" not in line.group(0)


def test_switching_the_model_changes_the_next_answers_model(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    first = answer_and_wait(ada, chat, fake_db, "one")
    assert ada.post(f"/chats/{chat}/settings", {"model": BIG}).status_code == 303
    second = answer_and_wait(ada, chat, fake_db, "two")
    assert (first["model"], second["model"]) == ("fake-model", BIG)
    assert [r["model"] for r in fake_lm.requests] == ["fake-model", BIG]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "-1"),
        ("temperature", "99"),
        ("temperature", "warm"),
        ("temperature", "nan"),
        ("top_p", "0"),
        ("top_p", "1.5"),
        ("max_tokens", "0"),
        ("max_tokens", "10000000000000000000000"),
        ("max_tokens", "12.5"),
        ("model", "no-such-model"),
    ],
)
@pytest.mark.parametrize("htmx", [False, True])
def test_a_bad_setting_is_a_clear_4xx_and_changes_nothing(
    ada: Browser, fake_db: FakeDb, field: str, value: str, htmx: bool
) -> None:
    chat = ada.new_chat()
    ada.post(f"/chats/{chat}/settings", {"temperature": "0.5", "max_tokens": "100"})
    before = dict(fake_db.chats[chat])
    form = {"model": "", "temperature": "0.7", "top_p": "", "max_tokens": "64", field: value}
    resp = ada.post(f"/chats/{chat}/settings", form, htmx=htmx)
    assert resp.status_code == 422, resp.text
    assert fake_db.chats[chat] == before
    assert "Nothing was changed" in resp.text
    assert 'aria-invalid="true"' in resp.text
    # What was typed comes back.
    assert html.escape(value) in resp.text
    if htmx:
        assert resp.text.lstrip().startswith('<div id="chat-model-settings"')
    else:
        assert "<!doctype html>" in resp.text
        assert 'id="chat-settings" class="chat-settings" open' in resp.text


def test_htmx_save_swaps_the_panel_in_place(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    resp = ada.post(f"/chats/{chat}/settings", {"model": BIG, "temperature": "1"}, htmx=True)
    assert resp.status_code == 200
    assert 'id="settings-saved"' in resp.text
    assert fake_db.chats[chat]["params"] == {"temperature": 1.0}


def test_a_model_cannot_be_checked_while_the_server_is_away_but_the_current_one_stays(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat = ada.new_chat()
    ada.post(f"/chats/{chat}/settings", {"model": BIG})
    fake_lm.down = True
    resp = ada.post(f"/chats/{chat}/settings", {"model": "fake-model-2", "temperature": "1"})
    assert resp.status_code == 503 and fake_db.chats[chat]["params"] == {}
    resp = ada.post(f"/chats/{chat}/settings", {"model": BIG, "temperature": "1"})
    assert resp.status_code == 303 and fake_db.chats[chat]["params"] == {"temperature": 1.0}


def test_the_page_says_when_the_model_list_cannot_be_had(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm, ui: LiveServer
) -> None:
    fake_lm.down = True
    ui.app.state.lm.forget_models()  # the list the login's page kept
    chat = ada.new_chat()
    fake_db.chats[chat]["model"] = "kept-model"
    page = ada.get(f"/chats/{chat}").text
    assert 'id="models-away"' in page
    assert model_options(page) == ["", "kept-model"]


def test_reset_goes_back_to_the_defaults_and_keeps_other_settings(
    ada: Browser, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    ada.post(f"/chats/{chat}/settings", {"model": BIG, "temperature": "1.2"})
    fake_db.chats[chat]["params"]["plan_mode"] = True
    fake_db.chats[chat]["system_prompt"] = "Be terse."
    assert ada.post(f"/chats/{chat}/settings/reset").status_code == 303
    stored = fake_db.chats[chat]
    assert (stored["model"], stored["system_prompt"], stored["params"]) == (
        None,
        None,
        {"plan_mode": True},
    )


def test_another_persons_chat_settings_are_a_404(ada: Browser, bob: Browser) -> None:
    chat = ada.new_chat()
    assert bob.post(f"/chats/{chat}/settings", {"temperature": "1"}).status_code == 404


# --- roles -----------------------------------------------------------------------------


def create_role(b: Browser, name: str, **fields: str) -> str:
    resp = b.post("/roles", {"name": name, **fields})
    assert resp.status_code == 303, resp.text
    page = b.get("/roles").text
    found = re.search(
        rf'data-role-id="([0-9a-f-]+)">\s*<div class="role-head">\s*'
        rf'<strong class="role-name">{re.escape(html.escape(name))}</strong>',
        page,
    )
    assert found, page
    return found.group(1)


def test_roles_are_created_listed_edited_and_deleted(ada: Browser, fake_db: FakeDb) -> None:
    assert 'href="/roles"' in ada.get("/chats").text
    assert "No roles yet" in ada.get("/roles").text
    role = create_role(
        ada, "Pirate", system_prompt="Talk like a pirate.", model=BIG, temperature="1.1"
    )
    page = ada.get("/roles").text
    assert "Talk like a pirate." in page and f"{BIG} · temperature 1.1" in page
    edit = ada.get(f"/roles/{role}").text
    assert 'value="Pirate"' in edit and 'value="1.1"' in edit
    form = {"name": "Captain", "system_prompt": "Arr.", "model": "", "max_tokens": "50"}
    assert ada.post(f"/roles/{role}", form).status_code == 303
    stored = fake_db.presets[role]
    assert (stored["name"], stored["system_prompt"], stored["model"]) == ("Captain", "Arr.", None)
    assert stored["params"] == {"max_tokens": 50}
    confirm = ada.get(f"/roles/{role}/delete")
    assert confirm.status_code == 200 and "Captain" in confirm.text
    assert ada.post(f"/roles/{role}/delete").status_code == 303
    assert role not in fake_db.presets


def test_a_duplicate_role_name_is_a_clear_409_with_the_form_kept(
    ada: Browser, fake_db: FakeDb
) -> None:
    create_role(ada, "Editor")
    resp = ada.post("/roles", {"name": "Editor", "system_prompt": "Another text"})
    assert resp.status_code == 409
    assert "already have a role named" in html.unescape(resp.text)
    assert "Another text" in resp.text
    assert len(fake_db.presets) == 1


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "x" * 10_000}, "at most 100 characters"),
        ({"name": "   "}, "needs a name"),
        ({"name": "Hot", "temperature": "-1"}, "Temperature"),
        ({"name": "Hot", "temperature": "99"}, "Temperature"),
        ({"name": "Odd", "model": "no-such-model"}, "no model named"),
    ],
)
def test_a_bad_role_is_a_4xx_and_stores_nothing(
    ada: Browser, fake_db: FakeDb, fields: dict[str, str], says: str
) -> None:
    resp = ada.post("/roles", fields)
    assert resp.status_code == 422
    assert says in html.unescape(resp.text)
    assert fake_db.presets == {}


def test_another_persons_role_is_a_404_everywhere(
    ada: Browser, bob: Browser, fake_db: FakeDb
) -> None:
    role = create_role(ada, "Secret", system_prompt="Ada's own prompt")
    bobs_chat = bob.new_chat()
    assert "Secret" not in bob.get("/roles").text
    assert bob.get(f"/roles/{role}").status_code == 404
    assert bob.get(f"/roles/{role}/delete").status_code == 404
    assert bob.post(f"/roles/{role}", {"name": "Mine"}).status_code == 404
    assert bob.post(f"/roles/{role}/delete").status_code == 404
    assert bob.post(f"/roles/{role}/chat").status_code == 404
    assert bob.post(f"/chats/{bobs_chat}/role", {"role": role}).status_code == 404
    assert fake_db.presets[role]["name"] == "Secret"
    assert fake_db.chats[bobs_chat]["system_prompt"] is None


def test_applying_a_role_makes_its_settings_the_chats(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    role = create_role(
        ada, "Poet", system_prompt="Answer in verse.", model=BIG, temperature="1.5", top_p="0.8"
    )
    chat = ada.new_chat()
    assert f'<option value="{role}">Poet</option>' in ada.get(f"/chats/{chat}").text
    assert ada.post(f"/chats/{chat}/role", {"role": role}).status_code == 303
    stored = fake_db.chats[chat]
    assert (stored["system_prompt"], stored["model"]) == ("Answer in verse.", BIG)
    assert stored["params"] == {"temperature": 1.5, "top_p": 0.8}
    answer_and_wait(ada, chat, fake_db)
    sent = fake_lm.requests[-1]
    assert sent["model"] == BIG and sent["temperature"] == 1.5
    assert sent["messages"][0] == {"role": "system", "content": "Answer in verse."}


def test_a_new_chat_starts_from_a_role(ada: Browser, fake_db: FakeDb) -> None:
    role = create_role(ada, "Coder", system_prompt="Write Python.", max_tokens="300")
    resp = ada.post(f"/roles/{role}/chat")
    assert resp.status_code == 303
    chat = resp.headers["location"].rsplit("/", 1)[1]
    stored = fake_db.chats[chat]
    assert stored["system_prompt"] == "Write Python." and stored["params"] == {"max_tokens": 300}


def test_a_malformed_role_choice_is_a_4xx(ada: Browser, fake_db: FakeDb) -> None:
    chat = ada.new_chat()
    assert ada.post(f"/chats/{chat}/role", {"role": "nope"}).status_code == 422
    assert ada.get("/roles/not-a-uuid").status_code == 404


def test_the_new_chat_page_offers_to_start_as_a_role(ada: Browser) -> None:
    assert 'id="start-from-role"' not in ada.get("/chats").text
    role = create_role(ada, "Tutor")
    page = ada.get("/chats").text
    assert 'id="start-from-role"' in page and f'action="/roles/{role}/chat"' in page


def test_a_max_tokens_the_context_cannot_hold_is_recorded_as_sent(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    fake_lm.n_ctx = 200
    chat = ada.new_chat()
    ada.post(f"/chats/{chat}/settings", {"max_tokens": "30000"})
    answer = answer_and_wait(ada, chat, fake_db)
    assert fake_lm.requests[-1]["max_tokens"] == 100  # half the context, at most
    assert answer["params"] == {"max_tokens": 100}


def test_every_settings_and_roles_write_checks_the_csrf_token(
    ada: Browser, fake_db: FakeDb
) -> None:
    chat = ada.new_chat()
    role = create_role(ada, "Guarded")
    before_chat, before_role = dict(fake_db.chats[chat]), dict(fake_db.presets[role])
    for path in [
        f"/chats/{chat}/settings",
        f"/chats/{chat}/settings/reset",
        f"/chats/{chat}/role",
        "/roles",
        f"/roles/{role}",
        f"/roles/{role}/delete",
        f"/roles/{role}/chat",
    ]:
        form = {"csrf_token": "bad", "name": "x", "model": BIG, "temperature": "1", "role": role}
        assert ada.client.post(path, data=form).status_code == 403, path
    assert fake_db.chats[chat] == before_chat and fake_db.presets[role] == before_role
    assert len(fake_db.chats) == 1 and len(fake_db.presets) == 1


def test_role_text_is_escaped(ada: Browser) -> None:
    payload = "<script>alert(1)</script><img src=x onerror=alert(1)>"
    create_role(ada, payload, system_prompt=payload)
    page = ada.get("/roles").text
    assert payload not in page and html.escape(payload) in page


def test_the_domain_operations_other_parts_call(fake_db: FakeDb, fake_lm: FakeLm) -> None:
    """ChatSettings.set_model / reset and Roles.apply_role, as the slash commands call them:
    a model named in another case, a role named in another case, an unknown one refused."""
    import asyncio

    import httpx

    from chat_ui.chat_settings import ChatSettings, ModelRefused
    from chat_ui.clients import DbApi, LmApi, NotFound
    from chat_ui.config import Settings
    from chat_ui.roles import RoleForm, Roles

    fake_lm.other_models = [BIG]

    async def run() -> None:
        async with (
            httpx.AsyncClient(base_url="http://db", transport=fake_db.transport()) as dbc,
            httpx.AsyncClient(base_url="http://lm/v1/", transport=fake_lm.transport()) as lmc,
        ):
            db, lm, config = DbApi(dbc), LmApi(lmc), Settings()
            settings = ChatSettings("owner-1", db, lm, config)
            roles = Roles("owner-1", db, lm, config)
            chat = await db.create_chat("owner-1")
            assert (await settings.set_model(chat.id, "BIG-Careful-Model")).model == BIG
            with pytest.raises(ModelRefused) as refused:
                await settings.set_model(chat.id, "tiny")
            assert refused.value.status == 422 and "no model named" in refused.value.message
            await roles.create(RoleForm(name="Pirate", system_prompt="Arr.", model="fake-model"))
            applied = await roles.apply_role(chat.id, "  pirate ")
            assert (applied.model, applied.system_prompt) == ("fake-model", "Arr.")
            with pytest.raises(NotFound):
                await roles.apply_role(chat.id, "Nobody")
            reset = await settings.reset(chat.id)
            assert (reset.model, reset.system_prompt) == (None, None)

    asyncio.run(run())


@pytest.mark.parametrize("htmx", [False, True])
def test_a_new_chat_starts_with_the_model_picked_beside_its_first_message(
    ada: Browser, fake_db: FakeDb, fake_lm: FakeLm, htmx: bool
) -> None:
    page = ada.get("/chats").text
    assert 'name="model" form="composer"' in page and f'<option value="{BIG}">' in page
    resp = ada.post("/chats", {"content": "Hello", "model": BIG}, htmx=htmx)
    assert resp.status_code in (204, 303), resp.text
    (chat,) = fake_db.chats.values()
    assert chat["model"] == BIG
    eventually(lambda: bool(fake_lm.requests))
    assert fake_lm.requests[0]["model"] == BIG


def test_a_new_chat_with_an_unknown_model_is_refused_with_the_text_kept(
    ada: Browser, fake_db: FakeDb
) -> None:
    resp = ada.post("/chats", {"content": "My long question", "model": "nope"})
    assert resp.status_code == 422
    assert "My long question" in resp.text and "no model named" in html.unescape(resp.text)
    assert fake_db.chats == {}
