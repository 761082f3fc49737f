"""Import and export: a page with the upload form and the export links; the upload is
forwarded to db_api as it is read, exports are streamed from db_api to the browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Request
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from chat_ui import deps
from chat_ui.clients import DbRejected
from chat_ui.web import page

router = APIRouter()

UPLOAD_CHUNK = 256 * 1024
# What the browser may be handed from db_api's answer.
_PASSED_HEADERS = ("content-type", "content-disposition")


async def _transfer_page(
    request: Request,
    conv: deps.Conversation,
    *,
    report: dict[str, Any] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    context = {"chats": await conv.sidebar(), "chat": None, "report": report, "error": error}
    return page(request, "transfer.html", context, status=status)


@router.get("/transfer")
async def transfer(request: Request, conv: deps.Conversation) -> Response:
    return await _transfer_page(request, conv)


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK):
        yield chunk


@router.post("/import")
async def import_chats(
    request: Request,
    form: deps.CheckedForm,
    owner: deps.Owner,
    db: deps.Db,
    conv: deps.Conversation,
) -> Response:
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await _transfer_page(request, conv, error="Choose a file to import.", status=422)
    try:
        report = await db.import_file(owner, _chunks(upload), upload.size)
    except DbRejected as exc:
        status = exc.status if exc.status in (400, 413, 415, 422) else 422
        message = f"Nothing was imported from {upload.filename}: {exc.detail}."
        return await _transfer_page(request, conv, error=message, status=status)
    finally:
        await upload.close()
    return await _transfer_page(request, conv, report=report)


async def _streamed(db: deps.Db, owner: str, path: str, params: dict[str, str]) -> Response:
    upstream = await db.open_export(owner, path, params)
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in _PASSED_HEADERS}
    return StreamingResponse(
        upstream.aiter_raw(), headers=headers, background=BackgroundTask(upstream.aclose)
    )


@router.get("/export")
async def export_all(owner: deps.Owner, db: deps.Db) -> Response:
    """Every chat as one JSON file, passed on as db_api writes it."""
    return await _streamed(db, owner, "/export", {})


@router.get("/chats/{chat_id}/export")
async def export_chat(
    chat_id: UUID,
    owner: deps.Owner,
    db: deps.Db,
    format_: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
) -> Response:
    return await _streamed(db, owner, f"/chats/{chat_id}/export", {"format": format_})
