"""Helpers shared by the test suites and the benchmarks: ports, health polling,
services as real processes, throw-away PostgreSQL databases.

Nothing here sleeps to wait for a server: readiness is always a health poll with a
deadline.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

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


@dataclass
class Service:
    """A service running as a real process on loopback."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


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
