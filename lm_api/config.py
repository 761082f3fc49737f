"""lm_api settings, read from `LM_API_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_FILE = "qwen2.5-0.5b-instruct-q4_k_m.gguf"


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on.

    llama.cpp runs many times slower when its threads outnumber the cores (hyper-threads
    and CPU quotas included), so the default is one thread per physical core we can use.
    """
    allowed = os.sched_getaffinity(0)
    cores: set[tuple[str, str]] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return len(allowed)
    for block in text.strip().split("\n\n"):
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in block.splitlines())
        )
        if "processor" not in fields or int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(1, min(len(cores) or len(allowed), len(allowed)))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LM_API_", extra="ignore")

    # The default model: loaded at start, used when a request names none.
    model_path: Path = Field(default=Path("models") / DEFAULT_MODEL_FILE)
    # The default model's id in /v1/models and in answers; default: the file name without
    # .gguf (the other models are always named by their file name without .gguf).
    model_name: str | None = None
    # Every GGUF here is served, loaded on first use; default: model_path's directory.
    models_dir: Path | None = None
    # Models kept loaded at once; loading one more unloads the least recently used idle one.
    max_loaded: int = Field(default=1, ge=1)
    n_ctx: int = Field(default=4096, ge=64)
    # Default: physical cores (see physical_cores); never more than the usable cores.
    n_threads: int | None = Field(default=None, ge=1)
    n_batch: int = Field(default=512, ge=1)
    # llama.cpp's flash attention (llama-server's default, "auto", turns it on for the CPU).
    # Its CPU kernel skips the KV cells a token may not see: with the batched engine's one
    # KV buffer for every slot, a token then reads only its own sequence's cells instead
    # of all `n_ctx * parallel`, and a long prompt only the cells before each token.
    flash_attn: bool = True
    # 0 = CPU only, -1 = every layer on the GPU (needs a CUDA/Metal build of llama.cpp).
    n_gpu_layers: int = Field(default=0, ge=-1)
    # Empty: the GGUF's own template, or ChatML when the GGUF has none. "chatml" forces
    # ChatML; any other value is taken as a Jinja2 chat template.
    chat_format: str | None = None
    # Requests that may wait for a free slot (fifo: behind the running answer); one more
    # answers 503 + Retry-After.
    max_queue: int = Field(default=16, ge=0)
    # Answer length when a request gives no max_tokens.
    max_tokens: int = Field(default=512, ge=1)
    # Empty: no check. Otherwise /v1/* need `Authorization: Bearer <token>`.
    internal_token: str = ""
    # batched: up to `parallel` generations decode together (continuous batching), so
    # concurrent chats share each pass over the weights and each keeps its own prompt
    # cache; n_ctx is the context of each of them. fifo: one generation at a time, one
    # context, everyone else waits.
    engine: Literal["fifo", "batched"] = "batched"
    parallel: int = Field(default=4, ge=1, le=64)
    # batched: how long a step that reads prompt tokens beside running answers may take,
    # in plain decode steps (running answers keep their pace while a long prompt is
    # read a few tokens a step); 0: no limit, prompts are read n_batch tokens a step.
    # 2.5 rather than 2: a 700-token prompt beside two answers (one thread, a busy
    # 2-core machine) gave its first token after 40 s at 2 and 26-32 s at 2.5 (a few
    # more tokens a step cost less per token), the worst step still under 3 plain
    # steps (StepBudget keeps a margin for the machine's noise).
    step_budget: float = Field(default=2.5, ge=0.0)

    @property
    def served_model_name(self) -> str:
        return self.model_name or self.model_path.stem

    @property
    def models_directory(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.model_path.parent

    def for_model(self, path: Path, name: str) -> Settings:
        """These settings for serving the model in `path` as `name`."""
        return self.model_copy(update={"model_path": path, "model_name": name})

    @property
    def threads(self) -> int:
        usable = len(os.sched_getaffinity(0))
        return min(self.n_threads or physical_cores(), usable)


def describe(settings: Settings) -> str:
    """The effective settings, for the start-up log line."""
    return (
        f"model={settings.model_path} name={settings.served_model_name} "
        f"models_dir={settings.models_directory} max_loaded={settings.max_loaded} "
        f"engine={settings.engine} parallel={settings.parallel} "
        f"n_ctx={settings.n_ctx} n_threads={settings.threads} n_batch={settings.n_batch} "
        f"flash_attn={settings.flash_attn} "
        f"n_gpu_layers={settings.n_gpu_layers} chat_format={settings.chat_format or 'auto'} "
        f"max_queue={settings.max_queue} max_tokens={settings.max_tokens} "
        f"token={'set' if settings.internal_token else 'none'}"
    )
