"""The nginx template, rendered like the official image does, run by real nginx in front of
a trivial upstream (tests/stack/fake_upstream.py)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parlor.nginx import NginxConfig, render_template, run_nginx, write_config
from parlor.paths import NGINX_TEMPLATE
from parlor.supervisor import Service, run_service
from tests.stack.nginx_process import require_nginx

VARIABLES = {
    "PARLOR_LISTEN": "8080",
    "PARLOR_CHAT_UI_UPSTREAM": "chat_ui:8000",
    "PARLOR_STATIC_ROOT": "/srv/parlor/static",
    "PARLOR_ACCESS_LOG": "/var/log/nginx/access.log",
}


def test_render_replaces_only_defined_variables() -> None:
    text = NGINX_TEMPLATE.read_text()
    names = set(re.findall(r"\$\{(\w+)\}", text))
    assert names == set(VARIABLES), "the template's variables changed: update compose.yml"
    rendered = render_template(text, VARIABLES)
    assert "${" not in rendered
    assert "server chat_ui:8000;" in rendered
    # nginx's own variables are not environment variables and must survive rendering.
    for nginx_var in ("$http_host", "$remote_addr", "$request_time", "$upstream_response_time"):
        assert nginx_var in rendered
    assert render_template("$HOME ${HOME} $host", {"HOME": "/h"}) == "/h /h $host"


def test_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    binary = require_nginx()
    config = write_config(tmp_path, listen="127.0.0.1:1", chat_ui_upstream="127.0.0.1:2")
    result = subprocess.run(config.test_command(binary), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("static")
    (root / "app.3f9a1c.js").write_text("console.log('parlor');\n" * 100)
    (root / "htmx-2.0.11.min.js").write_text("// htmx\n")
    (root / "parlor.css").write_text("body { margin: 0 }\n")
    return root


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("upstream-logs")
    with run_service("fake_chat_ui", "tests.stack.fake_upstream:app", {}, logs) as svc:
        yield svc


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, upstream: Service, static_root: Path
) -> Iterator[tuple[str, NginxConfig]]:
    require_nginx()
    prefix = tmp_path_factory.mktemp("nginx")
    with run_nginx(prefix, upstream.url, static_root=static_root) as (url, _proc, config):
        yield url, config


@pytest.fixture(scope="module")
def proxy(site: tuple[str, NginxConfig]) -> str:
    return site[0]


def test_forwarded_headers_and_keepalive(proxy: str) -> None:
    seen = httpx.get(proxy + "/headers").json()
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["host"] == proxy.removeprefix("http://")
    # HTTP/1.1 with an empty Connection header: the upstream connection stays open.
    assert "connection" not in seen


def test_security_headers_exactly_once(proxy: str) -> None:
    r = httpx.get(proxy + "/page")
    assert r.status_code == 200
    assert r.headers.get_list("x-frame-options") == ["DENY"]
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert r.headers.get_list("referrer-policy") == ["same-origin"]
    assert "nginx/" not in r.headers.get("server", "")


def test_pages_are_gzipped(proxy: str) -> None:
    r = httpx.get(proxy + "/page", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert b"<p>parlor</p>" in r.content  # httpx decoded it


def test_body_size_limit(proxy: str) -> None:
    assert httpx.post(proxy + "/upload", content=b"x" * 500_000).json() == {"size": 500_000}
    too_big = httpx.post(proxy + "/upload", content=b"x" * 2_000_000)
    assert too_big.status_code == 413


def test_static_files_from_disk_with_long_cache(proxy: str, static_root: Path) -> None:
    r = httpx.get(proxy + "/static/app.3f9a1c.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.text == (static_root / "app.3f9a1c.js").read_text()
    assert r.headers["content-type"].startswith("application/javascript")
    assert r.headers.get_list("cache-control") == ["public, max-age=31536000, immutable"]
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert httpx.get(proxy + "/static/missing.js").status_code == 404


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        ("/static/htmx-2.0.11.min.js", "public, max-age=31536000, immutable"),
        ("/static/parlor.css?v=3f9a1c", "public, max-age=31536000, immutable"),
        # No version in the URL: a change must reach browsers, so revalidate.
        ("/static/parlor.css", "no-cache"),
    ],
)
def test_long_cache_only_for_versioned_urls(proxy: str, path: str, cache_control: str) -> None:
    r = httpx.get(proxy + path)
    assert r.status_code == 200
    assert r.headers.get_list("cache-control") == [cache_control]
    if cache_control == "no-cache":
        again = httpx.get(proxy + path, headers={"If-Modified-Since": r.headers["last-modified"]})
        assert again.status_code == 304


def _first_event_then_release(proxy: str, upstream: Service, path: str) -> None:
    """Read the first event through nginx while the upstream still holds the second."""
    key = path.rsplit("/", 2)[1] if path.endswith("/stream") else path.rsplit("/", 1)[1]
    with (
        httpx.Client(timeout=httpx.Timeout(30.0)) as client,
        client.stream("GET", proxy + path, headers={"Accept-Encoding": "gzip"}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in r.headers
        lines = r.iter_lines()
        received = []
        for line in lines:
            received.append(line)
            if line.startswith("data:"):
                break
        # The upstream is blocked before its second event: this line could only have
        # arrived if nginx forwarded it unbuffered.
        assert received == ["event: token", "data: first"]
        httpx.post(f"{upstream.url}/release/{key}").raise_for_status()
        rest = [line for line in lines if line]
        assert rest == ["event: token", "data: second", "event: done", "data: end"]


def test_sse_location_is_unbuffered_and_not_gzipped(proxy: str, upstream: Service) -> None:
    _first_event_then_release(proxy, upstream, "/chats/by-location/stream")


def test_x_accel_buffering_unbuffers_any_stream(proxy: str, upstream: Service) -> None:
    _first_event_then_release(proxy, upstream, "/elsewhere/by-header")


def test_access_log_records_request_and_upstream_time(site: tuple[str, NginxConfig]) -> None:
    proxy, config = site
    httpx.get(proxy + "/headers?marker=access-log").raise_for_status()
    # nginx logs after the answer is sent: poll the file with a deadline.
    end = time.monotonic() + 10
    line = ""
    while not line and time.monotonic() < end:
        lines = config.access_log.read_text().splitlines()
        line = next((ln for ln in lines if "marker=access-log" in ln), "")
        time.sleep(0.05)  # poll interval
    assert line, "no access log line for the request"
    assert re.search(r" 200 \d+ rt=\d+\.\d{3} urt=\d+\.\d{3} ", line), line
