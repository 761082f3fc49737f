"""Sending a message and following its answer: send, stream (SSE), stop, retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from html import escape
from uuid import UUID

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import HTMLResponse, Response, StreamingResponse

from chat_ui import deps, window
from chat_ui.clients import DbUnavailable, NotFound
from chat_ui.contracts import Message
from chat_ui.conversation import SendRefused
from chat_ui.follower import AnswerSource, Follower
from chat_ui.generation import Update as FollowUpdate
from chat_ui.markdown_stream import MarkdownStream, block_html, live_html, sync_html
from chat_ui.routes.commands import typed_command
from chat_ui.web import (
    bubble,
    bubble_reply,
    chat_page,
    composer_failure,
    finish,
    form_text,
    is_htmx,
    page,
    redirect,
    render,
)

router = APIRouter()

GONE = '<p class="msg-error" role="alert">This answer no longer exists.</p>'


@router.post("/chats/{chat_id}/messages")
async def send(
    request: Request,
    chat_id: UUID,
    form: deps.CheckedForm,
    conv: deps.Conversation,
    commands_ctx: deps.CommandContext,
) -> Response:
    # A slash command is answered here and never reaches the model.
    command = await typed_command(request, commands_ctx, chat_id, form_text(form, "content"))
    if command is not None:
        return command
    try:
        sent = await conv.send(chat_id, form_text(form, "content"))
    except SendRefused as refused:
        return composer_failure(request, chat_id, refused)
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat_id}/live")
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
    return bubble_reply(request, message, f"/chats/{chat_id}")


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
    here = conv.live(message_id)
    gen: AnswerSource | None = here if here is not None and here.chat_id == chat_id else None
    final: Message | None = None
    follower: Follower | None = None
    if gen is None or gen.finished.is_set():
        try:
            final = await conv.message(chat_id, message_id)
        except NotFound:
            return _closing_stream(GONE)
        except DbUnavailable:
            # The browser retries with back-off; the answer shows up once db_api is back.
            return HTMLResponse("db_api unavailable", status_code=503)
        gen = None
        if final.running:
            # Another replica writes it: follow what that one saves.
            gen = follower = conv.follower(final)
            final = None

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal final
        stats.sse_connections.inc()
        try:
            if follower is not None:
                # A page the writing replica showed is ahead of what it has saved.
                await follower.reach(offset)
            if gen is not None:
                async for event in _rendered(gen, message_id, min(offset, len(gen.text))):
                    yield event
                final = gen.final
            done = GONE if final is None else bubble(request, final)
            yield ServerSentEvent(data=done, event="done")
        finally:
            stats.sse_connections.dec()

    return EventSourceResponse(events(), ping=15, headers=_stream_headers())


async def _rendered(
    gen: AnswerSource, message_id: UUID, offset: int
) -> AsyncIterator[ServerSentEvent]:
    """The answer as Markdown while it is written: `sync` (the body as shown for the
    text up to `offset`), then `token` and `block` events (see _message.html), and the
    last block once the answer is complete, so that `done` changes nothing visible."""
    md, shown = MarkdownStream.resume(gen.text[:offset])
    yield ServerSentEvent(data=sync_html(message_id, shown), event="sync")
    async for change in gen.follow(offset):
        if change.text:
            update = md.feed(change.text)
            if update.replace:
                yield ServerSentEvent(
                    data=block_html(message_id, update), event="block", id=str(change.offset)
                )
            elif update.tail:
                yield ServerSentEvent(data=update.tail, event="token", id=str(change.offset))
        if change.notice is not None:
            yield ServerSentEvent(data=escape(change.notice), event="notice")
        if change.plan is not None:
            # Plan mode: the plan so far, whole (short), shown folded above the answer.
            yield ServerSentEvent(data=escape(change.plan), event="plan")
    last = md.close()
    if last.replace:
        yield ServerSentEvent(data=block_html(message_id, last), event="block")


# What the page streamed without JavaScript writes when the answer has been silent this
# long: an HTML comment, so that nginx (and any proxy) sees the response is alive.
LIVE_KEEPALIVE_S = 15.0
LIVE_SLOT = "<!--parlor:live-->"
FINAL_SLOT = "<!--parlor:final-->"


@router.get("/chats/{chat_id}/live")
async def live(request: Request, chat_id: UUID, conv: deps.Conversation) -> Response:
    """The chat page for a browser without JavaScript while an answer is written: one
    HTML response that grows as the answer does (complete Markdown blocks rendered, the
    block being written as text) and completes when the answer does, with the finished
    answer. No refresh: what the person types meanwhile in the message box (sent before
    the answer, placed below it by CSS) stays. Without a running answer: the chat page."""
    chat = await window.open_chat(conv, chat_id)
    answer = next((m for m in reversed(chat.messages) if m.running), None)
    gen: AnswerSource | None = None
    if answer is not None:
        # Written here, or by another replica (followed from what it saves).
        gen = conv.live(answer.id) or conv.follower(answer)
    if answer is None or gen is None or gen.finished.is_set():
        return redirect(request, f"/chats/{chat_id}")
    offset = len(gen.text)
    md, shown = MarkdownStream.resume(gen.text)
    # Plan mode: the plan as it is written, when the page opens before the answer begins.
    plan = LivePlan(active=offset == 0)
    html = render(
        request,
        "chats.html",
        {"chats": await conv.chats(), "chat": chat, "live": answer, "live_shown": shown},
    )
    head, rest = html.split(LIVE_SLOT, 1)
    middle, tail = rest.split(FINAL_SLOT, 1)

    async def body() -> AsyncIterator[str]:
        yield head
        pieces = aiter(gen.follow(offset))
        step: asyncio.Future[FollowUpdate] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(pieces))
                while not (await asyncio.wait({step}, timeout=LIVE_KEEPALIVE_S))[0]:
                    yield "<!-- -->"
                try:
                    change = step.result()
                except StopAsyncIteration:
                    break
                if change.plan is not None:
                    yield plan.feed(change.plan)
                if change.text:
                    yield plan.close()
                    yield live_html(md.feed(change.text))
        finally:
            if step is not None:
                step.cancel()  # the browser went away: stop following (the answer goes on)
        yield plan.close()
        yield live_html(md.close())
        yield middle
        final = gen.final
        if final is not None:
            yield bubble(request, final)
        yield tail

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return finish(request, StreamingResponse(body(), media_type="text/html", headers=headers))


PLAN_OPEN = '</div><details class="msg-plan" open><summary>Plan</summary><div class="plan-body">'
PLAN_CLOSE = '</div></details><div class="md-tail">'


class LivePlan:
    """The plan on the page streamed without JavaScript: written open above the answer as
    it comes, then closed when the answer begins. It is written beside the answer's blocks
    (the live slot's tail is closed first, a new one opened after), so that it stays shown
    when they come."""

    def __init__(self, *, active: bool) -> None:
        self._active = active
        self._open = False
        self._shown = 0

    def feed(self, plan: str) -> str:
        if not self._active:
            return ""
        out = ""
        if not self._open:
            self._open = True
            out = PLAN_OPEN
        out += escape(plan[self._shown :])
        self._shown = len(plan)
        return out

    def close(self) -> str:
        self._active = False
        if not self._open:
            return ""
        self._open = False
        return PLAN_CLOSE


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
    draft = form_text(form, "content")
    if not is_htmx(request) and draft.strip():
        # Stop from the message box of a page streamed without JavaScript: what the
        # person typed meanwhile comes back in the box.
        chat = await window.open_chat(conv, chat_id)
        return await chat_page(request, conv, chat, composer_text=draft)
    return bubble_reply(request, message, f"/chats/{chat_id}")


@router.post("/chats/{chat_id}/messages/{message_id}/retry")
async def retry(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    form: deps.CheckedForm,
    conv: deps.Conversation,
) -> Response:
    message = await conv.retry(chat_id, message_id)
    return bubble_reply(request, message, f"/chats/{chat_id}/live")
