"""Export (one chat as JSON or Markdown, all chats as one streamed JSON file) and import
(Parlor's, ChatGPT's and Open WebUI's exports, as the raw request body)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from db_api.config import Settings
from db_api.models import utcnow
from db_api.routes import deps
from db_api.transfer import exporting, importing, reading
from db_api.transfer.schema import inline_schema
from db_api.transfer.tree import ImportRejected, Limits, prepare

router = deps.owner_scoped_router("export and import")

_EXPORT_SCHEMA = inline_schema()


class ImportedChat(BaseModel):
    id: uuid.UUID
    title: str | None
    messages: int


class SkippedChat(BaseModel):
    chat: str
    source_id: str | None
    reason: str


class ImportReport(BaseModel):
    source: str  # parlor, chatgpt, open-webui
    imported: int
    skipped: int
    summary: str
    chats: list[ImportedChat]
    skipped_chats: list[SkippedChat]


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.import_max_bytes,
        max_chats=settings.import_max_chats,
        max_messages=settings.import_max_messages,
        max_message_chars=settings.max_message_chars,
        max_title_chars=settings.max_title_chars,
    )


def _attachment(title: str | None, extension: str) -> str:
    name = exporting.filename(title, extension)
    if title:
        return f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(title + '.' + extension)}"
    return f'attachment; filename="{name}"'


@router.get(
    "/chats/{chat_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "The chat: Parlor's export format, or Markdown for reading",
            "content": {
                "application/json": {"schema": _EXPORT_SCHEMA},
                "text/markdown": {"schema": {"type": "string"}},
            },
        },
        **deps.answers(404, "No such chat for this owner"),
    },
)
def export_chat(
    chat_id: uuid.UUID,
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    format_: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
) -> Response:
    """One chat with every branch and version, its settings and times (`format=json`:
    docs/export-schema-v1.json; importable), or its current branch and then the other
    branches as Markdown (`format=markdown`)."""
    exported = exporting.export_chat(session, owner, chat_id)
    chat = exported.chats[0]
    if format_ == "markdown":
        return Response(
            exporting.markdown(chat).encode(),
            media_type="text/markdown; charset=utf-8",
            headers={"Content-Disposition": _attachment(chat.title, "md")},
        )
    return Response(
        exported.model_dump_json().encode(),
        media_type="application/json",
        headers={"Content-Disposition": _attachment(chat.title, "json")},
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "All the owner's chats, oldest first, in Parlor's export format",
            "content": {"application/json": {"schema": _EXPORT_SCHEMA}},
        }
    },
)
def export_all(request: Request, owner: deps.OwnerDep) -> StreamingResponse:
    """Every chat of the owner as one JSON file, written while it is read from the
    database a batch of chats at a time (never whole in memory)."""
    day = utcnow().strftime("%Y-%m-%d")
    return StreamingResponse(
        exporting.export_all(request.app.state.sessionmaker, owner),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="parlor-chats-{day}.json"'},
    )


_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file itself as the body: Parlor's export (this schema), "
        "ChatGPT's conversations.json or its export zip, or Open WebUI's chat export.",
        "content": {"application/json": {"schema": _EXPORT_SCHEMA}},
    }
}


@router.post(
    "/import",
    response_model=ImportReport,
    openapi_extra=_IMPORT_BODY,
    responses={
        400: {"model": deps.ErrorOut, "description": "Not a JSON file or not a readable zip"},
        413: {"model": deps.ErrorOut, "description": "Larger than the import limit"},
        422: {
            "model": deps.ErrorOut,
            "description": "Not an export Parlor reads, nested too deeply, too many chats "
            "or messages, a broken tree (a cycle): nothing was imported",
        },
    },
)
async def import_file(
    request: Request, owner: deps.OwnerDep, settings: deps.SettingsDep
) -> ImportReport:
    """Import the chats of an uploaded export. Each chat is stored whole or not at all;
    a chat the owner already holds (same source and id, or a Parlor chat still in this
    account) is skipped, so importing a file twice adds nothing. Files beyond the limits
    (`DB_API_IMPORT_MAX_*`) and broken files are refused whole."""
    limits = limits_of(settings)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        # Refused before a byte of the body is read.
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, reading.too_large(limits.max_bytes).detail
        )
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limits.max_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, reading.too_large(limits.max_bytes).detail
            )
    if not received:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the upload is empty")
    body = bytes(received)
    del received

    def work() -> importing.Report:
        data = reading.parse(body, limits)
        source, drafts = reading.drafts(data, limits)
        now = utcnow()
        # Every chat is checked before the first one is written: a file refused whole
        # leaves nothing behind.
        prepared = [prepare(draft, limits, now=now) for draft in drafts]
        if source == reading.EMPTY:  # `[]`: no chats, and no telling what it is
            raise ImportRejected(422, "the file holds no chats")
        return importing.import_prepared(request.app.state.sessionmaker, owner, source, prepared)

    try:
        report = await run_in_threadpool(work)
    except ImportRejected as exc:
        raise HTTPException(exc.status, exc.detail) from None
    return ImportReport(
        source=report.source,
        imported=len(report.imported),
        skipped=len(report.skipped),
        summary=report.summary(),
        chats=[ImportedChat.model_validate(chat) for chat in report.imported],
        skipped_chats=[
            SkippedChat(chat=s.label, source_id=s.source_id, reason=s.reason)
            for s in report.skipped
        ],
    )
