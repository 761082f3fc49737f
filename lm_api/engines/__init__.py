"""The inference engines: `base` (the interface, events, errors, loading), `sequence` (one
running generation's text, end and metrics), `fifo` and `batched` (how generations share
the model)."""

from __future__ import annotations

from lm_api.config import Settings
from lm_api.engines.base import Engine, Loader, load_llama
from lm_api.engines.batched import BatchedEngine
from lm_api.engines.fifo import FifoEngine
from lm_api.metrics import Metrics


def make_engine(settings: Settings, metrics: Metrics, loader: Loader = load_llama) -> Engine:
    """The engine `LM_API_ENGINE` names, for the model `settings` describe."""
    kind = BatchedEngine if settings.engine == "batched" else FifoEngine
    return kind(settings, metrics, loader)
