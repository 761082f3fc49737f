"""Dependencies shared by the routes: settings, a database session, the caller's
owner key and the internal token check.

The ones that do no I/O are `async def`: FastAPI runs a plain `def` dependency in its
thread pool, a thread hop each on every request. The session stays a plain `def` (closing
it may talk to the database)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, WithJsonSchema
from sqlalchemy.orm import Session

from db_api.config import Settings

OWNER_PATTERN = r"^[\x20-\x7e]{1,128}$"
OWNER_RE = re.compile(OWNER_PATTERN)
_bearer = HTTPBearer(auto_error=False, description="DB_API_INTERNAL_TOKEN, when configured")


async def forbid_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not declare (a typo would otherwise be
    silently ignored), on every route, as the published schema says."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = _query_names(route)
    unknown = [name for name in request.query_params if name not in known]
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "Unknown query parameter",
                    "input": request.query_params[name],
                }
                for name in unknown
            ]
        )


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters the route and its dependencies declare (a walk of a few
    nodes, only when a request has query parameters)."""
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    return frozenset(names)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    # Transactions are opened and committed inside crud, before the response is
    # built, so a failed commit is an error response, never a lost write.
    with request.app.state.sessionmaker() as session:
        yield session


async def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.internal_token
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong internal token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def get_owner(
    x_owner: Annotated[
        str,
        Header(description="The owner key: 1-128 printable ASCII characters."),
        # Documented constraints, checked below with a message that names the header.
        WithJsonSchema(
            {"type": "string", "minLength": 1, "maxLength": 128, "pattern": OWNER_PATTERN}
        ),
    ],
) -> str:
    if not OWNER_RE.fullmatch(x_owner):
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("header", "x-owner"),
                    "msg": "X-Owner must be 1 to 128 printable ASCII characters "
                    f"(got {len(x_owner)} characters)",
                }
            ]
        )
    return x_owner


class ErrorOut(BaseModel):
    detail: Any


# Answers every owner-scoped route can give besides its own, for the OpenAPI document.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or wrong internal token"},
    503: {"model": ErrorOut, "description": "Database unavailable; retry later"},
}
# Bodies that are not JSON at all (undecodable bytes, absurd numbers or nesting).
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body could not be parsed"},
}


def owner_scoped_router(tag: str) -> APIRouter:
    """A router whose every route needs the internal token and may answer 401 or 503."""
    return APIRouter(tags=[tag], dependencies=[Depends(require_token)], responses=COMMON_RESPONSES)


def deletes(
    router: APIRouter, path: str, not_found: dict[int | str, dict[str, Any]]
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """A DELETE route of `router`: it answers 204 with no body, or `not_found`'s 404 (the
    handler returns nothing)."""
    return router.delete(
        path, status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=not_found
    )


def answers(
    status_code: int, description: str, model: type[BaseModel] = ErrorOut
) -> dict[int | str, dict[str, Any]]:
    """One documented error answer of a route, for the OpenAPI document."""
    return {status_code: {"model": model, "description": description}}


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
OwnerDep = Annotated[str, Depends(get_owner)]
