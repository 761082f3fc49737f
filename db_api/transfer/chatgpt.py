"""ChatGPT's data export: `conversations.json`, a list of conversations.

A conversation is a `mapping` of nodes by id, each with `parent`, `children` and a
`message` (null for the root): `author.role`, `content` (`content_type` and `parts`),
`create_time` (Unix seconds), `status`, `metadata`, `recipient`. `current_node` is the
node the conversation shows last. Shown here: user and assistant text addressed to
everyone; hidden (their children kept attached above them): the root, system nodes
(the first visible system text becomes the chat's system prompt), tool calls and tool
results, reasoning, custom-instruction context, and anything with no text.
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

SOURCE = "chatgpt"
_TEXT_TYPES = {"text", "multimodal_text"}


def looks_like(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("mapping"), dict)


def _part_text(part: object) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        if isinstance(part.get("text"), str):
            return str(part["text"])
        kind = str(part.get("content_type", ""))
        if "image" in kind:
            return "[image]"
        if "audio" in kind or "video" in kind:
            return f"[{kind.split('_')[0]}]"
    return None


def _text(content: object) -> str | None:
    """The message's visible text, or None for content that is not for reading."""
    if not isinstance(content, dict):
        return None
    kind = content.get("content_type")
    if kind in _TEXT_TYPES:
        parts = content.get("parts")
        if not isinstance(parts, list):
            return str(content["text"]) if isinstance(content.get("text"), str) else None
        pieces = [text for part in parts if (text := _part_text(part))]
        return "\n\n".join(pieces)
    if kind == "code" and isinstance(content.get("text"), str):
        language = content.get("language")
        language = language if isinstance(language, str) and language != "unknown" else ""
        return f"```{language}\n{content['text']}\n```"
    return None


def _message(
    key: str, parent: str | None, raw: object, default_model: str | None
) -> tuple[DraftMessage, str | None]:
    """The node as a draft message, and its text when it is a visible system message."""
    if not isinstance(raw, dict):  # the root, or a placeholder
        return DraftMessage(key=key, parent=parent, role="system", hidden=True), None
    author = raw.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    text = _text(raw.get("content"))
    recipient = raw.get("recipient")
    hidden = (
        role not in ("user", "assistant", "system")
        or bool(metadata.get("is_visually_hidden_from_conversation"))
        or recipient not in (None, "all")
        or text is None
        or not text.strip()
    )
    status, reason, finish_reason = "complete", None, None
    if role == "assistant":
        finish = metadata.get("finish_details")
        finish_type = finish.get("type") if isinstance(finish, dict) else None
        if finish_type == "stop":
            finish_reason = "stop"
        elif finish_type == "max_tokens":
            finish_reason = "length"
        if raw.get("status") not in (None, "finished_successfully") or finish_type == "interrupted":
            status, reason = "interrupted", "stopped"
    model = metadata.get("model_slug") if isinstance(metadata.get("model_slug"), str) else None
    system_text = text if role == "system" and not hidden else None
    draft = DraftMessage(
        key=key,
        parent=parent,
        role=role if isinstance(role, str) else "system",
        content=text or "",
        hidden=hidden or role == "system",
        created_at=to_datetime(raw.get("create_time")),
        updated_at=to_datetime(raw.get("update_time")),
        status=status,
        reason=reason,
        finish_reason=finish_reason,
        model=(model or default_model) if role == "assistant" else None,
    )
    return draft, system_text


def convert(conversation: dict[str, Any], index: int) -> ChatDraft:
    """One conversation of the export (`index` counts from 1, for messages)."""
    title = conversation.get("title")
    label = f"conversation {index}" + (f" {title!r}" if isinstance(title, str) else "")
    mapping = conversation["mapping"]
    default_model = conversation.get("default_model_slug")
    default_model = default_model if isinstance(default_model, str) else None
    # `parent` is the link used; a node without the field takes it from `children`.
    listed_parent: dict[str, str] = {}
    for key, node in mapping.items():
        if not isinstance(node, dict):
            raise ImportRejected(422, f"{label}: node {key!r} of `mapping` is not an object")
        kids = node.get("children")
        for child in kids if isinstance(kids, list) else []:
            if isinstance(child, str):
                listed_parent.setdefault(child, key)
    messages: list[DraftMessage] = []
    system_prompt: str | None = None
    for key, node in mapping.items():
        parent = node.get("parent") if "parent" in node else listed_parent.get(key)
        message, system_text = _message(
            str(key),
            parent if isinstance(parent, str) else None,
            node.get("message"),
            default_model,
        )
        if system_text is not None and system_prompt is None:
            system_prompt = clean_text(system_text)
        messages.append(message)
    source_id = conversation.get("conversation_id") or conversation.get("id")
    current = conversation.get("current_node")
    return ChatDraft(
        source=SOURCE,
        label=label,
        source_id=source_id if isinstance(source_id, str) and source_id else None,
        messages=messages,
        current=current if isinstance(current, str) else None,
        title=title if isinstance(title, str) else None,
        system_prompt=system_prompt,
        model=default_model,
        created_at=to_datetime(conversation.get("create_time")),
        updated_at=to_datetime(conversation.get("update_time")),
        merge_assistant_runs=True,
        content_hash=None if source_id else content_hash(conversation),
    )
