"""Part 5: resident memory of each service, idle and at peak under part 2's load."""

from __future__ import annotations

from functools import partial

from bench.chat_client import Person
from bench.context import Context
from bench.load import run_round
from bench.memory import PeakSampler
from bench.report import PartResult, Table, num
from bench.services import rss_mb

TITLE = "Memory (RSS) idle and under load"


def _own_load(ctx: Context) -> None:
    """Part 5 run without part 2: the largest concurrency level once, sampled."""
    cfg = ctx.config
    n = max(cfg.concurrency)
    people = [Person(ctx.stack.url, f"bench-p5-{i}") for i in range(n)]
    try:
        for person in people:
            person.login()
        jobs = [
            partial(
                person.send,
                person.new_chat(),
                cfg.prompt(f"p5 c{i}")[0]["content"],
                max_tokens=cfg.max_tokens,
            )
            for i, person in enumerate(people)
        ]
        with PeakSampler(ctx.stack.pids()) as sampler:
            round_ = run_round(jobs)
        ctx.memory_peaks.update(sampler.peaks)
        if round_.failures:
            raise RuntimeError(f"{round_.failures} of {n} chats failed under part 5's load")
    finally:
        for person in people:
            person.close()


def run(ctx: Context) -> PartResult:
    cfg = ctx.config
    result = PartResult(5, TITLE)
    stack = ctx.stack
    if not any(name in ctx.memory_peaks for name in stack.pids()):
        _own_load(ctx)
    table = Table(
        f"Resident memory in MB; peak while {max(cfg.concurrency)} chats stream at once",
        ["process", "idle (model loaded, nothing asked)", "idle after the runs", "peak under load"],
    )
    now = {name: rss_mb(pid) for name, pid in stack.pids().items()}
    rows: dict[str, dict[str, float]] = {}
    for name in stack.pids():
        row = {
            "idle_mb": ctx.memory_idle.get(name, float("nan")),
            "after_mb": now[name],
            "peak_mb": ctx.memory_peaks.get(name, float("nan")),
        }
        rows[name] = row
        table.add(name, num(row["idle_mb"], 0), num(row["after_mb"], 0), num(row["peak_mb"], 0))
    parlor = set(rows)
    # The other servers part 2 ran (not part of Parlor's total).
    for other, peak in ctx.memory_peaks.items():
        if other not in parlor:
            rows[other] = {"peak_mb": peak}
            table.add(other, "-", "-", num(peak, 0))
    total = {k: sum(r[k] for n, r in rows.items() if n in parlor) for k in ("idle_mb", "peak_mb")}
    table.add("**Parlor total**", num(total["idle_mb"], 0), "-", num(total["peak_mb"], 0))
    result.tables.append(table)
    result.data["rss_mb"] = rows
    result.notes += [
        "RSS from /proc/<pid>/status (VmRSS), summed over a process and its children "
        "(nginx's master and worker), sampled every 0.1 s during the load.",
        "lm_api's figure is mostly the model's weights (memory-mapped, so counted once they "
        "are touched) and the KV cache for its context; chat_ui and db_api are plain Python "
        "services whose memory barely moves with load.",
    ]
    return result
