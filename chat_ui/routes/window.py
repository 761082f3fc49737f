"""More of a long chat: the window above the messages shown (as the person scrolls up,
or "Show earlier messages") and the one below them (a chat opened at a message far
back). htmx gets the messages with the next edge of the window, to put in place of the
edge that asked; a plain link (no JavaScript) gets the chat page showing that window."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from chat_ui import deps, window
from chat_ui.clients import NotFound
from chat_ui.web import chat_page, is_htmx, page, redirect

router = APIRouter()


@router.get("/chats/{chat_id}/earlier")
async def earlier(
    request: Request, chat_id: UUID, before: Annotated[UUID, Query()], conv: deps.Conversation
) -> Response:
    return await _window(request, conv, chat_id, window.earlier(before), "earlier")


@router.get("/chats/{chat_id}/later")
async def later(
    request: Request, chat_id: UUID, after: Annotated[UUID, Query()], conv: deps.Conversation
) -> Response:
    return await _window(request, conv, chat_id, window.later(after), "later")


async def _window(
    request: Request,
    conv: deps.Conversation,
    chat_id: UUID,
    cursor: dict[str, str | int],
    side: str,
) -> Response:
    try:
        chat = await conv.load_window(chat_id, cursor)
    except NotFound:
        # The message the link starts from is gone (deleted, or its branch no longer
        # shown): the chat as it now stands (its own 404 when the chat is gone too).
        if is_htmx(request):
            return page(request, "_window_gone.html", {"chat_id": chat_id, "side": side})
        return redirect(request, f"/chats/{chat_id}")
    if is_htmx(request):
        return page(request, "_window.html", {"chat": chat, "side": side})
    return await chat_page(request, conv, chat)
