"""Part 4: page speed through nginx (chat pages with 20 and 500 messages, a sidebar of 2,000
chats) next to nginx serving a static file of the same size, and the ratios issue 14 sets
targets for: a long chat's page as fast as a short one's, any page within 5x of nginx
serving its bytes from disk."""

from __future__ import annotations

import time

import httpx

from bench.chat_client import Person
from bench.context import Context
from bench.pages import LoadResult, load
from bench.report import PartResult, Table, num, spread, verdict
from bench.services import owner_of_chat
from bench.stats import Summary, summarize
from parlor.stack import Stack

TITLE = "Pages through nginx"

# Issue 14's targets: the long chat's page serves at least this share of the short one's
# requests/s, and a page alone costs at most this many times the static file alone.
MIN_LONG_SHORT_RPS = 0.8
MAX_PAGE_STATIC = 5.0

USER_TEXT = "How do I read a CSV file in Python and sum one of its columns?"
# A typical answer: prose, a list and a code block, so rendering does its real work
# (Markdown, sanitizing, highlighting) on every message.
ASSISTANT_TEXT = """Use the standard library's `csv` module:

1. Open the file with `newline=""`.
2. Read rows with `csv.DictReader`.
3. Convert the column and add it up.

```python
import csv

with open("data.csv", newline="") as f:
    total = sum(float(row["amount"]) for row in csv.DictReader(f))
print(total)
```

For large files, **pandas** (`pd.read_csv(...)["amount"].sum()`) is faster."""


