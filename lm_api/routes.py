"""lm_api's HTTP side: OpenAI-shaped errors, the bearer token, and the routes.

The routes reach the model registry, settings and metrics that `lm_api.main.create_app`
puts in `app.state`. A request takes a lease on its model from the registry (which loads
it if needed), turns into `Engine.prepare`/`submit` calls, and its engine's events into
OpenAI's JSON or SSE chunks; the lease ends with the answer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from lm_api.config import Settings
from lm_api.engines.base import (
    Cancelled,
    ContextLengthExceeded,
    Engine,
    Failed,
    Finished,
    Generation,
    InvalidParam,
    NotReady,
    QueueFull,
    TextDelta,
)
from lm_api.metrics import Metrics
from lm_api.model_files import read_info
from lm_api.registry import Lease, ModelRegistry, UnknownModel
from lm_api.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ErrorBody,
    ErrorResponse,
    ModelCard,
    ModelList,
    ModelMeta,
    PromptTokens,
    TokenizeRequest,
    TokenizeResponse,
    Usage,
)

CHAT_PATH = "/v1/chat/completions"
# Seconds a client should wait before retrying when the line is full or the model loads.
RETRY_AFTER_QUEUE_FULL = 2
RETRY_AFTER_LOADING = 5
# nginx's status for "the client closed the connection before the answer" (metrics only).
CLIENT_CLOSED = 499


# --- errors ---------------------------------------------------------------------------


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: {"error": {message, type, param, code}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            ErrorResponse(error=self.body).model_dump(),
            status_code=self.status,
            headers=self.headers,
        )


def unavailable(message: str, code: str, retry_after: int) -> OpenAIError:
    """A 503 that tells the client when to come back."""
    return OpenAIError(
        503,
        message,
        type="server_error",
        code=code,
        headers={"Retry-After": str(retry_after)},
    )


def not_ready(detail: str) -> OpenAIError:
    return unavailable(
        f"the model is not available: {detail}", "model_not_loaded", RETRY_AFTER_LOADING
    )


def busy(exc: QueueFull) -> OpenAIError:
    return unavailable(
        f"the server is busy ({exc}); retry later", "queue_full", RETRY_AFTER_QUEUE_FULL
    )


def unknown_model(exc: UnknownModel) -> OpenAIError:
    return OpenAIError(404, str(exc), param="model", code="model_not_found")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}{first.get('msg', 'invalid')}{more}", param


def _count(request: Request, status: int) -> None:
    """Count a chat completion request by its HTTP status."""
    if request.url.path == CHAT_PATH:
        metrics: Metrics = request.app.state.metrics
        metrics.requests.labels(str(status)).inc()


def _count_model(request: Request, model: str, body: ChatCompletionRequest) -> None:
    """Count an accepted request under its model, with the sampling values it set."""
    metrics: Metrics = request.app.state.metrics
    metrics.model_requests.labels(model).inc()
    chosen = body.model_fields_set
    for name, value in (
        ("temperature", body.temperature),
        ("top_p", body.top_p),
        ("max_tokens", body.wanted_tokens()),
    ):
        if value is not None and (name in chosen or name == "max_tokens"):
            metrics.requested[name].labels(model).observe(value)


def add_error_handlers(app: FastAPI) -> None:
    """Every error, ours or FastAPI's, in OpenAI's shape (OpenAI clients parse it)."""

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        _count(request, exc.status)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        _count(request, 400)
        return OpenAIError(400, message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        _count(request, exc.status_code)
        code = "not_found" if exc.status_code == 404 else None
        return OpenAIError(exc.status_code, str(exc.detail), code=code).response()


# --- dependencies ---------------------------------------------------------------------


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]


def check_token(request: Request, settings: SettingsDep) -> None:
    """`Authorization: Bearer <LM_API_INTERNAL_TOKEN>` when a token is set."""
    if not settings.internal_token:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.strip().encode(), settings.internal_token.encode()
    ):
        raise OpenAIError(
            401,
            "missing or wrong bearer token",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


# --- routes ---------------------------------------------------------------------------

router = APIRouter()  # open: probes
api = APIRouter(dependencies=[Depends(check_token)])  # /v1/*: behind the token


@router.get("/health")
async def health(registry: RegistryDep) -> JSONResponse:
    """200 while some model can be served (a swap included), else 503 with the reason."""
    h = registry.health()
    body = {
        "status": h.state,
        "detail": h.detail,
        "model": h.model,
        "loaded": h.loaded,
        "queue_depth": h.queue_depth,
        "running": h.running,
    }
    return JSONResponse(body, status_code=200 if h.ok else 503)


@router.get("/metrics")
async def prometheus(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@api.get("/v1/models")
async def models(registry: RegistryDep, settings: SettingsDep) -> ModelList:
    """Every model lm_api can serve, the default first, with what its GGUF says."""
    h = registry.health()
    if not h.ok:
        raise not_ready(h.detail)
    now = int(time.time())
    cards = []
    for file in registry.files():
        info = await asyncio.to_thread(read_info, file.path)
        state = registry.state(file)
        meta = ModelMeta(
            n_ctx=settings.n_ctx,
            n_ctx_train=info.n_ctx_train,
            size_bytes=max(file.stamp()[0], 0),
            quantization=info.quantization,
            architecture=info.architecture,
            loaded=state == "ready",
            state=state,
        )
        cards.append(ModelCard(id=file.name, created=now, meta=meta))
    return ModelList(data=cards)


async def _lease(registry: ModelRegistry, model: str | None) -> Lease:
    """The request's model, loaded (waiting in line meanwhile), or the OpenAI error."""
    try:
        return await registry.acquire(model)
    except UnknownModel as exc:
        raise unknown_model(exc) from exc
    except NotReady as exc:
        raise not_ready(str(exc)) from exc
    except QueueFull as exc:
        raise busy(exc) from exc


