"""Peak resident memory of processes while a load runs, sampled from /proc."""

from __future__ import annotations

import threading
from types import TracebackType

from bench.services import rss_mb

SAMPLE_INTERVAL_S = 0.1


class PeakSampler:
    """Samples the RSS of named pids in a thread until closed; keeps each one's peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peaks: dict[str, float] = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            self.peaks[name] = max(self.peaks[name], rss_mb(pid))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_INTERVAL_S)  # the sampling period, not a readiness wait

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
