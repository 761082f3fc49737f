"""Stop strings in streamed text, shared by the engines."""

from __future__ import annotations


class StopMatcher:
    """Cuts the text at the first stop string, holding back what could be the start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to send now, and whether a stop string was reached."""
        self._pending += text
        hits = [i for s in self._stops if (i := self._pending.find(s)) >= 0]
        if hits:
            out, self._pending = self._pending[: min(hits)], ""
            return out, True
        hold = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(self._pending)), hold, -1):
                if self._pending.endswith(s[:n]):
                    hold = n
                    break
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out
