"""One running generation, as both engines see it (like llama.cpp's `server_slot`).

A `Sequence` is made when a generation starts. It owns what turns sampled tokens into what
the caller receives: the UTF-8 decoder (a character may span tokens), the stop-string
matcher, the token counter and the timings. The engine samples; the sequence says after
each token whether the generation ends, and at the end sends the tail and `Finished` (or
`Failed`) and records the metrics. Every generation ends exactly once.
"""

from __future__ import annotations

import codecs
import logging
import time
from typing import Any, Literal

import llama_cpp

from lm_api.engines.base import Failed, Finished, Generation, TextDelta
from lm_api.metrics import Metrics
from lm_api.stops import StopMatcher

log = logging.getLogger("lm_api")

EndReason = Literal["stop", "length", "cancelled", "error"]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two token lists share (what a KV cache can keep)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Sequence:
    """The text side of one generation: token in, text events out, then its end."""

    def __init__(self, gen: Generation, llm: llama_cpp.Llama, vocab: Any, metrics: Metrics) -> None:
        self.gen = gen
        self.n = 0  # answer tokens so far (an end-of-generation token is not one)
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self._llm = llm
        self._vocab = vocab
        self._metrics = metrics
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stopper = StopMatcher(gen.request.stop)
        self._ended = False
        metrics.in_progress.inc()
        metrics.prompt_tokens.inc(len(gen.request.prompt.tokens))

    @property
    def ended(self) -> bool:
        return self._ended

    def take(self, token: int) -> EndReason | None:
        """Handle a sampled token; the reason the generation ends now, or None to go on.

        Checks, in order: the caller left (so a client that hangs up frees the model
        before the next token), end of generation, then sends the token's text (held
        back while it could be the start of a stop string) and checks the stop strings
        and the length.
        """
        if self.gen.cancelled.is_set():
            return "cancelled"
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return "stop"
        self.n += 1
        if self.first_at is None:
            self.first_at = time.perf_counter()
        piece = self._decoder.decode(self._llm.detokenize([token]))
        text, hit = self._stopper.feed(piece)
        if text:
            self.gen.emit(TextDelta(text))
        if hit:
            return "stop"
        if self.n >= self.gen.request.max_tokens:
            return "length"
        return None

    def finish(self, reason: EndReason) -> None:
        """End the generation: record it, and tell the caller unless it left."""
        if self._ended:
            return
        self._ended = True
        ended = time.perf_counter()
        m, gen, n, first_at = self._metrics, self.gen, self.n, self.first_at
        m.in_progress.dec()
        m.generations.labels(reason).inc()
        if reason == "error":  # a failed generation counts only as an error
            return
        m.completion_tokens.inc(n)
        if first_at is not None:
            m.ttft.observe(first_at - gen.accepted_at)
            if n > 1 and ended > first_at:
                m.tokens_per_second.observe((n - 1) / (ended - first_at))
        if reason == "cancelled":
            return  # its caller got Cancelled already
        if reason == "length":
            # Cut by length: what was held back (a stop prefix, a partial character) goes out.
            tail, _ = self._stopper.feed(self._decoder.decode(b"", final=True))
            tail += self._stopper.flush()
            if tail:
                gen.emit(TextDelta(tail))
        gen.emit(
            Finished(
                finish_reason=reason,
                prompt_tokens=len(gen.request.prompt.tokens),
                completion_tokens=n,
                ttft_ms=None if first_at is None else (first_at - gen.accepted_at) * 1000,
                generation_ms=(ended - self.started) * 1000,
            )
        )

    def fail(self, exc: BaseException) -> None:
        """End the generation as an error; its caller gets `Failed` with the reason."""
        if self._ended:
            return
        log.error("lm_api: generation failed: %s", exc, exc_info=exc)
        self.finish("error")
        self.gen.emit(Failed(f"generation failed: {exc}"))
