"""Finished messages' HTML, kept so that a chat page does not render them on every view.

Markdown, Pygments and sanitizing are most of a chat page's cost, and the bubble template
around each message (its buttons, version switcher, stats line) is most of what is left;
while a finished message changes only through a write. So two things are kept per
message id, each with a stamp of what it was made from:

- `CACHE`, the HTML of its Markdown: stamped with its revision, a digest of the text and
  the renderer's version (render.RENDERER_VERSION);
- `BUBBLES`, the whole bubble (templates/_message.html): stamped with a digest of every
  field of the message as db_api gave it (revision, status, versions, stats...) and the
  renderer's version. The person's CSRF token, the one thing in a bubble that is not the
  message's, is kept as a slot and filled in on the way out.

A stamp that differs is a miss and the entry is replaced, so a retried, edited or
switched message, a sibling added (its version count), or a renderer upgrade is never
shown stale, and a message holds one entry at most in each. A message still being
written, or one held in memory while storage is away (`unsaved`), is never kept (its
text changes with every token; markdown_stream renders it). Whoever changes the bubble
template raises RENDERER_VERSION too, or a replica that stays up shows the old markup.

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
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from markupsafe import escape

from chat_ui import render
from chat_ui.contracts import Message

# The HTML kept by each cache, in bytes of memory (sys.getsizeof): thousands of messages.
MAX_BYTES = 32 * 1024 * 1024
# One entry larger than this share of the budget is rendered each time instead: a few
# huge answers must not push out everything else.
MAX_SHARE = 16
# Stands for the CSRF token in a kept bubble: a NUL never reaches a page otherwise
# (db_api refuses it in every text, contracts.storable replaces it in an answer being
# written), so no message's content can forge the slot; escaping leaves it as it is.
CSRF_SLOT = "\x00csrf\x00"


@dataclass(frozen=True)
class _Entry:
    stamp: bytes
    html: str
    size: int


def _digest(*parts: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()


class RenderCache:
    """Least recently used HTML, one entry per message id, at most `max_bytes` of it."""

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
        """The message's Markdown as sanitized HTML: kept when it is finished, rendered
        otherwise."""
        text = message.content or ""
        if message.running:
            return render.markdown_html(text)
        stamp = _digest(str(render.RENDERER_VERSION), str(message.revision), text)
        return self.kept(message.id, stamp, lambda: render.markdown_html(text))

    def kept(self, key: UUID, stamp: bytes, make: Callable[[], str]) -> str:
        """The HTML kept under `key` when it was made from `stamp`, else `make()`'s (kept
        in its place)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.stamp == stamp:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.html
            self.misses += 1
        html = make()
        size = sys.getsizeof(html)
        with self._lock:
            self._drop(key)
            if size <= self.max_entry_bytes:
                self._entries[key] = _Entry(stamp, html, size)
                self.size += size
                while self.size > self.max_bytes:
                    self._drop(next(iter(self._entries)))
        return html

    def _drop(self, key: UUID) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= entry.size


# The process's caches (see the module's docstring for why they live here).
CACHE = RenderCache()
BUBBLES = RenderCache()


def message_html(message: Message) -> str:
    """A message's answer as sanitized HTML, through the process's cache."""
    return CACHE.html(message)


def bubble_html(message: Message, csrf: str, bubble: Callable[[Message, str], str]) -> str:
    """A message's whole bubble for a person whose CSRF token is `csrf`: `bubble` (the
    template's macro) renders it, once per state of a finished message."""
    if message.running or message.unsaved:
        return bubble(message, csrf)
    stamp = _digest(str(render.RENDERER_VERSION), message.model_dump_json())
    html = BUBBLES.kept(message.id, stamp, lambda: bubble(message, CSRF_SLOT))
    return html.replace(CSRF_SLOT, str(escape(csrf)))
