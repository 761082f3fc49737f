"""What every part shares: the options, the model, and the stack (started once, lazily)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.llama_server import LlamaServer, locate, run_llama_server
from bench.services import rss_mb, run_bench_stack
from parlor.stack import Stack
from parlor.supervisor import Service, run_service

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


def long_text(words: int) -> str:
    """About `words` words of ordinary prose (the PROMPT, over and over): a long prompt,
    about 1,700 Qwen tokens for 1,500 words."""
    base = PROMPT.split()
    return " ".join(base[i % len(base)] for i in range(words))


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
    # Parts 2 and 6: lm_api alone and llama-server, each with `slots` slots of `slot_ctx`.
    slot_ctx: int = 2048
    slots: int = 4
    build_llama_server: bool = True  # build it when it is missing (not in --quick)
    long_words: int = 1500  # part 6's long prompt

    def prompt(self, tag: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"[{tag}] {PROMPT}"}]

    def long_prompt(self, tag: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"[{tag}] {long_text(self.long_words)}"}]

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
    _lm_alone: Service | None = None
    _llama: tuple[LlamaServer | None, str] | None = None

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

    @property
    def lm_alone(self) -> Service:
        """lm_api on its own (no chat_ui, no token), with the slots llama-server gets: the
        like-for-like side of parts 2 and 6."""
        if self._lm_alone is None:
            cfg = self.config
            logs = cfg.workdir / "lm_alone"
            logs.mkdir(parents=True, exist_ok=True)
            env = {
                "LM_API_MODEL_PATH": str(cfg.model),
                "LM_API_N_THREADS": str(cfg.threads),
                "LM_API_N_CTX": str(cfg.slot_ctx),
                "LM_API_PARALLEL": str(cfg.slots),
                "LM_API_ENGINE": cfg.engine,
                "LM_API_MAX_QUEUE": "16",
                "LM_API_MAX_TOKENS": str(cfg.max_tokens),
            }
            self._lm_alone = self.exits.enter_context(
                run_service("lm_api", "lm_api.main:app", env, logs, deadline_s=600)
            )
        return self._lm_alone

    @property
    def llama_server(self) -> tuple[LlamaServer | None, str]:
        """(llama-server with the same model, threads and slots, or None; a note)."""
        if self._llama is None:
            cfg = self.config
            binary, note = locate(may_build=cfg.build_llama_server)
            server = None
            if binary is not None:
                server = self.exits.enter_context(
                    run_llama_server(
                        binary,
                        cfg.model,
                        cfg.workdir / "llama_server",
                        threads=cfg.threads,
                        slot_ctx=cfg.slot_ctx,
                        slots=cfg.slots,
                    )
                )
            self._llama = (server, note)
        return self._llama

    def close(self) -> None:
        self.exits.close()
