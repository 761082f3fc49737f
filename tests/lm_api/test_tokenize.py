"""POST /tokenize: llama-server's `{content}` → `{tokens}`, and `{messages}` → the prompt a
completion would read. Real llama.cpp; the expected tokens come from llama.cpp directly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest

from tests.lm_api.conftest import serve, toy_settings

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the river and the stone."},
]


@pytest.fixture(scope="module")
def vocab(toy_model: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(toy_model), vocab_only=True, verbose=False)
    yield model
    model.close()


def tokenize(url: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(url + "/tokenize", json=body, timeout=30, **kw)


def test_content_gives_the_models_own_tokens(toy_url: str, vocab: llama_cpp.Llama) -> None:
    text = "xxxxxxxx café <|im_start|> the river"
    r = tokenize(toy_url, {"content": text})
    assert r.status_code == 200, r.text
    assert r.json() == {"tokens": vocab.tokenize(text.encode(), add_bos=False, special=True)}
    # A control token is one token, as in a prompt.
    marker = vocab.tokenize(b"<|im_start|>", add_bos=False, special=True)
    assert len(marker) == 1 and marker[0] in r.json()["tokens"]


def test_add_special_adds_bos_when_the_model_wants_one(
    toy_url: str, vocab: llama_cpp.Llama
) -> None:
    plain = tokenize(toy_url, {"content": "hello"}).json()["tokens"]
    special = tokenize(toy_url, {"content": "hello", "add_special": True}).json()["tokens"]
    assert special == vocab.tokenize(b"hello", add_bos=True, special=True)
    if llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(vocab.model)):
        assert special == [vocab.token_bos(), *plain]


def test_token_dense_text_counts_about_one_token_per_character(toy_url: str) -> None:
    # The case of issue 10: 3,800 'x' are far more than 3,800 / 3 tokens.
    tokens = tokenize(toy_url, {"content": "x" * 3800}).json()["tokens"]
    assert len(tokens) > 3800 / 3


def test_messages_count_is_the_prompt_a_completion_reads(toy_url: str) -> None:
    r = tokenize(toy_url, {"messages": CHAT, "model": "toy"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) > 10
    answer = httpx.post(
        toy_url + "/v1/chat/completions", json={"messages": CHAT, "max_tokens": 1}, timeout=60
    ).json()
    assert answer["usage"]["prompt_tokens"] == body["count"]


def test_messages_use_the_chat_template(toy_url: str) -> None:
    text = CHAT[1]["content"]
    plain = tokenize(toy_url, {"content": text}).json()["tokens"]
    chat = tokenize(toy_url, {"messages": [{"role": "user", "content": text}]}).json()
    assert chat["count"] > len(plain)  # the template's markers are counted too


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": 5},
        {"content": "a", "messages": CHAT},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"content": "a", "add_special": "yes"},
    ],
)
def test_bad_bodies_are_400_in_openai_shape(toy_url: str, body: dict[str, Any]) -> None:
    r = tokenize(toy_url, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"]


@pytest.fixture(scope="module")
def locked_url(toy_model: Path) -> Iterator[str]:
    with serve(toy_settings(toy_model, internal_token="s3cret")) as url:
        yield url


@pytest.mark.parametrize("header", [None, "Bearer wrong"])
def test_tokenize_is_behind_the_token(locked_url: str, header: str | None) -> None:
    headers = {"authorization": header} if header else {}
    r = tokenize(locked_url, {"content": "hi"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    ok = tokenize(locked_url, {"content": "hi"}, headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["tokens"]