@api.post(CHAT_PATH, response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, registry: RegistryDep
) -> ChatCompletion | EventSourceResponse:
    lease = await _lease(registry, body.model)
    try:
        gen = _submit(lease.engine, body)
    except BaseException:
        lease.release()
        raise
    _count_model(request, lease.name, body)

    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        _count(request, 200)  # the status line goes out now; later errors are in-stream

        def end() -> None:  # also when the stream never started
            gen.cancel()
            lease.release()

        return EventSourceResponse(
            _stream(gen, completion_id, created, lease.name, include_usage, end),
            ping=15,
            background=BackgroundTask(end),
        )
    try:
        answer = await _complete(gen, request, completion_id, created, lease.name)
    finally:
        lease.release()
    _count(request, 200 if answer is not None else CLIENT_CLOSED)
    if answer is None:  # nobody is listening; send something valid anyway
        raise OpenAIError(CLIENT_CLOSED, "client closed the request", code="cancelled")
    return answer


def _submit(engine: Engine, body: ChatCompletionRequest) -> Generation:
    """Format, tokenize and queue the request, or the OpenAI error saying why not."""
    try:
        return engine.submit(
            engine.prepare(
                [m.for_template() for m in body.messages],
                max_tokens=body.wanted_tokens(),
                stop=body.stop_list(),
                sampling=body.sampling(),
            )
        )
    except NotReady as exc:
        raise not_ready(str(exc)) from exc
    except InvalidParam as exc:
        raise OpenAIError(400, str(exc), param=exc.param) from exc
    except ContextLengthExceeded as exc:
        raise OpenAIError(400, str(exc), param="messages", code="context_length_exceeded") from exc
    except QueueFull as exc:
        raise busy(exc) from exc
    except ValueError as exc:  # the chat template refused the messages
        raise OpenAIError(400, str(exc), param="messages") from exc


@api.post("/tokenize", response_model=None)
async def tokenize(body: TokenizeRequest, registry: RegistryDep) -> TokenizeResponse | PromptTokens:
    """Count tokens with the model's own tokenizer (llama-server's /tokenize, and the
    prompt of a chat as a completion would build it)."""
    lease = await _lease(registry, body.model)
    try:
        if body.messages is not None:
            prompt = lease.engine.build_prompt([m.for_template() for m in body.messages])
            return PromptTokens(tokens=prompt.tokens, count=len(prompt.tokens))
        assert body.content is not None  # the schema wants one of the two
        tokens = lease.engine.tokenize(body.content, add_special=body.add_special)
        return TokenizeResponse(tokens=tokens)
    except NotReady as exc:
        raise not_ready(str(exc)) from exc
    except ValueError as exc:  # the template refused the messages; text not UTF-8
        raise OpenAIError(400, str(exc), param="messages" if body.messages else "content") from exc
    finally:
        lease.release()


# --- answers --------------------------------------------------------------------------


async def _complete(
    gen: Generation, request: Request, completion_id: str, created: int, model: str
) -> ChatCompletion | None:
    """Collect a whole answer; None when the client hung up meanwhile (which cancels it)."""

    async def cancel_on_disconnect() -> None:
        # The body is read already, so the next ASGI message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gen.cancel()

    watcher = asyncio.create_task(cancel_on_disconnect())
    parts: list[str] = []
    try:
        async for event in gen.events():
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                return ChatCompletion(
                    id=completion_id,
                    created=created,
                    model=model,
                    choices=[
                        Choice(
                            message=AssistantMessage(content="".join(parts)),
                            finish_reason=event.finish_reason,
                        )
                    ],
                    usage=_usage(event),
                )
            elif isinstance(event, Failed):
                raise OpenAIError(500, event.message, type="server_error", code="generation_failed")
            elif isinstance(event, Cancelled):
                return None
        raise OpenAIError(500, "generation ended without an answer", type="server_error")
    finally:
        watcher.cancel()
        gen.cancel()  # no-op once finished; frees the model if we are leaving early


def _usage(event: Finished) -> Usage:
    return Usage(
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        total_tokens=event.prompt_tokens + event.completion_tokens,
    )


async def _stream(
    gen: Generation,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    end: Callable[[], None],
) -> AsyncIterator[str]:
    """OpenAI's chunk stream: role first, then content deltas, a finish chunk, [DONE]."""

    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        if include_usage:
            body["usage"] = None
        return json.dumps(body, ensure_ascii=False)

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in gen.events():
            if isinstance(event, TextDelta):
                yield chunk({"content": event.text})
            elif isinstance(event, Finished):
                yield chunk({}, event.finish_reason)
                if include_usage:
                    yield json.dumps(
                        {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": _usage(event).model_dump(),
                        }
                    )
            elif isinstance(event, Failed):
                # Mid-stream the status is sent already; OpenAI clients raise on this shape.
                error = ErrorBody(
                    message=event.message, type="server_error", code="generation_failed"
                )
                yield json.dumps({"error": error.model_dump()})
            elif isinstance(event, Cancelled):
                return  # server shutdown: no [DONE], so the client sees a cut stream
        yield "[DONE]"
    finally:
        # Reached on completion and when sse-starlette cancels us because the client left.
        end()
