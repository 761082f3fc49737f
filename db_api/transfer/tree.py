"""The format-neutral shape of an imported chat, and how it becomes Parlor's tree.

A converter turns one chat of a source format into a `ChatDraft`: messages keyed by the
source's ids with parent links, some of them `hidden` (a ChatGPT system or tool node, an
empty placeholder: skipped, their children kept attached to the nearest shown ancestor),
and the source's current node. `prepare` checks the tree (no duplicate ids, no cycle,
within the limits), orders each message's children oldest first (they become versions),
gives every message a new id and a creation time strictly after the one before (Parlor
reads a chat back in creation order), and picks the current leaf.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import re
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

ONE_TICK = timedelta(microseconds=1)
MAX_IMPORT_KEY_CHARS = 300
# The earliest and latest times taken from a file; anything else is "unknown".
_EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
_SURROGATES = re.compile("[\ud800-\udfff]")

# Chat settings Parlor knows, with their allowed ranges (others are dropped on import).
_PARAM_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "max_tokens": (1, 32768),
}


class ImportRejected(Exception):
    """The whole file is refused: nothing is imported. `status` is the HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64 * 1024 * 1024
    max_chats: int = 10_000
    max_messages: int = 10_000
    max_depth: int = 64
    max_message_chars: int = 100_000
    max_title_chars: int = 200


@dataclass(kw_only=True)
class AnswerRecord:
    """How a message ended and what it was generated with (all empty for a question)."""

    error: str | None = None
    reason: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    params: dict[str, Any] | None = None
    plan: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    generation_ms: float | None = None


ANSWER_RECORD_FIELDS = tuple(f.name for f in fields(AnswerRecord))


def answer_record(source: object) -> dict[str, Any]:
    """The answer record fields read off any object that has them (a stored message)."""
    return {name: getattr(source, name) for name in ANSWER_RECORD_FIELDS}


@dataclass(kw_only=True)
class DraftMessage(AnswerRecord):
    key: str
    parent: str | None
    role: str = "user"
    content: str = ""
    hidden: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status: str = "complete"


@dataclass
class ChatDraft:
    source: str  # "parlor", "chatgpt", "open-webui"
    label: str  # how reports name it: `conversation 3 "Title"`
    source_id: str | None
    messages: list[DraftMessage]
    current: str | None = None
    title: str | None = None
    title_source: str = "user"
    system_prompt: str | None = None
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Parlor's own export names the key and the chat it came from.
    import_key: str | None = None
    original_id: uuid.UUID | None = None
    # ChatGPT splits one answer around tool calls: join an assistant message into its
    # assistant parent when it is that parent's only child.
    merge_assistant_runs: bool = False
    # When the source has no id: a hash of the source object, computed by the converter.
    content_hash: str | None = None


@dataclass(kw_only=True)
class PreparedMessage(AnswerRecord):
    id: uuid.UUID
    parent_id: uuid.UUID | None
    source_key: str
    role: str
    content: str
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass
class PreparedChat:
    import_key: str
    label: str
    title: str | None
    title_source: str
    system_prompt: str | None
    model: str | None
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    messages: list[PreparedMessage]  # parents before children, created_at increasing
    current_leaf_id: uuid.UUID
    original_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Skipped:
    label: str
    source_id: str | None
    reason: str


# -- small helpers shared by the converters -------------------------------------------


def clean_text(value: str) -> str:
    """Text that both databases can store: NUL and lone surrogates become U+FFFD."""
    return _SURROGATES.sub("\ufffd", value.replace("\x00", "\ufffd"))


def optional_text(value: object) -> str | None:
    return clean_text(value) if isinstance(value, str) else None


def plausible(when: datetime | None) -> datetime | None:
    """`when` in UTC when it is a plausible time for a chat, else None (unknown)."""
    if when is None:
        return None
    try:
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        return None
    return when if _EARLIEST <= when <= _LATEST else None


MAX_PARAMS_CHARS = 10_000


def clean_json(value: Any) -> Any:
    """A JSON value with its text storable (see clean_text), keys included."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(item) for item in value]
    return value


def message_params(value: object) -> dict[str, Any] | None:
    """A message's generation settings as given, when they are a small JSON object."""
    if not isinstance(value, dict):
        return None
    cleaned: dict[str, Any] = clean_json(value)
    if len(json.dumps(cleaned, ensure_ascii=False, default=str)) > MAX_PARAMS_CHARS:
        return None
    return cleaned


