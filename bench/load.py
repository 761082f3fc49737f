"""N chats streaming at once: start together, time each, sum them up."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.stats import percentile
from bench.streams import StreamTiming


@dataclass
class LoadRound:
    """One round of N simultaneous answers."""

    timings: list[StreamTiming]

    @property
    def ok(self) -> list[StreamTiming]:
        return [t for t in self.timings if t.ok]

    @property
    def failures(self) -> int:
        return len(self.timings) - len(self.ok)

    @property
    def aggregate_tps(self) -> float:
        """All tokens delivered / wall time from the first request to the last token."""
        ok = self.ok
        if not ok:
            return float("nan")
        span = max(t.t_last for t in ok) - min(t.t_request for t in self.timings)
        return sum(t.tokens for t in ok) / span

    @property
    def per_chat_stream_tps(self) -> float:
        """Median of each chat's decode rate once its answer has started."""
        return percentile([t.decode_tps for t in self.ok], 50)

    @property
    def per_chat_wall_tps(self) -> float:
        """Median of each chat's tokens / (last token - its Send): queueing included."""
        return percentile([t.tokens / t.total_s for t in self.ok], 50)


def run_round(jobs: Sequence[Callable[[], StreamTiming]]) -> LoadRound:
    """Run the jobs at once (released together by a barrier) and collect their timings."""
    barrier = threading.Barrier(len(jobs))

    def go(job: Callable[[], StreamTiming]) -> StreamTiming:
        barrier.wait()
        return job()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return LoadRound(list(pool.map(go, jobs)))
