"""Sign-in through an authenticating proxy's header (chat_ui/trusted_identity.py).

chat_ui runs under a real uvicorn on 127.0.0.1; clients connect from other loopback
addresses (Linux routes all of 127.0.0.0/8 to lo), so the address chat_ui checks is a real
TCP peer: 127.0.0.2 plays the trusted proxy, 127.0.0.5 an attacker.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import ValidationError

from chat_ui.config import Settings
from chat_ui.main import create_app
from chat_ui.trusted_identity import owner_key
from tests.chat_ui.fakes import FakeDb, FakeLm
from tests.support import free_port, wait_healthy

HEADER = "X-Forwarded-Email"
PROXY = "127.0.0.2"
ATTACKER = "127.0.0.5"
# uvicorn believes X-Forwarded-For only from this address, which no client here uses.
FORWARDER = "127.0.0.3"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
USER_NAME = re.compile(r'<strong id="user-name">([^<]*)</strong>')
SECRET = "test-secret-0123456789"


class Server:
    """chat_ui under uvicorn, with uvicorn's forwarded-address trust set explicitly."""

    def __init__(self, settings: Settings, db: FakeDb, lm: FakeLm) -> None:
        app = create_app(settings, db_transport=db.transport(), lm_transport=lm.transport())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_healthy(self.url + "/health", deadline_s=20)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class Visitor:
    """A browser (own cookies) connecting from `source`, optionally sending `headers`
    on every request."""

    def __init__(self, url: str, source: str, headers: dict[str, str] | None = None) -> None:
        self.client = httpx.Client(
            base_url=url,
            transport=httpx.HTTPTransport(local_address=source),
            headers=headers or {},
            follow_redirects=False,
            timeout=20,
        )
        self.csrf = ""

    def get(self, path: str) -> httpx.Response:
        resp = self.client.get(path)
        match = CSRF_META.search(resp.text)
        if match:
            self.csrf = match.group(1)
        return resp

    def post(self, path: str, form: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": self.csrf, **(form or {})})

    def signed_in_as(self) -> str | None:
        """The name the chats page shows, or None when it sends the visitor to log in."""
        page = self.get("/chats")
        if page.status_code != 200:
            assert page.status_code == 303 and page.headers["location"] == "/"
            return None
        match = USER_NAME.search(page.text)
        assert match, page.text
        return match.group(1)

    def new_chat(self) -> str:
        self.get("/chats")
        resp = self.post("/chats")
        assert resp.status_code == 303, resp.text
        return str(resp.headers["location"]).rsplit("/", 1)[1]


@pytest.fixture
def make_server() -> Iterator[Callable[..., tuple[Server, FakeDb]]]:
    servers: list[Server] = []
    lms: list[FakeLm] = []

    def make(**overrides: Any) -> tuple[Server, FakeDb]:
        settings = Settings(
            db_api_url="http://db_api",
            lm_api_url="http://lm_api/v1",
            secret_key=SECRET,
            **overrides,
        )
        db, lm = FakeDb(), FakeLm()
        lms.append(lm)
        servers.append(Server(settings, db, lm))
        return servers[-1], db

    yield make
    for lm in lms:
        lm.release()
    for server in servers:
        server.stop()


@pytest.fixture
def sso(make_server: Callable[..., tuple[Server, FakeDb]]) -> tuple[Server, FakeDb]:
    return make_server(
        env="production",
        trusted_user_header=HEADER,
        trusted_proxies=f"{PROXY}/32",
        forwarded_allow_ips=FORWARDER,
    )


def test_the_trusted_proxy_signs_the_person_in(sso: tuple[Server, FakeDb]) -> None:
    server, db = sso
    ada = Visitor(server.url, PROXY, {HEADER: "ada@corp.example"})
    assert ada.get("/").headers["location"] == "/chats"  # no login form
    assert ada.signed_in_as() == "ada@corp.example"
    chat = ada.new_chat()
    assert db.owners() == {owner_key("ada@corp.example")}
    # Nothing about the identity is stored in the cookie: without the header, the same
    # browser is not signed in.
    ada.client.headers.pop(HEADER)
    assert ada.signed_in_as() is None
    assert ada.get(f"/chats/{chat}").status_code in (303, 404)


def test_the_persons_chats_follow_them_across_browsers(sso: tuple[Server, FakeDb]) -> None:
    server, _ = sso
    laptop = Visitor(server.url, PROXY, {HEADER: "ada@corp.example"})
    chat = laptop.new_chat()
    phone = Visitor(server.url, PROXY, {HEADER: "Ada@Corp.example"})  # another browser
    assert phone.get(f"/chats/{chat}").status_code == 200
    assert chat in phone.get("/chats").text
    grace = Visitor(server.url, PROXY, {HEADER: "grace@corp.example"})
    assert grace.get(f"/chats/{chat}").status_code == 404
    assert chat not in grace.get("/chats").text


@pytest.mark.parametrize(
    "spoof",
    [
        {},
        # uvicorn rewrites the client address from these only for FORWARDED_ALLOW_IPS.
        {"X-Forwarded-For": PROXY},
        {"X-Forwarded-For": f"{PROXY}, {PROXY}"},
        {"X-Real-IP": PROXY},
        {"Forwarded": f"for={PROXY}"},
    ],
    ids=["plain", "x-forwarded-for", "x-forwarded-for-chain", "x-real-ip", "forwarded"],
)
def test_the_header_from_an_untrusted_address_is_ignored(
    sso: tuple[Server, FakeDb], spoof: dict[str, str]
) -> None:
    server, db = sso
    ada = Visitor(server.url, PROXY, {HEADER: "ada@corp.example"})
    chat = ada.new_chat()

    mallory = Visitor(server.url, ATTACKER, {HEADER: "ada@corp.example", **spoof})
    assert mallory.get("/").status_code == 200  # the login form: not signed in
    assert mallory.signed_in_as() is None
    assert mallory.get(f"/chats/{chat}").status_code in (303, 404)
    # Even logged in by name, the header changes nothing: mallory stays mallory.
    mallory.get("/")
    assert mallory.post("/login", {"name": "mallory"}).status_code == 303
    assert mallory.signed_in_as() == "mallory"
    assert mallory.get(f"/chats/{chat}").status_code == 404
    assert chat not in mallory.get("/chats").text
    assert owner_key("ada@corp.example") in db.owners()


def test_typing_the_same_address_as_a_name_is_someone_else(sso: tuple[Server, FakeDb]) -> None:
    server, db = sso
    chat = Visitor(server.url, PROXY, {HEADER: "ada@corp.example"}).new_chat()
    other = Visitor(server.url, ATTACKER)
    other.get("/")
    assert other.post("/login", {"name": "ada@corp.example"}).status_code == 303
    assert other.signed_in_as() == "ada@corp.example"
    assert other.get(f"/chats/{chat}").status_code == 404
    other.new_chat()
    assert len(db.owners()) == 2


@pytest.mark.parametrize(
    # (What HTTP itself forbids, like other control characters, never gets this far.)
    "value",
    ["", "ada\t@corp.example", "x" * 321],
    ids=["empty", "control", "long"],
)
def test_an_unusable_identity_signs_no_one_in(sso: tuple[Server, FakeDb], value: str) -> None:
    server, db = sso
    visitor = Visitor(server.url, PROXY, {HEADER: value})
    assert visitor.signed_in_as() is None
    assert not db.owners()


def test_without_the_setting_the_header_means_nothing(
    make_server: Callable[..., tuple[Server, FakeDb]],
) -> None:
    server, _ = make_server(trusted_proxies=f"{PROXY}/32", forwarded_allow_ips=FORWARDER)
    assert Visitor(server.url, PROXY, {HEADER: "ada@corp.example"}).signed_in_as() is None


# ---- settings ---------------------------------------------------------------------------


def settings(**overrides: Any) -> Settings:
    return Settings(secret_key=SECRET, env="production", **overrides)


def test_settings_parse_addresses_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_UI_TRUSTED_USER_HEADER", HEADER)
    monkeypatch.setenv("CHAT_UI_TRUSTED_PROXIES", " 10.0.0.0/8, 192.168.1.5 ,fd00::/8")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.2.3")
    s = Settings(secret_key=SECRET, env="production")
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "192.168.1.5/32", "fd00::/8"]
    assert s.forwarded_allow_ips == "10.1.2.3"


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"trusted_user_header": HEADER}, "CHAT_UI_TRUSTED_PROXIES"),
        (
            {"trusted_user_header": HEADER, "trusted_proxies": "0.0.0.0/0"},
            "every address",
        ),
        (
            {
                "trusted_user_header": HEADER,
                "trusted_proxies": "10.0.0.0/8",
                "forwarded_allow_ips": "*",
            },
            "FORWARDED_ALLOW_IPS",
        ),
        (
            {"trusted_user_header": "X Email", "trusted_proxies": "10.0.0.1"},
            "not a header name",
        ),
        ({"trusted_proxies": "not-an-address"}, "trusted_proxies"),
        ({"trusted_proxies": "10.0.0.1/8"}, "trusted_proxies"),  # host bits set: ambiguous
    ],
    ids=["no-proxies", "everyone", "forwarded-star", "bad-header", "garbage", "host-bits"],
)
def test_production_refuses_a_spoofable_setup(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        settings(**overrides)


def test_production_accepts_a_sound_setup_and_development_starts_anyway() -> None:
    sound = settings(
        trusted_user_header=HEADER, trusted_proxies="10.0.0.2", forwarded_allow_ips="10.0.0.9"
    )
    assert sound.trusted_user_header == HEADER
    # The image's FORWARDED_ALLOW_IPS=* is fine while the header is off.
    assert settings(forwarded_allow_ips="*").trusted_user_header == ""
    # Development starts with a spoofable setup, but never believes the header then.
    dev = Settings(trusted_user_header=HEADER)
    assert dev.trusted_proxies == []
