"""A conversation's tree: edit a question, regenerate or continue an answer, switch
versions (the rules live in chat_ui/versions.py).

Without JavaScript each is a plain form: edit has its own page, and after a change the
browser goes to the chat page (streamed while the new answer is written). With htmx,
editing swaps the question for its form, and a change answers the redrawn branch
(#messages) or, for Continue, the answer's bubble.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request
from starlette.responses import Response

from chat_ui import deps
from chat_ui.contracts import Chat
from chat_ui.conversation import Refused, SendRefused
from chat_ui.web import bubble_reply, form_text, is_htmx, page, redirect

router = APIRouter()

EDIT = "/chats/{chat_id}/messages/{message_id}/edit"


def _edit_form(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    text: str,
    error: str | None = None,
    status: int = 200,
) -> Response:
    ctx = {
        "chat_id": str(chat_id),
        "message_id": str(message_id),
        "edit_text": text,
        "edit_error": error,
        "inline": is_htmx(request),
    }
    if not is_htmx(request):
        return page(request, "edit.html", ctx, status=status)
    # A refused edit comes back in place of the form, whatever the form targeted.
    retarget = {"HX-Retarget": f"#msg-{message_id}", "HX-Reswap": "outerHTML"}
    return page(request, "_edit.html", ctx, status=status, headers=retarget if error else None)


def _branch(request: Request, chat: Chat, *, answering: bool) -> Response:
    if not is_htmx(request):
        return redirect(request, f"/chats/{chat.id}/live" if answering else f"/chats/{chat.id}")
    return page(request, "_branch.html", {"chat": chat})


@router.get(EDIT)
async def edit_form(
    request: Request, chat_id: UUID, message_id: UUID, versions: deps.Versions
) -> Response:
    question = await versions.question(chat_id, message_id)
    return _edit_form(request, chat_id, message_id, question.content)


@router.post(EDIT)
async def edit(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    form: deps.CheckedForm,
    versions: deps.Versions,
) -> Response:
    try:
        chat = await versions.edit(chat_id, message_id, form_text(form, "content"))
    except SendRefused as refused:
        return _edit_form(
            request, chat_id, message_id, refused.text, refused.reason, refused.status
        )
    return _branch(request, chat, answering=True)


@router.post("/chats/{chat_id}/messages/{message_id}/regenerate")
async def regenerate(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    form: deps.CheckedForm,
    versions: deps.Versions,
) -> Response:
    chat = await versions.regenerate(chat_id, message_id)
    return _branch(request, chat, answering=True)


@router.post("/chats/{chat_id}/messages/{message_id}/continue")
async def continue_answer(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    form: deps.CheckedForm,
    versions: deps.Versions,
) -> Response:
    message = await versions.continue_answer(chat_id, message_id)
    return bubble_reply(request, message, f"/chats/{chat_id}/live")


@router.post("/chats/{chat_id}/messages/{message_id}/version")
async def switch(
    request: Request,
    chat_id: UUID,
    message_id: UUID,
    form: deps.CheckedForm,
    versions: deps.Versions,
) -> Response:
    raw = form_text(form, "version")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise Refused(422, "No such version", "Pick a version by its number.")
    chat = await versions.switch(chat_id, message_id, int(raw))
    return _branch(request, chat, answering=False)
