"""lm_api test servers: real uvicorn (in a thread, so tests can inject a loader) over real
llama.cpp with the synthetic toy model."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from lm_api.config import Settings
from lm_api.engine import Loader, load_llama
from lm_api.main import create_app
from tests.support import free_port, wait_healthy

GATE_TIMEOUT_S = 60.0


@contextlib.contextmanager
def serve(
    settings: Settings, *, loader: Loader | None = None, healthy: bool = True
) -> Iterator[str]:
    """Run lm_api on a free loopback port; yield its base URL (health polled if `healthy`)."""
    app = create_app(settings, loader=loader)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # the listener is up: poll a flag with a deadline
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        if healthy:
            wait_healthy(url + "/health", deadline_s=60)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def poll_until(check: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
    """Poll `check` until it holds; fail at the deadline."""
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # poll interval, not a wait for readiness


def health(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/health", timeout=10).json())


class Gate:
    """Holds every generation before its first token until `release()`.

    The model is real; the gate only decides when the worker may start decoding, so tests
    can observe a busy server (queue, health, cancellation) without timing guesses.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()  # a generation is waiting at the gate
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    def wait_entered(self) -> None:
        assert self.entered.wait(GATE_TIMEOUT_S), "no generation reached the gate"

    def loader(self, settings: Settings) -> Any:
        llm = load_llama(settings)
        real_generate = llm.generate

        def gated(*args: Any, **kwargs: Any) -> Iterator[int]:
            self.entered.set()
            assert self._open.wait(GATE_TIMEOUT_S), "gate never released"
            yield from real_generate(*args, **kwargs)

        llm.generate = gated  # type: ignore[method-assign]
        return llm


def toy_settings(model: Path, **overrides: Any) -> Settings:
    # One thread: the toy model is too small to gain from more, and test machines are
    # shared, where llama.cpp's spinning threads slow down many times when cores are busy.
    overrides.setdefault("n_threads", 1)
    return Settings(model_path=model, n_ctx=overrides.pop("n_ctx", 1024), **overrides)


@pytest.fixture(scope="module")
def toy_url(toy_model: Path) -> Iterator[str]:
    """A shared lm_api on the toy model (tests using it leave it idle)."""
    with serve(toy_settings(toy_model)) as url:
        yield url


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release()  # never leave a worker blocked
