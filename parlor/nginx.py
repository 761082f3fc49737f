"""Render Parlor's nginx template and run nginx as a plain child process.

The official nginx image renders `nginx/templates/*.template` with envsubst, replacing only
variables that are defined (and, in compose, only those matching `NGINX_ENVSUBST_FILTER`).
`render_template` applies the same rule, so `parlor up`, the tests and compose run the very
same file. `write_config` adds the small top-level nginx.conf the image would otherwise
provide, with every path (pid, temp dirs, logs) under one prefix directory, so nginx runs
unprivileged in the foreground on loopback. `nginx_service` checks the result with
`nginx -t` and describes the process for the supervisor; `run_nginx` runs it for a `with`
block (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from parlor.paths import NGINX_TEMPLATE, STATIC_ROOT
from parlor.supervisor import LOOPBACK, Service, ServiceSpec, free_port, running

# envsubst replaces both `${NAME}` and `$NAME`; nginx's own variables ($host, $scheme, ...)
# are lowercase and never defined in the render environment, so they pass through.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")

# The file types chat_ui serves from /static/; nginx answers others as octet-stream.
_MIME_TYPES = {
    "text/html": "html",
    "text/css": "css",
    "text/plain": "txt",
    "application/javascript": "js mjs",
    "application/json": "json map",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/x-icon": "ico",
    "image/webp": "webp",
    "font/woff2": "woff2",
}


def render_template(text: str, variables: Mapping[str, str]) -> str:
    """Substitute the defined `variables` in `text` like envsubst; leave others untouched."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables[name] if name in variables else match.group(0)

    return _VARIABLE.sub(replace, text)


def upstream_servers(addresses: str | Sequence[str]) -> str:
    """The value of PARLOR_CHAT_UI_UPSTREAM for one chat_ui (host:port) or several
    replicas, which nginx then balances round-robin: the template writes
    `server <value>;`, so each further address becomes a `server` line of its own."""
    if isinstance(addresses, str):
        return addresses
    if not addresses:
        raise ValueError("nginx needs at least one chat_ui address")
    return ";\n    server ".join(addresses)


def nginx_binary() -> str | None:
    """The nginx executable on PATH (Debian also keeps it in /usr/sbin), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class NginxConfig:
    prefix: Path
    conf: Path
    error_log: Path
    access_log: Path

    def _args(self) -> list[str]:
        # -e: log startup problems to stderr rather than the compiled-in
        # /var/log/nginx/error.log, which an unprivileged user cannot open.
        return ["-e", "stderr", "-p", str(self.prefix), "-c", str(self.conf)]

    def command(self, binary: str) -> list[str]:
        """The command line that runs this config in the foreground."""
        return [binary, *self._args(), "-g", "daemon off;"]

    def test_command(self, binary: str) -> list[str]:
        """`nginx -t` for this config."""
        return [binary, "-t", "-q", *self._args()]


def write_config(
    prefix: Path,
    *,
    listen: str,
    chat_ui_upstream: str | Sequence[str],
    static_root: Path = STATIC_ROOT,
    template: Path = NGINX_TEMPLATE,
    console_logs: bool = False,
) -> NginxConfig:
    """Render the site template under `prefix` with a top-level nginx.conf around it.

    Logs go to `prefix`/logs/, or with `console_logs` to nginx's stdout and stderr (for
    `parlor up`, which shows them among the other services' lines).
    """
    prefix = prefix.resolve()
    for sub in ("conf.d", "logs", "temp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    access_log_path = Path("/dev/stdout") if console_logs else prefix / "logs" / "access.log"
    error_log = prefix / "logs" / "error.log"
    error_log_target = "stderr" if console_logs else str(error_log)
    site = render_template(
        template.read_text(),
        {
            "PARLOR_LISTEN": listen,
            "PARLOR_CHAT_UI_UPSTREAM": upstream_servers(chat_ui_upstream),
            "PARLOR_STATIC_ROOT": str(Path(static_root).resolve()),
            "PARLOR_ACCESS_LOG": str(access_log_path),
        },
    )
    (prefix / "conf.d" / "default.conf").write_text(site)
    types = "\n".join(f"        {mime} {exts};" for mime, exts in _MIME_TYPES.items())
    temp = prefix / "temp"
    conf = prefix / "nginx.conf"
    # Started by root (CI, containers), nginx would run its workers as "nobody", who cannot
    # read a private data or temp directory; keep them as the invoking user instead.
    # Started by anyone else, nginx cannot switch users and needs no directive.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""# Written by parlor.nginx for a foreground, unprivileged nginx; do not edit.
{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {error_log_target} warn;

events {{
    worker_connections 512;
}}

http {{
    types {{
{types}
    }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {temp / "client_body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

    include {prefix / "conf.d" / "default.conf"};
}}
"""
    )
    return NginxConfig(prefix=prefix, conf=conf, error_log=error_log, access_log=access_log_path)


class NginxError(RuntimeError):
    """nginx is missing, or refused the rendered configuration."""


def nginx_service(config: NginxConfig, port: int) -> ServiceSpec:
    """The process that serves `config` (written by `write_config` to listen on loopback
    `port`), once `nginx -t` has accepted it."""
    binary = nginx_binary()
    if binary is None:
        raise NginxError("nginx is not installed (Debian: apt-get install nginx)")
    check = subprocess.run(config.test_command(binary), capture_output=True, text=True)
    if check.returncode != 0:
        raise NginxError(f"nginx -t refused {config.conf}:\n{check.stderr}")
    return ServiceSpec(
        name="nginx", command=config.command(binary), url=f"http://{LOOPBACK}:{port}", port=port
    )


@contextlib.contextmanager
def run_nginx(
    prefix: Path,
    upstream_url: str | Sequence[str],
    *,
    static_root: Path | None = None,
    template: Path = NGINX_TEMPLATE,
) -> Iterator[tuple[str, Service, NginxConfig]]:
    """Real nginx from the project's template, on a free loopback port in front of
    `upstream_url` (or several chat_ui replicas, round-robin), healthy; yields (its URL,
    the service, its config)."""
    urls = [upstream_url] if isinstance(upstream_url, str) else list(upstream_url)
    port = free_port()
    config = write_config(
        prefix,
        listen=f"{LOOPBACK}:{port}",
        chat_ui_upstream=[url.removeprefix("http://") for url in urls],
        static_root=static_root or STATIC_ROOT,
        template=template,
    )
    spec = nginx_service(config, port)
    with running(spec, log=config.prefix / "logs" / "stderr.log") as service:
        yield spec.url, service, config
