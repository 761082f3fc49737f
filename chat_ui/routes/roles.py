"""The roles page (/roles): list, create, edit and delete a person's roles, and start a
chat from one. Plain forms that redirect; a refused form comes back with its messages
and what was typed, with a 4xx status."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request
from starlette.responses import Response

from chat_ui import deps
from chat_ui.roles import RoleForm, RoleRefused, read_role
from chat_ui.web import confirm_delete_page, page, redirect

router = APIRouter()


async def _roles_page(
    request: Request,
    roles: deps.Roles,
    conv: deps.Conversation,
    *,
    form: RoleForm | None = None,
    editing: UUID | None = None,
    status: int = 200,
) -> Response:
    ctx = {
        "roles": await roles.all(),
        "models": await roles.models(),
        "form": form or RoleForm(),
        "editing": editing,
        "chats": await conv.sidebar(),
        "chat": None,
    }
    return page(request, "roles.html", ctx, status=status)


@router.get("/roles")
async def list_roles(request: Request, roles: deps.Roles, conv: deps.Conversation) -> Response:
    return await _roles_page(request, roles, conv)


async def _save_role(
    request: Request,
    roles: deps.Roles,
    conv: deps.Conversation,
    form: RoleForm,
    role_id: UUID | None,
) -> Response:
    """The role form sent (a new role, or `role_id` edited): back to the list, or, when
    refused, the form again with its messages and what was typed."""
    try:
        if role_id is None:
            await roles.create(form)
        else:
            await roles.update(role_id, form)
    except RoleRefused as refused:
        return await _roles_page(
            request, roles, conv, form=refused.form, editing=role_id, status=refused.status
        )
    return redirect(request, "/roles")


@router.post("/roles")
async def create_role(
    request: Request, form: deps.CheckedForm, roles: deps.Roles, conv: deps.Conversation
) -> Response:
    return await _save_role(request, roles, conv, read_role(form), None)


@router.get("/roles/{role_id}")
async def edit_role(
    request: Request, role_id: UUID, roles: deps.Roles, conv: deps.Conversation
) -> Response:
    role = await roles.get(role_id)
    return await _roles_page(request, roles, conv, form=RoleForm.of(role), editing=role.id)


@router.post("/roles/{role_id}")
async def update_role(
    request: Request,
    role_id: UUID,
    form: deps.CheckedForm,
    roles: deps.Roles,
    conv: deps.Conversation,
) -> Response:
    return await _save_role(request, roles, conv, read_role(form), role_id)


@router.get("/roles/{role_id}/delete")
async def confirm_delete_role(request: Request, role_id: UUID, roles: deps.Roles) -> Response:
    role = await roles.get(role_id)
    return confirm_delete_page(
        request,
        heading=f"Delete the role “{role.name}”?",
        consequence="Chats that use its settings keep them.",
        action=f"/roles/{role.id}/delete",
        cancel="/roles",
        kind="-role",
    )


@router.post("/roles/{role_id}/delete")
async def delete_role(
    request: Request, role_id: UUID, form: deps.CheckedForm, roles: deps.Roles
) -> Response:
    await roles.delete(role_id)
    return redirect(request, "/roles")


@router.post("/roles/{role_id}/chat")
async def chat_from_role(
    request: Request, role_id: UUID, form: deps.CheckedForm, roles: deps.Roles
) -> Response:
    """A new chat with the role's settings, opened."""
    chat = await roles.start_chat(role_id)
    return redirect(request, f"/chats/{chat.id}")
