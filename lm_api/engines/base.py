"""What every engine shares: the events and errors callers see, model loading, and the
`Engine` interface (background loading, status, prepare, submit, cancellation).

An engine owns one loaded model and a worker thread that generates; the HTTP layer talks
to it through `Engine` only, so it does not know which engine runs.
"""

from __future__ import annotations

import abc
import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import llama_cpp

from lm_api.config import Settings
from lm_api.engines.sampling import DEFAULT_SAMPLING, Sampling
from lm_api.metrics import Metrics
from lm_api.prompt import ChatPrompter, Prompt

log = logging.getLogger("lm_api")

State = Literal["loading", "ready", "failed", "unloaded"]


# --- what callers get -----------------------------------------------------------------


class NotReady(Exception):
    """The model is loading or failed to load."""


class QueueFull(Exception):
    """Too many requests are waiting already."""


class InvalidParam(ValueError):
    """A request parameter only the loaded model can judge (e.g. a token id)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthExceeded(Exception):
    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens, but the messages "
            f"take {prompt_tokens} tokens (at least one token must be left for the answer)."
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


@dataclass(frozen=True)
class GenerationRequest:
    prompt: Prompt
    max_tokens: int  # already clamped to what is left of the context
    stop: tuple[str, ...]  # the request's stops plus the chat format's
    sampling: Sampling = DEFAULT_SAMPLING


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None  # from acceptance, queue wait included
    generation_ms: float


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class Cancelled:
    """The caller gave up (client gone, stop, shutdown); nothing more will come."""


Event = TextDelta | Finished | Failed | Cancelled


class Generation:
    """One accepted request: its events, and a way to give up on it."""

    def __init__(
        self,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        on_cancel: Callable[[Generation], None] = lambda _g: None,
    ) -> None:
        self.request = request
        self.accepted_at = time.perf_counter()
        self.cancelled = threading.Event()
        self._loop = loop
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._on_cancel = on_cancel
        # Set by the engine, under its lock, when the request leaves the waiting line
        # (started, or cancelled while waiting), so it is counted out exactly once.
        self.left_line = False

    def emit(self, event: Event) -> None:
        """Hand an event to the event loop (called from the worker thread)."""
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()

    def cancel(self) -> None:
        """Stop generating (the worker notices before the next token); idempotent."""
        if not self.cancelled.is_set():
            self.cancelled.set()
            self._on_cancel(self)
            # Ends events() for whoever still listens; after a Finished it is never read.
            self.emit(Cancelled())

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            yield event
            if not isinstance(event, TextDelta):
                return


@dataclass(frozen=True)
class EngineStatus:
    state: State
    detail: str
    model: str
    n_ctx: int
    queue_depth: int
    running: int


# --- loading --------------------------------------------------------------------------

Loader = Callable[[Settings], llama_cpp.Llama]


def load_llama(settings: Settings) -> llama_cpp.Llama:
    """Open the GGUF with llama.cpp; clear messages for the usual mistakes."""
    path = settings.model_path
    if not path.is_file():
        raise FileNotFoundError(
            f"model file not found: {path} (set LM_API_MODEL_PATH; "
            "`parlor download` fetches the default model, `parlor synth` writes a test one)"
        )
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"not a GGUF file: {path}")
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=settings.n_ctx,
        n_threads=settings.threads,
        n_threads_batch=settings.threads,
        n_batch=settings.n_batch,
        flash_attn=settings.flash_attn,
        n_gpu_layers=settings.n_gpu_layers,
        verbose=False,
    )


# --- the interface --------------------------------------------------------------------


class Engine(abc.ABC):
    """A model served by a worker thread; the HTTP layer's only view of generation.

    Public: `start`, `close`, `status`, `prepare`, `submit`. A subclass says how long each
    sequence's context is (`_n_ctx`), how many generations run (`_n_running`), when the
    waiting line is full (`_line_full`), how a request joins it (`_enqueue`), how to stop
    (`_stop_serving`) and how to serve (`_serve`); and, if it needs to, how the model is
    loaded (`_load`) and what else serving needs (`_open`). Each running generation is a
    `lm_api.engines.sequence.Sequence`, which turns tokens into events and metrics.
    """

    thread_name = "lm_api-engine"

    def __init__(self, settings: Settings, metrics: Metrics, loader: Loader = load_llama) -> None:
        self._settings = settings
        self._metrics = metrics
        self._loader = loader
        self._state: State = "loading"
        self._detail = "loading the model"
        self._llm: llama_cpp.Llama | None = None
        self._prompter: ChatPrompter | None = None
        self._vocab: Any = None
        self._lock = threading.Lock()
        self._waiting = 0  # accepted, not started, not cancelled
        self._thread: threading.Thread | None = None
        # Called from the worker thread once the model is ready or has failed to load.
        self.on_settled: Callable[[], None] = lambda: None

    # hooks

    @abc.abstractmethod
    def _n_ctx(self) -> int:
        """The context of one sequence (called under the lock)."""

    @abc.abstractmethod
    def _n_running(self) -> int:
        """How many generations run now (called under the lock)."""

    @abc.abstractmethod
    def _line_full(self) -> bool:
        """Whether a new request must be refused with QueueFull (called under the lock)."""

    @abc.abstractmethod
    def _enqueue(self, gen: Generation) -> None:
        """Put an accepted request in the waiting line (called under the lock)."""

    @abc.abstractmethod
    def _stop_serving(self) -> None:
        """Cancel what runs and what waits, and tell the worker to return."""

    @abc.abstractmethod
    def _serve(self) -> None:
        """The worker loop, once the model is ready; returns after `_stop_serving`."""

    @abc.abstractmethod
    def _layout(self, llm: llama_cpp.Llama) -> str:
        """How the context is laid out, for the ready log line."""

    def _load(self, settings: Settings) -> llama_cpp.Llama:
        return self._loader(settings)

    def _open(self, llm: llama_cpp.Llama) -> bool:
        """Make what serving needs besides the model; False (after `_fail`) if that fails."""
        return True

    # lifecycle

    def start(self) -> None:
        """Load the model and serve, in a background thread: the server answers meanwhile."""
        self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Cancel what runs and what waits (their callers get a Cancelled), stop the worker,
        and give the model's memory back (once the worker has returned)."""
        self._stop_serving()
        if self._thread is not None and self._state == "ready":
            self._thread.join(timeout=30)

    @property
    def waiting(self) -> int:
        """Requests accepted and not started (read without the lock: a gauge's value)."""
        return self._waiting

    def _main(self) -> None:
        s = self._settings
        try:
            llm = self._load(s)
        except Exception as exc:
            self._fail(f"model failed to load: {exc}")
            return
        try:
            prompter = ChatPrompter(llm, s.chat_format)
        except Exception as exc:  # a bad LM_API_CHAT_FORMAT or a broken GGUF template
            llm.close()
            self._fail(f"chat format not usable: {exc}")
            return
        if not self._open(llm):
            llm.close()
            return
        with self._lock:
            self._llm, self._prompter = llm, prompter
            self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
            self._state, self._detail = "ready", "ready"
        log.info(
            "lm_api: model %s ready (%s, chat format: %s)",
            s.model_path,
            self._layout(llm),
            prompter.source,
        )
        self.on_settled()
        # What exists by now (the app, the model's Python side) mostly lives as long as
        # the process: move it out of the cyclic GC's sight. A full collection walks every
        # tracked object (about 80,000 here: 150 ms with the GIL held, measured on a
        # loaded 2-core machine); such a pause landing mid-stream is one long gap between
        # two tokens of every running answer. Full collections are rare (none in a minute
        # of four streams), so this is insurance against a rare outlier, not a speed-up.
        gc.freeze()
        try:
            self._serve()
        finally:
            with self._lock:
                self._llm = self._prompter = self._vocab = None
                self._state, self._detail = "unloaded", "unloaded"
            llm.close()  # the weights and the loader's context go now, not at some GC
            log.info("lm_api: model %s unloaded", s.model_path)

    def _fail(self, detail: str) -> None:
        with self._lock:
            self._state, self._detail = "failed", detail
        log.error("lm_api: %s", detail)
        self.on_settled()

    def status(self) -> EngineStatus:
        with self._lock:
            return EngineStatus(
                state=self._state,
                detail=self._detail,
                model=self._settings.served_model_name,
                n_ctx=self._n_ctx(),
                queue_depth=self._waiting,
                running=self._n_running(),
            )

    # requests

    def _ready(self) -> tuple[llama_cpp.Llama, ChatPrompter, int]:
        """The model, its prompter and one sequence's context (raises NotReady)."""
        with self._lock:
            if self._state != "ready" or self._prompter is None or self._llm is None:
                raise NotReady(self._detail)
            return self._llm, self._prompter, self._n_ctx()

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """The model's tokens for `text`, special tokens parsed (raises NotReady, ValueError).

        `add_special` adds BOS when the model wants one, as llama-server's /tokenize does.
        """
        llm = self._ready()[0]
        return list(llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    def build_prompt(self, messages: list[dict[str, Any]]) -> Prompt:
        """The prompt a completion of `messages` reads (raises NotReady, ValueError)."""
        return self._ready()[1].build(messages)

    def prepare(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None,
        stop: list[str],
        sampling: Sampling = DEFAULT_SAMPLING,
    ) -> GenerationRequest:
        """Format and tokenize (raises NotReady, InvalidParam, ValueError,
        ContextLengthExceeded)."""
        _, prompter, n_ctx = self._ready()
        with self._lock:
            vocab = self._vocab
        try:
            sampling.check(int(llama_cpp.llama_vocab_n_tokens(vocab)))
        except ValueError as exc:
            raise InvalidParam("logit_bias", str(exc)) from exc
        prompt = prompter.build(messages)
        room = n_ctx - len(prompt.tokens)
        if room < 1:
            raise ContextLengthExceeded(len(prompt.tokens), n_ctx)
        wanted = max_tokens if max_tokens is not None else self._settings.max_tokens
        return GenerationRequest(
            prompt=prompt,
            max_tokens=min(wanted, room),
            stop=(*stop, *prompt.stop),
            sampling=sampling,
        )

    def submit(self, request: GenerationRequest) -> Generation:
        """Accept a request into the line (raises NotReady, QueueFull)."""
        gen = Generation(request, asyncio.get_running_loop(), on_cancel=self._cancelled)
        with self._lock:
            if self._state != "ready":
                raise NotReady(self._detail)
            if self._line_full():
                raise QueueFull(f"{self._waiting} requests are waiting already")
            self._waiting += 1
            self._metrics.queue_depth.set(self._waiting)
            self._enqueue(gen)
        return gen

    def _cancelled(self, gen: Generation) -> None:
        # A cancelled waiting request leaves the line at once (the worker skips it later).
        with self._lock:
            if not gen.left_line:
                gen.left_line = True
                self._waiting -= 1
                self._metrics.queue_depth.set(self._waiting)
                self._metrics.generations.labels("cancelled").inc()
