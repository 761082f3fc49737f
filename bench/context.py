"""What every part shares: the options, the model, and the stack (started once, lazily)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.services import rss_mb, run_bench_stack
from parlor.stack import Stack

# A first message of ordinary length (about 90 tokens with Qwen's tokenizer). Every depth
# gets the same text after a short per-run tag: the tag makes each run a fresh prompt, so
# no run is flattered by the KV cache of the one before.
PROMPT = (
    "I am planning a three-day walking trip through the hills north of the city in late "
    "autumn. Please suggest how to split the route into daily stages of about twenty "
    "kilometres, what to pack for cold and wet weather, where it is sensible to stay "
    "overnight, and which two or three viewpoints are worth a detour. Keep it practical, "
    "and mention anything that tends to go wrong on such trips."
)


@dataclass
class Config:
    parts: list[int]
    runs: int
    threads: int
    engine: str  # LM_API_ENGINE of the stack
    max_tokens: int
    n_ctx: int
    quick: bool
    out: Path
    workdir: Path
    model: Path
    model_desc: str
    concurrency: list[int]
    turns: int
    turn_marks: list[int]
    page_messages: list[int]
    sidebar_chats: int
    connections: int
    duration_s: int

    def prompt(self, tag: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"[{tag}] {PROMPT}"}]

    def run_info(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "machine": machine,
            "model": str(self.model),
            "model_desc": self.model_desc,
            "threads": self.threads,
            "engine": self.engine,
            "runs": self.runs,
            "max_tokens": self.max_tokens,
            "n_ctx": self.n_ctx,
            "quick": self.quick,
        }


@dataclass
class Context:
    config: Config
    exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _stack: Stack | None = None
    # Filled by part 2 (memory at peak under its load), read by part 5.
    memory_peaks: dict[str, float] = field(default_factory=dict)
    memory_idle: dict[str, float] = field(default_factory=dict)
    peer_pid: int | None = None

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            cfg = self.config
            self._stack = self.exits.enter_context(
                run_bench_stack(
                    cfg.model,
                    cfg.workdir / "stack",
                    threads=cfg.threads,
                    engine=cfg.engine,
                    n_ctx=cfg.n_ctx,
                    max_tokens=cfg.max_tokens,
                )
            )
            # Idle memory: every service up, the model loaded, nothing asked yet.
            self.memory_idle = {k: rss_mb(pid) for k, pid in self._stack.pids().items()}
        return self._stack

    def close(self) -> None:
        self.exits.close()
