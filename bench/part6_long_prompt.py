"""Part 6: a long prompt arriving while two answers stream: do the running answers stall?

Two chats stream; once both are well under way a third request brings a long prompt
(about 1,500 words). Every token of the two streams is timed, and the worst gap between
two of their tokens while the long prompt is read is compared with their median gap
before it arrived. lm_api (on its own) and llama-server get the same model, threads and
slots, and take turns run by run. The long prompt's first-token time is measured beside
the two streams and alone, so the price of not stalling the others is visible too.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse

from bench.context import Context
from bench.report import PartResult, Table, num, spread, verdict
from bench.stats import summarize
from bench.streams import SAMPLING, openai_model_id, stream_openai

TITLE = "A long prompt arriving while two answers stream"
LM = "lm_api"
LLAMA = "llama-server"
TARGET_RATIO = 3.0  # worst gap / median gap


@dataclass
class TimedStream:
    """Arrival time (perf_counter) of every content chunk of one streamed answer."""

    t_request: float = 0.0
    times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    done: bool = False
    error: str | None = None


def stream_times(
    client: httpx.Client,
    base_url: str,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    into: TimedStream,
    stop: threading.Event | None = None,
) -> TimedStream:
    """Stream an answer, timing each chunk; leave early (closing the connection, which
    ends the generation) once `stop` is set."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **SAMPLING,
    }
    into.t_request = time.perf_counter()
    try:
        with connect_sse(client, "POST", base_url + "/chat/completions", json=body) as source:
            if source.response.status_code != 200:
                source.response.read()
                into.error = f"HTTP {source.response.status_code}: {source.response.text[:200]}"
                return into
            for event in source.iter_sse():
                if event.data.strip() == "[DONE]":
                    break
                data = json.loads(event.data)
                if "error" in data:
                    into.error = str(data["error"])[:200]
                    break
                if data.get("usage"):
                    into.prompt_tokens = int(data["usage"]["prompt_tokens"])
                for choice in data.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        into.times.append(time.perf_counter())
                if stop is not None and stop.is_set():
                    break
    except (httpx.HTTPError, ValueError) as exc:
        into.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        into.done = True
    return into


