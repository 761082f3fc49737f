"""The HTML of finished answers, kept per message: a hit while the message, its
revision, its text and the renderer's version are unchanged, a miss (and the entry
replaced) otherwise, answers being written never kept, and the memory bounded by size."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest

from chat_ui import render
from chat_ui.contracts import Message
from chat_ui.render_cache import RenderCache

CHAT = uuid.uuid4()
TEXT = "Some **bold**, then code:\n\n```python\nprint('hi')\n```\n"


def answer(**fields: Any) -> Message:
    values: dict[str, Any] = {"id": uuid.uuid4(), "chat_id": CHAT, "role": "assistant"}
    values.update(content=TEXT, status="complete", revision=3)
    values.update(fields)
    return Message(**values)


def test_a_finished_answer_is_rendered_once() -> None:
    cache = RenderCache()
    message = answer()
    first = cache.html(message)
    assert first == render.markdown_html(TEXT) and '<span class="' in first
    # Read again (a new object, as the next page view gets from db_api): a hit.
    assert cache.html(message.model_copy()) == first
    assert (cache.misses, cache.hits, len(cache)) == (1, 1, 1)


@pytest.mark.parametrize(
    "change",
    [
        {"revision": 4, "content": TEXT + "\nRetried."},  # a retried answer
        {"revision": 4},  # any write moves the revision
        {"content": "Same revision, other text"},  # never trust the revision alone
    ],
)
def test_a_changed_message_is_rendered_again(change: dict[str, Any]) -> None:
    cache = RenderCache()
    message = answer()
    cache.html(message)
    changed = message.model_copy(update=change)
    assert cache.html(changed) == render.markdown_html(changed.content)
    assert (cache.misses, cache.hits) == (2, 0)
    # One entry per message: the old rendering is replaced, not kept beside it.
    assert len(cache) == 1
    assert cache.html(changed) and cache.hits == 1


def test_a_new_renderer_version_renders_again(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = RenderCache()
    message = answer()
    cache.html(message)
    monkeypatch.setattr(render, "RENDERER_VERSION", render.RENDERER_VERSION + 1)
    cache.html(message)
    assert (cache.misses, cache.hits, len(cache)) == (2, 0, 1)
    cache.html(message)
    assert cache.hits == 1


@pytest.mark.parametrize("status", ["pending", "streaming"])
def test_an_answer_being_written_is_never_kept(status: str) -> None:
    cache = RenderCache()
    message = answer(status=status, content="Half an **answ")
    assert cache.html(message) == render.markdown_html("Half an **answ")
    assert cache.html(message) == render.markdown_html("Half an **answ")
    assert (len(cache), cache.size, cache.hits) == (0, 0, 0)


def test_the_cache_is_bounded_by_size_least_recently_shown_first() -> None:
    one = sys.getsizeof(render.markdown_html(TEXT))
    cache = RenderCache(max_bytes=one * 3, max_entry_bytes=one)  # room for three of them
    cache_entries = [answer() for _ in range(3)]
    for m in cache_entries:
        cache.html(m)
    cache.html(cache_entries[0])  # shown again: now the most recent
    newest = answer()
    cache.html(newest)  # the fourth pushes out the least recently shown (the second)
    assert len(cache) == 3 and cache.size <= cache.max_bytes
    hits = cache.hits
    for kept in (cache_entries[0], cache_entries[2], newest):
        cache.html(kept)
    assert cache.hits == hits + 3
    cache.html(cache_entries[1])
    assert cache.hits == hits + 3  # it had been evicted


def test_one_huge_answer_is_not_kept() -> None:
    cache = RenderCache(max_bytes=64 * 1024)
    huge = answer(content="word " * 20_000)
    assert cache.html(huge).startswith("<p>word")
    assert (len(cache), cache.size) == (0, 0)
