"""A tiny OpenAI-compatible server whose answers carry what a model may emit but no
database can store: NUL bytes and lone UTF-16 surrogates (as JSON escapes). Only the
fault suite's `garbage` scenario uses it: `uvicorn tests.faults.fake_openai:app`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

app = FastAPI()

# Pieces of one answer, streamed in this order; "\x00" and "\ud800" are sent as the JSON
# escapes \u0000 and \ud800.
PIECES = ["Before", " \x00", "NUL", ", then", " \ud800", "lone", " \udfff", "surrogates", ", end."]
# The answer as it can be stored: each unstorable character replaced by U+FFFD.
STORABLE = "".join(PIECES).replace("\x00", "\ufffd").replace("\ud800", "\ufffd")
STORABLE = STORABLE.replace("\udfff", "\ufffd")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/models")
async def models() -> dict[str, object]:
    return {"object": "list", "data": [{"id": "garbage", "object": "model", "owned_by": "test"}]}


def _chunk(**delta: str) -> str:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "garbage",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return f"data: {json.dumps(body)}\n\n"


async def _stream() -> AsyncIterator[str]:
    yield _chunk(role="assistant")
    for piece in PIECES:
        await asyncio.sleep(0.05)  # an answer that takes a moment, like a model's
        yield _chunk(content=piece)
    yield "data: [DONE]\n\n"


@app.post("/v1/chat/completions")
async def completions() -> StreamingResponse:
    return StreamingResponse(_stream(), media_type="text/event-stream")
