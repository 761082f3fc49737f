"""Login by name and logout."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request
from starlette.responses import Response

from chat_ui import deps
from chat_ui.session import logged_in, logged_out, normalize_name
from chat_ui.web import form_text, page, redirect, set_session

router = APIRouter()


@router.get("/")
async def index(request: Request, session: deps.Session) -> Response:
    if session.name is not None:
        return redirect(request, "/chats")
    return page(request, "login.html")


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form lives at /; a bookmarked or typed /login goes there."""
    return redirect(request, "/")


@router.post("/login")
async def login(
    request: Request,
    form: deps.CheckedForm,
    session: deps.Session,
    sessions: deps.Sessions,
    settings: deps.Settings,
) -> Response:
    raw = form_text(form, "name")
    limit = settings.max_name_chars
    name = normalize_name(raw, limit)
    if name is None:
        error = (
            f"Names are 1 to {limit} characters, without control characters."
            if raw.strip()
            else "Please type a name."
        )
        return page(request, "login.html", {"error": error, "name": raw[: limit * 2]}, status=422)
    owner = replace(session, name=name).owner
    assert owner is not None
    # Every login is a new server-side session; a login it replaces ends.
    sid = await sessions.open(owner)
    if session.owner is not None:
        await sessions.close(session.owner, session.sid)
    set_session(request, logged_in(session, name, sid))
    return redirect(request, "/chats")


@router.post("/logout")
async def logout(
    request: Request, form: deps.CheckedForm, session: deps.Session, sessions: deps.Sessions
) -> Response:
    # Ends the login for every copy of the cookie. The browser key stays in the cookie:
    # logging in again with the same name finds the same chats.
    if session.owner is not None:
        await sessions.close(session.owner, session.sid)
    set_session(request, logged_out(session))
    return redirect(request, "/")
