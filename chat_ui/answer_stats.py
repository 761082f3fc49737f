"""The quiet line under a finished answer: the model that wrote it, the settings it was
written with that differ from the defaults, its length and its speed."""

from __future__ import annotations

from chat_ui.contracts import ChatParams, Message


def _seconds(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def answer_stats(m: Message) -> list[tuple[str, str]]:
    """(class, text) parts of the line, in reading order; empty when nothing is known.

    Speed is the writing speed: tokens after the first over the time after the first
    (the wait for the first token, the prompt read included, is shown on its own)."""
    parts: list[tuple[str, str]] = []
    if m.model:
        parts.append(("stat-model", m.model))
    params = ChatParams.model_validate(m.params or {})
    if params.temperature is not None:
        parts.append(("stat-param", f"temperature {params.temperature:g}"))
    if params.top_p is not None:
        parts.append(("stat-param", f"top p {params.top_p:g}"))
    if params.max_tokens is not None:
        parts.append(("stat-param", f"max {params.max_tokens} tokens"))
    tokens = m.completion_tokens
    if tokens is not None:
        parts.append(("stat-tokens", f"{tokens} token{'' if tokens == 1 else 's'}"))
    total, first = m.generation_ms, m.ttft_ms
    if tokens is not None and tokens > 1 and total is not None and first is not None:
        writing_s = (total - first) / 1000
        if writing_s > 0:
            parts.append(("stat-speed", f"{(tokens - 1) / writing_s:.1f} tokens/s"))
    if first is not None:
        parts.append(("stat-ttft", f"first token {_seconds(first)}"))
    return parts
