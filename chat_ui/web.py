"""What every route shares: templates, the session of a request, CSRF checks, error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from chat_ui.contracts import RUNNING, Message
from chat_ui.conversation import chat_title
from chat_ui.middleware import RESCUE_FACTOR
from chat_ui.render import age, markdown_html
from chat_ui.session import Session, SessionCodec

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.globals.update(
    markdown_html=markdown_html, age=age, RUNNING=RUNNING, title_of=chat_title
)


class CsrfError(Exception):
    """An unsafe request without a valid token, or from a foreign origin."""


class LoginRequired(Exception):
    """The visitor has no (valid) login."""


def session_of(request: Request) -> Session:
    """The request's session (loaded once); a new one when the cookie is absent or bad."""
    if not hasattr(request.state, "session"):
        codec: SessionCodec = request.app.state.session_codec
        request.state.session, request.state.session_dirty = codec.load(request)
    session: Session = request.state.session
    return session


def set_session(request: Request, session: Session) -> None:
    request.state.session = session
    request.state.session_dirty = True


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def finish(request: Request, response: Response) -> Response:
    """Write the session cookie if this request changed (or created) the session."""
    session_of(request)
    if getattr(request.state, "session_dirty", False):
        request.app.state.session_codec.save(response, request.state.session, request)
    return response


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    session = session_of(request)
    ctx = {
        "request": request,
        "session": session,
        "csrf": session.csrf_token,
        "settings": request.app.state.settings,
        **(context or {}),
    }
    resp = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status, headers=headers)
    return finish(request, resp)


def redirect(request: Request, url: str) -> Response:
    """303 for plain forms; htmx gets HX-Redirect so it navigates instead of swapping."""
    if is_htmx(request):
        return finish(request, Response(status_code=204, headers={"HX-Redirect": url}))
    return finish(request, RedirectResponse(url, status_code=303))


def _request_origin(request: Request) -> str:
    proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return f"{proto.lower()}://{host.split(',')[0].strip().lower()}"


def check_origin(request: Request) -> None:
    """Refuse a write whose Origin (or, lacking it, Referer) names another site."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return  # no evidence either way: the CSRF token decides
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin.lower() != _request_origin(request):
        raise CsrfError


async def checked_form(request: Request) -> FormData:
    """The request's form, after the Origin and CSRF token checks (a FastAPI dependency)."""
    check_origin(request)
    # Starlette's own cap on one field (1 MiB) would refuse a long message the byte
    # limit let through: BodyLimit has bounded the body already.
    limit = int(request.app.state.settings.body_limit * RESCUE_FACTOR)
    form = await request.form(max_part_size=limit)
    token = request.headers.get("x-csrf-token") or form.get("csrf_token")
    if not isinstance(token, str) or not session_of(request).csrf_ok(token):
        raise CsrfError
    return form


def form_text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def bubble(request: Request, message: Message) -> str:
    """One message rendered by the `bubble` macro (also the SSE `done` payload)."""
    macro = TEMPLATES.env.get_template("_message.html").module.bubble  # type: ignore[attr-defined]
    return str(macro(message, session_of(request).csrf_token))
