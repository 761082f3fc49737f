"""The per-sequence object both engines use: tokens in, text events out, one end.

Real llama.cpp tokenizer (the toy model, vocabulary only); the sampled tokens are the
tokenization of a known text, so the expected output is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import pytest

from lm_api.engines.base import (
    Cancelled,
    Event,
    Failed,
    Finished,
    Generation,
    GenerationRequest,
    TextDelta,
)
from lm_api.engines.sequence import Sequence
from lm_api.metrics import Metrics
from lm_api.prompt import Prompt


@pytest.fixture(scope="module")
def llm(toy_model: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(toy_model), vocab_only=True, verbose=False)
    yield model
    model.close()


def run(
    llm: llama_cpp.Llama, text: str, *, stop: tuple[str, ...] = (), max_tokens: int = 100
) -> tuple[list[Event], str | None, Metrics, int]:
    """Feed `text`'s tokens to a fresh sequence until it ends; (events, end, metrics, fed)."""
    metrics = Metrics()
    loop = asyncio.new_event_loop()
    try:
        request = GenerationRequest(
            prompt=Prompt([1, 2, 3], ()),
            max_tokens=max_tokens,
            stop=stop,
        )
        gen = Generation(request, loop)
        seq = Sequence(gen, llm, llama_cpp.llama_model_get_vocab(llm.model), metrics)
        end, fed = None, 0
        for token in llm.tokenize(text.encode(), add_bos=False):
            fed += 1
            end = seq.take(token)
            if end is not None:
                break
        seq.finish(end or "length")
        seq.finish("stop")  # a second end is ignored

        async def drain() -> list[Event]:
            await asyncio.sleep(0)  # let the emitted events land
            return [e async for e in gen.events()]

        return loop.run_until_complete(drain()), end, metrics, fed
    finally:
        loop.close()


def pieces(llm: llama_cpp.Llama, text: str) -> str:
    """What `text`'s tokens detokenize to, one by one (the tokenizer may add a space)."""
    tokens = llm.tokenize(text.encode(), add_bos=False)
    return b"".join(llm.detokenize([t]) for t in tokens).decode()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_stop_string_across_tokens_ends_the_sequence_before_it(llm: llama_cpp.Llama) -> None:
    text = "the river and the stone STOPPED here"
    events, end, metrics, fed = run(llm, text, stop=("STOP",))
    assert end == "stop"
    whole = pieces(llm, text)
    assert text_of(events) == whole[: whole.index("STOP")]
    assert text_of(events).strip() == "the river and the stone"
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "stop"
    assert finished.prompt_tokens == 3
    assert finished.completion_tokens == fed
    assert sample(metrics, "lm_api_generations_total", finish_reason="stop") == 1
    assert sample(metrics, "lm_api_generation_in_progress") == 0
    assert sample(metrics, "lm_api_completion_tokens_total") == fed


def test_a_length_cut_releases_the_held_back_stop_prefix(llm: llama_cpp.Llama) -> None:
    tokens = llm.tokenize(b"the river ST", add_bos=False)
    events, end, _, _ = run(llm, "the river STONE", stop=("STOP",), max_tokens=len(tokens))
    assert end == "length"
    assert text_of(events) == pieces(llm, "the river ST")
    assert text_of(events).strip() == "the river ST"
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens == len(tokens)


def test_a_character_split_across_tokens_comes_out_whole(llm: llama_cpp.Llama) -> None:
    events, _, _, _ = run(llm, "café ☕ naïve")
    assert text_of(events) == pieces(llm, "café ☕ naïve")
    assert text_of(events).strip() == "café ☕ naïve"
    assert "\ufffd" not in text_of(events)


class Started:
    """A sequence started on its own event loop, for tests that drive it token by token."""

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self.metrics = Metrics()
        self.loop = asyncio.new_event_loop()
        self.gen = Generation(GenerationRequest(Prompt([1], ()), 10, ()), self.loop)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.seq = Sequence(self.gen, llm, vocab, self.metrics)

    def events(self) -> list[Event]:
        async def drain() -> list[Event]:
            await asyncio.sleep(0)  # let the emitted events land
            return [e async for e in self.gen.events()]

        try:
            return self.loop.run_until_complete(drain())
        finally:
            self.loop.close()


def test_a_cancelled_sequence_ends_at_the_next_token_without_an_answer(
    llm: llama_cpp.Llama,
) -> None:
    s = Started(llm)
    first, second = llm.tokenize(b"hello world", add_bos=False)[:2]
    assert s.seq.take(first) is None
    s.gen.cancel()
    assert s.seq.take(second) == "cancelled"
    s.seq.finish("cancelled")
    assert [e for e in s.events() if not isinstance(e, TextDelta)] == [Cancelled()]
    assert s.seq.n == 1
    assert sample(s.metrics, "lm_api_generations_total", finish_reason="cancelled") == 1
    assert sample(s.metrics, "lm_api_completion_tokens_total") == 1


def test_a_failed_sequence_sends_failed_and_counts_only_as_an_error(
    llm: llama_cpp.Llama,
) -> None:
    s = Started(llm)
    s.seq.take(llm.tokenize(b"hello", add_bos=False)[0])
    s.seq.fail(RuntimeError("boom"))
    s.seq.finish("length")  # ignored: it ended already
    events = s.events()
    assert events[-1] == Failed("generation failed: boom")
    assert not any(isinstance(e, Finished) for e in events)
    m = s.metrics
    assert sample(m, "lm_api_generations_total", finish_reason="error") == 1
    assert sample(m, "lm_api_generations_total", finish_reason="length") == 0
    assert sample(m, "lm_api_completion_tokens_total") == 0
    assert sample(m, "lm_api_generation_in_progress") == 0
