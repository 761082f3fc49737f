"""One streamed answer, timed: from the request to the first content, then to the last.

The same record serves every depth (in-process, lm_api, the peer, the full stack), so the
rows of a table compare like with like.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from httpx_sse import connect_sse

# The same sampling at every OpenAI-level depth (in-process, lm_api, the peer): the
# sampler's cost over a 152k vocabulary is part of every token's time.
SAMPLING: dict[str, Any] = {"temperature": 0.8, "top_p": 0.95}


@dataclass
class StreamTiming:
    """Timestamps are time.perf_counter() seconds; `tokens` is the answer's token count."""

    t_request: float
    t_first: float = math.nan
    t_last: float = math.nan
    tokens: int = 0
    error: str | None = None
    # Content chunks seen so far (see answer_tokens for how they become `tokens`).
    chunks: int = 0

    def content_arrived(self) -> None:
        """Record one content chunk: the first one's time is TTFT, the last one's the end."""
        now = time.perf_counter()
        if self.chunks == 0:
            self.t_first = now
        self.t_last = now
        self.chunks += 1

    @property
    def ok(self) -> bool:
        return self.error is None and self.tokens > 0

    @property
    def ttft_ms(self) -> float:
        return (self.t_first - self.t_request) * 1000.0

    @property
    def decode_tps(self) -> float:
        """Tokens per second after the first one (the first token's time is TTFT's)."""
        span = self.t_last - self.t_first
        if self.tokens < 2 or not span > 0:
            return math.nan
        return (self.tokens - 1) / span

    @property
    def total_s(self) -> float:
        return self.t_last - self.t_request

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ttft_ms=self.ttft_ms, decode_tps=self.decode_tps)
        return out


def answer_tokens(finish_reason: str | None, max_tokens: int, content_chunks: int) -> int:
    """Tokens in an answer. A stream that stopped on length has exactly max_tokens (synthetic
    models never stop earlier); otherwise each content chunk is one token, which undercounts
    only when llama.cpp held back a partial UTF-8 character."""
    return max_tokens if finish_reason == "length" else content_chunks


def stream_openai(
    client: httpx.Client,
    base_url: str,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    *,
    headers: dict[str, str] | None = None,
) -> StreamTiming:
    """Stream a chat completion from an OpenAI-compatible server (`base_url` ends in /v1)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
    body.update(SAMPLING)
    timing = StreamTiming(t_request=time.perf_counter())
    finish: str | None = None
    try:
        with connect_sse(
            client, "POST", base_url + "/chat/completions", json=body, headers=dict(headers or {})
        ) as source:
            if source.response.status_code != 200:
                source.response.read()
                timing.error = f"HTTP {source.response.status_code}: {source.response.text[:200]}"
                return timing
            for event in source.iter_sse():
                if event.data.strip() == "[DONE]":
                    break
                data = json.loads(event.data)
                if "error" in data:
                    timing.error = str(data["error"])[:200]
                    return timing
                for choice in data.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        timing.content_arrived()
                    finish = choice.get("finish_reason") or finish
    except (httpx.HTTPError, ValueError) as exc:
        timing.error = f"{type(exc).__name__}: {exc}"[:200]
        return timing
    timing.tokens = answer_tokens(finish, max_tokens, timing.chunks)
    return timing


def openai_model_id(
    client: httpx.Client, base_url: str, headers: dict[str, str] | None = None
) -> str:
    r = client.get(base_url + "/models", headers=headers)
    r.raise_for_status()
    return str(r.json()["data"][0]["id"])
