"""An OpenAI-compatible model server that answers with a fixed Markdown text, for the
browser tests of how answers are rendered (a synthetic model's random tokens never write a
code fence). Parlor works with any OpenAI-compatible server; this one stands in for a
hosted API.

The answer is streamed in pieces and pauses at each `GATE` until the test releases it
(`POST /release`), so a test can look at the page in the middle of an answer without any
clock. `GET /waiting` says at which gate (1, 2...) an answer waits, 0 when none does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

GATE = "\x00gate"
ANSWER = [
    "Here is **a function**",
    " that doubles a number:\n\n",
    "```python\n",
    "def double(x):\n",
    "    return x * 2  # <twice>\n",
    "```\n",
    "\n",
    GATE,
    "It works on *any* number",
    ", for example:\n\n- `double(2)` is 4\n",
    "- `double(-1)` is -2\n\n",
    GATE,
    "That is all.",
]
TEXT = "".join(piece for piece in ANSWER if piece != GATE)

app = FastAPI()
_release = asyncio.Condition()
_released = 0
_waiting = 0  # the gate an answer waits at


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/models")
async def models() -> dict[str, object]:
    model = {"id": "scripted", "object": "model", "meta": {"n_ctx": 8192}}
    return {"object": "list", "data": [model]}


@app.post("/release")
async def release() -> dict[str, int]:
    """Let every paused stream go on to its next gate."""
    global _released
    async with _release:
        _released += 1
        _release.notify_all()
    return {"released": _released}


@app.get("/waiting")
async def waiting() -> dict[str, int]:
    return {"gate": _waiting}


def _chunk(**delta: object) -> bytes:
    body = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def _answer() -> AsyncIterator[bytes]:
    global _waiting
    yield _chunk(role="assistant", content="")
    async with _release:
        start = _released
    gate = 0
    for piece in ANSWER:
        if piece != GATE:
            yield _chunk(content=piece)
            continue
        gate += 1
        async with _release:
            _waiting = gate
            try:
                await _release.wait_for(lambda n=start + gate: _released >= n)  # type: ignore[misc]
            finally:
                _waiting = 0
    done = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "model": "scripted",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }
    yield f"data: {json.dumps(done)}\n\n".encode()
    yield b"data: [DONE]\n\n"


@app.post("/v1/chat/completions")
async def chat_completions() -> StreamingResponse:
    return StreamingResponse(_answer(), media_type="text/event-stream")
