"""Part 2: 1…8 chats streaming at once through the full stack, and the same load against
llama-cpp-python's own server (the peer)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import httpx

from bench.chat_client import Person
from bench.context import Context
from bench.load import LoadRound, run_round
from bench.memory import PeakSampler
from bench.report import PartResult, Table, num, spread, verdict
from bench.services import run_peer
from bench.stats import percentile, summarize
from bench.streams import StreamTiming, openai_model_id, stream_openai

TITLE = "Concurrent chats: Parlor's full stack vs llama_cpp.server"
PEER = "llama_cpp.server (peer)"


def _stack_round(ctx: Context, people: list[Person], run: int) -> LoadRound:
    cfg = ctx.config
    n = len(people)
    jobs: list[Callable[[], StreamTiming]] = []
    for i, person in enumerate(people):
        text = cfg.prompt(f"p2 n{n} r{run} c{i}")[0]["content"]
        jobs.append(partial(person.send, person.new_chat(), text, max_tokens=cfg.max_tokens))
    return run_round(jobs)


def _peer_round(
    ctx: Context, client: httpx.Client, base_url: str, model_id: str, n: int, run: int
) -> LoadRound:
    cfg = ctx.config
    return run_round(
        [
            partial(
                stream_openai,
                client,
                base_url,
                model_id,
                cfg.prompt(f"p2 n{n} r{run} c{i}"),
                cfg.max_tokens,
            )
            for i in range(n)
        ]
    )


def _row(table: Table, label: str, n: int, rounds: list[LoadRound]) -> dict[str, float]:
    ttfts = [t.ttft_ms for r in rounds for t in r.ok]
    agg = summarize([r.aggregate_tps for r in rounds])
    stream = summarize([r.per_chat_stream_tps for r in rounds])
    wall = summarize([r.per_chat_wall_tps for r in rounds])
    failures = sum(r.failures for r in rounds)
    p50, p95 = percentile(ttfts, 50), percentile(ttfts, 95)
    table.add(
        label,
        str(n),
        spread(agg),
        spread(stream),
        spread(wall),
        num(p50, 0),
        num(p95, 0),
        str(failures),
    )
    return {
        "aggregate_tps": agg.median,
        "per_chat_stream_tps": stream.median,
        "per_chat_wall_tps": wall.median,
        "ttft_p50_ms": p50,
        "ttft_p95_ms": p95,
        "failures": failures,
    }


def run(ctx: Context) -> PartResult:
    cfg = ctx.config
    result = PartResult(2, TITLE)
    table = Table(
        f"{cfg.max_tokens}-token answers, all chats sent at the same instant",
        [
            "server",
            "chats",
            "aggregate tok/s",
            "per-chat tok/s while streaming",
            "per-chat tok/s from Send",
            "TTFT p50 ms",
            "TTFT p95 ms",
            "failures",
        ],
    )
    parlor_table = Table("", table.columns)
    peer_table = Table("", table.columns)
    stack = ctx.stack
    summary: dict[str, dict[int, dict[str, float]]] = {"parlor": {}, "peer": {}}
    raw: dict[str, dict[int, list[list[dict[str, object]]]]] = {"parlor": {}, "peer": {}}

    with contextlib.ExitStack() as exits:
        peer = exits.enter_context(
            run_peer(cfg.model, cfg.workdir / "peer", threads=cfg.threads, n_ctx=cfg.n_ctx)
        )
        result.data["peer_args"] = peer.args
        limits = httpx.Limits(max_connections=max(cfg.concurrency) + 2)
        client = exits.enter_context(
            httpx.Client(timeout=httpx.Timeout(900.0, connect=10.0), limits=limits)
        )
        model_id = openai_model_id(client, peer.base_url)
        # Warm-up: the first answer after start pays one-off costs (page faults of weights).
        stream_openai(client, peer.base_url, model_id, cfg.prompt("warm-up"), cfg.max_tokens)
        warm = exits.enter_context(Person(stack.url, "bench-p2-warm"))
        warm.login()
        warm.send(warm.new_chat(), cfg.prompt("warm-up")[0]["content"], max_tokens=cfg.max_tokens)

        pids = {**stack.pids(), PEER: peer.service.pid}
        sampler = exits.enter_context(PeakSampler(pids))
        for n in cfg.concurrency:
            people = [exits.enter_context(Person(stack.url, f"bench-p2-{n}-{i}")) for i in range(n)]
            for person in people:
                person.login()
            parlor_rounds: list[LoadRound] = []
            peer_rounds: list[LoadRound] = []
            # Parlor and the peer take turns round by round, so a burst of other load on
            # a shared machine does not land on one side only.
            for run in range(cfg.runs):
                parlor_rounds.append(_stack_round(ctx, people, run))
                peer_rounds.append(_peer_round(ctx, client, peer.base_url, model_id, n, run))
            raw["parlor"][n] = [[t.as_dict() for t in r.timings] for r in parlor_rounds]
            raw["peer"][n] = [[t.as_dict() for t in r.timings] for r in peer_rounds]
            summary["parlor"][n] = _row(parlor_table, "Parlor (full stack)", n, parlor_rounds)
            summary["peer"][n] = _row(peer_table, PEER, n, peer_rounds)
    ctx.memory_peaks.update(sampler.peaks)  # closed (and sampled a last time) by now
    table.rows = parlor_table.rows + peer_table.rows

    result.tables.append(table)
    result.data.update(summary=summary, runs=raw)
    result.failures = int(
        sum(row["failures"] for side in summary.values() for row in side.values())
    )
    result.notes += _verdicts(summary)
    result.notes += [
        "Aggregate tok/s = all tokens of a round / (last token - first Send). 'While "
        "streaming' is each chat's own decode rate once its answer started; 'from Send' "
        "includes the time it waited in the queue, what the person feels.",
        (
            "lm_api's batched engine decodes up to LM_API_PARALLEL (4) chats together in one "
            "llama.cpp context, one pass over the weights serving every chat, so aggregate "
            "grows with chats up to 4; beyond that, chats wait for a free slot. The peer "
            "decodes one sequence at a time: its aggregate stays at the single-stream rate "
            "and TTFT grows with the queue position (p95 ≈ the answers ahead x one answer)."
            if ctx.config.engine == "batched"
            else "Both servers run one llama.cpp context that decodes one sequence at a time, "
            "so concurrent chats queue: aggregate stays at the single-stream rate and TTFT "
            "grows with the queue position (p95 ≈ the answers ahead x one answer's time)."
        ),
        "The peer runs with --interrupt_requests False so that it completes every request "
        "instead of aborting the running one.",
    ]
    return result


def _verdicts(summary: dict[str, dict[int, dict[str, float]]]) -> list[str]:
    parlor, peer = summary["parlor"], summary["peer"]
    notes = []
    top = max(parlor)
    fails = parlor[top]["failures"]
    notes.append(
        f"Target: no failures at {top} concurrent chats — "
        + ("MET" if fails == 0 else f"NOT MET ({fails:.0f} failed)")
        + "."
    )
    if 4 in parlor and 1 in parlor and 4 in peer:
        agg4, agg1, peer4 = (
            parlor[4]["aggregate_tps"],
            parlor[1]["aggregate_tps"],
            peer[4]["aggregate_tps"],
        )
        above_single = agg4 > agg1
        above_peer = agg4 > peer4
        notes.append(
            f"Target: aggregate at 4 chats above the single chat and above the peer — "
            f"{verdict(above_single and above_peer, agg4 + agg1 + peer4)} "
            f"({num(agg4)} tok/s vs {num(agg1)} single, {num(peer4)} peer)."
        )
    return notes
