"""Part 3: one chat of many turns; first-token time as the history grows, next to what the
deepest turn costs lm_api with and without the KV cache of the chat's prefix."""

from __future__ import annotations

import time

import httpx

from bench.chat_client import Person
from bench.context import Context
from bench.report import PartResult, Table, num, spread
from bench.services import owner_of_chat
from bench.stats import summarize
from bench.streams import openai_model_id, stream_openai
from parlor.stack import Stack

TITLE = "A long chat: first token as the history grows"

# A short follow-up question per turn, as people write them deep into a chat.
FOLLOW_UP = "Thanks. Now tell me more about stage {turn}: terrain, water, and a fallback plan."


def _history(stack: Stack, chat_id: str) -> list[dict[str, str]]:
    """The chat as chat_ui sent it for its last turn: every message but the last answer."""
    owner = owner_of_chat(stack.database_url, chat_id)
    headers = {"X-Owner": owner, "Authorization": f"Bearer {stack.token}"}
    r = httpx.get(f"{stack.db.url}/chats/{chat_id}", headers=headers, timeout=30)
    r.raise_for_status()
    messages = [{"role": m["role"], "content": m["content"]} for m in r.json()["messages"]]
    return messages[:-1]


def _reference(ctx: Context, chat_id: str) -> tuple[float, float]:
    """TTFT (ms) of the last turn's prompt sent to lm_api: with nothing of it cached, and
    then exactly, twice, the second time all of it cached but the last token."""
    stack = ctx.stack
    history = _history(stack, chat_id)
    with httpx.Client(timeout=httpx.Timeout(900.0, connect=10.0)) as client:
        base, headers = stack.lm_base, stack.lm_headers
        model = openai_model_id(client, base, headers)
        # A system turn of its own first: no slot holds a prefix of this prompt (the
        # batched engine keeps one cache per slot, so an unrelated request in between
        # would not evict the chat's), and it costs only a few tokens more.
        fresh = [{"role": "system", "content": f"nothing cached {time.time_ns()}"}, *history]
        cold = stream_openai(client, base, model, fresh, 2, headers=headers)
        warm = stream_openai(client, base, model, history, 2, headers=headers)
        warm = stream_openai(client, base, model, history, 2, headers=headers)
    return cold.ttft_ms, warm.ttft_ms


def run(ctx: Context) -> PartResult:
    cfg = ctx.config
    result = PartResult(3, TITLE)
    per_turn: dict[int, list[float]] = {turn: [] for turn in range(1, cfg.turns + 1)}
    cold: list[float] = []
    warm: list[float] = []
    with Person(ctx.stack.url, "bench-part3") as person:
        person.login()
        for run in range(cfg.runs):
            chat_id = person.new_chat()
            for turn in range(1, cfg.turns + 1):
                text = (
                    cfg.prompt(f"p3 r{run}")[0]["content"]
                    if turn == 1
                    else FOLLOW_UP.format(turn=turn)
                )
                timing = person.send(chat_id, text, max_tokens=cfg.max_tokens)
                if timing.ok:
                    per_turn[turn].append(timing.ttft_ms)
                else:
                    result.failures += 1
                    result.notes.append(f"run {run} turn {turn} failed: {timing.error}")
            c, w = _reference(ctx, chat_id)
            cold.append(c)
            warm.append(w)
    last_turn = cfg.turn_marks[-1]
    table = Table(
        f"TTFT in one chat, {cfg.max_tokens}-token answers",
        ["turn", "messages before it", "TTFT ms", "vs turn 1"],
    )
    first = summarize(per_turn[1]).median
    for turn in cfg.turn_marks:
        s = summarize(per_turn[turn])
        table.add(
            f"{turn} (full stack)",
            str(2 * (turn - 1)),
            spread(s, 0),
            f"{num(s.median / first, 2)}x",
        )
    # Turns 1, 10 and 20 alone can land on the turn where chat_ui trims the history (see
    # the notes): the spread over every later turn shows how often a person pays that.
    later = [ms for turn in range(2, cfg.turns + 1) for ms in per_turn[turn]]
    if later:
        s_later = summarize(later)
        table.add(
            f"every turn 2-{cfg.turns} (full stack)",
            f"2-{2 * (cfg.turns - 1)}",
            spread(s_later, 0),
            f"{num(s_later.median / first, 2)}x",
        )
        rereads = sum(ms > 5 * first for ms in later)
        result.notes.append(
            f"{rereads} of {len(later)} later turns took over 5x turn 1's first-token time: "
            "the turns where the trimmed history's start moved, so lm_api re-read it whole."
        )
    for label, values in (
        (f"{last_turn}, its prompt straight to lm_api, nothing cached", cold),
        (f"{last_turn}, its prompt straight to lm_api, all cached", warm),
    ):
        s = summarize(values)
        table.add(label, str(2 * (last_turn - 1)), spread(s, 0), f"{num(s.median / first, 2)}x")
    result.tables.append(table)
    result.data.update(ttft_ms_by_turn=per_turn, last_turn_cold_ms=cold, last_turn_warm_ms=warm)
    last = summarize(per_turn[last_turn]).median
    cold_median = summarize(cold).median
    result.notes += [
        f"Turn {last_turn} takes {num(last / first, 2)}x turn 1's first-token time "
        f"({num(last, 0)} ms vs {num(first, 0)} ms); re-reading its whole history would take "
        f"{num(cold_median, 0)} ms at lm_api alone. "
        + (
            f"Through Parlor the deep turn costs {num(last / cold_median * 100, 0)} % of that "
            "full re-read (plus chat_ui and db_api work)."
        ),
        (
            "What Parlor does: lm_api's batched engine keeps, in each of its LM_API_PARALLEL "
            "(4) slots, the KV cache of the last prompt and answer it served, and gives a new "
            "request the free slot sharing the longest token prefix with it, so a chat that "
            "continues re-reads only what changed (the new question, and the last answer "
            "from the first token where its re-tokenized text differs from the tokens "
            "sampled), and up to 4 chats keep their caches while people alternate. "
            if ctx.config.engine == "batched"
            else "What Parlor does: lm_api's fifo engine runs one llama.cpp context and calls "
            "llama-cpp-python with reset=True, which keeps the KV cache of the longest "
            "common token prefix with the previous request, so a chat that continues "
            "re-reads only what changed; the cache holds one sequence: another chat's request "
            "in between evicts it, and that chat's next turn re-reads its whole history "
            "(the 'nothing cached' row). "
        )
        + "chat_ui sends the full history each turn; once it no longer fits the context "
        "minus the answer length, chat_ui drops the oldest turns at stable points "
        "(multiples of a quarter of the budget, counted from the chat's start), so the "
        "prompt's start, and lm_api's cache, only move about once every quarter-context of "
        "conversation instead of at every turn.",
    ]
    return result
