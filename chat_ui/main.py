"""chat_ui: the pages people use. `uvicorn chat_ui.main:app` (settings from CHAT_UI_*)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from chat_ui.clients import DbApi, DbUnavailable, LmApi, NotFound
from chat_ui.config import Settings
from chat_ui.conversation import Refused
from chat_ui.generation import Generations
from chat_ui.metrics import Metrics
from chat_ui.middleware import BodyLimit, SecurityAndMetrics
from chat_ui.routes import (
    all_chats,
    answers,
    auth,
    chat_settings,
    chats,
    ops,
    roles,
    search,
    theme,
    transfer,
    versions,
    window,
)
from chat_ui.routes import commands as command_routes
from chat_ui.session import SessionCodec, SessionStore
from chat_ui.web import CsrfError, LoginRequired, is_htmx, page, redirect

log = logging.getLogger("chat_ui")
STATIC = Path(__file__).parent / "static"


def _error(request: Request, status: int, title: str, message: str) -> Response:
    if is_htmx(request):
        # htmx swaps error responses too (see the htmx-config meta); show them in the
        # page's flash area rather than in whatever element made the request.
        return page(
            request,
            "_flash.html",
            {"title": title, "message": message},
            status=status,
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
        )
    return page(request, "error.html", {"title": title, "message": message}, status=status)


# The error page of each failure that always reads the same: status, title, message.
FIXED_ERRORS: dict[type[Exception], tuple[int, str, str]] = {
    CsrfError: (
        403,
        "This form has expired",
        "For your safety Parlor only accepts forms it has just shown you. "
        "Go back, reload the page and try again (cookies must be enabled).",
    ),
    NotFound: (404, "Not found", "There is no such chat or message here."),
    DbUnavailable: (
        503,
        "Parlor is temporarily unavailable",
        "Parlor cannot reach its storage right now. Nothing is lost: try again in a moment.",
    ),
}


def _fixed_error(
    status: int, title: str, message: str
) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        return _error(request, status, title, message)

    return handler


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return redirect(request, "/")

    for failure, (status, title, message) in FIXED_ERRORS.items():
        app.add_exception_handler(failure, _fixed_error(status, title, message))

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return _error(request, exc.status, exc.title, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        # Only path, query and header parameters are validated by FastAPI here (forms are
        # read by the routes): a malformed id is simply a page that does not exist, a
        # malformed query parameter a bad request.
        if any(err.get("loc", ("",))[0] == "path" for err in exc.errors()):
            return _error(request, 404, "Not found", "There is no such page here.")
        return _error(request, 400, "Bad request", "This address is not one Parlor made.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: "Not found", 405: "Not allowed"}
        return _error(
            request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail)
        )


def create_app(
    settings: Settings | None = None,
    *,
    db_transport: httpx.AsyncBaseTransport | None = None,
    lm_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app; tests pass fake transports for db_api and lm_api."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        auth_headers = (
            {"Authorization": f"Bearer {settings.internal_token}"}
            if settings.internal_token
            else {}
        )
        db_client = httpx.AsyncClient(
            base_url=settings.db_api_url,
            headers=auth_headers,
            transport=db_transport,
            timeout=settings.db_timeout_s,
        )
        lm_client = httpx.AsyncClient(
            base_url=settings.lm_api_url.rstrip("/") + "/",
            headers=auth_headers,
            transport=lm_transport,
            timeout=httpx.Timeout(settings.lm_stall_s, connect=settings.lm_connect_timeout_s),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=20),
        )
        app.state.db = DbApi(db_client)
        app.state.lm = LmApi(lm_client, stall_s=settings.lm_stall_s)
        app.state.generations = Generations(settings, app.state.db, app.state.lm, metrics)
        app.state.sessions = SessionStore(app.state.db, settings)
        try:
            yield
        finally:
            await app.state.generations.shutdown()
            await db_client.aclose()
            await lm_client.aclose()

    app = FastAPI(
        title="Parlor chat_ui", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.session_codec = SessionCodec(settings)
    _install_error_pages(app)
    for module in (
        auth,
        chats,
        answers,
        theme,
        ops,
        search,
        transfer,
        versions,
        chat_settings,
        roles,
        window,
        all_chats,
    ):
        app.include_router(module.router)
    app.include_router(command_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SecurityAndMetrics, metrics=metrics)
    app.add_middleware(
        BodyLimit, limit=settings.body_limit, larger={"/import": settings.import_max_bytes}
    )
    return app


def __getattr__(name: str) -> FastAPI:
    # `chat_ui.main:app` is built on first access, so importing this module (tests, the
    # parlor CLI) never reads the environment or fails on production settings.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
