"""A chat that ends with an assistant message continues that message (llama-server's
prefill): the prompt holds the partial answer with its turn left open, and the answer
carries only what follows. Real llama.cpp, greedy sampling, so the runs are comparable."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest

USER = [{"role": "user", "content": "Tell me about the river and the stone."}]


@pytest.fixture(scope="module")
def vocab(toy_model: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(toy_model), vocab_only=True, verbose=False)
    yield model
    model.close()


def complete(url: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return dict(r.json())


def text(answer: dict[str, Any]) -> str:
    return str(answer["choices"][0]["message"]["content"])


def test_continuing_a_cut_answer_goes_on_from_where_it_stopped(toy_url: str) -> None:
    full = complete(toy_url, USER, 16)
    cut = complete(toy_url, USER, 8)
    partial = text(cut)
    assert cut["choices"][0]["finish_reason"] == "length"
    assert partial and text(full).startswith(partial)

    more = complete(toy_url, [*USER, {"role": "assistant", "content": partial}], 8)
    # Only the continuation comes back, and it is what the model would have written next.
    assert text(more) == text(full)[len(partial) :]
    assert not text(more).startswith(partial)
    # The prompt held the question and the 8 tokens of the partial answer.
    assert more["usage"]["prompt_tokens"] == full["usage"]["prompt_tokens"] + 8
    assert more["usage"]["completion_tokens"] == 8


def test_the_continuation_prompt_leaves_the_answer_turn_open(
    toy_url: str, vocab: llama_cpp.Llama
) -> None:
    partial = "The river said"
    messages = [*USER, {"role": "assistant", "content": partial}]
    # The toy model's template is ChatML: the answer's turn is opened and never closed.
    expected = f"<|im_start|>user\n{USER[0]['content']}<|im_end|>\n<|im_start|>assistant\n{partial}"
    tokens = vocab.tokenize(expected.encode(), add_bos=True, special=True)
    counted = httpx.post(toy_url + "/tokenize", json={"messages": messages}, timeout=30).json()
    assert counted["tokens"] == tokens
    assert complete(toy_url, messages, 2)["usage"]["prompt_tokens"] == len(tokens)


def test_the_stream_carries_only_the_continuation(toy_url: str) -> None:
    partial = text(complete(toy_url, USER, 6))
    messages = [*USER, {"role": "assistant", "content": partial}]
    whole = text(complete(toy_url, messages, 10))
    body = {"messages": messages, "max_tokens": 10, "temperature": 0, "stream": True}
    with httpx.stream("POST", toy_url + "/v1/chat/completions", json=body, timeout=60) as r:
        chunks = [
            json.loads(line[6:])
            for line in r.iter_lines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    assert streamed == whole
    assert not streamed.startswith(partial)


def test_an_empty_partial_answer_is_a_new_answer(toy_url: str) -> None:
    fresh = complete(toy_url, USER, 10)
    empty = complete(toy_url, [*USER, {"role": "assistant", "content": ""}], 10)
    assert text(empty) == text(fresh)
    assert empty["usage"]["prompt_tokens"] == fresh["usage"]["prompt_tokens"]


def test_two_assistant_messages_at_the_end_are_a_400(toy_url: str) -> None:
    messages = [
        *USER,
        {"role": "assistant", "content": "one"},
        {"role": "assistant", "content": "two"},
    ]
    r = httpx.post(toy_url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"
    assert "two assistant messages" in r.json()["error"]["message"]
