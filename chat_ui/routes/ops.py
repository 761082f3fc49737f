"""Operations: /health (says which dependency is down) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from chat_ui.web import db, lm, metrics

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    db_ok, lm_ok = await asyncio.gather(db(request).health(), lm(request).health())
    down = [name for name, ok in (("db_api", db_ok), ("lm_api", lm_ok)) if not ok]
    if down:
        return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    return Response(generate_latest(metrics(request).registry), media_type=CONTENT_TYPE_LATEST)
