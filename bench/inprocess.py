"""llama-cpp-python in this very process: the limit every other depth is compared with."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.streams import SAMPLING, StreamTiming, answer_tokens


@contextlib.contextmanager
def load_llama(model: Path, *, threads: int, n_ctx: int) -> Iterator[Any]:
    from llama_cpp import Llama

    # Prompt evaluation gets the same threads as decoding (llama-cpp-python's default for
    # n_threads_batch is every CPU), and the same n_batch as lm_api, so both read alike.
    llm = Llama(
        model_path=str(model),
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=512,
        verbose=False,
    )
    try:
        yield llm
    finally:
        llm.close()


def stream_inprocess(llm: Any, messages: list[dict[str, str]], max_tokens: int) -> StreamTiming:
    timing = StreamTiming(t_request=time.perf_counter())
    finish: str | None = None
    for chunk in llm.create_chat_completion(
        messages=messages, max_tokens=max_tokens, stream=True, **SAMPLING
    ):
        choice = chunk["choices"][0]
        if choice["delta"].get("content"):
            timing.content_arrived()
        finish = choice.get("finish_reason") or finish
    timing.tokens = answer_tokens(finish, max_tokens, timing.chunks)
    return timing
