"""Part 1: one stream, the same prompt and length, at three depths, against in-process."""

from __future__ import annotations

import httpx

from bench.chat_client import Person
from bench.context import Context
from bench.inprocess import load_llama, stream_inprocess
from bench.report import PartResult, Table, num, spread, verdict
from bench.stats import ratio, summarize
from bench.streams import StreamTiming, openai_model_id, stream_openai

TITLE = "Single stream at three depths"


def _record(result: PartResult, depth: str, timings: list[StreamTiming]) -> None:
    result.data.setdefault("runs", {})[depth] = [t.as_dict() for t in timings]
    result.failures += sum(not t.ok for t in timings)


def run(ctx: Context) -> PartResult:
    cfg = ctx.config
    result = PartResult(1, TITLE)

    stack = ctx.stack
    inprocess, lm_api, full = (
        "in-process (llama-cpp-python)",
        "lm_api over HTTP",
        "full stack (nginx → chat_ui SSE → lm_api)",
    )
    depths: dict[str, list[StreamTiming]] = {inprocess: [], lm_api: [], full: []}
    # The limit (llama-cpp-python in this process, same threads and context) stays loaded
    # beside the stack, and the depths take turns run by run: on a shared machine a burst
    # of someone else's load then spreads over all three rows instead of one.
    with (
        load_llama(cfg.model, threads=cfg.threads, n_ctx=cfg.n_ctx) as llm,
        httpx.Client(timeout=httpx.Timeout(900.0, connect=10.0)) as client,
        Person(stack.url, "bench-part1") as person,
    ):
        model_id = openai_model_id(client, stack.lm_base, stack.lm_headers)
        person.login()

        def one(depth: str, tag: str) -> StreamTiming:
            messages = cfg.prompt(tag)
            if depth == inprocess:
                return stream_inprocess(llm, messages, cfg.max_tokens)
            if depth == lm_api:
                return stream_openai(
                    client,
                    stack.lm_base,
                    model_id,
                    messages,
                    cfg.max_tokens,
                    headers=stack.lm_headers,
                )
            return person.send(person.new_chat(), messages[0]["content"], max_tokens=cfg.max_tokens)

        # Tags of equal length, so every depth evaluates prompts of the same token count.
        for k, depth in enumerate(depths):
            one(depth, f"warm-up {k}")  # first-call costs are not what a person feels
        for i in range(cfg.runs):
            for k, (depth, timings) in enumerate(depths.items()):
                timings.append(one(depth, f"p1 run {i} depth {k}"))

    table = Table(
        f"Decode speed and first token, {cfg.max_tokens}-token answers",
        [
            "depth",
            "decode tok/s",
            "TTFT ms",
            "decode vs in-process",
            "TTFT - in-process ms",
            "failures",
        ],
    )
    base = depths[inprocess]
    base_tps = summarize([t.decode_tps for t in base if t.ok]).median
    base_ttft = summarize([t.ttft_ms for t in base if t.ok]).median
    summary: dict[str, dict[str, float]] = {}
    for depth, timings in depths.items():
        _record(result, depth, timings)
        ok = [t for t in timings if t.ok]
        tps = summarize([t.decode_tps for t in ok])
        ttft = summarize([t.ttft_ms for t in ok])
        decode_ratio = ratio(tps.median, base_tps)
        table.add(
            depth,
            spread(tps),
            spread(ttft, 0),
            f"{num(decode_ratio * 100, 1)} %",
            num(ttft.median - base_ttft, 0),
            str(len(timings) - len(ok)),
        )
        summary[depth] = {
            "decode_tps_min": tps.min,
            "decode_tps_max": tps.max,
            "ttft_ms_min": ttft.min,
            "ttft_ms_max": ttft.max,
            "decode_tps": tps.median,
            "ttft_ms": ttft.median,
            "decode_ratio": decode_ratio,
            "ttft_delta_ms": ttft.median - base_ttft,
        }
    result.tables.append(table)
    result.data["summary"] = summary
    stack_row = summary[full]
    meets_decode = verdict(stack_row["decode_ratio"] >= 0.9, stack_row["decode_ratio"])
    meets_ttft = verdict(stack_row["ttft_delta_ms"] <= 50, stack_row["ttft_delta_ms"])
    result.notes += [
        "Target: full stack within 10 % of in-process decode speed — "
        + meets_decode
        + f" ({num(stack_row['decode_ratio'] * 100)} %); within 50 ms of its first token — "
        + meets_ttft
        + f" ({num(stack_row['ttft_delta_ms'], 0)} ms)."
        + _noise_warning(summary[inprocess], stack_row),
        "TTFT at the full stack counts from the POST of the message (storing it and the "
        "pending answer in db_api, then the SSE connection), as a person counts from Send; "
        "in-process counts from the call. Each run is a fresh prompt (a per-run tag first), "
        "so prompt evaluation is always paid; one warm-up run per depth is not counted.",
        "Decode tok/s = (tokens - 1) / (last token - first token); synthetic models always "
        f"write exactly {cfg.max_tokens} tokens. At the full stack the 'tokens' are chat_ui's "
        "SSE text events, which chat_ui may coalesce; the last one still marks the end.",
    ]
    return result


def _overlap(a: dict[str, float], b: dict[str, float], key: str) -> bool:
    return a[f"{key}_min"] <= b[f"{key}_max"] and b[f"{key}_min"] <= a[f"{key}_max"]


def _noise_warning(base: dict[str, float], stack: dict[str, float]) -> str:
    """Say so when the runs' spread is wider than the difference the verdict rests on."""
    noisy = [
        name
        for key, name in (("decode_tps", "decode speed"), ("ttft_ms", "first-token time"))
        if _overlap(base, stack, key)
    ]
    if not noisy:
        return ""
    return (
        f" The {' and '.join(noisy)} ranges of the two rows overlap: on this run the "
        "difference is within the noise, so the verdict is not established."
    )
