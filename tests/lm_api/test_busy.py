"""A busy lm_api: the waiting line, a full line, probes during a generation, clients that
hang up. A `Gate` holds the real generation before its first token so "busy" is a state
the test controls, not a timing guess."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lm_api.config import Settings
from lm_api.engine import load_llama
from tests.lm_api.conftest import Gate, health, poll_until, serve, toy_settings

BODY = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def stream_tokens(url: str, body: dict[str, object]) -> tuple[int, str | None]:
    """Stream a completion; return (completion tokens from usage, last finish_reason)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    usage, finish = 0, None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"]:
                finish = chunk["choices"][0]["finish_reason"] or finish
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
    return usage, finish


@pytest.fixture
def gated_url(toy_model: Path, gate: Gate) -> Iterator[str]:
    with serve(toy_settings(toy_model, max_queue=1), loader=gate.loader) as url:
        yield url


def test_full_line_answers_503_with_retry_after_and_nobody_is_dropped(
    gated_url: str, gate: Gate
) -> None:
    results: dict[str, tuple[int, str | None]] = {}

    def run(name: str, max_tokens: int) -> None:
        results[name] = stream_tokens(gated_url, {**BODY, "max_tokens": max_tokens})

    first = threading.Thread(target=run, args=("first", 30))
    first.start()
    gate.wait_entered()  # the first request holds the model
    second = threading.Thread(target=run, args=("second", 20))
    second.start()
    # The second waits in the line (max_queue=1); once it is there, a third is refused.
    poll_until(lambda: health(gated_url)["queue_depth"] == 1, "the second request to wait")
    probe = httpx.get(gated_url + "/health")
    assert probe.status_code == 200
    assert probe.json()["queue_depth"] == 1
    assert probe.json()["running"] == 1
    assert httpx.get(gated_url + "/v1/models").status_code == 200
    assert metric(gated_url, "lm_api_queue_depth") == 1
    assert metric(gated_url, "lm_api_generation_in_progress") == 1

    third = httpx.post(gated_url + "/v1/chat/completions", json=BODY, timeout=30)
    assert third.status_code == 503
    assert int(third.headers["retry-after"]) >= 1
    assert third.json()["error"]["code"] == "queue_full"

    gate.release()
    first.join(60)
    second.join(60)
    assert results == {"first": (30, "length"), "second": (20, "length")}
    assert metric(gated_url, "lm_api_requests_total", status="503") == 1
    assert metric(gated_url, "lm_api_requests_total", status="200") == 2
    assert metric(gated_url, "lm_api_queue_depth") == 0


def test_a_stream_client_that_hangs_up_frees_the_model(toy_model: Path) -> None:
    # A long answer (8000 tokens, seconds of work) so that hanging up after three tokens
    # is clearly "early".
    with serve(toy_settings(toy_model, n_ctx=8192)) as url:
        body = {**BODY, "max_tokens": 8000, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            contents = 0
            for line in r.iter_lines():
                if '"content": "' in line and '"role"' not in line:
                    contents += 1
                if contents == 3:
                    break  # hang up after three tokens
        # The next request starts and completes with its full length ...
        assert stream_tokens(url, {**BODY, "max_tokens": 10}) == (10, "length")
        # ... and the first one stopped early instead of running its 8000 tokens.
        assert metric(url, "lm_api_generations_total", finish_reason="cancelled") == 1
        spent = metric(url, "lm_api_completion_tokens_total")
        assert 10 + 3 <= spent < 10 + 8000


def test_a_non_stream_client_that_hangs_up_frees_the_model(gated_url: str, gate: Gate) -> None:
    async def hang_up() -> None:
        async with httpx.AsyncClient(timeout=60) as c:
            task = asyncio.create_task(
                c.post(gated_url + "/v1/chat/completions", json={**BODY, "max_tokens": 1000})
            )
            await asyncio.to_thread(gate.wait_entered)
            task.cancel()  # closes the connection while the answer is being made
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(hang_up())
    gate.release()
    r = httpx.post(gated_url + "/v1/chat/completions", json=BODY, timeout=60)
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] == 8
    assert metric(gated_url, "lm_api_generations_total", finish_reason="cancelled") == 1
    assert metric(gated_url, "lm_api_completion_tokens_total") < 8 + 1000


def test_a_request_cancelled_while_waiting_leaves_the_line(gated_url: str, gate: Gate) -> None:
    results: dict[str, tuple[int, str | None]] = {}
    first = threading.Thread(
        target=lambda: results.setdefault("first", stream_tokens(gated_url, BODY))
    )
    first.start()
    gate.wait_entered()

    async def wait_then_leave() -> None:
        async with httpx.AsyncClient(timeout=60) as c:
            task = asyncio.create_task(c.post(gated_url + "/v1/chat/completions", json=BODY))
            await asyncio.to_thread(
                poll_until, lambda: health(gated_url)["queue_depth"] == 1, "a waiting request"
            )
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        poll_until(lambda: health(gated_url)["queue_depth"] == 0, "the line to empty")

    asyncio.run(wait_then_leave())
    # The line has room again while the first still holds the model.
    assert httpx.get(gated_url + "/health").json()["running"] == 1
    gate.release()
    first.join(60)
    assert results["first"] == (8, "length")
    assert metric(gated_url, "lm_api_generations_total", finish_reason="cancelled") == 1


def test_a_generation_that_fails_midway_ends_its_stream_with_an_error(toy_model: Path) -> None:
    broken = {"armed": True}

    def loader(settings: Settings) -> Any:
        llm = load_llama(settings)
        real_generate = llm.generate

        def failing(*args: Any, **kwargs: Any) -> Iterator[int]:
            for i, token in enumerate(real_generate(*args, **kwargs)):
                if i == 3 and broken["armed"]:
                    broken["armed"] = False
                    raise RuntimeError("simulated llama.cpp failure")
                yield token

        llm.generate = failing
        return llm

    with serve(toy_settings(toy_model), loader=loader) as url:
        body = {**BODY, "stream": True, "max_tokens": 20}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert "simulated llama.cpp failure" in lines[-2]
        assert json.loads(lines[-2][6:])["error"]["code"] == "generation_failed"
        assert lines[-1] == "data: [DONE]"
        # The model is free and works for the next request.
        assert stream_tokens(url, {**BODY, "max_tokens": 5}) == (5, "length")
        r2 = httpx.post(url + "/v1/chat/completions", json=BODY, timeout=60)
        assert r2.status_code == 200
        assert metric(url, "lm_api_generations_total", finish_reason="error") == 1
