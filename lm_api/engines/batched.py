"""The batched engine: several generations decoding together (continuous batching), and
prompts read without freezing the answers already running (stall-free batching).

One llama.cpp context holds `parallel` sequences ("slots"). One worker thread loops:
admit waiting requests into free slots, then ONE `llama_decode` per step, then sample
every sequence whose logits that step produced. Each step's batch is filled the way
Sarathi-Serve's stall-free batching (vLLM's chunked prefill) fills it:

1. the next token of every running answer, first;
2. then prompt tokens of newly admitted requests, oldest first, but only as many as keep
   the step within `LM_API_STEP_BUDGET` (default 2.5) plain decode steps, measured as
   the engine runs, with a margin for the machine's noise (`StepBudget`). With no
   answer streaming there is nobody to hold up, and a prompt is read `n_batch` tokens a
   step, as fast as llama.cpp reads it. (An answer that has given only its first token
   is not streaming yet: the prompts of a burst of requests that arrived while the
   first one's was read are read together, whole.)

So a 2,000-token prompt arriving while two answers stream is read a few tokens per step
beside them: their next token comes at most about two and a half times as late as
usual, instead of after the whole prompt. Decoding on a CPU is bound by reading the
weights, so one pass serving four sequences costs little more than one serving a single
sequence: aggregate throughput grows with the number of chats.

The KV cache is one unified buffer of n_ctx * parallel cells (llama.cpp's `kv_unified`,
as llama-server uses with automatic slots). With one buffer per sequence instead,
llama.cpp splits a batch into equal-sized pieces per sequence, so a step mixing one
answer token with a prompt chunk would cost two passes over the weights. Each request is
still held to n_ctx tokens (prompt + answer) by `Engine.prepare`, so the cells always
suffice, and each slot keeps the cache of its last prompt and answer for the next turn.
The one buffer wants flash attention (`LM_API_FLASH_ATTN`, on by default): llama.cpp's
CPU kernel then skips the cells a token's mask hides (other slots' cells, the later
tokens of its own prompt chunk), while plain attention reads all the used cells of every
slot for every token, so each chat would slow down with what the other slots hold.

Each running generation is a `Sequence` (lm_api.engines.sequence), as in the FIFO engine,
and samples with the same `SamplerChain` (lm_api.engines.sampling).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
from llama_cpp import _internals as internals

from lm_api.config import Settings
from lm_api.engines.base import Engine, Generation, Loader, load_llama
from lm_api.engines.sampling import SamplerChain
from lm_api.engines.sequence import EndReason, Sequence, common_prefix
from lm_api.metrics import Metrics

log = logging.getLogger("lm_api")

# Context of the Llama object the loader makes (its KV cache goes unused).
LOADER_N_CTX = 64
# llama.cpp's default physical batch: prompt chunks are computed this many tokens at a time.
N_UBATCH = 512


class StepBudget:
    """How many prompt tokens a step may carry beside `rows` running answers.

    It learns, as the engine runs, what a plain step of `rows` answers costs (the whole
    step: decode, sampling, handing the tokens out) and what each prompt token adds to
    the decode, and allows as many prompt tokens as keep the step within `factor` plain
    steps; always at least one, so a prompt is read even when a token costs more than
    the whole budget.

    `factor` is a ceiling, not an aim: a step costs what the machine gives it, and the
    running answers see the worst step, not the average one. So the budget also learns
    how far a step's decode lands from what it predicted (the mean absolute error, as
    TCP learns the spread of its round trips beside their mean) and keeps that much
    time spare. On a quiet machine the margin is small and steps come close to the
    ceiling, which matters: a prompt read two tokens a step costs about a third more
    per token than one read six a step (one thread of a 2-core CPU), besides the steps
    it waits. On a noisy one the steps shrink instead of overshooting. The margin never
    takes more than half of the prompt's time, so a prompt always moves at a fair pace.

    And a step carries at most twice the prompt tokens of the budgeted step before it
    (plus one). An estimate can be wrong by far: one stalled plain step inflates what a
    plain step seems to cost, the next mixed steps then look as if their prompt tokens
    were free, and the budget would allow hundreds of tokens in one step, a gap of
    seconds for the running answers (the likely cause of a 6.9 s gap that part 6 of the
    bench showed on a busy machine). Growing twofold, a step is measured before the
    next one can be much bigger.
    """

    ALPHA = 0.25  # weight of the newest measurement in the moving averages
    # Prompt tokens per step before anything is measured: few, because an unmeasured
    # step is the one most likely to overshoot (a prompt token can cost a third of a
    # plain step on a CPU).
    FIRST_GUESS = 2
    MARGIN = 1.0  # mean absolute errors of a step's prediction kept spare

    def __init__(self, factor: float, limit: int) -> None:
        self.factor = factor
        self.limit = limit  # at most this many tokens in a step (n_batch)
        self._step_s: dict[int, float] = {}  # rows -> seconds of a plain step
        self._decode_s: dict[int, float] = {}  # rows -> seconds of its llama_decode
        self._token_s: float | None = None  # seconds one prompt token adds to a decode
        self._error_s = 0.0  # mean absolute error of predicted decode seconds
        self._last = self.FIRST_GUESS  # prompt tokens of the last budgeted step

    def _avg(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.ALPHA * (new - old)

    def prompt_tokens(self, rows: int, *, protect: bool = True) -> int:
        """Prompt tokens allowed beside `rows` answer tokens; all that fit when there is no
        answer pace to `protect`."""
        room = self.limit - rows
        if rows == 0 or not protect or self.factor <= 0:
            return room  # nobody to hold up, or no limit asked for
        step_s = self._step_s.get(rows)
        if step_s is None or self._token_s is None:
            return max(1, min(self.FIRST_GUESS, room))
        spare = (self.factor - 1.0) * step_s
        allowed = int(max(spare - self.MARGIN * self._error_s, spare / 2) / self._token_s)
        return max(1, min(allowed, 2 * self._last + 1, room))

    def record(
        self, rows: int, prompt_tokens: int, decode_s: float, step_s: float, *, budgeted: bool
    ) -> None:
        """Learn from a step of `rows` answer tokens and `prompt_tokens` prompt tokens
        whose llama_decode took `decode_s` and the whole step `step_s`; `budgeted` says
        whether its prompt tokens were held to `prompt_tokens(rows)`.

        Only budgeted steps teach what a prompt token costs: a prompt read whole beside
        an answer (nobody to protect yet) is read a hundred tokens at a time, and a token
        costs far less in such a chunk than in the few-token chunks the budget is for. The
        long prompt that came next would start with steps too big for the running answers.
        """
        if rows == 0 or (prompt_tokens and not budgeted):
            return
        plain = self._decode_s.get(rows)
        if prompt_tokens == 0:
            if plain is not None:
                self._error_s = self._avg(self._error_s, abs(decode_s - plain))
            self._decode_s[rows] = self._avg(plain, decode_s)
            self._step_s[rows] = self._avg(self._step_s.get(rows), step_s)
            return
        self._last = prompt_tokens
        if plain is None:
            return
        if self._token_s is not None:
            predicted = plain + prompt_tokens * self._token_s
            self._error_s = self._avg(self._error_s, abs(decode_s - predicted))
        per_token = max(decode_s - plain, 0.0) / prompt_tokens
        self._token_s = max(self._avg(self._token_s, per_token), 1e-7)


@dataclass
class Slot:
    """One sequence of the shared context, and the generation it serves (if any)."""

    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    last_used: int = 0  # admission counter: free slots are reused least recently used first
    gen: Generation | None = None
    seq: Sequence | None = None  # the running generation's text side, once started
    chain: SamplerChain | None = None
    todo: list[int] = field(default_factory=list)  # prompt tokens still to be read
    pending: int = -1  # sampled, sent, not yet decoded into the KV cache


@dataclass
class Row:
    """A slot's tokens in this step's batch; `index` is the batch row of its last one."""

    slot: Slot
    tokens: list[int]
    index: int = 0
    samples: bool = True  # its logits give the slot's next token


class BatchedEngine(Engine):
    """One llama.cpp context, up to `parallel` generations decoding together."""

    thread_name = "lm_api-batched"

    def __init__(self, settings: Settings, metrics: Metrics, loader: Loader = load_llama) -> None:
        super().__init__(settings, metrics, loader)
        self._parallel = settings.parallel
        self._ctx: internals.LlamaContext | None = None
        self._batch: internals.LlamaBatch | None = None
        self._n_batch = max(settings.n_batch, settings.parallel)
        self._budget = StepBudget(settings.step_budget, self._n_batch)
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
        return (
            f"batched engine: {self._parallel} sequences of n_ctx={self._settings.n_ctx}, "
            f"step budget {self._settings.step_budget or 'unlimited'}"
        )

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

        The loader's `Llama` keeps its own small context (the tokenizer and the chat
        template come from it); ours has n_ctx * parallel cells in one unified KV buffer
        (see the module's docstring).
        """
        s = self._settings
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = s.n_ctx * self._parallel
        params.n_seq_max = self._parallel
        params.kv_unified = True
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
                self._free_chain(slot)
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
        """Set up a newly admitted generation: what of its prompt is cached, what to read."""
        gen = slot.gen
        assert gen is not None and self._ctx is not None
        assert self._llm is not None
        req = gen.request
        prompt = req.prompt.tokens
        slot.seq = Sequence(gen, self._llm, self._vocab, self._metrics)
        slot.pending = -1
        try:
            slot.chain = SamplerChain(req.sampling, self._vocab, n_ctx=self._settings.n_ctx)
            slot.chain.prime(prompt)
        except Exception as exc:
            slot.seq.fail(exc)
            self._end(slot, "error")
            return
        # Keep the cached prefix, but always read at least the last prompt token: its
        # logits give the first answer token.
        keep = min(common_prefix(slot.cached, prompt), len(prompt) - 1)
        mem = self._ctx.memory
        if not llama_cpp.llama_memory_seq_rm(mem, slot.seq_id, keep, -1):
            llama_cpp.llama_memory_seq_rm(mem, slot.seq_id, -1, -1)
            keep = 0
        slot.cached = prompt[:keep]
        slot.todo = prompt[keep:]

    def _plan(self, active: list[Slot]) -> tuple[list[Row], int, bool]:
        """This step's rows: every running answer's next token, then prompt chunks within
        the budget (oldest admission first); how many answer rows lead them; and whether
        the budget held the prompt tokens back (an answer was streaming)."""
        rows = [Row(s, [s.pending]) for s in active if not s.todo]
        n_answers = len(rows)
        # An answer that has only just given its first token has no pace yet: prompts
        # that arrived while its own was read join this step whole, as if they had come
        # together with it (a burst of chats gets its first tokens as soon as possible).
        streaming = any(r.slot.seq is not None and r.slot.seq.n > 1 for r in rows)
        room = self._budget.prompt_tokens(n_answers, protect=streaming)
        for s in sorted((s for s in active if s.todo), key=lambda s: s.last_used):
            n = min(len(s.todo), room)
            if n <= 0:
                break
            rows.append(Row(s, s.todo[:n], samples=n == len(s.todo)))
            room -= n
        return rows, n_answers, streaming

    def _step(self, active: list[Slot]) -> None:
        """One decode of this step's rows, then sample each slot whose logits it made."""
        started = time.perf_counter()
        rows, n_answers, budgeted = self._plan(active)
        self._fill(rows)
        try:
            self._decode()
            decoded = time.perf_counter()
            for r in rows:
                r.slot.cached.extend(r.tokens)
            for r in rows[n_answers:]:
                del r.slot.todo[: len(r.tokens)]
            sampled = [(r.slot, self._sample(r.slot, r.index)) for r in rows if r.samples]
        except Exception as exc:
            self._error([r.slot for r in rows], exc)
            return
        for slot, token in sampled:
            self._take(slot, token)
        n_prompt = sum(len(r.tokens) for r in rows[n_answers:])
        ended = time.perf_counter()
        self._budget.record(
            n_answers, n_prompt, decoded - started, ended - started, budgeted=budgeted
        )
        # At debug level: what each step carried and cost, to find the step that makes
        # a long gap between two tokens of the running answers.
        log.debug(
            "step: %d answers + %d prompt tokens, decode %.1f ms, step %.1f ms",
            n_answers,
            n_prompt,
            (decoded - started) * 1000,
            (ended - started) * 1000,
        )

    def _fill(self, rows: list[Row]) -> None:
        """Put the rows into the batch; logits only for each row's last token if it samples."""
        assert self._batch is not None
        b = self._batch.batch
        i = 0
        for row in rows:
            pos, seq_id, last = len(row.slot.cached), row.slot.seq_id, len(row.tokens) - 1
            for j, token in enumerate(row.tokens):
                b.token[i] = token
                b.pos[i] = pos + j
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq_id
                b.logits[i] = row.samples and j == last
                i += 1
            row.index = i - 1
        b.n_tokens = i

    def _decode(self) -> None:
        assert self._ctx is not None and self._batch is not None
        self._ctx.decode(self._batch)

    def _sample(self, slot: Slot, index: int) -> int:
        assert self._ctx is not None and slot.chain is not None
        return slot.chain.sample(self._ctx.ctx, index)

    def _free_chain(self, slot: Slot) -> None:
        if slot.chain is not None:
            slot.chain.close()
            slot.chain = None

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
        self._free_chain(slot)
        slot.gen, slot.seq, slot.pending = None, None, -1
        slot.todo = []
        with self._lock:
            self._running -= 1