def _seed_messages(stack: Stack, owner: str, chat_id: str, count: int) -> None:
    headers = {"X-Owner": owner, "Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.db.url, headers=headers, timeout=30) as db:
        for i in range(count):
            role, text = ("user", USER_TEXT) if i % 2 == 0 else ("assistant", ASSISTANT_TEXT)
            db.post(
                f"/chats/{chat_id}/messages", json={"role": role, "content": text}
            ).raise_for_status()


def _seed_chats(stack: Stack, owner: str, count: int) -> None:
    headers = {"X-Owner": owner, "Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.db.url, headers=headers, timeout=30) as db:
        for i in range(count):
            db.post("/chats", json={"title": f"Trip planning, part {i + 1}"}).raise_for_status()


def _ratios(
    data: dict[str, dict[str, float | int | str]], chats: list[str], sidebar: str
) -> tuple[Table, dict[str, float], list[str]]:
    """Issue 14's ratios from the rows measured (`chats`: the chat pages, shortest
    first): the table, the figures, the verdicts. The longest chat's requests/s is set
    against each shorter one's: the shortest is the target's; one of a window's length
    or more shows whether the cost stays flat beyond the window."""
    long = chats[-1]
    table = Table(
        "Ratios (issue 14's targets)",
        ["ratio", "value", "fastest samples' ratio", "target", "verdict"],
    )
    figures: dict[str, float] = {}
    lines: list[str] = []

    def add(name: str, value: float, target: str, met: bool, fastest: float) -> None:
        figures[name] = value
        table.add(name, f"{value:.2f}x", f"{fastest:.2f}x", target, verdict(met, value))
        lines.append(f"{name}: {value:.2f}x (target {target}) — {verdict(met, value)}.")

    for other in chats[:-1]:
        rps = float(data[long]["rps"]) / float(data[other]["rps"])
        best = float(data[long]["rps_max"]) / float(data[other]["rps_max"])
        met = rps >= MIN_LONG_SHORT_RPS
        add(f"{long} ÷ {other}, requests/s", rps, f"≥ {MIN_LONG_SHORT_RPS}x", met, best)
    for label in (*chats, sidebar):
        static = data[f"static file, same size ({label})"]
        alone = float(data[label]["alone_ms"]) / float(static["alone_ms"])
        best = float(data[label]["alone_min_ms"]) / float(static["alone_min_ms"])
        add(
            f"{label} ÷ static file, alone",
            alone,
            f"≤ {MAX_PAGE_STATIC:g}x",
            alone <= MAX_PAGE_STATIC,
            best,
        )
    return table, figures, lines


def run(ctx: Context) -> PartResult:
    cfg = ctx.config
    stack = ctx.stack
    result = PartResult(4, TITLE)
    targets: list[tuple[str, str, str]] = []  # (label, path, cookie)
    people: list[Person] = []
    try:
        for count in cfg.page_messages:
            person = Person(stack.url, f"bench-p4-chat{count}")
            people.append(person)
            person.login()
            chat_id = person.new_chat()
            _seed_messages(stack, owner_of_chat(stack.database_url, chat_id), chat_id, count)
            targets.append(
                (f"chat page, {count} messages", f"/chats/{chat_id}", person.cookie_header)
            )
        person = Person(stack.url, f"bench-p4-sidebar{cfg.sidebar_chats}")
        people.append(person)
        person.login()
        first = person.new_chat()
        _seed_chats(stack, owner_of_chat(stack.database_url, first), cfg.sidebar_chats - 1)
        targets.append((f"sidebar, {cfg.sidebar_chats} chats", "/chats", person.cookie_header))

        table = Table(
            f"{cfg.connections} connections, {cfg.duration_s} s per run",
            ["page", "bytes", "one request alone ms", "requests/s", "p50 ms", "p99 ms", "errors"],
        )
        data: dict[str, dict[str, float | int | str]] = {}
        for label, path, cookie in targets:
            page = httpx.get(stack.url + path, headers={"Cookie": cookie}, timeout=60)
            page.raise_for_status()
            size = len(page.content)
            static_name = f"{path.strip('/').replace('/', '-') or 'root'}.html"
            assert stack.static_root is not None, "the bench stack serves its own static root"
            (stack.static_root / "bench" / static_name).write_bytes(b"x" * size)
            for row_label, url, row_cookie in (
                (label, stack.url + path, cookie),
                (
                    f"static file, same size ({label})",
                    f"{stack.url}/static/bench/{static_name}",
                    None,
                ),
            ):
                alone = _alone_ms(url, row_cookie, 1 if cfg.quick else 20)
                runs = [
                    load(
                        url,
                        connections=cfg.connections,
                        duration_s=cfg.duration_s,
                        cookie=row_cookie,
                    )
                    for _ in range(cfg.runs)
                ]
                data[row_label] = _add_row(table, row_label, size, alone, runs)
                result.failures += int(data[row_label]["errors"])
        result.tables.append(table)
        result.data["pages"] = data
    finally:
        for person in people:
            person.close()

    big = f"chat page, {max(cfg.page_messages)} messages"
    chats = [f"chat page, {n} messages" for n in sorted(cfg.page_messages)]
    ratios, figures, verdicts = _ratios(data, chats, targets[-1][0])
    result.tables.append(ratios)
    result.data["ratios"] = figures
    p99 = float(data[big]["p99_ms"])
    result.notes += [
        *(f"Target: {line}" for line in verdicts),
        f"A chat page with {max(cfg.page_messages)} messages at p99 under load: {num(p99)} ms.",
        "The load generator, nginx, chat_ui and db_api share the same CPUs, so requests/s "
        "is a floor for a bigger machine. A chat page shows the latest window of the chat "
        "(chat_ui.window: 50 messages, earlier ones on demand), so it costs chat_ui the "
        "same whatever the chat's length: one db_api round trip (GET /page: that window, "
        "the sidebar's newest 50 chats and the roles), and finished messages' HTML (their "
        "Markdown and whole bubbles) comes from the render cache after the first view "
        "(chat_ui.render_cache).",
        "The ratios judge medians; 'fastest samples' ratio' sets the fastest request alone "
        "(and the best run's requests/s) against each other: on a machine shared with other "
        "work the medians carry its load, the fastest samples are closest to each page's own "
        "cost.",
        "'One request alone' is the page's own cost (median of sequential requests); under "
        f"{cfg.connections} connections a page waits behind the others, so p50 is about "
        "connections / requests-per-second. Percentiles cover the requests that completed "
        "within the run (wrk gives up on a request after 10 s and counts it as an error).",
        f"Load tool: {runs[0].tool}; 'errors' counts non-2xx answers and socket errors.",
    ]
    return result


def _alone_ms(url: str, cookie: str | None, times: int) -> Summary:
    """Latency of the page with nothing else in flight: its own cost, without queueing."""
    headers = {"Cookie": cookie} if cookie else {}
    samples = []
    with httpx.Client(headers=headers, timeout=120) as client:
        for _ in range(times):
            t0 = time.perf_counter()
            client.get(url).raise_for_status()
            samples.append((time.perf_counter() - t0) * 1000.0)
    return summarize(samples)


def _add_row(
    table: Table, label: str, size: int, alone: Summary, runs: list[LoadResult]
) -> dict[str, float | int | str]:
    rps = summarize([r.rps for r in runs])
    p50 = summarize([r.p50_ms for r in runs])
    p99 = summarize([r.p99_ms for r in runs])
    errors = sum(r.errors for r in runs)
    table.add(
        label, f"{size:,}", spread(alone), spread(rps, 0), spread(p50), spread(p99), str(errors)
    )
    return {
        "alone_ms": alone.median,
        "alone_min_ms": alone.min,
        "rps_max": rps.max,
        "bytes": size,
        "rps": rps.median,
        "p50_ms": p50.median,
        "p99_ms": p99.median,
        "errors": errors,
        "tool": runs[0].tool,
    }
