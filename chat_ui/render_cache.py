"""Finished answers' HTML, kept so that a chat page does not render Markdown on every view.

Markdown, Pygments and sanitizing are most of a chat page's cost, while a finished answer
changes only through a write, which moves its revision. So the HTML of each finished
message is kept under its id, with the revision, a digest of the text and the renderer's
version (render.RENDERER_VERSION) it was made from: any of them differing is a miss and
the entry is replaced, so a retried or edited answer, or a renderer upgrade, is never
shown stale, and a message holds one entry at most. An answer still being written is
never kept (its text changes with every token; markdown_stream renders it).

In this process's memory, bounded by size and evicting the least recently shown first:
a chat_ui replica that restarts (or a second replica) renders each message once more on
its first view, which costs what every view cost before; a shared store (a column in
db_api, Redis) would add a network round trip per page and a schema to migrate whenever
the renderer changes, for no gain a single view does not already repay.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from uuid import UUID

from chat_ui import render
from chat_ui.contracts import Message

# The HTML kept, in bytes of memory (sys.getsizeof): thousands of typical answers.
MAX_BYTES = 32 * 1024 * 1024
# One answer larger than this share of the budget is rendered each time instead: a few
# huge answers must not push out everything else.
MAX_SHARE = 16


@dataclass(frozen=True)
class _Entry:
    revision: int
    digest: bytes
    renderer: int
    html: str
    size: int


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RenderCache:
    """Least recently used HTML of finished messages, at most `max_bytes` of it."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entry_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = (
            max_bytes // MAX_SHARE if max_entry_bytes is None else max_entry_bytes
        )
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[UUID, _Entry] = OrderedDict()
        # Pages render in the event loop's thread, but nothing forbids a worker thread.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def html(self, message: Message) -> str:
        """The message's sanitized HTML: kept when it is finished, rendered otherwise."""
        text = message.content or ""
        if message.running:
            return render.markdown_html(text)
        digest = _digest(text)
        with self._lock:
            entry = self._entries.get(message.id)
            if (
                entry is not None
                and entry.revision == message.revision
                and entry.digest == digest
                and entry.renderer == render.RENDERER_VERSION
            ):
                self._entries.move_to_end(message.id)
                self.hits += 1
                return entry.html
            self.misses += 1
        html = render.markdown_html(text)
        size = sys.getsizeof(html)
        with self._lock:
            self._drop(message.id)
            if size <= self.max_entry_bytes:
                self._entries[message.id] = _Entry(
                    message.revision, digest, render.RENDERER_VERSION, html, size
                )
                self.size += size
                while self.size > self.max_bytes:
                    self._drop(next(iter(self._entries)))
        return html

    def _drop(self, message_id: UUID) -> None:
        entry = self._entries.pop(message_id, None)
        if entry is not None:
            self.size -= entry.size


# The process's one cache (see the module's docstring for why it lives here).
CACHE = RenderCache()


def message_html(message: Message) -> str:
    """A message's answer as sanitized HTML, through the process's cache."""
    return CACHE.html(message)
