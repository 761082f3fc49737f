"""Login by name and logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from chat_ui.session import logged_in, logged_out, normalize_name
from chat_ui.web import checked_form, form_text, page, redirect, session_of, set_session, settings

router = APIRouter()

Form = Annotated[FormData, Depends(checked_form)]


@router.get("/")
async def index(request: Request) -> Response:
    if session_of(request).name is not None:
        return redirect(request, "/chats")
    return page(request, "login.html")


@router.post("/login")
async def login(request: Request, form: Form) -> Response:
    raw = form_text(form, "name")
    limit = settings(request).max_name_chars
    name = normalize_name(raw, limit)
    if name is None:
        error = (
            f"Names are 1 to {limit} characters, without control characters."
            if raw.strip()
            else "Please type a name."
        )
        return page(request, "login.html", {"error": error, "name": raw[: limit * 2]}, status=422)
    set_session(request, logged_in(session_of(request), name))
    return redirect(request, "/chats")


@router.post("/logout")
async def logout(request: Request, form: Form) -> Response:
    # The browser key stays in the cookie: logging in again with the same name finds the
    # same chats (DESIGN "Identity").
    set_session(request, logged_out(session_of(request)))
    return redirect(request, "/")
