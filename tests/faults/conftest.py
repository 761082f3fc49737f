"""Fixtures of the fault suite: one stack on the real services (PostgreSQL when
TEST_DATABASE_URL is set, else SQLite) and one whose model server is a fake that emits
unstorable characters. PARLOR_FAULT_RUNS=N repeats every scenario N times (what
bench/reliability.py uses to fill bench/RELIABILITY.md)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultStack, fault_stack
from tests.stack.nginx_process import require_nginx
from tests.support import fresh_postgres_database, postgres_server_url

RUNS = int(os.environ.get("PARLOR_FAULT_RUNS", "1"))
# Long enough answers to break in the middle of (the synthetic model always writes
# exactly this many tokens).
ANSWER_TOKENS = 160
UI_ENV = {
    "CHAT_UI_MAX_TOKENS": str(ANSWER_TOKENS),
    "CHAT_UI_FLUSH_INTERVAL_S": "0.2",
    "CHAT_UI_SAVE_RETRY_MAX_S": "1",
    "CHAT_UI_LM_QUIET_S": "1",
    # Above lm_api's keep-alive (every 15 s), which a frozen process no longer sends; a
    # first answer after a restart may take several seconds before its first token.
    "CHAT_UI_LM_STALL_S": "20",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "run" in metafunc.fixturenames:
        metafunc.parametrize("run", range(RUNS))


def _write_model(path: Path, preset: str) -> Path:
    from parlor.synth import write_gguf

    result: Path = write_gguf(path, preset=preset, seed=0)
    return result


@pytest.fixture(scope="session")
def fault_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `small` synthetic model: slow enough on a CPU to break an answer midway."""
    return _write_model(tmp_path_factory.mktemp("models") / "small.gguf", "small")


@contextlib.contextmanager
def _database(work: Path) -> Iterator[str]:
    server = postgres_server_url()
    if server is None:
        yield f"sqlite:///{work / 'parlor.db'}"
        return
    with fresh_postgres_database(server) as url:
        yield url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, fault_model: Path) -> Iterator[FaultStack]:
    require_nginx()
    work = tmp_path_factory.mktemp("fault-stack")
    with (
        _database(work) as database_url,
        fault_stack(
            work,
            database_url=database_url,
            lm_app="lm_api.main:app",
            lm_env={"LM_API_MODEL_PATH": str(fault_model)},
            ui_env=UI_ENV,
        ) as s,
    ):
        yield s


@pytest.fixture(scope="session")
def garbage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    require_nginx()
    work = tmp_path_factory.mktemp("garbage-stack")
    with (
        _database(work) as database_url,
        fault_stack(
            work,
            database_url=database_url,
            lm_app="tests.faults.fake_openai:app",
            lm_env={},
            ui_env=UI_ENV,
        ) as s,
    ):
        yield s


@pytest.fixture
def healed(stack: FaultStack) -> Iterator[FaultStack]:
    """The stack, every service brought back after the test whatever it broke; chat_ui
    must not have logged a traceback meanwhile."""
    before = len(stack.ui.log_text())
    try:
        yield stack
    finally:
        stack.heal()
    logged = stack.ui.log_text()[before:]
    assert "Traceback" not in logged, logged[-3000:]
