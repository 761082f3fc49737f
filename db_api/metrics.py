"""Prometheus request metrics, labelled by route template (never the raw path, whose
ids would make one time series per chat)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("method", "route", "status")
        self.requests = Counter(
            "db_api_requests", "HTTP requests handled", labels, registry=registry
        )
        self.latency = Histogram(
            "db_api_request_duration_seconds",
            "Time to handle a request",
            labels,
            registry=registry,
        )


class MetricsMiddleware:
    """Pure ASGI middleware (no response buffering) that counts and times requests."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            labels = (method, _route_template(scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")  # FastAPI records the matched API route here
    if route is not None:
        return str(route.path)
    # Plain Starlette routes (/openapi.json, /docs) have fixed paths: safe as labels.
    path = scope.get("path")
    for candidate in getattr(scope.get("app"), "routes", ()):
        if isinstance(candidate, Route) and candidate.path == path:
            return str(path)
    return "unmatched"
