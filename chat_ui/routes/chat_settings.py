"""A chat's settings: its model and sampling (the settings panel's form), a role applied
to it, and back to the defaults. Plain forms that redirect to the chat; with htmx the
panel is swapped in place (a refusal shows in it, with what was typed)."""

from __future__ import annotations

from uuid import UUID

from fastapi import Request
from fastapi.routing import APIRouter
from starlette.responses import Response

from chat_ui import deps
from chat_ui.chat_settings import ModelRefused, SettingsRefused, SettingsView
from chat_ui.clients import NotFound
from chat_ui.conversation import Refused
from chat_ui.sampling import read_sampling
from chat_ui.web import chat_page, form_text, is_htmx, page, redirect

router = APIRouter()


def _panel(request: Request, chat_id: UUID, view: SettingsView, status: int = 200) -> Response:
    return page(request, "_chat_settings.html", {"chat_id": chat_id, "panel": view}, status=status)


@router.post("/chats/{chat_id}/settings")
async def save_settings(
    request: Request,
    chat_id: UUID,
    form: deps.CheckedForm,
    conv: deps.Conversation,
    settings: deps.ChatSettings,
) -> Response:
    chat = await conv.load_unreconciled(chat_id)
    try:
        saved = await settings.save(chat, form_text(form, "model"), read_sampling(form))
    except SettingsRefused as refused:
        if is_htmx(request):
            return _panel(request, chat_id, refused.view, refused.status)
        chat = await conv.load(chat_id)
        return await chat_page(request, conv, chat, panel=refused.view, status=refused.status)
    if is_htmx(request):
        return _panel(request, chat_id, await settings.view(saved, saved=True))
    return redirect(request, f"/chats/{chat_id}")


@router.post("/chats/{chat_id}/settings/reset")
async def reset_settings(
    request: Request,
    chat_id: UUID,
    form: deps.CheckedForm,
    settings: deps.ChatSettings,
) -> Response:
    try:
        await settings.reset(chat_id)
    except ModelRefused as exc:
        raise Refused(exc.status, "Settings not changed", exc.message) from exc
    return redirect(request, f"/chats/{chat_id}")


@router.post("/chats/{chat_id}/role")
async def apply_role(
    request: Request, chat_id: UUID, form: deps.CheckedForm, roles: deps.Roles
) -> Response:
    """The chosen role's system prompt, model and sampling become the chat's (the system
    prompt too, so the page is reloaded rather than the panel swapped)."""
    try:
        role_id = UUID(form_text(form, "role"))
    except ValueError as exc:
        raise Refused(422, "No role chosen", "Choose one of your roles to apply.") from exc
    try:
        await roles.apply(chat_id, role_id)
    except NotFound as exc:
        # The chat, or the role: neither is shown to anyone but its owner.
        raise Refused(404, "Not found", "There is no such chat or role here.") from exc
    return redirect(request, f"/chats/{chat_id}")
