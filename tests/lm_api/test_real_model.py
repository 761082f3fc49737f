"""A real trained GGUF without a chat template (stories260K), when ../shared has it.

The synthetic models never end an answer by themselves; a real model does, so this checks
the end-of-generation path and the default ChatML stop strings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from tests.lm_api.conftest import serve, toy_settings
from tests.support import SHARED

STORIES = SHARED / "models" / "stories260K.gguf"

pytestmark = pytest.mark.skipif(not STORIES.is_file(), reason="no ../shared/models here")


@pytest.fixture(scope="module")
def stories_url(engine: str) -> Iterator[str]:
    settings = toy_settings(STORIES, n_ctx=512, max_tokens=200, engine=engine)
    with serve(settings) as url:
        yield url


def test_real_model_streams_concurrently_and_ends_by_itself(stories_url: str) -> None:
    async def one(i: int) -> tuple[str, str | None, int]:
        client = openai.AsyncOpenAI(
            base_url=stories_url + "/v1", api_key="x", max_retries=0, timeout=60
        )
        stream = await client.chat.completions.create(
            model="stories260K",
            messages=[{"role": "user", "content": f"Once upon a time, Lily {i}"}],
            stream=True,
            stream_options={"include_usage": True},
            seed=i,
        )
        text, finish, tokens = "", None, 0
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return text, finish, tokens

    async def three() -> list[tuple[str, str | None, int]]:
        return await asyncio.gather(*(one(i) for i in range(3)))

    for text, finish, tokens in asyncio.run(three()):
        assert finish in ("stop", "length")
        assert 0 < tokens <= 200
        assert "<|im_start|>" not in text and "<|im_end|>" not in text
        if finish == "length":
            assert tokens == 200
