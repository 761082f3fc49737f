"""The whole stack as real processes on loopback: db_api, lm_api (real llama.cpp on a
synthetic model), chat_ui and real nginx rendered from the project's template.

Three stacks, each started once per session and only if a test asks for it:
- `quick_stack`: SQLite, the toy model, short answers (32 tokens): full flows.
- `postgres_stack`: the same on PostgreSQL (TEST_DATABASE_URL), skipped without it.
- `slow_stack`: SQLite, the `small` model, 200-token answers that take a visible while:
  unbuffered-stream proof, growing answers, stop, reload during an answer.
Each has its own lm_api, so a long answer never queues a quick one behind it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.stack.nginx_process import require_nginx, run_nginx
from tests.support import Service, fresh_postgres_database, postgres_server_url, run_service

TOKEN = "stack-internal-token"
QUICK_TOKENS = 32
SLOW_TOKENS = 200


@dataclass
class Stack:
    url: str  # nginx: the only address a browser would use
    db: Service
    lm: Service
    ui: Service
    max_tokens: int

    def lm_metric(self, name: str) -> float:
        """A sample of lm_api's Prometheus metrics (0 when not exported yet)."""
        text = httpx.get(self.lm.url + "/metrics").text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def wait_idle(self, deadline_s: float = 120.0) -> None:
        """Poll until lm_api runs no generation (a stopped one may still be winding down)."""
        end = time.monotonic() + deadline_s
        while self.lm_metric("lm_api_generation_in_progress") != 0:
            assert time.monotonic() < end, "lm_api still generating at the deadline"
            time.sleep(0.05)  # poll interval


@contextlib.contextmanager
def run_stack(work: Path, database_url: str, model: Path, max_tokens: int) -> Iterator[Stack]:
    from db_api.db import upgrade_database

    require_nginx()
    logs = work / "logs"
    logs.mkdir(parents=True)
    upgrade_database(database_url)
    with (
        run_service(
            "db_api",
            "db_api.main:app",
            {"DB_API_DATABASE_URL": database_url, "DB_API_INTERNAL_TOKEN": TOKEN},
            logs,
        ) as db,
        run_service(
            "lm_api",
            "lm_api.main:app",
            {"LM_API_MODEL_PATH": str(model), "LM_API_INTERNAL_TOKEN": TOKEN},
            logs,
        ) as lm,
        run_service(
            "chat_ui",
            "chat_ui.main:app",
            {
                "CHAT_UI_DB_API_URL": db.url,
                "CHAT_UI_LM_API_URL": lm.url + "/v1",
                "CHAT_UI_INTERNAL_TOKEN": TOKEN,
                "CHAT_UI_SECRET_KEY": "stack-test-secret-0123456789abcdef",
                "CHAT_UI_MAX_TOKENS": str(max_tokens),
            },
            logs,
        ) as ui,
        run_nginx(work / "nginx", ui.url) as (url, _config),
    ):
        yield Stack(url=url, db=db, lm=lm, ui=ui, max_tokens=max_tokens)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `small` synthetic model: slow enough on a CPU to watch an answer grow."""
    from lm_api.synthetic import write_gguf

    return write_gguf(tmp_path_factory.mktemp("models") / "small.gguf", preset="small")


@pytest.fixture(scope="session")
def quick_stack(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("quick-stack")
    with run_stack(work, f"sqlite:///{work / 'parlor.db'}", toy_model, QUICK_TOKENS) as stack:
        yield stack


@pytest.fixture(scope="session")
def postgres_stack(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Iterator[Stack]:
    server = postgres_server_url()
    if server is None:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL to run the stack on")
    work = tmp_path_factory.mktemp("postgres-stack")
    with (
        fresh_postgres_database(server) as database_url,
        run_stack(work, database_url, toy_model, QUICK_TOKENS) as stack,
    ):
        yield stack


@pytest.fixture(scope="session")
def slow_stack(tmp_path_factory: pytest.TempPathFactory, small_model: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("slow-stack")
    with run_stack(work, f"sqlite:///{work / 'parlor.db'}", small_model, SLOW_TOKENS) as stack:
        yield stack
