"""Parlor's services and the peer as real processes on loopback, and their memory.

The stack is the one `parlor up` and the stack tests run (parlor.stack.run_stack:
`uvicorn <service>.main:app` with environment settings, nginx from the project's
template), so the benchmark measures the shipped code; every process is started and
stopped by parlor.supervisor.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from parlor.paths import STATIC_ROOT
from parlor.stack import Stack, run_stack
from parlor.supervisor import LOOPBACK, Service, ServiceSpec, free_port, running

# A throw-away value for a loopback stack that lives as long as one benchmark run.
INTERNAL_TOKEN = "bench-internal-token"  # noqa: S105


def static_root_with(workdir: Path) -> Path:
    """chat_ui's static files plus room for the benchmark's same-size static pages."""
    root = workdir / "static"
    if not root.exists():
        shutil.copytree(STATIC_ROOT, root)
    (root / "bench").mkdir(exist_ok=True)
    return root


@contextlib.contextmanager
def run_bench_stack(
    model: Path,
    workdir: Path,
    *,
    threads: int,
    n_ctx: int,
    max_tokens: int,
    engine: str,
) -> Iterator[Stack]:
    """The stack of `parlor up` and the stack tests, with the benchmark's threads and
    context, on SQLite."""
    workdir.mkdir(parents=True, exist_ok=True)
    with run_stack(
        workdir,
        database_url=f"sqlite:///{workdir / 'parlor.db'}",
        model=model,
        max_tokens=max_tokens,
        token=INTERNAL_TOKEN,
        static_root=static_root_with(workdir),
        lm_env={
            "LM_API_N_THREADS": str(threads),
            "LM_API_N_CTX": str(n_ctx),
            "LM_API_ENGINE": engine,
            # Room for part 2's largest load; one more waiting request would be refused.
            "LM_API_MAX_QUEUE": "16",
        },
        # No system prompt, so every depth sends the model the very same prompt; no
        # model titles, so the model answers only what the benchmark asks.
        ui_env={"CHAT_UI_DEFAULT_SYSTEM_PROMPT": "", "CHAT_UI_MODEL_TITLES": "false"},
    ) as stack:
        yield stack


@dataclass
class Peer:
    """llama-cpp-python's own OpenAI server on the same model and threads."""

    base_url: str
    service: Service
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
        "--host", LOOPBACK,
        "--port", str(port),
    ]  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    spec = ServiceSpec(
        name="llama_cpp.server",
        command=[sys.executable, "-m", "llama_cpp.server", *args],
        url=f"http://{LOOPBACK}:{port}",
        health_path="/v1/models",
        deadline_s=600,
        port=port,
        cwd=workdir,
    )
    with running(spec, log=workdir / "llama_cpp_server.log") as service:
        yield Peer(base_url=spec.url + "/v1", service=service, args=args)


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
