"""The chats page: sidebar, new chat, a chat's messages, rename, delete, system prompt."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from chat_ui import commands, deps, window
from chat_ui.conversation import SendRefused, chat_title
from chat_ui.routes.commands import typed_command
from chat_ui.web import (
    chat_page,
    composer_failure,
    confirm_delete_page,
    form_text,
    is_htmx,
    redirect,
)

router = APIRouter()


@router.get("/chats")
async def chats_index(request: Request, conv: deps.Conversation) -> Response:
    # The sidebar and the roles in one read (see chat_ui.window.open_page).
    return await chat_page(request, conv, None, read=await conv.load_page(None, window.WINDOW))


@router.post("/chats")
async def new_chat(
    request: Request,
    form: deps.CheckedForm,
    conv: deps.Conversation,
    commands_ctx: deps.CommandContext,
    chat_settings: deps.ChatSettings,
) -> Response:
    """A new chat with its first message (the page's composer), so no empty chat is left
    behind, and the model picked beside it; without a `content` field (an API client),
    an empty chat. A slash command typed there is answered instead (no chat made)."""
    if "content" not in form:
        chat = await conv.new_chat()
        return redirect(request, f"/chats/{chat.id}")
    command = await typed_command(request, commands_ctx, None, form_text(form, "content"))
    if command is not None:
        return command
    try:
        content = form_text(form, "content")
        model = await chat_settings.first_model(content, form_text(form, "model"))
        sent = await conv.start_chat(content, model)
    except SendRefused as refused:
        return composer_failure(request, None, refused)
    if is_htmx(request):
        return redirect(request, f"/chats/{sent.chat.id}")
    return redirect(request, f"/chats/{sent.chat.id}/live")


@router.get("/chats/{chat_id}")
async def show_chat(
    request: Request,
    chat_id: UUID,
    conv: deps.Conversation,
    at: UUID | None = None,
    note: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The chat's latest window of messages, or (`at`) the window holding that message."""
    read = await window.open_page(conv, chat_id, at)
    # `note`: a slash command's redirect says what it did (a fixed key, see commands.py).
    return await chat_page(
        request, conv, read.chat, read=read, command_note=commands.redirect_note(note)
    )


@router.post("/chats/{chat_id}/rename")
async def rename_chat(
    request: Request, chat_id: UUID, form: deps.CheckedForm, conv: deps.Conversation
) -> Response:
    await conv.rename(chat_id, form_text(form, "title"))
    return redirect(request, f"/chats/{chat_id}")


@router.post("/chats/{chat_id}/system-prompt")
async def set_system_prompt(
    request: Request, chat_id: UUID, form: deps.CheckedForm, conv: deps.Conversation
) -> Response:
    await conv.set_system_prompt(chat_id, form_text(form, "system_prompt"))
    return redirect(request, f"/chats/{chat_id}")


@router.get("/chats/{chat_id}/delete")
async def confirm_delete(request: Request, chat_id: UUID, conv: deps.Conversation) -> Response:
    chat = await conv.load_unreconciled(chat_id)
    return confirm_delete_page(
        request,
        heading=f"Delete “{chat_title(chat)}”?",
        consequence="The chat and all its messages are removed for good.",
        action=f"/chats/{chat.id}/delete",
        cancel=f"/chats/{chat.id}",
    )


@router.post("/chats/{chat_id}/delete")
async def delete_chat(
    request: Request, chat_id: UUID, form: deps.CheckedForm, conv: deps.Conversation
) -> Response:
    await conv.delete(chat_id)
    return redirect(request, "/chats")
