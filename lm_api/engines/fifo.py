"""The FIFO engine: one llama.cpp context, generations one at a time, in arrival order.

Simple and a little faster for a lone chat (llama-cpp-python's own generate loop and its
prompt cache); everyone else waits in a bounded line. `LM_API_ENGINE=fifo`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading

import llama_cpp

from lm_api.config import Settings
from lm_api.engines.base import Engine, Generation, Loader, load_llama
from lm_api.engines.sequence import EndReason, Sequence
from lm_api.metrics import Metrics

log = logging.getLogger("lm_api")


class FifoEngine(Engine):
    """One llama.cpp context, generations one at a time, in arrival order."""

    def __init__(self, settings: Settings, metrics: Metrics, loader: Loader = load_llama) -> None:
        super().__init__(settings, metrics, loader)
        self._jobs: queue.SimpleQueue[Generation | None] = queue.SimpleQueue()
        self._running: Generation | None = None
        self._closed = threading.Event()

    def _n_ctx(self) -> int:
        return self._llm.n_ctx() if self._llm is not None else self._settings.n_ctx

    def _n_running(self) -> int:
        return int(self._running is not None)

    def _line_full(self) -> bool:
        busy = self._running is not None or self._waiting > 0
        return busy and self._waiting >= self._settings.max_queue

    def _enqueue(self, gen: Generation) -> None:
        self._jobs.put(gen)

    def _layout(self, llm: llama_cpp.Llama) -> str:
        return f"n_ctx={llm.n_ctx()}"

    def _stop_serving(self) -> None:
        self._closed.set()
        with self._lock:
            running = self._running
        if running is not None:
            running.cancel()
        while True:
            try:
                waiting = self._jobs.get_nowait()
            except queue.Empty:
                break
            if waiting is not None:
                waiting.cancel()
        self._jobs.put(None)

    # the worker

    def _serve(self) -> None:
        while True:
            gen = self._jobs.get()
            if gen is None:
                return
            if self._closed.is_set():
                gen.cancel()
                continue
            with self._lock:
                if gen.left_line:  # cancelled while waiting
                    continue
                gen.left_line = True
                self._waiting -= 1
                self._running = gen
                self._metrics.queue_depth.set(self._waiting)
            try:
                self._run(gen)
            finally:
                with self._lock:
                    self._running = None

    def _run(self, gen: Generation) -> None:
        assert self._llm is not None
        llm, req = self._llm, gen.request
        seq = Sequence(gen, llm, self._vocab, self._metrics)
        end: EndReason | None = None
        try:
            llm.set_seed(req.seed if req.seed is not None else random.getrandbits(31))
            tokens = llm.generate(
                req.prompt.tokens,
                temp=req.temperature,
                top_p=req.top_p,
                repeat_penalty=1.0,
                frequency_penalty=req.frequency_penalty,
                presence_penalty=req.presence_penalty,
                # reset=True (the default) still keeps the KV cache of the longest common
                # prefix with the previous generation: a growing chat re-reads only its tail.
            )
            try:
                for token in tokens:
                    end = seq.take(token)
                    if end is not None:
                        break
            finally:
                with contextlib.suppress(Exception):
                    tokens.close()
        except Exception as exc:  # never let one request kill the worker
            llm.reset()  # the context state is unknown now: re-read the next prompt fully
            seq.fail(exc)
            return
        seq.finish(end or "length")