def to_datetime(value: object) -> datetime | None:
    """A time from a file: Unix seconds (or milliseconds, or microseconds, told apart
    by size) or ISO 8601 text; None when absent or not a plausible time."""
    when: datetime | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        if seconds > 1e14:
            seconds /= 1e6
        elif seconds > 1e11:
            seconds /= 1e3
        try:
            when = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        when = when.astimezone(UTC)
    return plausible(when)


def chat_params(raw: object) -> dict[str, Any]:
    """The chat settings Parlor knows, taken from `raw` when their values are valid."""
    if not isinstance(raw, dict):
        return {}
    params: dict[str, Any] = {}
    for name, (low, high) in _PARAM_RANGES.items():
        value = raw.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value) and low <= value <= high:
                params[name] = int(value) if name == "max_tokens" else float(value)
    if isinstance(raw.get("plan_mode"), bool):
        params["plan_mode"] = raw["plan_mode"]
    planner = raw.get("planner_model")
    if isinstance(planner, str) and planner.strip() and len(planner) <= 256:
        params["planner_model"] = clean_text(planner)
    return params


def content_hash(raw: object) -> str:
    """A stable hash of a source object, for chats whose source gives no id."""
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def import_key(draft: ChatDraft) -> str:
    if draft.import_key:
        key = draft.import_key
    elif draft.source_id:
        key = f"{draft.source}:{draft.source_id}"
    else:
        key = f"{draft.source}:sha256:{draft.content_hash or ''}"
    if len(key) > MAX_IMPORT_KEY_CHARS:
        key = f"{draft.source}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


# -- the tree --------------------------------------------------------------------------


def _check_acyclic(draft: ChatDraft, parents: dict[str, str | None]) -> None:
    done: set[str] = set()
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        while node is not None and node not in done:
            if node in on_path:
                raise ImportRejected(
                    422,
                    f"{draft.label}: the messages' parent links form a cycle "
                    f"(through message {node!r}); nothing was imported",
                )
            on_path.add(node)
            path.append(node)
            node = parents[node]
        done.update(path)


