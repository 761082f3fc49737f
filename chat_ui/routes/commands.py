"""Slash commands in the page: a typed command answered (instead of being sent), and the
suggestions shown while one is typed. The commands themselves are in chat_ui.commands."""

from __future__ import annotations

import dataclasses
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from chat_ui import commands, deps
from chat_ui.clients import DbUnavailable
from chat_ui.conversation import SendRefused
from chat_ui.web import chat_page, composer_failure, is_htmx, page, redirect

router = APIRouter()

# The longest text the suggestions look at: a command word is short.
SUGGEST_CHARS = 64


async def typed_command(
    request: Request, ctx: commands.Context, chat_id: UUID | None, text: str
) -> Response | None:
    """The page's answer to `text` when it is a command (see chat_ui.commands), None when
    it is a message to send. Nothing here reaches the model."""
    invocation = commands.parse(text)
    if invocation is None:
        return None
    conv = ctx.conv
    try:
        chat = await conv.load(chat_id) if chat_id is not None else None
        note = await commands.run(invocation, dataclasses.replace(ctx, chat=chat))
        if note.go_to is not None:
            return redirect(request, note.go_to)
        # The chat as the command left it (its title, model, settings).
        chat = await conv.load(chat_id) if chat_id is not None else None
    except DbUnavailable:
        return composer_failure(request, chat_id, SendRefused(503, commands.STORAGE_AWAY, text))
    # A refused command stays in the box, to be corrected; a done one leaves it empty.
    kept = "" if note.ok else text
    if is_htmx(request):
        return page(
            request,
            "_command_answer.html",
            {
                "chat": chat,
                "chat_id": str(chat_id) if chat_id else None,
                "chats": await conv.sidebar(),
                "composer_text": kept,
                "command_note": note,
            },
            status=note.status,
            headers={"HX-Retarget": "#composer", "HX-Reswap": "outerHTML"},
        )
    return await chat_page(
        request, conv, chat, composer_text=kept, command_note=note, status=note.status
    )


@router.get("/commands/suggest")
async def suggest(
    request: Request,
    owner: deps.Owner,
    db: deps.Db,
    lm: deps.Lm,
    content: Annotated[str, Query(max_length=100_000)] = "",
) -> Response:
    """The commands (or a command's arguments) matching what the message box holds
    (htmx, while typing `/...`); nothing for a long text, which is no command."""
    found = []
    if content.startswith("/") and len(content) <= SUGGEST_CHARS:
        found = await commands.suggestions(content, db, lm, owner)
    return page(request, "_command_suggestions.html", {"suggestions": found})
