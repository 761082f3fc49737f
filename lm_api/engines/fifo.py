"""The FIFO engine: one llama.cpp context, generations one at a time, in arrival order.

Simple: llama-cpp-python's context and its prompt cache, the same sampler chain as the
batched engine (lm_api.engines.sampling); everyone else waits in a bounded line.
`LM_API_ENGINE=fifo`.
"""

from __future__ import annotations

import logging
import queue
import threading

import llama_cpp

from lm_api.config import Settings
from lm_api.engines.base import Engine, Generation, Loader, load_llama
from lm_api.engines.sampling import SamplerChain
from lm_api.engines.sequence import EndReason, Sequence, common_prefix
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
        prompt = req.prompt.tokens
        seq = Sequence(gen, llm, self._vocab, self._metrics)
        end: EndReason | None = None
        chain: SamplerChain | None = None
        try:
            chain = SamplerChain(req.sampling, self._vocab, n_ctx=llm.n_ctx())
            chain.prime(prompt)
            # Keep the KV cache of the longest prefix shared with what the context holds
            # (a growing chat re-reads only its tail), but evaluate at least the last
            # prompt token: its logits give the first answer token.
            cached = llm.input_ids[: llm.n_tokens].tolist()
            llm.n_tokens = min(common_prefix(cached, prompt), len(prompt) - 1)
            llm.eval(prompt[llm.n_tokens :])
            while end is None:
                token = chain.sample(llm.ctx, -1)
                end = seq.take(token)  # checks cancellation first
                if end is None:
                    llm.eval([token])
        except Exception as exc:  # never let one request kill the worker
            llm.reset()  # the context state is unknown now: re-read the next prompt fully
            seq.fail(exc)
            return
        finally:
            if chain is not None:
                chain.close()
        seq.finish(end)
