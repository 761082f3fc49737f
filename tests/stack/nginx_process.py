"""Real nginx, rendered from the project's template, as a foreground child process."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from parlor.nginx import STATIC_ROOT, NginxConfig, nginx_binary, write_config
from tests.support import free_port, wait_healthy


def require_nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    return binary


@contextlib.contextmanager
def run_nginx(
    prefix: Path, upstream_url: str, *, static_root: Path = STATIC_ROOT
) -> Iterator[tuple[str, NginxConfig]]:
    """nginx on a free loopback port in front of `upstream_url`; yields (url, config)."""
    binary = require_nginx()
    port = free_port()
    config = write_config(
        prefix,
        listen=f"127.0.0.1:{port}",
        chat_ui_upstream=upstream_url.removeprefix("http://"),
        static_root=static_root,
    )
    check = subprocess.run(config.test_command(binary), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    stderr = prefix / "logs" / "stderr.log"
    with stderr.open("wb") as out:
        proc = subprocess.Popen(config.command(binary), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", deadline_s=30, proc=proc, log=config.error_log)
        yield url, config
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
