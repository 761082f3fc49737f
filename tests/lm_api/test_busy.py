"""A busy lm_api: the waiting line, a full line, probes during a generation, clients that
hang up. A `Gate` holds the real generation before its first token so "busy" is a state
the test controls, not a timing guess."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from llama_cpp._internals import LlamaBatch, LlamaContext
from prometheus_client.parser import text_string_to_metric_families

from tests.lm_api.conftest import (
    Gate,
    batch_rows,
    health,
    on_decode,
    poll_until,
    serve,
    toy_settings,
)

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
def gated_url(toy_model: Path, engine: str, gate: Gate) -> Iterator[str]:
    # One slot for the batched engine too: the line behaves as with the FIFO engine.
    with serve(toy_settings(toy_model, max_queue=1, engine=engine, parallel=1)) as url:
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


def test_a_stream_client_that_hangs_up_frees_the_model(toy_model: Path, engine: str) -> None:
    # A long answer (8000 tokens, seconds of work) so that hanging up after three tokens
    # is clearly "early".
    with serve(toy_settings(toy_model, n_ctx=8192, engine=engine)) as url:
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


def test_a_generation_that_fails_midway_ends_its_stream_with_an_error(
    toy_model: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = itertools.count(1)

    def fail_fourth(_batch: LlamaBatch) -> None:
        # Decode 1 reads the prompt, 2 and 3 the first answer tokens: three tokens are out.
        if next(decodes) == 4:
            raise RuntimeError("simulated llama.cpp failure")

    on_decode(monkeypatch, fail_fourth)
    with serve(toy_settings(toy_model, engine=engine)) as url:
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


def test_batched_engine_decodes_four_streams_together(
    toy_model: Path, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With parallel=4, four requests are in progress at once and share decode calls."""
    where = {"url": ""}
    seen: dict[str, float] = {}
    widest = {"rows": 0}
    real_decode = LlamaContext.decode  # the gate's decode: it holds the first prompt

    def watch(ctx: LlamaContext, batch: LlamaBatch) -> None:
        sequences = len(set(batch_rows(batch)))
        widest["rows"] = max(widest["rows"], sequences)
        if sequences == 4 and not seen:
            # Asked from inside the 4-sequence decode: every stream is running right now.
            seen["running"] = health(where["url"])["running"]
            seen["in_progress"] = metric(where["url"], "lm_api_generation_in_progress")
        real_decode(ctx, batch)

    monkeypatch.setattr(LlamaContext, "decode", watch)
    results: dict[int, tuple[int, str | None]] = {}
    with serve(toy_settings(toy_model, engine="batched", parallel=4)) as url:
        where["url"] = url
        threads = [
            threading.Thread(
                target=lambda i=i: results.setdefault(
                    i,
                    stream_tokens(
                        url,
                        {
                            "messages": [{"role": "user", "content": f"chat {i}"}],
                            "max_tokens": 20 + i,
                        },
                    ),
                )
            )
            for i in range(4)
        ]
        threads[0].start()
        gate.wait_entered()  # the first prompt is held at its decode ...
        for t in threads[1:]:
            t.start()
        # ... until the three others wait; then all four are admitted before the first ends.
        poll_until(lambda: health(url)["queue_depth"] == 3, "three requests to wait")
        gate.release()
        for t in threads:
            t.join(60)
    assert results == {i: (20 + i, "length") for i in range(4)}
    assert widest["rows"] == 4
    assert seen == {"running": 4, "in_progress": 4}


def test_batched_engine_reuses_a_slot_that_holds_the_prompt_prefix(
    toy_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat's next turn re-reads only what its slot does not hold already."""
    prompt_rows: list[int] = []
    on_decode(monkeypatch, lambda batch: prompt_rows.append(batch.batch.n_tokens))
    first = [{"role": "user", "content": "tell me about the river and the stone " * 8}]
    with serve(toy_settings(toy_model, engine="batched", parallel=2)) as url:
        r1 = httpx.post(
            url + "/v1/chat/completions",
            json={"messages": first, "max_tokens": 4, "temperature": 0},
            timeout=60,
        ).json()
        answer = r1["choices"][0]["message"]["content"]
        prompt1 = r1["usage"]["prompt_tokens"]
        prompt_rows.clear()
        follow = [
            *first,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "and?"},
        ]
        r2 = httpx.post(
            url + "/v1/chat/completions", json={"messages": follow, "max_tokens": 4}, timeout=60
        ).json()
    prompt2 = r2["usage"]["prompt_tokens"]
    assert r2["usage"]["completion_tokens"] == 4
    assert prompt2 > prompt1 > 40
    # The first decode of the second request is its prompt: only the part after the
    # first prompt (at most) was read, not the whole conversation.
    assert prompt_rows[0] <= prompt2 - prompt1 + 1
