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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parlor.stack import Stack, run_stack
from tests.stack.nginx_process import require_nginx
from tests.support import fresh_postgres_database, postgres_server_url

QUICK_TOKENS = 32
SLOW_TOKENS = 200


@contextlib.contextmanager
def stack_on(
    work: Path, database_url: str, model: Path, max_tokens: int, **options: Any
) -> Iterator[Stack]:
    require_nginx()
    # Model titles off unless asked for: a title is one more model call after the first
    # answer, which tests counting lm_api's tokens would see.
    options["ui_env"] = {"CHAT_UI_MODEL_TITLES": "false", **options.get("ui_env", {})}
    with run_stack(
        work, database_url=database_url, model=model, max_tokens=max_tokens, **options
    ) as s:
        yield s


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `small` synthetic model: slow enough on a CPU to watch an answer grow."""
    from parlor.synth import write_gguf

    return write_gguf(tmp_path_factory.mktemp("models") / "small.gguf", preset="small")


@pytest.fixture(scope="session")
def quick_stack(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("quick-stack")
    with stack_on(work, f"sqlite:///{work / 'parlor.db'}", toy_model, QUICK_TOKENS) as stack:
        yield stack


@pytest.fixture(scope="session")
def postgres_stack(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Iterator[Stack]:
    server = postgres_server_url()
    if server is None:
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL to run the stack on")
    work = tmp_path_factory.mktemp("postgres-stack")
    with (
        fresh_postgres_database(server) as database_url,
        stack_on(work, database_url, toy_model, QUICK_TOKENS) as stack,
    ):
        yield stack


@pytest.fixture(scope="session")
def slow_stack(tmp_path_factory: pytest.TempPathFactory, small_model: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("slow-stack")
    with stack_on(work, f"sqlite:///{work / 'parlor.db'}", small_model, SLOW_TOKENS) as stack:
        yield stack


CHROMIUM = Path("/usr/bin/chromium")
# Generous: a deadline for a stuck page on a busy 2-core machine, not a timing check.
WAIT_MS = 60_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()
