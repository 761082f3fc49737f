"""The light/dark/system theme switch, kept in a cookie (the page script sets the same
cookie at once; this route is the form's way without JavaScript)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import Response

from chat_ui import deps
from chat_ui.render import THEMES
from chat_ui.web import form_text, redirect

router = APIRouter()

THEME_MAX_AGE_S = 400 * 24 * 3600  # browsers cap cookies at 400 days


@router.post("/theme")
async def set_theme(request: Request, form: deps.CheckedForm) -> Response:
    theme = form_text(form, "theme")
    response = redirect(request, _back(request))
    if theme in THEMES:
        response.set_cookie(
            "theme", theme, max_age=THEME_MAX_AGE_S, path="/", samesite="lax", httponly=False
        )
    return response


def _back(request: Request) -> str:
    """The page the form was on (same site only), else the chats."""
    referer = urlsplit(request.headers.get("referer", ""))
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    path = referer.path
    if (
        referer.netloc.lower() == host.lower()
        and path.startswith("/")
        and not path.startswith("//")
    ):
        return path + (f"?{referer.query}" if referer.query else "")
    return "/chats"
