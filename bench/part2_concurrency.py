"""Part 2: 1…8 chats streaming at once: Parlor's full stack, lm_api on its own, llama.cpp's
llama-server and llama-cpp-python's server (the peers), and a lone stream in-process.

lm_api on its own and llama-server get the same model, threads and slots (4 of 2,048
tokens); the servers take turns round by round, so a burst of someone else's load on a
shared machine lands on all of them, not on one. The ratios lm_api / llama-server are
computed run by run (each lm_api round against the llama-server round next to it)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import partial

import httpx

from bench.chat_client import Person
from bench.context import Context
from bench.inprocess import load_llama, stream_inprocess
from bench.load import LoadRound, run_round
from bench.memory import PeakSampler
from bench.report import PartResult, Table, num, spread, verdict
from bench.services import run_peer
from bench.stats import percentile, ratio, summarize
from bench.streams import StreamTiming, openai_model_id, stream_openai

TITLE = "Concurrent chats: lm_api against llama-server, Parlor's full stack, llama_cpp.server"
STACK = "Parlor (full stack)"
LM = "lm_api"
LLAMA = "llama-server"
PEER = "llama_cpp.server (peer)"
INPROCESS = "in-process (llama-cpp-python)"

Round = Callable[[int, int], LoadRound]  # (chats, run) -> the round's timings


def _openai_round(
    ctx: Context,
    client: httpx.Client,
    base_url: str,
    model_id: str,
    n: int,
    run: int,
    headers: dict[str, str] | None = None,
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
                headers=headers,
            )
            for i in range(n)
        ]
    )


def _stack_round(ctx: Context, people: dict[int, list[Person]], n: int, run: int) -> LoadRound:
    cfg = ctx.config
    jobs: list[Callable[[], StreamTiming]] = []
    for i, person in enumerate(people[n]):
        text = cfg.prompt(f"p2 n{n} r{run} c{i}")[0]["content"]
        jobs.append(partial(person.send, person.new_chat(), text, max_tokens=cfg.max_tokens))
    return run_round(jobs)


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
    stack = ctx.stack
    lm = ctx.lm_alone
    llama, llama_note = ctx.llama_server
    result.data["llama_server"] = {"note": llama_note, "args": llama.args if llama else None}
    rounds: dict[str, dict[int, list[LoadRound]]] = {}

    with contextlib.ExitStack() as exits:
        peer = exits.enter_context(
            run_peer(cfg.model, cfg.workdir / "peer", threads=cfg.threads, n_ctx=cfg.slot_ctx)
        )
        result.data["peer_args"] = peer.args
        limits = httpx.Limits(max_connections=3 * max(cfg.concurrency) + 4)
        client = exits.enter_context(
            httpx.Client(timeout=httpx.Timeout(900.0, connect=10.0), limits=limits)
        )
        llm = exits.enter_context(load_llama(cfg.model, threads=cfg.threads, n_ctx=cfg.slot_ctx))
        people = {
            n: [exits.enter_context(Person(stack.url, f"bench-p2-{n}-{i}")) for i in range(n)]
            for n in cfg.concurrency
        }
        for group in people.values():
            for person in group:
                person.login()

        servers: dict[str, Round] = {STACK: partial(_stack_round, ctx, people)}
        lm_base = lm.url + "/v1"
        servers[LM] = partial(_openai_round, ctx, client, lm_base, openai_model_id(client, lm_base))
        if llama is not None:
            servers[LLAMA] = partial(
                _openai_round,
                ctx,
                client,
                llama.base_url,
                openai_model_id(client, llama.base_url),
            )
        servers[PEER] = partial(
            _openai_round, ctx, client, peer.base_url, openai_model_id(client, peer.base_url)
        )

        def inprocess(n: int, run: int) -> LoadRound:
            timing = stream_inprocess(llm, cfg.prompt(f"p2 n{n} r{run} c0"), cfg.max_tokens)
            return LoadRound([timing])

        # Warm-up: the first answers after start pay one-off costs (page faults of weights).
        for go in servers.values():
            go(1, -1)
        inprocess(1, -1)

        pids = {**stack.pids(), f"{LM} (alone)": lm.pid, PEER: peer.service.pid}
        if llama is not None:
            pids[LLAMA] = llama.proc.pid
        sampler = exits.enter_context(PeakSampler(pids))
        order = list(servers)
        for n in cfg.concurrency:
            for run in range(cfg.runs):
                # Everyone takes a turn each run, starting one further along each time.
                for k in range(len(order)):
                    name = order[(run + k) % len(order)]
                    rounds.setdefault(name, {}).setdefault(n, []).append(servers[name](n, run))
                if n == 1:
                    rounds.setdefault(INPROCESS, {}).setdefault(1, []).append(inprocess(1, run))
    ctx.memory_peaks.update(sampler.peaks)  # closed (and sampled a last time) by now

    summary: dict[str, dict[int, dict[str, float]]] = {}
    for name, by_n in rounds.items():
        summary[name] = {n: _row(table, name, n, rs) for n, rs in by_n.items()}
    result.tables.append(table)
    result.tables += _comparisons(rounds)
    result.data.update(
        summary=summary,
        comparison=_comparison_data(rounds),
        runs={
            name: {n: [[t.as_dict() for t in r.timings] for r in rs] for n, rs in by_n.items()}
            for name, by_n in rounds.items()
        },
    )
    result.failures = int(
        sum(row["failures"] for side in summary.values() for row in side.values())
    )
    result.notes += _verdicts(summary, result.data["comparison"], llama_note)
    result.notes += [
        "Aggregate tok/s = all tokens of a round / (last token - first Send). 'While "
        "streaming' is each chat's own decode rate once its answer started; 'from Send' "
        "includes the time it waited in the queue, what the person feels.",
        f"lm_api (on its own, no chat_ui) and llama-server run {cfg.slots} slots of "
        f"{cfg.slot_ctx} tokens, {cfg.threads} threads, 512-token batches; lm_api with flash "
        "attention (its LM_API_FLASH_ATTN default); llama-server "
        "keeps its other defaults (its sampling defaults equal lm_api's, flash attention "
        "'auto', on for the CPU, one KV buffer per slot since the slot count is given). "
        "Parlor's full stack is the stack of the other parts (lm_api with 4 slots of "
        f"{cfg.n_ctx} tokens behind chat_ui and nginx). Beyond 4 chats requests wait for "
        "a free slot in both.",
        "Every server samples alike: temperature 0.8, top-p 0.95, and llama.cpp's "
        "top-k 40 and min-p 0.05 (lm_api's and llama-server's defaults, "
        "llama-cpp-python's too).",
        "Ratios are taken run by run (each lm_api round against the llama-server round, or "
        "the in-process stream, next to it), then the median with (min-max) over the runs.",
        "llama_cpp.server runs with --interrupt_requests False so that it completes every "
        "request instead of aborting the running one; it decodes one sequence at a time.",
    ]
    return result


Key = Callable[[LoadRound], float]


def _paired_values(a: list[LoadRound], b: list[LoadRound], key: Key) -> list[float]:
    """key(a) / key(b) run by run (the rounds of a run are next to each other)."""
    return [ratio(key(x), key(y)) for x, y in zip(a, b, strict=False)]


def _paired(a: list[LoadRound], b: list[LoadRound], key: Key) -> str:
    return spread(summarize(_paired_values(a, b, key)), 2)


def _ttft_p50(r: LoadRound) -> float:
    return percentile([t.ttft_ms for t in r.ok], 50)


def _aggregate(r: LoadRound) -> float:
    return r.aggregate_tps


def _decode(r: LoadRound) -> float:
    return r.per_chat_stream_tps


def _comparisons(rounds: dict[str, dict[int, list[LoadRound]]]) -> list[Table]:
    tables = []
    if LLAMA in rounds:
        t = Table(
            "lm_api against llama-server (same model, threads and slots)",
            [
                "chats",
                "lm_api aggregate tok/s",
                "llama-server aggregate tok/s",
                "aggregate lm_api / llama-server",
                "TTFT p50 ms lm_api",
                "TTFT p50 ms llama-server",
                "TTFT p95 ms lm_api",
                "TTFT p95 ms llama-server",
            ],
        )
        for n, lm_rounds in rounds[LM].items():
            ll_rounds = rounds[LLAMA][n]
            lm_t = [t.ttft_ms for r in lm_rounds for t in r.ok]
            ll_t = [t.ttft_ms for r in ll_rounds for t in r.ok]
            t.add(
                str(n),
                spread(summarize([r.aggregate_tps for r in lm_rounds])),
                spread(summarize([r.aggregate_tps for r in ll_rounds])),
                _paired(lm_rounds, ll_rounds, _aggregate),
                num(percentile(lm_t, 50), 0),
                num(percentile(ll_t, 50), 0),
                num(percentile(lm_t, 95), 0),
                num(percentile(ll_t, 95), 0),
            )
        tables.append(t)
    if INPROCESS in rounds and 1 in rounds.get(LM, {}):
        lone = Table(
            "A lone stream: lm_api against llama-cpp-python in-process",
            [
                "",
                "decode tok/s",
                "TTFT ms",
                "decode vs in-process",
            ],
        )
        base = rounds[INPROCESS][1]
        for name in (INPROCESS, LM, LLAMA):
            if name not in rounds:
                continue
            rs = rounds[name][1]
            lone.add(
                name,
                spread(summarize([_decode(r) for r in rs])),
                spread(summarize([_ttft_p50(r) for r in rs]), 0),
                _paired(rs, base, _decode),
            )
        tables.append(lone)
    return tables


def _comparison_data(rounds: dict[str, dict[int, list[LoadRound]]]) -> dict[str, object]:
    out: dict[str, object] = {}
    if LLAMA in rounds:
        out["aggregate_lm_over_llama_server"] = {
            n: summarize(_paired_values(rounds[LM][n], rounds[LLAMA][n], _aggregate)).as_dict()
            for n in rounds[LM]
        }
        out["ttft_p50_ms"] = {
            n: {
                "lm_api": percentile([t.ttft_ms for r in rounds[LM][n] for t in r.ok], 50),
                "llama_server": percentile([t.ttft_ms for r in rounds[LLAMA][n] for t in r.ok], 50),
            }
            for n in rounds[LM]
        }
    if INPROCESS in rounds and 1 in rounds.get(LM, {}):
        out["lone_decode_lm_over_inprocess"] = summarize(
            _paired_values(rounds[LM][1], rounds[INPROCESS][1], _decode)
        ).as_dict()
    return out


def _verdicts(
    summary: dict[str, dict[int, dict[str, float]]], comparison: dict[str, object], note: str
) -> list[str]:
    notes = []
    stack = summary[STACK]
    top = max(stack)
    fails = sum(summary[name][top]["failures"] for name in (STACK, LM) if name in summary)
    notes.append(
        f"Target: no failures at {top} concurrent chats — "
        + ("MET" if fails == 0 else f"NOT MET ({fails:.0f} failed)")
        + "."
    )
    lone = comparison.get("lone_decode_lm_over_inprocess")
    if isinstance(lone, dict):
        r = lone["median"]
        notes.append(
            "Target: lm_api's lone stream at ≥ 0.95x llama-cpp-python's in-process decode — "
            f"{verdict(r >= 0.95, r)} ({num(r, 2)}x, runs {num(lone['min'], 2)}-"
            f"{num(lone['max'], 2)})."
        )
    aggs = comparison.get("aggregate_lm_over_llama_server")
    ttfts = comparison.get("ttft_p50_ms")
    if isinstance(aggs, dict) and isinstance(ttfts, dict):
        levels = [n for n in aggs if n >= 2]
        if levels:
            worst = min(aggs[n]["median"] for n in levels)
            shown = ", ".join(f"{n}: {num(aggs[n]['median'], 2)}x" for n in levels)
            notes.append(
                "Target: lm_api's aggregate ≥ 1.0x llama-server's at 2, 4 and 8 chats — "
                f"{verdict(worst >= 1.0, worst)} ({shown}; medians of the runs' ratios)."
            )
        slower = [
            n
            for n, t in ttfts.items()
            if not math.isnan(t["lm_api"]) and t["lm_api"] > t["llama_server"]
        ]
        shown = ", ".join(
            f"{n}: {num(t['lm_api'], 0)} vs {num(t['llama_server'], 0)} ms"
            for n, t in ttfts.items()
        )
        notes.append(
            "Target: lm_api's first-token times no worse than llama-server's — "
            + ("MET" if not slower else f"NOT MET at {', '.join(map(str, slower))} chats")
            + f" (p50, {shown})."
        )
    else:
        notes.append(f"lm_api against llama-server: not measured ({note}).")
    if 4 in stack and 1 in stack and PEER in summary and 4 in summary[PEER]:
        agg4, agg1, peer4 = (
            stack[4]["aggregate_tps"],
            stack[1]["aggregate_tps"],
            summary[PEER][4]["aggregate_tps"],
        )
        notes.append(
            f"Target: aggregate at 4 chats above the single chat and above llama_cpp.server — "
            f"{verdict(agg4 > agg1 and agg4 > peer4, agg4 + agg1 + peer4)} "
            f"({num(agg4)} tok/s vs {num(agg1)} single, {num(peer4)} peer; full stack)."
        )
    return notes
