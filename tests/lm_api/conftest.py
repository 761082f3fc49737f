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
from llama_cpp._internals import LlamaBatch, LlamaContext

from lm_api.config import Settings
from lm_api.engines.base import Loader
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
    """Holds the first llama.cpp decode (the first prompt) until `release()`.

    The model is real; the gate only decides when the worker may start decoding, so tests
    can observe a busy server (queue, health, cancellation) without timing guesses. It
    wraps `LlamaContext.decode`, which both engines decode through.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()  # a generation is waiting at the gate
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    def wait_entered(self) -> None:
        assert self.entered.wait(GATE_TIMEOUT_S), "no generation reached the gate"

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_decode = LlamaContext.decode

        def gated(ctx: LlamaContext, batch: LlamaBatch) -> None:
            self.entered.set()
            assert self._open.wait(GATE_TIMEOUT_S), "gate never released"
            real_decode(ctx, batch)

        monkeypatch.setattr(LlamaContext, "decode", gated)


def on_decode(monkeypatch: pytest.MonkeyPatch, hook: Callable[[LlamaBatch], None]) -> None:
    """Call `hook(batch)` before every llama.cpp decode of either engine (it may raise)."""
    real_decode = LlamaContext.decode

    def hooked(ctx: LlamaContext, batch: LlamaBatch) -> None:
        hook(batch)
        real_decode(ctx, batch)

    monkeypatch.setattr(LlamaContext, "decode", hooked)


def batch_rows(batch: LlamaBatch) -> list[int]:
    """The sequence id of each token in a batch."""
    b = batch.batch
    return [b.seq_id[i][0] for i in range(b.n_tokens)]


def toy_settings(model: Path, **overrides: Any) -> Settings:
    # One thread: the toy model is too small to gain from more, and test machines are
    # shared, where llama.cpp's spinning threads slow down many times when cores are busy.
    overrides.setdefault("n_threads", 1)
    return Settings(model_path=model, n_ctx=overrides.pop("n_ctx", 1024), **overrides)


ENGINES = ["fifo", "batched"]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each engine-level test runs against every engine (LM_API_ENGINE)."""
    return str(request.param)


@pytest.fixture(scope="module")
def toy_url(toy_model: Path, engine: str) -> Iterator[str]:
    """A shared lm_api on the toy model (tests using it leave it idle)."""
    with serve(toy_settings(toy_model, engine=engine)) as url:
        yield url


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    g = Gate()
    g.install(monkeypatch)
    yield g
    g.release()  # never leave a worker blocked
