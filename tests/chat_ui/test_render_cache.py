"""The HTML of finished answers, kept per message: a hit while the message, its
revision, its text and the renderer's version are unchanged, a miss (and the entry
replaced) otherwise, answers being written never kept, and the memory bounded by size;
and whole bubbles, kept per state of the message and filled with each person's token."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest

from chat_ui import render, render_cache
from chat_ui.contracts import Message
from chat_ui.render_cache import RenderCache, bubble_html

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


# ---- whole bubbles (render_cache.bubble_html) --------------------------------------------


class Bubbles:
    """A stand-in for the template's macro that counts its renders and shows the fields a
    bubble shows."""

    def __init__(self) -> None:
        self.renders = 0

    def __call__(self, m: Message, csrf: str) -> str:
        self.renders += 1
        return f"<article>{m.content} {m.status} {m.version}/{m.versions} csrf={csrf}</article>"


@pytest.fixture
def bubbles(monkeypatch: pytest.MonkeyPatch) -> Bubbles:
    monkeypatch.setattr(render_cache, "BUBBLES", RenderCache())
    return Bubbles()


def test_a_finished_bubble_is_rendered_once_and_carries_each_persons_token(
    bubbles: Bubbles,
) -> None:
    message = answer()
    ada = bubble_html(message, "ada-token", bubbles)
    bob = bubble_html(message.model_copy(), "bob-token", bubbles)
    assert bubbles.renders == 1
    assert ada.endswith("csrf=ada-token</article>") and "bob-token" not in ada
    assert bob.endswith("csrf=bob-token</article>") and "ada-token" not in bob
    # A token is escaped like any other template value.
    assert bubble_html(message, "a<b", bubbles).endswith("csrf=a&lt;b</article>")


@pytest.mark.parametrize(
    "change",
    [
        {"revision": 4, "content": TEXT + "\nEdited."},  # edited or retried
        {"status": "interrupted", "revision": 4},  # stopped
        {"versions": 2, "sibling_ids": [uuid.uuid4(), uuid.uuid4()]},  # regenerated beside
        {"version": 2},  # another version switched to
        {"completion_tokens": 12},  # its stats line
    ],
)
def test_a_changed_bubble_is_rendered_again(bubbles: Bubbles, change: dict[str, Any]) -> None:
    message = answer()
    bubble_html(message, "t", bubbles)
    changed = message.model_copy(update=change)
    shown = bubble_html(changed, "t", bubbles)
    assert bubbles.renders == 2
    assert shown == Bubbles()(changed, "t")
    assert len(render_cache.BUBBLES) == 1  # replaced, not kept beside the old one


def test_a_new_renderer_version_renders_bubbles_again(
    bubbles: Bubbles, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = answer()
    bubble_html(message, "t", bubbles)
    monkeypatch.setattr(render, "RENDERER_VERSION", render.RENDERER_VERSION + 1)
    bubble_html(message, "t", bubbles)
    assert bubbles.renders == 2


@pytest.mark.parametrize(
    "fields", [{"status": "streaming"}, {"status": "pending"}, {"unsaved": True}]
)
def test_a_bubble_being_written_or_unsaved_is_never_kept(
    bubbles: Bubbles, fields: dict[str, Any]
) -> None:
    message = answer(**fields)
    bubble_html(message, "t", bubbles)
    bubble_html(message, "t", bubbles)
    assert bubbles.renders == 2 and len(render_cache.BUBBLES) == 0
