"""Open WebUI's chat export: a list of chats (or one), each `{id, title, chat, created_at,
updated_at, ...}` where `chat.history.messages` holds the messages by id (`parentId`,
`childrenIds`, `role`, `content`, `timestamp`, `model`, `done`) and
`chat.history.currentId` the message shown last. `chat.messages`, a linear copy of the
current branch, is used only when there is no history. `chat.params.system` is the
system prompt; temperature, top_p and max_tokens are kept as the chat's settings.
"""

from __future__ import annotations

from typing import Any

from db_api.transfer.tree import (
    ChatDraft,
    DraftMessage,
    ImportRejected,
    clean_text,
    content_hash,
    to_datetime,
)

SOURCE = "open-webui"


def _chat_of(item: dict[str, Any]) -> dict[str, Any] | None:
    """The `chat` object, whether wrapped (a row of Open WebUI's table) or bare."""
    inner = item.get("chat")
    if isinstance(inner, dict):
        return inner
    messages = item.get("messages")
    if isinstance(item.get("history"), dict) or (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and "role" in m for m in messages)
    ):
        return item
    return None


def looks_like(item: object) -> bool:
    if not isinstance(item, dict):
        return False
    chat = _chat_of(item)
    return chat is not None and (
        isinstance(chat.get("history"), dict) or isinstance(chat.get("messages"), list)
    )


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts
        pieces = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            elif isinstance(part, dict) and "image" in str(part.get("type", "")):
                pieces.append("[image]")
        return "\n\n".join(pieces)
    return ""


def _message(key: str, parent: str | None, raw: dict[str, Any]) -> tuple[DraftMessage, str | None]:
    role = raw.get("role")
    text = _text(raw.get("content"))
    status, reason, error = "complete", None, None
    if role == "assistant":
        failure = raw.get("error")
        if failure:
            status = "error"
            detail = failure.get("content") if isinstance(failure, dict) else failure
            error = clean_text(detail) if isinstance(detail, str) else "error"
            reason = "model_error"
        elif raw.get("done") is False:
            status, reason = "interrupted", "stopped"
    visible = role in ("user", "assistant") and (bool(text.strip()) or status == "error")
    model = raw.get("model")
    draft = DraftMessage(
        key=key,
        parent=parent,
        role=role if role in ("user", "assistant") else "system",
        content=text,
        hidden=not visible,
        created_at=to_datetime(raw.get("timestamp")),
        status=status,
        reason=reason,
        error=error,
        model=model if isinstance(model, str) and role == "assistant" else None,
    )
    system_text = text if role == "system" and text.strip() else None
    return draft, system_text


def convert(item: dict[str, Any], index: int) -> ChatDraft:
    chat = _chat_of(item)
    assert chat is not None  # looks_like() said so
    title = item.get("title") if isinstance(item.get("title"), str) else chat.get("title")
    label = f"chat {index}" + (f" {title!r}" if isinstance(title, str) else "")
    history = chat.get("history")
    current: object = None
    entries: list[tuple[str, str | None, dict[str, Any]]] = []
    by_id = history.get("messages") if isinstance(history, dict) else None
    if isinstance(by_id, dict):
        current = history.get("currentId") if isinstance(history, dict) else None
        for key, raw in by_id.items():
            if not isinstance(raw, dict):
                raise ImportRejected(422, f"{label}: message {key!r} is not an object")
            parent = raw.get("parentId")
            entries.append((str(key), parent if isinstance(parent, str) else None, raw))
    elif isinstance(chat.get("messages"), list):
        # No tree: the linear list is one branch (parentId when given, else the previous).
        previous: str | None = None
        for position, raw in enumerate(chat["messages"]):
            if not isinstance(raw, dict):
                raise ImportRejected(422, f"{label}: message {position + 1} is not an object")
            key = raw.get("id") if isinstance(raw.get("id"), str) else f"#{position}"
            parent = raw.get("parentId", previous)
            entries.append((str(key), parent if isinstance(parent, str) else None, raw))
            previous = str(key)
        current = previous
    messages: list[DraftMessage] = []
    system_prompt: str | None = None
    params = chat.get("params") if isinstance(chat.get("params"), dict) else {}
    assert isinstance(params, dict)
    if isinstance(params.get("system"), str) and params["system"].strip():
        system_prompt = params["system"]
    for key, parent, raw in entries:
        message, system_text = _message(key, parent, raw)
        if system_text is not None and system_prompt is None:
            system_prompt = system_text
        messages.append(message)
    models = chat.get("models")
    model = (
        next((m for m in models if isinstance(m, str)), None) if isinstance(models, list) else None
    )
    source_id = item.get("id") if isinstance(item.get("id"), str) and item.get("id") else None
    source_id = source_id or (chat.get("id") if isinstance(chat.get("id"), str) else None) or None
    return ChatDraft(
        source=SOURCE,
        label=label,
        source_id=source_id,
        messages=messages,
        current=current if isinstance(current, str) else None,
        title=title if isinstance(title, str) else None,
        system_prompt=system_prompt,
        model=model,
        params=params,
        created_at=to_datetime(item.get("created_at")) or to_datetime(chat.get("timestamp")),
        updated_at=to_datetime(item.get("updated_at")),
        content_hash=None if source_id else content_hash(item),
    )
