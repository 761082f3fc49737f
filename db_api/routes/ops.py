"""Operational endpoints, open to the network's monitoring: no owner, no token."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from db_api import crud
from db_api.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])


# Every route refuses unknown query parameters, these two included.
UNKNOWN_QUERY: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "Unknown query parameter",
        # FastAPI's own validation error schema, which the other routes publish.
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    }
}


@router.get(
    "/health",
    response_model=Health,
    responses={
        503: {"model": Health, "description": "Database down or not migrated"},
        **UNKNOWN_QUERY,
    },
)
def health(request: Request) -> JSONResponse:
    """200 when the database answers and its schema is at the newest migration."""
    expected = request.app.state.head_revision
    try:
        with request.app.state.sessionmaker() as session:
            revision = crud.schema_revision(session)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("health check: database unavailable: %s", exc.__class__.__name__)
        return _unavailable(f"database unavailable: {_first_line(exc)}")
    if revision is None:
        return _unavailable("database schema missing: run `python -m db_api.migrate`")
    if expected is not None and revision != expected:
        return _unavailable(
            f"database schema at revision {revision}, this db_api needs {expected}: "
            "run `python -m db_api.migrate`"
        )
    return JSONResponse(Health(status="ok").model_dump(exclude_none=True))


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(Health(status="unavailable", detail=detail).model_dump(), 503)


def _first_line(exc: BaseException) -> str:
    # The driver's message without SQLAlchemy's appended SQL and URL noise.
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__


@router.get("/metrics", response_class=Response, responses=UNKNOWN_QUERY)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
