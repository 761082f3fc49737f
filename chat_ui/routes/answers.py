"""Sending a message and following its answer: send, stream (SSE), stop, retry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape
from uuid import UUID

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import HTMLResponse, Response

from chat_ui import deps
from chat_ui.clients import DbUnavailable, NotFound
from chat_ui.contracts import Message
from chat_ui.conversation import SendRefused
from chat_ui.web import bubble, finish, form_text, is_htmx, page, redirect

router = APIRouter()


def composer_failure(request: Request, chat_id: UUID, refused: SendRefused) -> Response:
    """Give the typed text back with the reason, so nothing typed is ever lost."""
    ctx = {"chat_id": str(chat_id), "composer_text": refused.text, "composer_error": refused.reason}
    if is_htmx(request):
        return page(
            request,
            "_composer.html",
            ctx,
            status=refused.status,
            headers={"HX-Retarget": "#composer", "HX-Reswap": "outerHTML"},
        )
    return page(request, "unavailable.html", ctx, status=refused.status)


@router.post("/chats/{chat_id}/messages")
async def send(
    request: Request, chat_id: UUID, form: deps.CheckedForm, conv: deps.Conversation
) -> Response:
    try:
        sent = await conv.send(chat_id, form_text(form, "content"))
    except SendRefused as refused:
        return composer_failure(request, chat_id, refused)
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}")
    return page(
        request,
        "_sent.html",
        {
            "messages": [sent.user, sent.answer],
            "chat": sent.chat,
            "chats": await conv.sidebar(),
            "chat_id": str(chat_id),
        },
    )


@router.get("/chats/{chat_id}/messages/{message_id}")
async def show_message(
    request: Request, chat_id: UUID, message_id: UUID, conv: deps.Conversation
) -> Response:
    """One message's bubble as it now stands (what an answer awaiting its save polls)."""
    message = await conv.message(chat_id, message_id)
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}")
    return finish(request, HTMLResponse(bubble(request, message)))


@router.get("/chats/{chat_id}/messages/{message_id}/stream")
async def stream(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    offset: deps.StreamOffset,
    conv: deps.MaybeConversation,
    stats: deps.Metrics,
) -> Response:
    """Replay the answer's text after `after` (or Last-Event-ID), follow it, then `done`.

    `notice` events say what the answer is waiting for (a silent model server, storage
    away); they carry no id, so a reconnect resumes from the last text received."""
    if conv is None:
        return _closing_stream(
            '<p class="msg-error" role="alert">Your session ended: reload the page.</p>'
        )
    gen = conv.live(message_id)
    if gen is not None and gen.chat_id != chat_id:
        gen = None
    final: Message | None = None
    if gen is None or gen.finished.is_set():
        try:
            final = await conv.message(chat_id, message_id)
        except NotFound:
            return _closing_stream(
                '<p class="msg-error" role="alert">This answer no longer exists.</p>'
            )
        except DbUnavailable:
            # The browser retries with back-off; the answer shows up once db_api is back.
            return HTMLResponse("db_api unavailable", status_code=503)
        gen = None

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal final
        stats.sse_connections.inc()
        try:
            if gen is not None:
                async for update in gen.follow(offset):
                    if update.text:
                        yield ServerSentEvent(
                            data=escape(update.text), event="token", id=str(update.offset)
                        )
                    if update.notice is not None:
                        yield ServerSentEvent(data=escape(update.notice), event="notice")
                final = gen.final
            assert final is not None
            yield ServerSentEvent(data=bubble(request, final), event="done")
        finally:
            stats.sse_connections.dec()

    return EventSourceResponse(events(), ping=15, headers=_stream_headers())


def _stream_headers() -> dict[str, str]:
    # X-Accel-Buffering: nginx must pass each event on at once.
    return {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def _closing_stream(html: str) -> Response:
    async def events() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(data=html, event="done")

    return EventSourceResponse(events(), headers=_stream_headers())


@router.post("/chats/{chat_id}/messages/{message_id}/stop")
async def stop(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    form: deps.CheckedForm,
    conv: deps.Conversation,
) -> Response:
    message = await conv.stop(chat_id, message_id)
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}")
    return finish(request, HTMLResponse(bubble(request, message)))


@router.post("/chats/{chat_id}/messages/{message_id}/retry")
async def retry(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    form: deps.CheckedForm,
    conv: deps.Conversation,
) -> Response:
    message = await conv.retry(chat_id, message_id)
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}")
    return finish(request, HTMLResponse(bubble(request, message)))
