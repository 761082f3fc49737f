"""The nginx template, rendered like the official image does, run by real nginx in front of
a trivial upstream (tests/stack/fake_upstream.py), and in front of the real chat_ui."""

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
from parlor.stack import Stack
from parlor.supervisor import Service, run_service
from tests.stack.fake_upstream import OWN_CSP
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


SECURITY_HEADERS = (
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
)


def security_headers(r: httpx.Response) -> dict[str, list[str]]:
    return {name: r.headers.get_list(name) for name in SECURITY_HEADERS}


def test_security_headers_exactly_once(proxy: str) -> None:
    r = httpx.get(proxy + "/page")
    assert r.status_code == 200
    assert r.headers.get_list("x-frame-options") == ["DENY"]
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert r.headers.get_list("referrer-policy") == ["same-origin"]
    assert "nginx/" not in r.headers.get("server", "")
    # The upstream sent no policy: nginx's stands in.
    [policy] = r.headers.get_list("content-security-policy")
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_a_page_with_its_own_policy_keeps_it_alone(proxy: str) -> None:
    r = httpx.get(proxy + "/page-with-csp")
    assert r.status_code == 200
    assert r.headers.get_list("content-security-policy") == [OWN_CSP]


@pytest.fixture(scope="module")
def impatient(
    tmp_path_factory: pytest.TempPathFactory, upstream: Service, static_root: Path
) -> Iterator[str]:
    """nginx from the template with a 1 s upstream read timeout, to see its own 504 page."""
    require_nginx()
    text = NGINX_TEMPLATE.read_text()
    assert text.count("proxy_read_timeout 120s;") == 1
    template = tmp_path_factory.mktemp("impatient-template") / "default.conf.template"
    template.write_text(text.replace("proxy_read_timeout 120s;", "proxy_read_timeout 1s;"))
    prefix = tmp_path_factory.mktemp("impatient-nginx")
    with run_nginx(prefix, upstream.url, static_root=static_root, template=template) as site:
        yield site[0]


def test_nginx_error_pages_carry_the_security_headers(
    proxy: str, impatient: str, upstream: Service
) -> None:
    """404, 413, 502 and 504 written by nginx itself (no upstream answer to take headers
    from) carry the same security headers as a page."""
    try:
        timed_out = httpx.get(impatient + "/hang/for-504", timeout=60)
    finally:
        httpx.post(upstream.url + "/release/for-504").raise_for_status()
    pages = {
        404: httpx.get(proxy + "/static/missing.js"),
        413: httpx.post(proxy + "/upload", content=b"x" * 3_000_000),
        502: httpx.get(proxy + "/too-big-header"),
        504: timed_out,
    }
    page = security_headers(httpx.get(proxy + "/page"))
    assert all(len(values) == 1 for values in page.values()), page
    for status, r in pages.items():
        assert r.status_code == status, (status, r.text[:200])
        assert "<center>nginx</center>" in r.text  # nginx's own page, not an upstream's
        assert security_headers(r) == page, status


def test_pages_are_gzipped(proxy: str) -> None:
    r = httpx.get(proxy + "/page", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert b"<p>parlor</p>" in r.content  # httpx decoded it


def test_body_size_limit(proxy: str) -> None:
    # The longest message chat_ui accepts (100 000 characters), form-encoded at worst
    # (4-byte characters, each byte as %XX), passes: chat_ui, not nginx, decides.
    longest = len(("content=" + "%F0%9F%98%80" * 100_000).encode())
    assert httpx.post(proxy + "/upload", content=b"x" * longest).json() == {"size": longest}
    too_big = httpx.post(proxy + "/upload", content=b"x" * 3_000_000)
    assert too_big.status_code == 413


def test_metrics_stay_off_the_public_side(proxy: str, upstream: Service) -> None:
    # The internal scraper goes straight to chat_ui.
    assert httpx.get(upstream.url + "/metrics").text.startswith("parlor_fake_requests_total")
    for path in ("/metrics", "/metrics/", "/metrics?format=text", "//metrics", "/%6Detrics"):
        r = httpx.get(proxy + path)
        assert r.status_code == 404, path
        assert "parlor_fake" not in r.text


def test_static_files_from_disk_with_long_cache(proxy: str, static_root: Path) -> None:
    r = httpx.get(proxy + "/static/app.3f9a1c.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.text == (static_root / "app.3f9a1c.js").read_text()
    assert r.headers["content-type"].startswith("application/javascript")
    assert r.headers.get_list("cache-control") == ["public, max-age=31536000, immutable"]
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]
    assert len(r.headers.get_list("content-security-policy")) == 1
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


# ---- in front of the real chat_ui -------------------------------------------------------


@pytest.mark.slow
def test_nginx_pages_carry_chat_uis_security_headers(quick_stack: Stack) -> None:
    """nginx's own answers (413, 404) and chat_ui's pages carry the very same headers."""
    page = httpx.get(quick_stack.url + "/")
    assert page.status_code == 200
    chat_ui = security_headers(page)
    assert all(len(values) == 1 for values in chat_ui.values()), chat_ui
    too_big = httpx.post(quick_stack.url + "/login", content=b"x" * 3_000_000)
    missing = httpx.get(quick_stack.url + "/static/missing.js")
    metrics = httpx.get(quick_stack.url + "/metrics")
    for r, status in ((too_big, 413), (missing, 404), (metrics, 404)):
        assert r.status_code == status
        assert security_headers(r) == chat_ui, r.url


@pytest.mark.slow
def test_chat_ui_metrics_only_on_the_internal_side(quick_stack: Stack) -> None:
    assert httpx.get(quick_stack.url + "/metrics").status_code == 404
    internal = httpx.get(quick_stack.ui.url + "/metrics")
    assert internal.status_code == 200
    assert "chat_ui_requests_total" in internal.text
