"""Parlor's services and the peer as real processes on loopback, and their memory.

Each service is started exactly as a deployment starts it (`uvicorn <service>.main:app`
with its environment settings) through tests/support.py, and nginx from the project's own
template through the stack tests' starter, so the benchmark measures the shipped code.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import REPO, Service, free_port, run_service, wait_healthy

# Throw-away values for a loopback stack that lives as long as one benchmark run.
INTERNAL_TOKEN = "bench-internal-token"  # noqa: S105
SECRET_KEY = "bench-secret-key-0123456789abcdef"  # noqa: S105


@dataclass
class Stack:
    """The running stack: nginx → chat_ui → db_api + lm_api."""

    url: str  # nginx, the only door a browser uses
    chat_ui: Service
    db_api: Service
    lm_api: Service
    database_url: str
    nginx_pid: int
    static_root: Path
    max_tokens: int

    @property
    def lm_api_base(self) -> str:
        return self.lm_api.url + "/v1"

    @property
    def lm_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {INTERNAL_TOKEN}"}

    def pids(self) -> dict[str, int]:
        return {
            "nginx": self.nginx_pid,
            "chat_ui": self.chat_ui.proc.pid,
            "db_api": self.db_api.proc.pid,
            "lm_api": self.lm_api.proc.pid,
        }


@contextlib.contextmanager
def run_lm_api(
    model: Path, workdir: Path, *, threads: int, n_ctx: int, max_tokens: int
) -> Iterator[Service]:
    env = {
        "LM_API_MODEL_PATH": str(model),
        "LM_API_N_THREADS": str(threads),
        "LM_API_N_CTX": str(n_ctx),
        "LM_API_MAX_TOKENS": str(max_tokens),
        # Room for part 2's largest load; one more waiting request would be refused.
        "LM_API_MAX_QUEUE": "16",
        "LM_API_INTERNAL_TOKEN": INTERNAL_TOKEN,
    }
    with run_service("lm_api", "lm_api.main:app", env, workdir, deadline_s=600) as svc:
        yield svc


@contextlib.contextmanager
def run_db_api(workdir: Path) -> Iterator[tuple[Service, str]]:
    database_url = f"sqlite:///{workdir / 'parlor.db'}"
    env = {"DB_API_DATABASE_URL": database_url, "DB_API_INTERNAL_TOKEN": INTERNAL_TOKEN}
    migrate_database(database_url, workdir)
    with run_service("db_api", "db_api.main:app", env, workdir) as svc:
        yield svc, database_url


def migrate_database(database_url: str, workdir: Path) -> None:
    """Create the schema the way a deployment does (compose's one-shot migrate step)."""
    log = workdir / "migrate.log"
    with log.open("wb") as out:
        rc = subprocess.run(
            [sys.executable, "-m", "db_api.migrate"],
            cwd=REPO,
            env={**_environ(), "DB_API_DATABASE_URL": database_url},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if rc != 0:
        raise RuntimeError(f"migrations failed:\n{log.read_text(errors='replace')[-3000:]}")


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


@contextlib.contextmanager
def run_chat_ui(
    workdir: Path, db_api: Service, lm_api: Service, *, max_tokens: int
) -> Iterator[Service]:
    env = {
        "CHAT_UI_DB_API_URL": db_api.url,
        "CHAT_UI_LM_API_URL": lm_api.url + "/v1",
        "CHAT_UI_SECRET_KEY": SECRET_KEY,
        "CHAT_UI_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "CHAT_UI_MAX_TOKENS": str(max_tokens),
        # No system prompt, so every depth sends the model the very same prompt.
        "CHAT_UI_DEFAULT_SYSTEM_PROMPT": "",
    }
    with run_service("chat_ui", "chat_ui.main:app", env, workdir) as svc:
        yield svc


@contextlib.contextmanager
def run_nginx(workdir: Path, upstream: str, static_root: Path) -> Iterator[tuple[str, int]]:
    """The project's nginx config in front of `upstream`; yields (url, master pid)."""
    from parlor.nginx import nginx_binary, write_config

    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian: apt-get install nginx)")
    port = free_port()
    config = write_config(
        workdir / "nginx",
        listen=f"127.0.0.1:{port}",
        chat_ui_upstream=upstream.removeprefix("http://"),
        static_root=static_root,
    )
    check = subprocess.run(config.test_command(binary), capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {check.stderr}")
    log = workdir / "nginx.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(config.command(binary), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", deadline_s=60, proc=proc, log=config.error_log)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def static_root_with(workdir: Path) -> Path:
    """chat_ui's static files plus room for the benchmark's same-size static pages."""
    import shutil

    root = workdir / "static"
    if not root.exists():
        shutil.copytree(REPO / "chat_ui" / "static", root)
    (root / "bench").mkdir(exist_ok=True)
    return root


@contextlib.contextmanager
def run_stack(
    model: Path, workdir: Path, *, threads: int, n_ctx: int, max_tokens: int
) -> Iterator[Stack]:
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        run_lm_api(model, workdir, threads=threads, n_ctx=n_ctx, max_tokens=max_tokens) as lm,
        run_db_api(workdir) as (db, database_url),
        run_chat_ui(workdir, db, lm, max_tokens=max_tokens) as ui,
    ):
        static_root = static_root_with(workdir)
        with run_nginx(workdir, ui.url, static_root) as (url, nginx_pid):
            yield Stack(
                url=url,
                chat_ui=ui,
                db_api=db,
                lm_api=lm,
                database_url=database_url,
                nginx_pid=nginx_pid,
                static_root=static_root,
                max_tokens=max_tokens,
            )


@dataclass
class Peer:
    """llama-cpp-python's own OpenAI server on the same model and threads."""

    base_url: str
    proc: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)


@contextlib.contextmanager
def run_peer(model: Path, workdir: Path, *, threads: int, n_ctx: int) -> Iterator[Peer]:
    port = free_port()
    args = [
        "--model", str(model),
        "--n_threads", str(threads),
        # Its default for prompt evaluation is every CPU; lm_api uses its thread count.
        "--n_threads_batch", str(threads),
        "--n_ctx", str(n_ctx),
        "--n_batch", "512",
        # Its default (True) aborts a running answer when a new request arrives; off, it
        # queues requests and completes every one, as lm_api does.
        "--interrupt_requests", "False",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    log = workdir / "llama_cpp_server.log"
    workdir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", *args],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_healthy(base + "/models", deadline_s=600, proc=proc, log=log)
        yield Peer(base_url=base, proc=proc, args=args)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            out.append(int(child))
            out.extend(_descendants(int(child)))
    return out


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a process and all its descendants (nginx workers), in MB."""
    total_kb = 0
    for p in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb / 1024.0


def owner_of_chat(database_url: str, chat_id: str) -> str:
    """The owner key chat_ui gave a chat, read from the database (the owner is a hash of
    the browser's secret key, which only chat_ui sees)."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, owner FROM chats")).all()
    finally:
        engine.dispose()
    want = chat_id.replace("-", "").lower()
    for row_id, owner in rows:
        if str(row_id).replace("-", "").lower() == want:
            return str(owner)
    raise LookupError(f"chat {chat_id} not in the database")
