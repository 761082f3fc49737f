"""Compose profile `sso`, read as a reviewer would, and its chain run for real on loopback:

    "oauth2-proxy" (a client at 127.0.0.3 that sets X-Forwarded-Email)
        ──► nginx-sso (deploy/compose/nginx-sso.conf.template, real nginx, connecting
            to chat_ui from 127.0.0.2 as from its fixed address on the `sso` network)
        ──► chat_ui (real uvicorn; trusts 127.0.0.2 only)

next to the name-login path (nginx/templates/default.conf.template, real nginx) that an
attacker at 127.0.0.5 uses to send the same header, with and without a forged
X-Forwarded-For. oauth2-proxy itself is not run (it needs an identity provider); what it
does is documented and pinned here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from chat_ui.config import Settings
from chat_ui.main import create_app
from tests.chat_ui.fakes import FakeDb, FakeLm
from tests.support import REPO, free_port, run_nginx, stop_process, wait_healthy

COMPOSE = REPO / "compose.yml"
SSO_TEMPLATE = REPO / "deploy" / "compose" / "nginx-sso.conf.template"
HEADER = "X-Forwarded-Email"
NGINX_SSO = "127.0.0.2"
OAUTH2_PROXY = "127.0.0.3"
ATTACKER = "127.0.0.5"
USER_NAME = re.compile(r'<strong id="user-name">([^<]*)</strong>')


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return dict(data["services"])


# ---- the compose profile ----------------------------------------------------------------


def test_the_sso_path_is_a_profile_of_its_own(services: dict[str, Any]) -> None:
    sso = {name for name, svc in services.items() if "sso" in svc.get("profiles", [])}
    assert sso == {"oauth2-proxy", "nginx-sso", "chat_ui_sso"}
    # The name-login services are untouched by it.
    assert "CHAT_UI_TRUSTED_USER_HEADER" not in services["chat_ui"]["environment"]
    # Starting oauth2-proxy starts the whole path and nothing of the name-login front.
    assert set(services["oauth2-proxy"]["depends_on"]) == {"nginx-sso"}
    assert set(services["nginx-sso"]["depends_on"]) == {"chat_ui_sso"}
    assert set(services["chat_ui_sso"]["depends_on"]) == {"db_api", "lm_api"}


def test_oauth2_proxy_is_pinned_and_passes_the_identity(services: dict[str, Any]) -> None:
    proxy = services["oauth2-proxy"]
    assert re.fullmatch(r"quay\.io/oauth2-proxy/oauth2-proxy:v\d+\.\d+\.\d+", proxy["image"])
    flags = dict(arg.split("=", 1) for arg in proxy["command"])
    assert flags["--upstream"] == "http://nginx-sso:8080/"
    assert flags["--provider"] == "oidc"
    assert flags["--pass-user-headers"] == "true"  # sets (and first strips) X-Forwarded-Email
    assert flags["--code-challenge-method"] == "S256"
    # Its secrets come from .env, never from the file.
    for name in ("CLIENT_ID", "CLIENT_SECRET", "COOKIE_SECRET"):
        assert proxy["environment"][f"OAUTH2_PROXY_{name}"].startswith("${")
    # Published on loopback by default, like nginx.
    (port,) = proxy["ports"]
    assert port.startswith("${PARLOR_BIND:-127.0.0.1}:")


def test_chat_ui_sso_trusts_nginx_sso_only(services: dict[str, Any]) -> None:
    env = services["chat_ui_sso"]["environment"]
    assert env["CHAT_UI_TRUSTED_USER_HEADER"] == HEADER
    address = services["nginx-sso"]["networks"]["sso"]["ipv4_address"]
    assert env["CHAT_UI_TRUSTED_PROXIES"] == address
    # Not the image's FORWARDED_ALLOW_IPS=*: no client may choose the address checked.
    assert env["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    # Everything else as chat_ui's (one YAML anchor), production included.
    for key, value in services["chat_ui"]["environment"].items():
        assert env[key] == value
    # The settings compose gives, with its defaults, pass chat_ui's own validation.
    default = re.fullmatch(r"\$\{\w+:-([^}]+)\}", address)
    assert default
    Settings(
        secret_key="x" * 32,
        env="production",
        trusted_user_header=env["CHAT_UI_TRUSTED_USER_HEADER"],
        trusted_proxies=default[1],  # type: ignore[arg-type]  # parsed from text
        forwarded_allow_ips=env["FORWARDED_ALLOW_IPS"],
    )


def test_the_sso_network_keeps_nginx_sso_address_out_of_the_dynamic_range() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    (config,) = compose["networks"]["sso"]["ipam"]["config"]
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )

    def value(ref: str) -> str:
        name, default = re.fullmatch(r"\$\{(\w+):-([^}]+)\}", ref).groups()  # type: ignore[union-attr]
        assert example[name] == default, f".env.example disagrees on {name}"
        return default

    subnet = ipaddress.ip_network(value(config["subnet"]))
    dynamic = ipaddress.ip_network(value(config["ip_range"]))
    nginx_sso = yaml.safe_load(COMPOSE.read_text())["services"]["nginx-sso"]
    fixed = ipaddress.ip_address(value(nginx_sso["networks"]["sso"]["ipv4_address"]))
    assert dynamic.subnet_of(subnet)  # type: ignore[arg-type]
    assert fixed in subnet and fixed not in dynamic
    assert compose["networks"]["sso"]["internal"] is True


def test_nginx_sso_renders_its_own_template(services: dict[str, Any]) -> None:
    nginx = services["nginx-sso"]
    mount = f"./{SSO_TEMPLATE.relative_to(REPO)}:/etc/nginx/templates/default.conf.template:ro"
    assert mount in nginx["volumes"]
    wanted = set(re.findall(r"\$\{(\w+)\}", SSO_TEMPLATE.read_text()))
    assert wanted <= set(nginx["environment"])
    assert nginx["environment"]["PARLOR_CHAT_UI_UPSTREAM"] == "chat_ui_sso:8000"


# ---- the chain, for real ----------------------------------------------------------------


@contextlib.contextmanager
def chat_ui(db: FakeDb, lm: FakeLm) -> Iterator[str]:
    """chat_ui_sso's settings from compose, under uvicorn on 127.0.0.1."""
    settings = Settings(
        db_api_url="http://db_api",
        lm_api_url="http://lm_api/v1",
        secret_key="test-secret-0123456789",
        env="production",
        trusted_user_header=HEADER,
        trusted_proxies=NGINX_SSO,  # type: ignore[arg-type]  # parsed from text
        # Nobody: as in compose, where nothing reaches chat_ui_sso from its own loopback.
        forwarded_allow_ips="127.0.0.9",
    )
    app = create_app(settings, db_transport=db.transport(), lm_transport=lm.transport())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", deadline_s=20)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def nginx_sso(prefix: Path, upstream: str) -> Iterator[str]:
    """Real nginx from deploy/compose/nginx-sso.conf.template, connecting upstream from
    NGINX_SSO (its own address on the `sso` network in compose)."""
    from parlor.nginx import nginx_binary, write_config

    binary = nginx_binary()
    assert binary
    port = free_port()
    config = write_config(
        prefix,
        listen=f"127.0.0.1:{port}",
        chat_ui_upstream=upstream.removeprefix("http://"),
        template=SSO_TEMPLATE,
    )
    site = prefix / "conf.d" / "default.conf"
    text = site.read_text()
    assert text.count("proxy_http_version 1.1;") == 1
    site.write_text(
        text.replace(
            "proxy_http_version 1.1;", f"proxy_http_version 1.1;\n    proxy_bind {NGINX_SSO};"
        )
    )
    check = subprocess.run(config.test_command(binary), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    log = prefix / "stderr.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(config.command(binary), stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", proc=proc, log=log)
        yield url
    finally:
        stop_process(proc, timeout_s=10)


