"""Prometheus metrics of lm_api, one registry per app (tests build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lm_api_requests_total",
            "Chat completion requests by HTTP status.",
            ["status"],
            registry=r,
        )
        self.generations = Counter(
            "lm_api_generations_total",
            "Generations that ended, by finish reason (stop, length, cancelled, error).",
            ["finish_reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "lm_api_queue_depth", "Requests waiting for the model.", registry=r
        )
        self.in_progress = Gauge(
            "lm_api_generation_in_progress", "Generations running right now.", registry=r
        )
        self.completion_tokens = Counter(
            "lm_api_completion_tokens_total", "Tokens generated.", registry=r
        )
        self.prompt_tokens = Counter(
            "lm_api_prompt_tokens_total", "Prompt tokens of started generations.", registry=r
        )
        self.ttft = Histogram(
            "lm_api_time_to_first_token_seconds",
            "From accepting a request (queue wait included) to its first token.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "lm_api_tokens_per_second",
            "Decode speed of each generation (tokens after the first / time after the first).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.model_requests = Counter(
            "lm_api_model_requests_total",
            "Chat completion requests accepted, by the model they asked for.",
            ["model"],
            registry=r,
        )
        # What clients ask of each model (only requests that set the value count): an
        # operator sees the sampling in use, and a test what reached lm_api.
        self.requested = {
            name: Summary(
                f"lm_api_requested_{name}",
                f"The {name} of chat completion requests that set one, by model.",
                ["model"],
                registry=r,
            )
            for name in ("temperature", "top_p", "max_tokens")
        }
