"""Prometheus metrics, in a registry per app so that several apps (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chat_ui_requests_total",
            "HTTP requests handled, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.active_generations = Gauge(
            "chat_ui_active_generations",
            "Answers being generated right now.",
            registry=self.registry,
        )
        self.generations = Counter(
            "chat_ui_generations_total",
            "Finished generations, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.sse_connections = Gauge(
            "chat_ui_sse_connections",
            "Open answer streams (SSE connections).",
            registry=self.registry,
        )
