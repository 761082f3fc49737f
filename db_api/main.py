"""db_api: chats and messages over PostgreSQL or SQLite (`uvicorn db_api.main:app`)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.routing import compile_path

from db_api import crud
from db_api.config import Settings
from db_api.db import head_revision, make_engine, make_sessionmaker
from db_api.metrics import MetricsMiddleware, RequestMetrics
from db_api.routes import chats, messages, ops, pages, presets, search, sessions, transfer
from db_api.routes.deps import forbid_unknown_query
from db_api.schemas import MessageConflict, MessageOut

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if not settings.internal_token:
        log.warning("DB_API_INTERNAL_TOKEN is empty: any caller on the network can read chats")
    engine = make_engine(
        settings.database_url,
        connect_timeout_s=settings.connect_timeout_s,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="Parlor db_api",
        summary="Chats (message trees), presets and sessions, scoped by owner",
        description=(
            "Every call but /health and /metrics is scoped by X-Owner (another owner's "
            "object is a 404). Unknown body fields and unknown query parameters are "
            "refused with 422 on every route."
        ),
        version="2",
        lifespan=lifespan,
        # Unknown query parameters are refused (422) on every route.
        dependencies=[Depends(forbid_unknown_query)],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.head_revision = head_revision()
    # One registry per app: tests build many apps in one process.
    app.state.registry = CollectorRegistry()
    app.add_middleware(MetricsMiddleware, metrics=RequestMetrics(app.state.registry))

    app.include_router(chats.router)
    app.include_router(messages.router)
    app.include_router(presets.router)
    app.include_router(pages.router)
    app.include_router(sessions.router)
    app.include_router(ops.router)
    app.include_router(search.router)
    app.include_router(transfer.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(405, _method_not_allowed)
    _add_database_error_handlers(app)
    _add_domain_error_handlers(app)
    return app


class _AsciiJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        # ASCII escapes keep a lone surrogate echoed from the input valid JSON
        # (the default UTF-8 rendering would crash on it).
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


async def _method_not_allowed(request: Request, _exc: Exception) -> JSONResponse:
    """405 with an Allow header listing every method the path supports: Starlette only
    names the methods of the first route it tried (GET /chats and POST /chats are two
    routes). The OpenAPI document is the list of what is supported."""
    path = request.scope["path"]
    allowed: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(path):
            allowed.update(method.upper() for method in operations)
    if "GET" in allowed:
        allowed.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return JSONResponse(
        {"detail": "Method Not Allowed"},
        status_code=405,
        headers={"Allow": ", ".join(sorted(allowed))},
    )


MAX_ECHOED_INPUT_CHARS = 200


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape, but never echoing back a huge input (a 100 000-character
    message) and always encodable."""
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors())
    for error in errors:
        if "input" in error and len(json.dumps(error["input"])) > MAX_ECHOED_INPUT_CHARS:
            del error["input"]
    return _AsciiJSONResponse({"detail": errors}, status_code=422)


def _add_database_error_handlers(app: FastAPI) -> None:
    # Connection-level failures (server down, restarting, network) are the database's
    # fault, not the caller's: 503 so callers may retry, and no traceback in the body.
    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "database unavailable, try again shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(sa.exc.OperationalError, unavailable)
    app.add_exception_handler(sa.exc.InterfaceError, unavailable)
    app.add_exception_handler(sa.exc.TimeoutError, unavailable)  # pool exhausted


def _add_domain_error_handlers(app: FastAPI) -> None:
    # crud's refusals mean the same on every route, so they are answered here once
    # rather than caught in each handler.
    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        # Another owner's object is missing too: the same 404, naming what is missing.
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def conflict(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, crud.Conflict)
        if exc.message is None or exc.versions is None:
            return JSONResponse({"detail": exc.detail}, status_code=409)
        # A refused message write answers the stored message, so the caller can rebase on it.
        stored = MessageOut.of(exc.message, exc.versions.ids)
        body = MessageConflict(detail=exc.detail, message=stored)
        return JSONResponse(jsonable_encoder(body), status_code=409)

    app.add_exception_handler(crud.NotFound, not_found)
    app.add_exception_handler(crud.Conflict, conflict)


app = create_app()