def prepare(draft: ChatDraft, limits: Limits, *, now: datetime) -> PreparedChat | Skipped:
    """Check `draft` and lay it out as Parlor's tree. Raises ImportRejected for what
    refuses the whole file (a cycle, duplicate ids, too many messages); answers Skipped
    for a chat that cannot be imported on its own (nothing to show, a message too long)."""
    if len(draft.messages) > limits.max_messages:
        raise ImportRejected(
            422,
            f"{draft.label} has {len(draft.messages)} messages; the limit per chat is "
            f"{limits.max_messages}; nothing was imported",
        )
    by_key: dict[str, DraftMessage] = {}
    for message in draft.messages:
        if message.key in by_key:
            raise ImportRejected(
                422,
                f"{draft.label}: message id {message.key!r} appears twice; nothing was imported",
            )
        by_key[message.key] = message
    # A parent the file does not hold: the message starts a branch of its own (lenient:
    # partial exports exist); a message that is its own ancestor is an error.
    parents = {
        key: (m.parent if m.parent is not None and m.parent in by_key else None)
        for key, m in by_key.items()
    }
    _check_acyclic(draft, parents)

    children: dict[str | None, list[str]] = {}
    for key, parent in parents.items():
        children.setdefault(parent, []).append(key)

    # Walk from the roots, parents first: each shown message hangs below the nearest
    # shown ancestor (`anchor`); a hidden one passes its anchor on to its children.
    anchor: dict[str, str | None] = {}
    shown_parent: dict[str, str | None] = {}
    order: list[str] = []
    stack: list[tuple[str, str | None]] = [(key, None) for key in reversed(children.get(None, []))]
    while stack:
        key, above = stack.pop()
        message = by_key[key]
        if message.hidden:
            anchor[key] = above
        else:
            anchor[key] = key
            shown_parent[key] = above
            order.append(key)
        stack.extend((child, anchor[key]) for child in reversed(children.get(key, [])))

    if not order:
        return Skipped(draft.label, draft.source_id, "no messages")

    # ChatGPT: an answer interrupted by a hidden tool call continues in a second
    # assistant node; join the two when nothing else branches there.
    merged_into: dict[str, str] = {}
    contents = {key: by_key[key].content for key in order}
    shown_children: dict[str | None, int] = {}
    for key in order:
        shown_children[shown_parent[key]] = shown_children.get(shown_parent[key], 0) + 1
    if draft.merge_assistant_runs:
        for key in order:
            parent = shown_parent[key]
            if parent is None or shown_children.get(parent) != 1:
                continue
            target = merged_into.get(parent, parent)
            if by_key[key].role == by_key[target].role == "assistant":
                contents[target] = f"{contents[target]}\n\n{contents[key]}"
                merged_into[key] = target

    def resolve(key: str | None) -> str | None:
        return merged_into.get(key, key) if key is not None else None

    kept = [key for key in order if key not in merged_into]
    for key in kept:
        text = clean_text(contents[key])
        if len(text) > limits.max_message_chars:
            return Skipped(
                draft.label,
                draft.source_id,
                f"a message is longer than {limits.max_message_chars} characters",
            )
        contents[key] = text

    # Creation order: a message after its parent, siblings oldest first (they become
    # versions 1, 2, ...); a message without a time goes right after its parent.
    start = draft.created_at or min(
        (t for k in kept if (t := by_key[k].created_at) is not None), default=now
    )
    kept_children: dict[str | None, list[str]] = {}
    for key in kept:
        kept_children.setdefault(resolve(shown_parent[key]), []).append(key)
    position = {key: index for index, key in enumerate(order)}
    effective: dict[str, datetime] = {}
    heap: list[tuple[datetime, int, str]] = []

    def push(key: str, parent_time: datetime) -> None:
        effective[key] = by_key[key].created_at or parent_time
        heapq.heappush(heap, (effective[key], position[key], key))

    for key in kept_children.get(None, []):
        push(key, start)
    ids: dict[str, uuid.UUID] = {}
    messages: list[PreparedMessage] = []
    previous: datetime | None = None
    while heap:
        _, _, key = heapq.heappop(heap)
        source = by_key[key]
        created = effective[key]
        if previous is not None and created <= previous:
            created = previous + ONE_TICK
        previous = created
        ids[key] = uuid.uuid4()
        parent_key = resolve(shown_parent[key])
        status = source.status
        reason = source.reason
        if status in ("pending", "streaming"):
            # Nothing generates an imported answer: it is an interrupted one.
            status, reason = "interrupted", reason or "stopped"
        messages.append(
            PreparedMessage(
                id=ids[key],
                parent_id=ids[parent_key] if parent_key is not None else None,
                source_key=key,
                role=source.role,
                content=contents[key],
                status=status,
                created_at=created,
                updated_at=max(created, source.updated_at or created),
                error=optional_text(source.error),
                reason=reason,
                finish_reason=source.finish_reason,
                model=optional_text(source.model),
                params=message_params(source.params),
                plan=optional_text(source.plan),
                prompt_tokens=source.prompt_tokens,
                completion_tokens=source.completion_tokens,
                ttft_ms=source.ttft_ms,
                generation_ms=source.generation_ms,
            )
        )
        for child in kept_children.get(key, []):
            push(child, created)

    # The current branch: the source's current node (or the shown message above it);
    # below a message that has children, its most recently created leaf, as Parlor does.
    current = resolve(anchor.get(draft.current)) if draft.current in anchor else None
    below = _descendants(current, kept_children) if current is not None else set(kept)
    current_leaf = next(
        m
        for m in reversed(messages)
        if m.source_key in below and not kept_children.get(m.source_key)
    )

    title = optional_text(draft.title)
    title = title.strip()[: limits.max_title_chars].strip() if title else None
    created_at = draft.created_at or messages[0].created_at
    updated_at = max(draft.updated_at or messages[-1].updated_at, created_at)
    return PreparedChat(
        import_key=import_key(draft),
        label=draft.label,
        title=title or None,
        title_source=draft.title_source,
        system_prompt=optional_text(draft.system_prompt),
        model=optional_text(draft.model),
        params=chat_params(draft.params),
        created_at=created_at,
        updated_at=updated_at,
        messages=messages,
        current_leaf_id=current_leaf.id,
        original_id=draft.original_id,
    )


def _descendants(key: str, children: dict[str | None, list[str]]) -> set[str]:
    found = {key}
    stack = [key]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found
