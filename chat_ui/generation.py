"""Background generations, owned by the app rather than by any HTTP request.

A send starts one asyncio task per assistant message. The task streams from lm_api, keeps
the text so far in memory, wakes every listener (each SSE connection follows with its own
asyncio.Event, so a slow tab never holds up another), writes the partial text to db_api at
least every `flush_interval_s` and, at the end, the final status with usage and timings.

A running message with no generation in this process (chat_ui restarted mid-answer) is
marked interrupted by `conversation.Conversation.reconcile` the first time a page or a
stream looks at it. This assumes one chat_ui process owns the generations (run it with
one worker; scale out with sticky routing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from uuid import UUID

from chat_ui.clients import DbApi, DbUnavailable, LmApi, LmError, NotFound
from chat_ui.config import Settings
from chat_ui.contracts import Chat, Message, MessagePatch, Status
from chat_ui.metrics import Metrics

log = logging.getLogger("chat_ui.generation")

# Per-message overhead of chat templates (role markers, separators), in tokens.
MESSAGE_OVERHEAD_TOKENS = 8


def estimate_tokens(text: str) -> int:
    # Deliberately pessimistic (about 3 characters per token, where English averages ~4):
    # overestimating only drops an old turn a little early, underestimating fails the call.
    return len(text) // 3 + MESSAGE_OVERHEAD_TOKENS


def fit_history(
    system_prompt: str, turns: list[dict[str, str]], budget_tokens: int
) -> list[dict[str, str]]:
    """System prompt plus the newest turns that fit `budget_tokens`; oldest dropped first.

    When the history no longer fits, it is cut at the first turn boundary past a multiple of
    a quarter of the budget, counted from the chat's first turn. Those positions do not
    move as the chat grows, so the same cut serves several turns in a row and every prompt
    of that stretch starts with the same tokens: the model server reuses its cache of that
    prefix instead of re-reading the whole history at every turn (cutting exactly as much
    as needed would shift the start, and so the cache, at each turn).

    The system prompt and the latest turn are always kept (if even they do not fit,
    lm_api says so and the answer is marked error with that reason). The kept history
    starts with a user turn, since many chat templates require it.
    """
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    room = budget_tokens - sum(estimate_tokens(m["content"]) for m in system)
    costs = [estimate_tokens(turn["content"]) for turn in turns]
    # starts[i]: tokens before turn i, counted from the chat's beginning.
    starts = [0]
    for cost in costs:
        starts.append(starts[-1] + cost)
    first = 0
    step = max(1, room // 4)
    boundary = 0
    while first < len(turns) - 1 and starts[-1] - starts[first] > room:
        boundary += step
        while first < len(turns) - 1 and starts[first] < boundary:
            first += 1
    kept = turns[first:]
    while len(kept) > 1 and kept[0]["role"] != "user":
        kept = kept[1:]
    return system + kept


def history_before(chat: Chat, message_id: UUID) -> list[dict[str, str]]:
    """The turns that precede `message_id`, as OpenAI messages, skipping failed answers."""
    turns: list[dict[str, str]] = []
    for msg in chat.messages:
        if msg.id == message_id:
            break
        if msg.role not in ("user", "assistant") or not msg.content:
            continue
        if msg.role == "assistant" and (msg.status == "error" or msg.running):
            continue
        turns.append({"role": msg.role, "content": msg.content})
    return turns


@dataclass
class Generation:
    message_id: UUID
    chat_id: UUID
    owner: str
    text: str = ""
    status: Status = "pending"
    error: str | None = None
    # The message as last written to db_api (or as it would have been), for rendering.
    final: Message | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    _listeners: set[asyncio.Event] = field(default_factory=set)

    def notify(self) -> None:
        for ev in self._listeners:
            ev.set()

    async def follow(self, offset: int = 0) -> AsyncIterator[tuple[str, int]]:
        """Yield (text after offset, new offset) now and on every change until finished."""
        ev = asyncio.Event()
        self._listeners.add(ev)
        try:
            while True:
                # Clear before reading: a change during the yield re-sets the event.
                ev.clear()
                if len(self.text) > offset:
                    piece, offset = self.text[offset:], len(self.text)
                    yield piece, offset
                if self.finished.is_set():
                    return
                await ev.wait()
        finally:
            self._listeners.discard(ev)


class Generations:
    """The registry of running generations, keyed by assistant message id."""

    def __init__(self, settings: Settings, db: DbApi, lm: LmApi, metrics: Metrics) -> None:
        self._settings = settings
        self._db = db
        self._lm = lm
        self._metrics = metrics
        self._running: dict[UUID, Generation] = {}

    def get(self, message_id: UUID, owner: str) -> Generation | None:
        gen = self._running.get(message_id)
        return gen if gen is not None and gen.owner == owner else None

    def start(self, owner: str, chat: Chat, message_id: UUID) -> Generation:
        """Start answering `message_id` from the chat's history; idempotent while running."""
        existing = self.get(message_id, owner)
        if existing is not None:
            return existing
        gen = Generation(message_id=message_id, chat_id=chat.id, owner=owner)
        self._running[message_id] = gen
        self._metrics.active_generations.inc()
        gen.task = asyncio.create_task(self._run(gen, chat), name=f"generate-{message_id}")
        return gen

    async def stop(self, message_id: UUID, owner: str) -> Generation | None:
        """Cancel a running generation and wait until its partial text is stored."""
        gen = self.get(message_id, owner)
        if gen is None or gen.task is None:
            return None
        gen.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(gen.task)
        return gen

    async def shutdown(self) -> None:
        gens = list(self._running.values())
        for gen in gens:
            if gen.task is not None:
                gen.task.cancel()
        for gen in gens:
            if gen.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await gen.task

    async def _run(self, gen: Generation, chat: Chat) -> None:
        settings = self._settings
        started = time.monotonic()
        ttft_ms: float | None = None
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        outcome: Status = "complete"
        # Writes the text so far on a clock rather than per token, so that a stalled
        # stream still has its latest text stored within the interval.
        flusher = asyncio.create_task(self._flush_loop(gen), name=f"flush-{gen.message_id}")
        try:
            info = await self._lm.model_info(settings.model or chat.model or "")
            n_ctx = info.n_ctx if info and info.n_ctx else settings.context_tokens
            model = chat.model or settings.model or (info.id if info else "default")
            # Never ask for more than half the context, so a small model still gets history.
            max_tokens = max(1, min(settings.max_tokens, n_ctx // 2))
            budget = n_ctx - max_tokens
            system_prompt = chat.system_prompt or settings.default_system_prompt
            turns = history_before(chat, gen.message_id)
            messages = fit_history(system_prompt, turns, budget)
            for attempt in range(2):
                try:
                    async for delta in self._lm.stream_chat(model, messages, max_tokens):
                        if delta.prompt_tokens is not None:
                            prompt_tokens = delta.prompt_tokens
                        if delta.completion_tokens is not None:
                            completion_tokens = delta.completion_tokens
                        if not delta.text:
                            continue
                        if ttft_ms is None:
                            ttft_ms = (time.monotonic() - started) * 1000
                        gen.text += delta.text
                        gen.status = "streaming"
                        gen.notify()
                    break
                except LmError as exc:
                    # Our estimate was too optimistic for this tokenizer: halve the budget
                    # once (dropping more old turns) before giving up.
                    if exc.context_exceeded and attempt == 0 and not gen.text:
                        messages = fit_history(system_prompt, turns, budget // 2)
                        continue
                    raise
            gen.status = "complete"
        except asyncio.CancelledError:
            gen.status = outcome = "interrupted"
        except LmError as exc:
            gen.status = outcome = "error"
            gen.error = exc.message
        except NotFound:
            # The chat was deleted while answering: nothing left to write to.
            gen.status = outcome = "interrupted"
        except Exception:
            log.exception("generation %s failed", gen.message_id)
            gen.status = outcome = "error"
            gen.error = "Something went wrong while answering."
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            final = MessagePatch(
                content=gen.text,
                status=gen.status,
                error=gen.error,
                ttft_ms=ttft_ms,
                generation_ms=(time.monotonic() - started) * 1000,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
            gen.final = await self._final_flush(gen, final)
            self._running.pop(gen.message_id, None)
            self._metrics.active_generations.dec()
            self._metrics.generations.labels(outcome=outcome).inc()
            gen.finished.set()
            gen.notify()

    async def _flush_loop(self, gen: Generation) -> None:
        flushed = 0
        while True:
            await asyncio.sleep(self._settings.flush_interval_s)
            if len(gen.text) == flushed:
                continue
            text = gen.text
            try:
                await self._db.update_message(
                    gen.owner, gen.message_id, MessagePatch(content=text, status="streaming")
                )
                flushed = len(text)
            except NotFound:
                # The chat was deleted while answering: stop answering it.
                if gen.task is not None:
                    gen.task.cancel()
                return
            except DbUnavailable as exc:
                # The text is still in memory and the final flush tries again.
                log.warning("partial flush of %s failed: %s", gen.message_id, exc)

    async def _final_flush(self, gen: Generation, final: MessagePatch) -> Message:
        local = Message(
            id=gen.message_id, chat_id=gen.chat_id, role="assistant", **final.model_dump()
        )
        for attempt in range(3):
            try:
                return await self._db.update_message(gen.owner, gen.message_id, final)
            except NotFound:
                return local
            except DbUnavailable as exc:
                log.warning(
                    "final flush of %s failed (%s), attempt %d", gen.message_id, exc, attempt + 1
                )
                await asyncio.sleep(0.5 * (attempt + 1))  # back off before retrying db_api
            except Exception:
                log.exception("final flush of %s failed", gen.message_id)
                break
        return local
