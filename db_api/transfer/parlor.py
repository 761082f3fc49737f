"""Parlor's own export (db_api/transfer/schema.py) read back as drafts."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from db_api.transfer.schema import FORMAT, VERSION, ExportChat, ExportFile
from db_api.transfer.tree import (
    ChatDraft,
    DraftMessage,
    ImportRejected,
    answer_record,
    plausible,
)

SOURCE = "parlor"
MAX_REPORTED_ERRORS = 5


def looks_like(data: object) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT


def _rejection(exc: ValidationError) -> ImportRejected:
    problems = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors(include_input=False)[:MAX_REPORTED_ERRORS]
    ]
    more = exc.error_count() - len(problems)
    tail = f" (and {more} more)" if more > 0 else ""
    return ImportRejected(
        422, f"not a valid Parlor export: {'; '.join(problems)}{tail}; nothing was imported"
    )


def read(data: dict[str, Any]) -> ExportFile:
    version = data.get("version")
    if version != VERSION:
        raise ImportRejected(
            422,
            f"this Parlor reads export version {VERSION}; the file says {version!r}",
        )
    try:
        # Strict, from JSON text: times and ids must be text, counts integers, as the
        # published schema says (lax validation would take 0 for a time, true for 1).
        return ExportFile.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise _rejection(exc) from None


def convert(chat: ExportChat, index: int) -> ChatDraft:
    label = f"chat {index}" + (f" {chat.title!r}" if chat.title else "")
    messages = [
        DraftMessage(
            key=str(m.id),
            parent=str(m.parent_id) if m.parent_id is not None else None,
            role=m.role,
            content=m.content,
            created_at=plausible(m.created_at),
            updated_at=plausible(m.updated_at),
            status=m.status,
            **answer_record(m),
        )
        for m in chat.messages
    ]
    return ChatDraft(
        source=SOURCE,
        label=label,
        source_id=str(chat.id),
        messages=messages,
        current=str(chat.current_leaf_id) if chat.current_leaf_id else None,
        title=chat.title,
        title_source=chat.title_source,
        system_prompt=chat.system_prompt,
        model=chat.model,
        params=chat.params,
        created_at=plausible(chat.created_at),
        updated_at=plausible(chat.updated_at),
        import_key=chat.import_key,
        original_id=chat.id,
    )
