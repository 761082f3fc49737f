"""A stand-in for chat_ui behind nginx, for testing the nginx template alone.

Its streams pause after the first event until the test releases them, so a test can tell
"nginx forwarded the first event at once" from "nginx held it in a buffer" by what it has
received, without any clock.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

app = FastAPI()
OWN_CSP = "default-src 'none'; img-src 'self'"
_released: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/headers")
async def headers(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.headers))


@app.get("/page")
async def page() -> HTMLResponse:
    # Large enough for gzip_min_length, and with a header nginx must not duplicate.
    body = "<!doctype html><title>page</title>" + "<p>parlor</p>" * 500
    return HTMLResponse(body, headers={"X-Frame-Options": "SAMEORIGIN"})


@app.get("/page-with-csp")
async def page_with_csp() -> HTMLResponse:
    """A page that brings its own policy, as every chat_ui page does."""
    return HTMLResponse("<p>own policy</p>", headers={"Content-Security-Policy": OWN_CSP})


@app.get("/metrics")
async def metrics() -> PlainTextResponse:
    return PlainTextResponse("parlor_fake_requests_total 1\n")


@app.get("/too-big-header")
async def too_big_header() -> PlainTextResponse:
    """Headers larger than nginx's proxy buffer: nginx answers 502 with its own page."""
    return PlainTextResponse("never shown", headers={"X-Padding": "x" * 32_768})


@app.get("/hang/{key}")
async def hang(key: str) -> PlainTextResponse:
    """No answer until released: nginx gives up first (504) when its timeout is short."""
    await _released[key].wait()
    return PlainTextResponse("late")


@app.post("/upload")
async def upload(request: Request) -> dict[str, int]:
    return {"size": len(await request.body())}


@app.post("/release/{key}")
async def release(key: str) -> dict[str, str]:
    _released[key].set()
    return {"released": key}


async def _events(key: str) -> AsyncIterator[bytes]:
    # Small events on purpose: a buffering proxy would hold them back.
    yield b"event: token\ndata: first\n\n"
    await _released[key].wait()
    yield b"event: token\ndata: second\n\n"
    yield b"event: done\ndata: end\n\n"


@app.get("/chats/{key}/stream")
async def chat_stream(key: str) -> StreamingResponse:
    """The SSE location of the template, without any help from response headers."""
    return StreamingResponse(_events(key), media_type="text/event-stream")


@app.get("/elsewhere/{key}")
async def other_stream(key: str) -> StreamingResponse:
    """A stream outside the SSE location, unbuffered only through X-Accel-Buffering."""
    return StreamingResponse(
        _events(key), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )
