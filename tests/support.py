"""Helpers shared by the test suites and the benchmarks: ports, health polling,
services as real processes, throw-away PostgreSQL databases.

Nothing here sleeps to wait for a server: readiness is always a health poll with a
deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from parlor.nginx import NginxConfig

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    url: str,
    *,
    deadline_s: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits, late at the deadline."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"process for {url} exited with {proc.returncode}:\n{tail}")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)  # poll interval, not a wait for readiness
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} not healthy after {deadline_s}s: {last}\n{tail}")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Terminate `proc`, give it `timeout_s` to exit cleanly, then kill it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Service:
    """A service running as a real process on loopback."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        stop_process(self.proc)


@contextlib.contextmanager
def run_service(
    name: str,
    app: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    health_path: str = "/health",
    deadline_s: float = 120.0,
    port: int | None = None,
) -> Iterator[Service]:
    """Start `uvicorn <app>` on a free loopback port with `env`, wait until healthy."""
    port = port or free_port()
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, **env}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    svc = Service(name=name, url=f"http://127.0.0.1:{port}", proc=proc, log=log, env=dict(env))
    try:
        wait_healthy(svc.url + health_path, deadline_s=deadline_s, proc=proc, log=log)
        yield svc
    finally:
        svc.stop()


def postgres_server_url() -> str | None:
    """The PostgreSQL server URL for tests, from TEST_DATABASE_URL, or None."""
    return os.environ.get("TEST_DATABASE_URL") or None


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server of `server_url`, yield its URL, drop it.

    `server_url` is a SQLAlchemy URL such as postgresql+psycopg://postgres@127.0.0.1/postgres.
    """
    import sqlalchemy as sa

    base = sa.make_url(server_url)
    name = f"parlor_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def run_nginx(
    prefix: Path, upstream_url: str, *, static_root: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes], NginxConfig]]:
    """Real nginx from the project's template, on a free loopback port in front of
    `upstream_url`; yields (url, process, config)."""
    from parlor.nginx import STATIC_ROOT, nginx_binary, write_config

    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    port = free_port()
    config = write_config(
        prefix,
        listen=f"127.0.0.1:{port}",
        chat_ui_upstream=upstream_url.removeprefix("http://"),
        static_root=static_root or STATIC_ROOT,
    )
    check = subprocess.run(config.test_command(binary), capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the rendered config:\n{check.stderr}")
    stderr = prefix / "logs" / "stderr.log"
    with stderr.open("wb") as out:
        proc = subprocess.Popen(config.command(binary), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", deadline_s=60, proc=proc, log=config.error_log)
        yield url, proc, config
    finally:
        stop_process(proc, timeout_s=10)


@dataclass
class Stack:
    """The whole chat as real processes: nginx → chat_ui → db_api + lm_api."""

    url: str  # nginx: the only address a browser would use
    db: Service
    lm: Service
    ui: Service
    nginx: subprocess.Popen[bytes]
    database_url: str
    static_root: Path | None
    max_tokens: int
    token: str

    @property
    def lm_base(self) -> str:
        """lm_api's OpenAI base URL."""
        return self.lm.url + "/v1"

    @property
    def lm_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def pids(self) -> dict[str, int]:
        return {
            "nginx": self.nginx.pid,
            "chat_ui": self.ui.proc.pid,
            "db_api": self.db.proc.pid,
            "lm_api": self.lm.proc.pid,
        }

    def lm_metric(self, name: str) -> float:
        """A sample of lm_api's Prometheus metrics (0 when not exported yet)."""
        text = httpx.get(self.lm.url + "/metrics").text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_idle(self, deadline_s: float = 120.0) -> None:
        """Poll until lm_api runs no generation (a stopped one may still be winding down)."""
        end = time.monotonic() + deadline_s
        while self.lm_metric("lm_api_generation_in_progress") != 0:
            if time.monotonic() > end:
                raise TimeoutError("lm_api still generating at the deadline")
            time.sleep(0.05)  # poll interval


@contextlib.contextmanager
def run_stack(
    work: Path,
    *,
    database_url: str,
    model: Path,
    max_tokens: int,
    token: str = "stack-internal-token",  # noqa: S107 (a throw-away loopback stack)
    static_root: Path | None = None,
    lm_env: Mapping[str, str] | None = None,
    ui_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """db_api (migrated `database_url`), lm_api on `model`, chat_ui and nginx in front,
    started the way a deployment starts them, each waited for through its health."""
    from db_api.db import upgrade_database

    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    upgrade_database(database_url)
    db_env = {"DB_API_DATABASE_URL": database_url, "DB_API_INTERNAL_TOKEN": token}
    lm_all = {"LM_API_MODEL_PATH": str(model), "LM_API_INTERNAL_TOKEN": token, **(lm_env or {})}
    with (
        run_service("db_api", "db_api.main:app", db_env, logs) as db,
        # A large model takes a while to load on a busy machine.
        run_service("lm_api", "lm_api.main:app", lm_all, logs, deadline_s=600) as lm,
        run_service(
            "chat_ui",
            "chat_ui.main:app",
            {
                "CHAT_UI_DB_API_URL": db.url,
                "CHAT_UI_LM_API_URL": lm.url + "/v1",
                "CHAT_UI_INTERNAL_TOKEN": token,
                "CHAT_UI_SECRET_KEY": "stack-secret-0123456789abcdef",
                "CHAT_UI_MAX_TOKENS": str(max_tokens),
                **(ui_env or {}),
            },
            logs,
        ) as ui,
        run_nginx(work / "nginx", ui.url, static_root=static_root) as (url, nginx, _config),
    ):
        yield Stack(
            url=url,
            db=db,
            lm=lm,
            ui=ui,
            nginx=nginx,
            database_url=database_url,
            static_root=static_root,
            max_tokens=max_tokens,
            token=token,
        )
