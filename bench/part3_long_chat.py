"""Part 3: one chat of many turns; first-token time as the history grows."""

from __future__ import annotations

from bench.chat_client import Person
from bench.context import Context
from bench.report import PartResult, Table, num, spread
from bench.stats import summarize

TITLE = "A long chat: first token as the history grows"

# A short follow-up question per turn, as people write them deep into a chat.
FOLLOW_UP = "Thanks. Now tell me more about stage {turn}: terrain, water, and a fallback plan."


def run(ctx: Context) -> PartResult:
    cfg = ctx.config
    result = PartResult(3, TITLE)
    per_turn: dict[int, list[float]] = {turn: [] for turn in range(1, cfg.turns + 1)}
    failures = 0
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
                timing = person.send(chat_id, text, max_tokens=cfg.turn_tokens)
                if timing.ok:
                    per_turn[turn].append(timing.ttft_ms)
                else:
                    failures += 1
                    result.notes.append(f"run {run} turn {turn} failed: {timing.error}")
    result.failures = failures
    table = Table(
        f"TTFT in one chat, {cfg.turn_tokens}-token answers, full stack",
        ["turn", "history (messages before it)", "TTFT ms", "vs turn 1"],
    )
    first = summarize(per_turn[1]).median
    for turn in cfg.turn_marks:
        s = summarize(per_turn[turn])
        table.add(
            str(turn),
            str(2 * (turn - 1)),
            spread(s, 0),
            f"{num(s.median / first, 2)}x" if first else "-",
        )
    result.tables.append(table)
    result.data["ttft_ms_by_turn"] = per_turn
    last = summarize(per_turn[cfg.turn_marks[-1]]).median
    growth = last / first if first else float("nan")
    result.notes += [
        f"Turn {cfg.turn_marks[-1]} takes {num(growth, 2)}x turn 1's first-token time "
        f"({num(last, 0)} ms vs {num(first, 0)} ms).",
        "What Parlor does: lm_api runs one llama.cpp context and calls llama-cpp-python with "
        "reset=True, which keeps the KV cache of the longest common token prefix with the "
        "previous request: a chat that continues re-reads only what changed (the last answer "
        "as re-tokenized text, where it differs from the sampled tokens, and the new "
        "question). The cache holds one sequence, so another chat's request in between "
        "evicts it and the next turn re-reads the whole history.",
        "chat_ui sends the full history each turn, trimmed to fit the context "
        "(answer length reserved); the cache reuse is what keeps deep turns quick.",
    ]
    return result