def client(url: str, source: str, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        transport=httpx.HTTPTransport(local_address=source),
        headers=headers,
        follow_redirects=False,
        timeout=20,
    )


def signed_in_as(c: httpx.Client) -> str | None:
    page = c.get("/chats")
    if page.status_code == 303:
        return None
    match = USER_NAME.search(page.text)
    assert page.status_code == 200 and match, page.text
    return match.group(1)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(nginx-sso's URL, the name-login nginx's URL, chat_ui's URL)."""
    from parlor.nginx import nginx_binary

    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    db, lm = FakeDb(), FakeLm()
    try:
        with (
            chat_ui(db, lm) as upstream,
            nginx_sso(tmp_path / "nginx-sso", upstream) as sso_url,
            run_nginx(tmp_path / "nginx", upstream) as (plain_url, _, _),
        ):
            yield sso_url, plain_url, upstream
    finally:
        lm.release()


def test_through_oauth2_proxy_and_nginx_sso_the_person_is_signed_in(
    chain: tuple[str, str, str],
) -> None:
    sso_url, _, _ = chain
    ada = client(sso_url, OAUTH2_PROXY, {HEADER: "ada@corp.example"})
    assert signed_in_as(ada) == "ada@corp.example"
    assert ada.get("/static/parlor.css").status_code == 200  # served by nginx-sso itself
    # Behind TLS in front of oauth2-proxy, the browser's scheme and host reach chat_ui:
    # Secure cookies, and forms pass the Origin check.
    tls = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.corp.example"}
    ada = client(sso_url, OAUTH2_PROXY, {HEADER: "ada@corp.example", **tls})  # new browser
    page = ada.get("/chats")
    assert page.status_code == 200
    assert "secure" in page.headers["set-cookie"].lower()
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert csrf
    # httpx keeps a Secure cookie off plain http; a browser on https sends it back.
    cookie = page.headers["set-cookie"].split(";", 1)[0]
    resp = ada.post(
        "/chats",
        data={"csrf_token": csrf[1]},
        headers={"Origin": "https://chat.corp.example", "Cookie": cookie},
    )
    assert resp.status_code == 303, resp.text


@pytest.mark.parametrize(
    "forged",
    [{}, {"X-Forwarded-For": NGINX_SSO}, {"X-Real-IP": NGINX_SSO}],
    ids=["header", "header+x-forwarded-for", "header+x-real-ip"],
)
def test_the_header_sent_around_oauth2_proxy_is_refused(
    chain: tuple[str, str, str], forged: dict[str, str]
) -> None:
    _, plain_url, upstream = chain
    headers = {HEADER: "ada@corp.example", **forged}
    # Through the name-login nginx: it is not nginx-sso, so chat_ui ignores the header.
    assert signed_in_as(client(plain_url, ATTACKER, headers)) is None
    # Straight at chat_ui (were its port reachable): ignored as well.
    assert signed_in_as(client(upstream, ATTACKER, headers)) is None
