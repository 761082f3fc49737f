"""lm_api: an OpenAI-compatible chat completion service around llama.cpp.

LM_API_MODEL_PATH=models/x.gguf uvicorn lm_api.main:app --port 8002

This module only wires: settings, metrics, the model registry (one engine per loaded
model, lm_api.registry), the routes (lm_api.routes).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lm_api.config import Settings, describe
from lm_api.engines import make_engine
from lm_api.engines.base import Loader, load_llama
from lm_api.metrics import Metrics
from lm_api.registry import ModelRegistry
from lm_api.routes import add_error_handlers, api, router

log = logging.getLogger("lm_api")


def _setup_logging() -> None:
    # uvicorn configures only its own loggers; give ours a handler so the start-up line
    # with the effective settings is visible.
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def create_app(settings: Settings | None = None, *, loader: Loader | None = None) -> FastAPI:
    """The lm_api application; `loader` replaces how the model is opened (tests)."""
    settings = settings or Settings()
    _setup_logging()
    metrics = Metrics()
    registry = ModelRegistry(settings, metrics, loader or load_llama, make_engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("lm_api: starting with %s", describe(settings))
        registry.start()
        yield
        await registry.close()

    app = FastAPI(title="Parlor lm_api", version="0.1.0", lifespan=lifespan)
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.settings = settings
    add_error_handlers(app)
    app.include_router(router)
    app.include_router(api)
    return app


app = create_app()
