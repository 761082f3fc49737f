"""The batched engine: several generations decoding together (continuous batching).

One llama.cpp context holds `parallel` sequences ("slots"), each with its own n_ctx of KV
cells. One worker thread loops: admit waiting requests into free slots (evaluating each
new prompt on its own), then ONE `llama_decode` carrying the next token of every running
sequence, then sample each sequence with its own sampler chain. Decoding on a CPU is
bound by reading the weights, so one pass serving four sequences costs little more than
one serving a single sequence: aggregate throughput grows with the number of chats.

Each running generation is a `Sequence` (lm_api.engines.sequence), as in the FIFO engine:
the text, stop strings, end and metrics of a generation are the same whichever engine runs.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
from llama_cpp import _internals as internals

from lm_api.config import Settings
from lm_api.engines.base import Engine, Generation, GenerationRequest, Loader, load_llama
from lm_api.engines.sequence import EndReason, Sequence
from lm_api.metrics import Metrics

log = logging.getLogger("lm_api")

# How many recent tokens the frequency/presence penalties look at (llama.cpp's default).
PENALTY_LAST_N = 64
# Context of the Llama object the loader makes (its KV cache goes unused).
LOADER_N_CTX = 64
# llama.cpp's default physical batch: prompt chunks are computed this many tokens at a time.
N_UBATCH = 512


@dataclass
class Slot:
    """One sequence of the shared context, and the generation it serves (if any)."""

    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    last_used: int = 0  # admission counter: free slots are reused least recently used first
    gen: Generation | None = None
    seq: Sequence | None = None  # the running generation's text side, once started
    sampler: Any = None
    pending: int = -1  # sampled, sent, not yet decoded into the KV cache


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class BatchedEngine(Engine):
    """One llama.cpp context, up to `parallel` generations decoding together."""

    thread_name = "lm_api-batched"

    def __init__(self, settings: Settings, metrics: Metrics, loader: Loader = load_llama) -> None:
        super().__init__(settings, metrics, loader)
        self._parallel = settings.parallel
        self._ctx: internals.LlamaContext | None = None
        self._batch: internals.LlamaBatch | None = None
        self._n_batch = max(settings.n_batch, settings.parallel)
        self._slots = [Slot(seq_id=i) for i in range(settings.parallel)]
        # Guarded by _lock: the waiting line, its count (cancelled ones leave at once, the
        # deque drops them lazily), and how many slots are taken.
        self._wake = threading.Condition(self._lock)
        self._line: collections.deque[Generation] = collections.deque()
        self._running = 0
        self._admissions = 0
        self._closed = False

    def _n_ctx(self) -> int:
        return self._settings.n_ctx  # per sequence

    def _n_running(self) -> int:
        return self._running

    def _line_full(self) -> bool:
        free = self._parallel - self._running
        # Requests that a free slot takes at once do not count against the line.
        return self._waiting >= free and self._waiting - free >= self._settings.max_queue

    def _enqueue(self, gen: Generation) -> None:
        self._line.append(gen)
        self._wake.notify()

    def _layout(self, llm: llama_cpp.Llama) -> str:
        return f"batched engine: {self._parallel} sequences of n_ctx={self._settings.n_ctx}"

    # lifecycle

    def _stop_serving(self) -> None:
        with self._lock:
            self._closed = True
            waiting = list(self._line)
            self._line.clear()
            running = [s.gen for s in self._slots if s.gen is not None]
            self._wake.notify_all()
        for gen in (*running, *waiting):
            gen.cancel()

    def _load(self, settings: Settings) -> llama_cpp.Llama:
        # The loader's own context only serves the tokenizer (ours is made by _open):
        # keep it small rather than a second full-size KV cache.
        return self._loader(settings.model_copy(update={"n_ctx": LOADER_N_CTX}))

    def _open(self, llm: llama_cpp.Llama) -> bool:
        try:
            self._ctx, self._batch = self._make_context(llm)
        except Exception as exc:  # e.g. not enough memory for n_ctx * parallel cells
            self._fail(f"could not create a context for {self._parallel} sequences: {exc}")
            return False
        return True

    def _make_context(self, llm: llama_cpp.Llama) -> tuple[internals.LlamaContext, Any]:
        """A second context on the loaded weights, with room for every sequence.

        The loader's `Llama` keeps its own one-sequence context (the tokenizer and the chat
        template come from it); ours has n_ctx * parallel cells and one KV stream per
        sequence (kv_unified off), so each sequence gets exactly n_ctx cells.
        """
        s = self._settings
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = s.n_ctx * self._parallel
        params.n_seq_max = self._parallel
        params.kv_unified = False
        params.n_batch = self._n_batch
        params.n_ubatch = min(N_UBATCH, self._n_batch)
        ctx = internals.LlamaContext(model=llm._model, params=params, verbose=False)
        batch = internals.LlamaBatch(n_tokens=self._n_batch, embd=0, n_seq_max=1, verbose=False)
        return ctx, batch

    # the worker

    def _serve(self) -> None:
        assert self._ctx is not None and self._batch is not None
        ctx, batch = self._ctx, self._batch
        try:
            while True:
                admitted = self._admit()
                if admitted is None:
                    return
                for slot in admitted:
                    self._start(slot)
                for slot in self._active():
                    if slot.gen is not None and slot.gen.cancelled.is_set():
                        self._end(slot, "cancelled")
                active = self._active()
                if active:
                    self._step(active)
        finally:
            for slot in self._slots:
                self._free_sampler(slot)
            batch.close()
            ctx.close()

    def _active(self) -> list[Slot]:
        return [s for s in self._slots if s.gen is not None]

    def _admit(self) -> list[Slot] | None:
        """Move waiting requests into free slots; block while there is nothing to do."""
        with self._lock:
            while not self._closed and not self._line and not self._active():
                self._wake.wait()
            if self._closed:
                return None
            admitted: list[Slot] = []
            while self._line and self._running < self._parallel:
                gen = self._line.popleft()
                if gen.left_line:  # cancelled while waiting
                    continue
                gen.left_line = True
                self._waiting -= 1
                self._running += 1
                slot = self._pick_slot(gen.request.prompt.tokens)
                slot.gen = gen
                admitted.append(slot)
            self._metrics.queue_depth.set(self._waiting)
        return admitted

    def _pick_slot(self, prompt: list[int]) -> Slot:
        # The free slot sharing the longest prefix with this prompt (a chat's next turn
        # re-reads only its new tail); among equals, the least recently used.
        free = [s for s in self._slots if s.gen is None]
        best = max(free, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))
        self._admissions += 1
        best.last_used = self._admissions
        return best

    def _start(self, slot: Slot) -> None:
        """Evaluate the prompt of a newly admitted generation and take its first token."""
        gen = slot.gen
        assert gen is not None and self._ctx is not None
        assert self._llm is not None
        req = gen.request
        prompt = req.prompt.tokens
        slot.seq = Sequence(gen, self._llm, self._vocab, self._metrics)
        slot.pending = -1
        slot.sampler = self._make_sampler(req)
        if gen.cancelled.is_set():
            self._end(slot, "cancelled")
            return
        # Keep the cached prefix, but always evaluate at least the last prompt token: its
        # logits give the first answer token.
        keep = min(common_prefix(slot.cached, prompt), len(prompt) - 1)
        mem = self._ctx.memory
        if not llama_cpp.llama_memory_seq_rm(mem, slot.seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
            keep = 0
        slot.cached = prompt[:keep]
        try:
            for at in range(keep, len(prompt), self._n_batch):
                if gen.cancelled.is_set():
                    self._end(slot, "cancelled")
                    return
                chunk = prompt[at : at + self._n_batch]
                self._fill([(slot, chunk, at)], logits_last_only=True)
                self._decode()
                slot.cached.extend(chunk)
            token = self._sample(slot, len(chunk) - 1)
        except Exception as exc:
            self._error([slot], exc)
            return
        self._take(slot, token)

    def _step(self, active: list[Slot]) -> None:
        """One decode with the pending token of every running sequence, then sample each."""
        self._fill([(s, [s.pending], len(s.cached)) for s in active], logits_last_only=False)
        try:
            self._decode()
            for s in active:
                s.cached.append(s.pending)
            tokens = [self._sample(s, i) for i, s in enumerate(active)]
        except Exception as exc:
            self._error(active, exc)
            return
        for s, token in zip(active, tokens, strict=True):
            self._take(s, token)

    def _fill(self, rows: list[tuple[Slot, list[int], int]], *, logits_last_only: bool) -> None:
        """Put (slot, tokens, first position) rows into the batch."""
        assert self._batch is not None
        b = self._batch.batch
        i = 0
        for slot, tokens, pos in rows:
            for j, token in enumerate(tokens):
                b.token[i] = token
                b.pos[i] = pos + j
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = slot.seq_id
                b.logits[i] = not logits_last_only or j == len(tokens) - 1
                i += 1
        b.n_tokens = i

    def _decode(self) -> None:
        assert self._ctx is not None and self._batch is not None
        self._ctx.decode(self._batch)

    def _sample(self, slot: Slot, index: int) -> int:
        assert self._ctx is not None
        return int(llama_cpp.llama_sampler_sample(slot.sampler, self._ctx.ctx, index))

    def _make_sampler(self, req: GenerationRequest) -> Any:
        params = llama_cpp.llama_sampler_chain_default_params()
        chain = llama_cpp.llama_sampler_chain_init(params)
        add = llama_cpp.llama_sampler_chain_add
        if req.frequency_penalty or req.presence_penalty:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    llama_cpp.llama_vocab_n_tokens(self._vocab),
                    PENALTY_LAST_N,
                    1.0,
                    req.frequency_penalty,
                    req.presence_penalty,
                ),
            )
        if req.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        seed = req.seed if req.seed is not None else random.getrandbits(31)
        add(chain, llama_cpp.llama_sampler_init_top_p(req.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(req.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _free_sampler(self, slot: Slot) -> None:
        if slot.sampler is not None:
            llama_cpp.llama_sampler_free(slot.sampler)
            slot.sampler = None

    def _take(self, slot: Slot, token: int) -> None:
        """Hand a sampled token to its sequence; free the slot if the generation ends."""
        assert slot.seq is not None
        end = slot.seq.take(token)
        if end is not None:
            self._end(slot, end)
        else:
            slot.pending = token

    def _error(self, slots: list[Slot], exc: Exception) -> None:
        assert self._ctx is not None
        for slot in slots:
            # The sequence's KV state is unknown now: drop it, the next prompt is re-read.
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq_id, -1, -1)
            slot.cached = []
            if slot.seq is not None:
                slot.seq.fail(exc)
            self._end(slot, "error")

    def _end(self, slot: Slot, reason: EndReason) -> None:
        """End the slot's generation (unless it ended already) and free the slot."""
        assert slot.seq is not None
        slot.seq.finish(reason)
        self._free_sampler(slot)
        slot.gen, slot.seq, slot.pending = None, None, -1
        with self._lock:
            self._running -= 1