def _wait(check: Any, what: str, deadline_s: float = 600.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise TimeoutError(f"part 6: timed out waiting for {what}")
        time.sleep(0.01)  # poll interval


def _idle(client: httpx.Client, kind: str, url: str) -> bool:
    """No generation running (left-over streams we closed have wound down)."""
    if kind == LM:
        body = client.get(url + "/health").json()
        return bool(body["running"] == 0 and body["queue_depth"] == 0)
    return not any(s.get("is_processing") for s in client.get(url + "/slots").json())


@dataclass
class Measured:
    worst_gap_ms: float
    median_gap_ms: float  # before the long prompt arrived
    median_gap_reading_ms: float  # while it was read
    long_ttft_ms: float  # beside the two streams
    alone_ttft_ms: float
    long_prompt_tokens: int | None
    failures: int

    @property
    def ratio(self) -> float:
        return self.worst_gap_ms / self.median_gap_ms if self.median_gap_ms else math.nan


def _gaps(times: list[float], start: float, end: float) -> list[float]:
    """Gaps between consecutive tokens that overlap (start, end)."""
    return [b - a for a, b in itertools.pairwise(times) if b > start and a < end]


def _measure(
    ctx: Context, client: httpx.Client, kind: str, url: str, model: str, run: int
) -> Measured:
    cfg = ctx.config
    base = url + "/v1"
    warm, after = (4, 4) if cfg.quick else (24, 16)
    answer_cap = cfg.slot_ctx // 2  # the streams are closed long before
    _wait(lambda: _idle(client, kind, url), f"{kind} to be idle")

    # The long prompt alone first: what it costs with nobody else there.
    alone = stream_openai(client, base, model, cfg.long_prompt(f"p6 r{run} alone"), 4)
    _wait(lambda: _idle(client, kind, url), f"{kind} to be idle")

    stop = threading.Event()
    streams = [TimedStream(), TimedStream()]
    threads = [
        threading.Thread(
            target=stream_times,
            args=(client, base, model, cfg.prompt(f"p6 r{run} s{i}"), answer_cap, s, stop),
        )
        for i, s in enumerate(streams)
    ]
    for t in threads:
        t.start()
    try:
        _wait(lambda: all(len(s.times) >= warm or s.done for s in streams), "the streams")
        settled = max(s.times[min(len(s.times), warm // 2) - 1] for s in streams if s.times)
        sent = time.perf_counter()
        long = stream_times(
            client, base, model, cfg.long_prompt(f"p6 r{run} long"), 4, TimedStream()
        )
        first = long.times[0] if long.times else math.nan
        if not math.isnan(first):  # a few more tokens of each stream after it
            _wait(
                lambda: all(sum(t > first for t in s.times) >= after or s.done for s in streams),
                "the streams after the long prompt",
            )
    finally:
        stop.set()
        for t in threads:
            t.join(600)
    failures = sum(1 for s in (*streams, long) if s.error) + (0 if alone.ok else 1)
    before = [g for s in streams for g in _gaps(s.times, settled, sent) if g > 0]
    reading = [g for s in streams for g in _gaps(s.times, sent, first)]
    return Measured(
        worst_gap_ms=max(reading, default=math.nan) * 1000,
        median_gap_ms=(statistics.median(before) if before else math.nan) * 1000,
        median_gap_reading_ms=(statistics.median(reading) if reading else math.nan) * 1000,
        long_ttft_ms=(first - sent) * 1000,
        alone_ttft_ms=alone.ttft_ms,
        long_prompt_tokens=long.prompt_tokens,
        failures=failures,
    )


def run(ctx: Context) -> PartResult:
    cfg = ctx.config
    result = PartResult(6, TITLE)
    lm = ctx.lm_alone
    llama, llama_note = ctx.llama_server
    servers = {LM: lm.url}
    if llama is not None:
        servers[LLAMA] = llama.url
    measured: dict[str, list[Measured]] = {name: [] for name in servers}
    with httpx.Client(timeout=httpx.Timeout(900.0, connect=10.0)) as client:
        models = {name: openai_model_id(client, url + "/v1") for name, url in servers.items()}
        for name, url in servers.items():  # warm-up: page faults of the weights
            stream_openai(client, url + "/v1", models[name], cfg.prompt("p6 warm-up"), 8)
        order = list(servers)
        for run_ in range(cfg.runs):
            for k in range(len(order)):
                name = order[(run_ + k) % len(order)]
                measured[name].append(
                    _measure(ctx, client, name, servers[name], models[name], run_)
                )

    tokens = next(
        (m.long_prompt_tokens for ms in measured.values() for m in ms if m.long_prompt_tokens),
        None,
    )
    table = Table(
        f"Two answers streaming; a {cfg.long_words:,}-word prompt ({tokens or '?'} tokens) arrives",
        [
            "server",
            "worst gap ms",
            "median gap before ms",
            "worst / median",
            "median gap while it is read ms",
            "long prompt's first token ms",
            "same prompt alone ms",
            "failures",
        ],
    )
    summary: dict[str, dict[str, Any]] = {}
    for name, ms in measured.items():
        row = {
            "worst_gap_ms": summarize([m.worst_gap_ms for m in ms]),
            "median_gap_ms": summarize([m.median_gap_ms for m in ms]),
            "ratio": summarize([m.ratio for m in ms]),
            "median_gap_reading_ms": summarize([m.median_gap_reading_ms for m in ms]),
            "long_ttft_ms": summarize([m.long_ttft_ms for m in ms]),
            "alone_ttft_ms": summarize([m.alone_ttft_ms for m in ms]),
        }
        failures = sum(m.failures for m in ms)
        table.add(
            name,
            spread(row["worst_gap_ms"], 0),
            spread(row["median_gap_ms"], 0),
            spread(row["ratio"], 1),
            spread(row["median_gap_reading_ms"], 0),
            spread(row["long_ttft_ms"], 0),
            spread(row["alone_ttft_ms"], 0),
            str(failures),
        )
        summary[name] = {k: v.as_dict() for k, v in row.items()} | {"failures": failures}
        result.failures += failures
    result.tables.append(table)
    result.data.update(
        summary=summary,
        long_prompt_tokens=tokens,
        llama_server={"note": llama_note, "args": llama.args if llama else None},
        runs={name: [m.__dict__ for m in ms] for name, ms in measured.items()},
    )
    lm_ratio = summary[LM]["ratio"]
    shown = (
        f"lm_api {num(lm_ratio['median'], 1)}x "
        f"(runs {num(lm_ratio['min'], 1)}-{num(lm_ratio['max'], 1)})"
    )
    if LLAMA in summary:
        ll = summary[LLAMA]["ratio"]
        shown += f", llama-server {num(ll['median'], 1)}x"
    result.notes.append(
        f"Target: running answers' worst gap under {TARGET_RATIO:g}x their median while a "
        f"long prompt is read — {verdict(lm_ratio['max'] < TARGET_RATIO, lm_ratio['max'])} "
        f"({shown}; judged on lm_api's worst run)."
    )
    lm_t = summary[LM]["long_ttft_ms"]["median"]
    line = (
        f"The long prompt's first token beside the two streams: lm_api {num(lm_t / 1000, 1)} s "
        f"(alone {num(summary[LM]['alone_ttft_ms']['median'] / 1000, 1)} s)"
    )
    if LLAMA in summary:
        ll_t = summary[LLAMA]["long_ttft_ms"]["median"]
        line += (
            f", llama-server {num(ll_t / 1000, 1)} s (alone "
            f"{num(summary[LLAMA]['alone_ttft_ms']['median'] / 1000, 1)} s)"
        )
    result.notes.append(line + ".")
    if llama is None:
        result.notes.append(f"llama-server: not measured ({llama_note}).")
    result.notes += [
        "Gaps are between consecutive content chunks of the two streams as the client "
        "receives them. 'Median gap before' covers the streams once settled, before the "
        "long prompt was sent; 'worst gap' and 'median gap while it is read' cover the gaps "
        "that overlap the time from sending the long prompt to its first token.",
        "lm_api reads a prompt beside running answers a few tokens per step, keeping each "
        "step within LM_API_STEP_BUDGET (2.5) plain decode steps (stall-free batching, as "
        "Sarathi-Serve; vLLM's chunked prefill); llama-server puts the running answers' "
        "next tokens first, then up to its batch size (512) of prompt tokens, every step.",
        "Each run sends a fresh long prompt (a per-run tag first), so no prompt cache "
        "helps; the two streams are closed a few tokens after the long prompt's first token.",
    ]
    return result
