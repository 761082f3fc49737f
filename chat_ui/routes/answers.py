"""Sending a message and following its answer: send, stream (SSE), stop, retry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from html import escape
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, Response

from chat_ui.clients import JSON, DbRejected, DbUnavailable, NotFound
from chat_ui.generation import RUNNING
from chat_ui.routes.chats import chat_title, load_chat
from chat_ui.web import (
    TEMPLATES,
    PageError,
    checked_form,
    db,
    finish,
    form_text,
    generations,
    is_htmx,
    metrics,
    owner_of,
    page,
    redirect,
    session_of,
    settings,
)

log = logging.getLogger("chat_ui.answers")
router = APIRouter()

Form = Annotated[FormData, Depends(checked_form)]
TITLE_CHARS = 60


def bubble(request: Request, message: JSON) -> str:
    """One message rendered by the `bubble` macro (also the SSE `done` payload)."""
    macro = TEMPLATES.env.get_template("_message.html").module.bubble  # type: ignore[attr-defined]
    return str(macro(message, session_of(request).csrf_token))


def title_from(content: str) -> str:
    text = " ".join(content.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def composer_failure(
    request: Request, chat_id: UUID, text: str, error: str, status: int
) -> Response:
    """Give the typed text back with the reason, so nothing typed is ever lost."""
    ctx = {"chat_id": str(chat_id), "composer_text": text, "composer_error": error}
    if is_htmx(request):
        return page(
            request,
            "_composer.html",
            ctx,
            status=status,
            headers={"HX-Retarget": "#composer", "HX-Reswap": "outerHTML"},
        )
    return page(request, "unavailable.html", ctx, status=status)


def _find(chat: JSON, message_id: UUID) -> JSON:
    for msg in chat["messages"]:
        if msg["id"] == str(message_id):
            return msg
    raise NotFound(str(message_id))


@router.post("/chats/{chat_id}/messages")
async def send(request: Request, chat_id: UUID, form: Form) -> Response:
    owner = owner_of(request)
    content = form_text(form, "content")
    limit = settings(request).max_message_chars
    if not content.strip():
        return composer_failure(request, chat_id, content, "Type a message first.", 422)
    if len(content) > limit:
        return composer_failure(
            request,
            chat_id,
            content,
            f"Messages are at most {limit} characters (this one has {len(content)}).",
            422,
        )
    api = db(request)
    try:
        chat = await load_chat(request, owner, chat_id)
        # The person's text is stored before anything is sent to the model.
        user_msg = await api.add_message(owner, str(chat_id), "user", content)
        answer = await api.add_message(owner, str(chat_id), "assistant", "", status="pending")
    except DbUnavailable:
        return composer_failure(
            request,
            chat_id,
            content,
            "Parlor cannot reach its storage right now, so your message was not sent. "
            "Your text is kept below: send it again in a moment.",
            503,
        )
    except DbRejected as exc:
        return composer_failure(request, chat_id, content, exc.detail, 422)
    if not chat.get("title"):
        try:
            chat = {**chat, **await api.update_chat(owner, str(chat_id), title=title_from(content))}
        except (DbUnavailable, DbRejected) as exc:
            log.warning("could not title chat %s: %s", chat_id, exc)
    chat["messages"] = [*chat["messages"], user_msg, answer]
    generations(request).start(owner, chat, answer["id"])
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}")
    chats = await _sidebar_chats(request, owner)
    return page(
        request,
        "_sent.html",
        {
            "messages": [user_msg, answer],
            "chat": chat,
            "chats": chats,
            "chat_id": str(chat_id),
            "title_of": chat_title,
        },
    )


async def _sidebar_chats(request: Request, owner: str) -> list[JSON] | None:
    try:
        return await db(request).list_chats(owner)
    except DbUnavailable:
        return None


@router.get("/chats/{chat_id}/messages/{message_id}/stream")
async def stream(request: Request, chat_id: UUID, message_id: UUID, after: int = 0) -> Response:
    """Replay the answer's text after `after` (or Last-Event-ID), follow it, then `done`."""
    owner = session_of(request).owner
    offset = after
    last_id = request.headers.get("last-event-id", "")
    if last_id.isdigit():
        offset = int(last_id)  # a reconnect resumes exactly where the browser stopped
    offset = max(0, offset)
    gen = generations(request).get(str(message_id), owner) if owner else None
    final: JSON | None = None
    if gen is None:
        if owner is None:
            return _closing_stream(
                '<p class="msg-error" role="alert">Your session ended: reload the page.</p>'
            )
        try:
            chat = await load_chat(request, owner, chat_id)
            final = _find(chat, message_id)
        except NotFound:
            return _closing_stream(
                '<p class="msg-error" role="alert">This answer no longer exists.</p>'
            )
        except DbUnavailable:
            # The browser retries with back-off; the answer shows up once db_api is back.
            return HTMLResponse("db_api unavailable", status_code=503)
    stats = metrics(request)

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal final
        stats.sse_connections.inc()
        try:
            if gen is not None:
                async for piece, new_offset in gen.follow(offset):
                    yield ServerSentEvent(data=escape(piece), event="token", id=str(new_offset))
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
async def stop(request: Request, chat_id: UUID, message_id: UUID, form: Form) -> Response:
    owner = owner_of(request)
    gen = await generations(request).stop(str(message_id), owner)
    message = gen.final if gen is not None and gen.chat_id == str(chat_id) else None
    if message is None:
        # Already finished (or orphaned, which load_chat marks interrupted): show it as is.
        message = _find(await load_chat(request, owner, chat_id), message_id)
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}")
    return finish(request, HTMLResponse(bubble(request, message)))


@router.post("/chats/{chat_id}/messages/{message_id}/retry")
async def retry(request: Request, chat_id: UUID, message_id: UUID, form: Form) -> Response:
    owner = owner_of(request)
    chat = await load_chat(request, owner, chat_id)
    message = _find(chat, message_id)
    if message["role"] != "assistant":
        raise PageError(409, "Nothing to retry", "Only an answer can be retried.")
    if message["status"] not in RUNNING:
        if message["status"] == "complete":
            raise PageError(409, "Already answered", "This answer is complete.")
        reset: dict[str, Any] = {
            "content": "",
            "status": "pending",
            "error": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "ttft_ms": None,
            "generation_ms": None,
        }
        message = await db(request).update_message(owner, str(message_id), **reset)
        chat["messages"] = [message if m["id"] == message["id"] else m for m in chat["messages"]]
        generations(request).start(owner, chat, message["id"])
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}")
    return finish(request, HTMLResponse(bubble(request, message)))
