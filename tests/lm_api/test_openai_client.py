"""lm_api driven by the official OpenAI client, on real llama.cpp with the toy model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.lm_api.conftest import serve, toy_settings

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the river and the stone."},
]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def async_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model_with_its_context(toy_url: str, toy_model: Path) -> None:
    models = client(toy_url).models.list()
    assert [m.id for m in models.data] == ["toy"]
    assert models.data[0].model_extra == {
        "meta": {
            "n_ctx": 1024,
            "n_ctx_train": 4096,
            "size_bytes": toy_model.stat().st_size,
            "quantization": "F32",
            "architecture": "llama",
            "loaded": True,
            "state": "ready",
        }
    }


def test_non_stream_answer_has_openai_shape_and_exact_length(toy_url: str) -> None:
    resp = client(toy_url).chat.completions.create(
        model="toy",
        messages=MESSAGES,
        max_tokens=16,
    )
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "toy"
    assert resp.created > 0
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 16
    assert resp.usage.prompt_tokens > 10
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 16


def test_stream_has_role_first_content_then_finish_and_usage(toy_url: str) -> None:
    stream = client(toy_url).chat.completions.create(
        model="toy",
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_stream_and_non_stream_give_the_same_text_for_the_same_seed(toy_url: str) -> None:
    c = client(toy_url)
    whole = c.chat.completions.create(
        model="toy",
        messages=MESSAGES,
        max_tokens=20,
        seed=7,
    )
    stream = c.chat.completions.create(
        model="toy",
        messages=MESSAGES,
        max_tokens=20,
        seed=7,
        stream=True,
    )
    streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert streamed == whole.choices[0].message.content


def test_a_stop_string_cuts_the_answer(toy_url: str) -> None:
    c = client(toy_url)
    full = (
        c.chat.completions.create(
            model="toy",
            messages=MESSAGES,
            max_tokens=30,
            temperature=0,
        )
        .choices[0]
        .message.content
    )
    assert full and len(full) > 6
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = c.chat.completions.create(
        model="toy",
        messages=MESSAGES,
        max_tokens=30,
        temperature=0,
        stop=[stop],
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]


@pytest.mark.parametrize("n_clients", [2, 4])
def test_concurrent_streams_all_complete_with_their_full_token_count(
    toy_url: str, n_clients: int
) -> None:
    async def one(i: int) -> tuple[str, int, str | None]:
        stream = await async_client(toy_url).chat.completions.create(
            model="toy",
            messages=[{"role": "user", "content": f"client {i} says hello"}],
            max_tokens=40 + i,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, finish = "", 0, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage.completion_tokens
        return text, usage, finish

    async def all_of_them() -> list[tuple[str, int, str | None]]:
        return await asyncio.gather(*(one(i) for i in range(n_clients)))

    results = asyncio.run(all_of_them())
    assert [usage for _, usage, _ in results] == [40 + i for i in range(n_clients)]
    assert all(finish == "length" for _, _, finish in results)
    assert all(text for text, _, _ in results)


def test_a_model_without_chat_template_answers(toy_model_no_template: Path, engine: str) -> None:
    with serve(toy_settings(toy_model_no_template, engine=engine)) as url:
        resp = client(url).chat.completions.create(
            model="toy-no-template",
            messages=MESSAGES,
            max_tokens=25,
        )
        health = client(url).models.list()
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 25
    assert resp.model == "toy-no-template"
    assert health.data[0].id == "toy-no-template"


def test_a_prompt_longer_than_the_context_is_a_400(toy_url: str) -> None:
    long = "the river " * 1200  # well over the 1024-token context
    with pytest.raises(openai.BadRequestError) as err:
        client(toy_url).chat.completions.create(
            model="toy", messages=[{"role": "user", "content": long}], max_tokens=5
        )
    assert err.value.status_code == 400
    assert err.value.code == "context_length_exceeded"
    assert "1024" in err.value.message


def test_max_tokens_is_clamped_to_what_is_left_of_the_context(toy_url: str) -> None:
    c = client(toy_url)
    probe = c.chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "the river " * 130}], max_tokens=1
    )
    assert probe.usage is not None
    left = 1024 - probe.usage.prompt_tokens
    assert 0 < left < 500
    resp = c.chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "the river " * 130}], max_tokens=900
    )
    assert resp.usage is not None
    assert resp.usage.completion_tokens == left
    assert resp.choices[0].finish_reason == "length"


def test_a_jinja_chat_format_setting_replaces_the_gguf_template(
    toy_model: Path, engine: str
) -> None:
    template = (
        "{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}ASSISTANT:"
    )
    with serve(toy_settings(toy_model, chat_format=template, engine=engine)) as url:
        short = client(url).chat.completions.create(
            model="toy", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    with serve(toy_settings(toy_model, chat_format="chatml", engine=engine)) as url:
        chatml = client(url).chat.completions.create(
            model="toy", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    assert short.usage is not None and chatml.usage is not None
    # "USER: hi\nASSISTANT:" is shorter than the ChatML markers around "hi".
    assert short.usage.prompt_tokens < chatml.usage.prompt_tokens
    assert short.usage.completion_tokens == 3
