"""Operations: /health (says which dependency is down) and /metrics (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from chat_ui import deps

router = APIRouter()


@router.get("/health")
async def health(db: deps.Db, lm: deps.Lm) -> JSONResponse:
    db_ok, lm_ok = await asyncio.gather(db.health(), lm.health())
    down = [name for name, ok in (("db_api", db_ok), ("lm_api", lm_ok)) if not ok]
    if down:
        return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def prometheus(stats: deps.Metrics) -> Response:
    return Response(generate_latest(stats.registry), media_type=CONTENT_TYPE_LATEST)
