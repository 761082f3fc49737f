"""What every route shares: templates, the session of a request, CSRF checks, error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from chat_ui import trusted_identity
from chat_ui.clients import DbApi, LmApi
from chat_ui.config import Settings
from chat_ui.generation import RUNNING, Generations
from chat_ui.metrics import Metrics
from chat_ui.render import age, markdown_html
from chat_ui.session import Session, SessionCodec

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.globals.update(markdown_html=markdown_html, age=age, RUNNING=RUNNING)


class CsrfError(Exception):
    """An unsafe request without a valid token, or from a foreign origin."""


class LoginRequired(Exception):
    """The visitor has no (valid) login."""


class PageError(Exception):
    """Render the error page with this status and text."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def settings(request: Request) -> Settings:
    return request.app.state.settings


def db(request: Request) -> DbApi:
    return request.app.state.db


def lm(request: Request) -> LmApi:
    return request.app.state.lm


def generations(request: Request) -> Generations:
    return request.app.state.generations


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def session_of(request: Request) -> Session:
    """The request's session (loaded once); a new one when the cookie is absent or bad."""
    if not hasattr(request.state, "session"):
        codec: SessionCodec = request.app.state.session_codec
        request.state.session, request.state.session_dirty = codec.load(request)
    # Signed in by an authenticating proxy's header, when trusted (never saved in the cookie).
    return trusted_identity.apply(request, request.state.session)


def set_session(request: Request, session: Session) -> None:
    request.state.session = session
    request.state.session_dirty = True


def owner_of(request: Request) -> str:
    owner = session_of(request).owner
    if owner is None:
        raise LoginRequired
    return owner


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
        "settings": settings(request),
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
    form = await request.form()
    token = request.headers.get("x-csrf-token") or form.get("csrf_token")
    if not isinstance(token, str) or not session_of(request).csrf_ok(token):
        raise CsrfError
    return form


def form_text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""
