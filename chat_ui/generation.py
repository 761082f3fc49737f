"""Background generations, owned by the app rather than by any HTTP request.

A send starts one asyncio task per assistant message. The task streams from lm_api, keeps
the text so far in memory, wakes every listener (each SSE connection follows with its own
asyncio.Event, so a slow tab never holds up another), writes the partial text to db_api at
least every `flush_interval_s` and, at the end, the final state with usage and timings.

Writes of one answer carry a growing `revision`, so db_api applies them in order: a
partial write that arrives after the final one is refused (409) instead of overwriting
it. The final state is kept in memory until db_api has taken it: when storage is away it
is retried with backoff for as long as chat_ui runs, and the page says saving is pending.

While an answer runs, the page is told (a `notice`) when the model server has been silent
for `lm_quiet_s` (busy, or not answering at all) and when storage cannot be reached; a
model server silent for `lm_stall_s` ends the answer with the reason `model_stalled`.

Each answer is leased to this process in db_api while it runs (chat_ui/leases.py), so
several replicas can share the answers: another replica follows this one's answers from
what it saves (chat_ui/follower.py), can ask it to stop them, and ends them only once the
lease has lapsed. A running message whose lease nobody holds any more is ended by
`conversation.Conversation.reconcile` the first time a page or a stream looks at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from chat_ui import planning, titles
from chat_ui.clients import DbApi, DbRejected, DbUnavailable, LmApi, LmError, NotFound, Stale
from chat_ui.config import Settings
from chat_ui.contracts import Chat, Message, MessagePatch, storable
from chat_ui.leases import Replica, obey
from chat_ui.metrics import Metrics
from chat_ui.prompt import PromptPlan, history_before
from chat_ui.sampling import FIELDS as SAMPLING_FIELDS
from chat_ui.sampling import sampling_of
from db_contract import FINAL, FinishReason, Reason, Status

log = logging.getLogger("chat_ui.generation")

# Retrying a final save: the first pause (doubling up to settings.save_retry_max_s).
SAVE_FIRST_PAUSE_S = 0.25

MODEL_QUIET = "The model is busy: your answer is waiting for it."
MODEL_DOWN = "The model server is not answering. The answer goes on if it comes back."
STORAGE_DOWN = (
    "Storage cannot be reached right now: the answer is kept here and saved when it is back."
)


@dataclass
class Update:
    """What a listener gets: new text (and the offset after it) and/or a new notice."""

    text: str = ""
    offset: int = 0
    notice: str | None = None
    # The plan so far (plan mode), whole, when it has changed.
    plan: str | None = None


@dataclass
class Generation:
    message_id: UUID
    chat_id: UUID
    owner: str
    # The revision of the last write of this answer; every write takes the next one.
    revision: int = 0
    text: str = ""
    # Plan mode: the plan the planner model wrote first (empty otherwise).
    plan: str = ""
    status: Status = "pending"
    error: str | None = None
    reason: Reason | None = None
    finish_reason: FinishReason | None = None
    started: float = field(default_factory=time.monotonic)
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # What it is generated with (the chat's model and settings), recorded with it.
    model: str | None = None
    params: dict[str, Any] | None = None
    # The answer as it now stands: the stored message once the final save is done, the
    # final state with `unsaved` before.
    final: Message | None = None
    # The final write, kept until db_api has taken it.
    final_patch: MessagePatch | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    saved: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # Why the task was cancelled: the person stopped it, or chat_ui is shutting down.
    stop_reason: Reason | None = None
    deleted: bool = False
    # Ended by someone else (db_api holds a final state we did not write): that state.
    superseded: Message | None = None
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    _notices: dict[str, str] = field(default_factory=dict)
    _listeners: set[asyncio.Event] = field(default_factory=set)

    def next_revision(self) -> int:
        self.revision += 1
        return self.revision

    @property
    def notice(self) -> str:
        return " ".join(self._notices[k] for k in sorted(self._notices))

    def set_notice(self, kind: str, text: str | None) -> None:
        """Say (or, with None, stop saying) something about this answer in the page."""
        if self._notices.get(kind) == text:
            return
        if text is None:
            self._notices.pop(kind, None)
        else:
            self._notices[kind] = text
        self.notify()

    def notify(self) -> None:
        for ev in self._listeners:
            ev.set()

    def append(self, text: str) -> None:
        # What db_api could not store is replaced here, before anyone sees it.
        self.text += storable(text)
        self.status = "streaming"
        self.progress.set()
        self.notify()

    def append_plan(self, text: str) -> None:
        self.plan += storable(text)
        self.status = "streaming"
        self.progress.set()
        self.notify()

    async def follow(self, offset: int = 0) -> AsyncIterator[Update]:
        """The text after `offset` and the notice, now and on every change, until the
        generation is finished."""
        ev = asyncio.Event()
        self._listeners.add(ev)
        told = ""
        told_plan = ""
        try:
            while True:
                # Clear before reading: a change during the yield re-sets the event.
                ev.clear()
                update = Update(offset=offset)
                if len(self.text) > offset:
                    update.text, offset = self.text[offset:], len(self.text)
                    update.offset = offset
                if self.notice != told and not self.finished.is_set():
                    update.notice = told = self.notice
                if self.plan != told_plan:
                    update.plan = told_plan = self.plan
                if update.text or update.notice is not None or update.plan is not None:
                    yield update
                if self.finished.is_set():
                    return
                await ev.wait()
        finally:
            self._listeners.discard(ev)


class Generations:
    """The generations of this process, keyed by assistant message id: running ones, and
    finished ones whose final state db_api has not taken yet."""

    def __init__(self, settings: Settings, db: DbApi, lm: LmApi, metrics: Metrics) -> None:
        self._settings = settings
        self._db = db
        self._lm = lm
        self._metrics = metrics
        self._known: dict[UUID, Generation] = {}
        self._savers: set[asyncio.Task[None]] = set()
        # Model titles being written (chat_ui.titles), cancelled at shutdown.
        self._titles: set[asyncio.Task[None]] = set()
        # This process as the holder of its answers' leases.
        self.replica = Replica.start(settings)

    def get(self, message_id: UUID, owner: str) -> Generation | None:
        gen = self._known.get(message_id)
        return gen if gen is not None and gen.owner == owner else None

    def running_in(self, chat_id: UUID, owner: str) -> bool:
        """Whether this process is writing an answer of this chat, on any of its branches."""
        return any(
            gen.chat_id == chat_id and gen.owner == owner and not gen.finished.is_set()
            for gen in self._known.values()
        )

    def start(self, owner: str, chat: Chat, answer: Message) -> Generation:
        """Start answering `answer` from the chat's history; idempotent while running."""
        existing = self.get(answer.id, owner)
        if existing is not None and not existing.finished.is_set():
            return existing
        # An answer goes on from its stored text: "" for a new or retried one, the partial
        # text for one continued (chat_ui/versions.py), which this generation appends to.
        gen = Generation(
            message_id=answer.id,
            chat_id=chat.id,
            owner=owner,
            revision=answer.revision,
            text=answer.content,
            plan=answer.plan or "",
        )
        self._known[answer.id] = gen
        self._metrics.active_generations.inc()
        gen.task = asyncio.create_task(self._run(gen, chat), name=f"generate-{answer.id}")
        return gen

    def title_after(self, gen: Generation, question: str) -> None:
        """Once `gen` (a chat's first answer) is complete, have the model title the chat
        in the background (chat_ui.titles)."""

        async def title() -> None:
            await gen.finished.wait()
            if gen.status == "complete" and gen.text.strip():
                await titles.write_title(
                    self._db, self._lm, gen.owner, gen.chat_id, gen.model or "", question, gen.text
                )

        task = asyncio.create_task(title(), name=f"title-{gen.chat_id}")
        self._titles.add(task)
        task.add_done_callback(self._titles.discard)

    async def stop(
        self, message_id: UUID, owner: str, reason: Reason = "stopped"
    ) -> Generation | None:
        """Cancel a running generation and wait until it has finished (its final state
        saved, or kept for saving)."""
        gen = self.get(message_id, owner)
        if gen is None or gen.task is None:
            return None
        if not gen.finished.is_set():
            gen.stop_reason = reason
            gen.task.cancel()
            await self._ended(gen)
        return gen

    async def shutdown(self) -> None:
        """Interrupt what runs (reason server_restarted), try each pending save once more."""
        gens = list(self._known.values())
        for gen in gens:
            if gen.task is not None and not gen.finished.is_set():
                gen.stop_reason = "server_restarted"
                gen.task.cancel()
        for gen in gens:
            await self._ended(gen)
        for saver in [*self._savers, *self._titles]:
            saver.cancel()
        for gen in list(self._known.values()):
            if gen.final_patch is not None and not gen.saved.is_set():
                await self._save_final(gen, gen.final_patch)

    async def _ended(self, gen: Generation) -> None:
        """Wait for a cancelled generation's task; one cancelled before it ever ran (so
        before its own `finally`) is finished here."""
        if gen.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await gen.task
        if not gen.finished.is_set():
            gen.status, gen.reason = "interrupted", gen.stop_reason or "server_restarted"
            await self._finish(gen)

    # --- one answer ------------------------------------------------------------------------

    async def _run(self, gen: Generation, chat: Chat) -> None:
        # Writes the text so far on a clock rather than per token, so that a stalled
        # stream still has its latest text stored within the interval.
        helpers = [
            asyncio.create_task(self._flush_loop(gen), name=f"flush-{gen.message_id}"),
            asyncio.create_task(self._watch_model(gen), name=f"watch-{gen.message_id}"),
            asyncio.create_task(self.replica.keep(self._db, gen), name=f"lease-{gen.message_id}"),
        ]
        try:
            await self._generate(gen, chat)
            gen.status = "complete"
        except asyncio.CancelledError:
            gen.status = "interrupted"
            gen.reason = gen.stop_reason or "server_restarted"
        except LmError as exc:
            gen.status, gen.error, gen.reason = "error", exc.message, exc.reason
        except NotFound:
            # The chat was deleted while answering: nothing left to write to.
            gen.status, gen.reason, gen.deleted = "interrupted", "stopped", True
        except Exception:
            log.exception("generation %s failed", gen.message_id)
            gen.status, gen.reason = "error", "model_error"
            gen.error = "Something went wrong while answering."
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            await self._finish(gen)

    async def _generate(self, gen: Generation, chat: Chat) -> None:
        settings = self._settings
        info = await self._lm.model_info(chat.model or settings.model or "", chat.id)
        model = chat.model or settings.model or (info.id if info else "default")
        turns = history_before(chat, gen.message_id)
        resumed_at = len(gen.text)
        if gen.text:
            # Continuing: the partial answer is the last turn, left open, and the model
            # server (lm_api, llama-server) sends only what follows it.
            turns.append({"role": "assistant", "content": gen.text})
        sampling = sampling_of(chat.params)
        gen.model = model
        system_prompt = chat.system_prompt or settings.default_system_prompt
        if chat.plan_mode:
            # A continued answer keeps the plan it was started with.
            plan_text = gen.plan if resumed_at else await self._write_plan(gen, chat)
            system_prompt = planning.with_plan(system_prompt, plan_text)
        prompt = PromptPlan(
            self._lm,
            model=model,
            chat_id=chat.id,
            system_prompt=system_prompt,
            turns=turns,
            n_ctx=info.n_ctx if info and info.n_ctx else settings.context_tokens,
            max_tokens=chat.params.max_tokens or settings.max_tokens,
        )
        current = await prompt.first()
        # Recorded with the answer: its model, and the settings the chat chose (absent: the
        # defaults), which its stats line shows; max_tokens as sent (the context may cap it).
        gen.params = {k: v for k, v in chat.params.stored().items() if k in SAMPLING_FIELDS}
        if "max_tokens" in gen.params:
            gen.params["max_tokens"] = current.max_tokens
        while True:
            try:
                async for delta in self._lm.stream_chat(
                    model, current.messages, current.max_tokens, chat.id, sampling
                ):
                    if delta.prompt_tokens is not None:
                        gen.prompt_tokens = delta.prompt_tokens
                    if delta.completion_tokens is not None:
                        gen.completion_tokens = delta.completion_tokens
                    if delta.finish_reason in ("stop", "length"):
                        gen.finish_reason = "stop" if delta.finish_reason == "stop" else "length"
                    if not delta.text:
                        gen.progress.set()
                        continue
                    if gen.ttft_ms is None:
                        gen.ttft_ms = (time.monotonic() - gen.started) * 1000
                    gen.append(delta.text)
                return
            except LmError as exc:
                # Still too long for this model: drop more old turns and ask again.
                fresh = len(gen.text) == resumed_at
                smaller = prompt.shrink() if exc.context_exceeded and fresh else None
                if smaller is None:
                    raise
                current = smaller

    async def _write_plan(self, gen: Generation, chat: Chat) -> str:
        """Plan mode's first pass: the planner model's plan for the latest question,
        streamed into `gen.plan`. A Stop here ends the answer before it starts."""
        settings = self._settings
        planner = chat.planner_model or gen.model or ""
        info = await self._lm.model_info(planner, chat.id)
        prompt = await PromptPlan(
            self._lm,
            model=planner,
            chat_id=chat.id,
            system_prompt=planning.PLANNER_PROMPT,
            turns=history_before(chat, gen.message_id),
            n_ctx=info.n_ctx if info and info.n_ctx else settings.context_tokens,
            max_tokens=min(settings.max_tokens, planning.PLAN_MAX_TOKENS),
        ).first()
        async for delta in self._lm.stream_chat(
            planner, prompt.messages, prompt.max_tokens, chat.id
        ):
            if delta.text:
                gen.append_plan(delta.text)
            else:
                gen.progress.set()
        return gen.plan

    async def _finish(self, gen: Generation) -> None:
        """Keep the final state, try to store it (else keep trying in the background),
        and tell the listeners."""
        gen.set_notice("model", None)
        gen.set_notice("storage", None)
        patch = MessagePatch(
            content=gen.text,
            status=gen.status,
            error=gen.error,
            reason=gen.reason,
            finish_reason=gen.finish_reason if gen.status == "complete" else None,
            ttft_ms=gen.ttft_ms,
            generation_ms=(time.monotonic() - gen.started) * 1000,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            revision=gen.next_revision(),
        )
        if gen.model is not None:
            patch.model, patch.params = gen.model, gen.params
        if gen.plan:
            patch.plan = gen.plan
        gen.final_patch = patch
        gen.final = Message(
            id=gen.message_id,
            chat_id=gen.chat_id,
            role="assistant",
            unsaved=True,
            **patch.model_dump(exclude={"revision"}, exclude_unset=True),
        )
        self._metrics.active_generations.dec()
        self._metrics.generations.labels(outcome=gen.status).inc()
        if gen.superseded is not None:
            gen.final = gen.superseded
        try:
            if gen.deleted or gen.superseded or await self._save_final(gen, patch):
                self._forget(gen)
            else:
                saver = asyncio.create_task(
                    self._keep_saving(gen, patch), name=f"save-{gen.message_id}"
                )
                self._savers.add(saver)
                saver.add_done_callback(self._savers.discard)
        finally:
            gen.finished.set()
            gen.notify()

    def _forget(self, gen: Generation) -> None:
        gen.saved.set()
        if self._known.get(gen.message_id) is gen:
            del self._known[gen.message_id]
        gen.notify()

    async def _save_final(self, gen: Generation, patch: MessagePatch) -> bool:
        """One try at storing the final state; False when storage cannot be reached."""
        try:
            gen.final = await self._db.update_message(gen.owner, gen.message_id, patch)
        except NotFound:
            return True  # deleted meanwhile: nothing to keep
        except Stale as exc:
            # db_api holds a newer state: a try whose answer was lost has landed already,
            # or someone else ended the answer. What it holds wins.
            if exc.stored is not None:
                gen.final = exc.stored
            return True
        except DbUnavailable as exc:
            log.warning("final save of %s failed: %s (kept, retried)", gen.message_id, exc)
            return False
        except DbRejected as exc:
            log.error("db_api refused the final state of %s: %s", gen.message_id, exc.detail)
            await self._save_refused(gen, exc.detail)
            return True
        return True

    async def _save_refused(self, gen: Generation, detail: str) -> None:
        # Never leave the answer running with nothing behind it: end it with the reason.
        patch = MessagePatch(
            status="error",
            reason="storage_unreachable",
            error=f"Parlor's storage refused this answer: {detail}",
            revision=gen.next_revision(),
        )
        with contextlib.suppress(DbUnavailable, DbRejected, NotFound):
            gen.final = await self._db.update_message(gen.owner, gen.message_id, patch)

    async def _keep_saving(self, gen: Generation, patch: MessagePatch) -> None:
        """Retry the final save with backoff until db_api takes it."""
        delay, longest = SAVE_FIRST_PAUSE_S, self._settings.save_retry_max_s
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
            if await self._save_final(gen, patch):
                log.info("final state of %s saved after storage came back", gen.message_id)
                self._forget(gen)
                return

    async def _flush_loop(self, gen: Generation) -> None:
        flushed = flushed_plan = 0
        while True:
            await asyncio.sleep(self._settings.flush_interval_s)
            if len(gen.text) == flushed and len(gen.plan) == flushed_plan:
                continue
            text, plan = gen.text, gen.plan
            patch = MessagePatch(content=text, status="streaming", revision=gen.next_revision())
            if plan:
                patch.plan = plan
            try:
                stored = await self._db.update_message(gen.owner, gen.message_id, patch)
                flushed, flushed_plan = len(text), len(plan)
                gen.set_notice("storage", None)
                if obey(gen, stored):  # stopped from another replica
                    return
            except NotFound:
                # The chat was deleted while answering: stop answering it.
                gen.deleted = True
                if gen.task is not None:
                    gen.task.cancel()
                return
            except Stale as exc:
                if exc.stored is not None and exc.stored.status in FINAL:
                    # Someone else ended this answer: stop writing it.
                    gen.superseded = exc.stored
                    if gen.task is not None:
                        gen.task.cancel()
                    return
            except DbUnavailable as exc:
                # The text is still in memory and the final save keeps trying.
                log.warning("partial flush of %s failed: %s", gen.message_id, exc)
                gen.set_notice("storage", STORAGE_DOWN)
            except DbRejected as exc:
                log.error("db_api refused a partial write of %s: %s", gen.message_id, exc)

    async def _watch_model(self, gen: Generation) -> None:
        """Tell the page within `lm_quiet_s` when the model server is silent, and why."""
        quiet_s = self._settings.lm_quiet_s
        while True:
            gen.progress.clear()
            try:
                # Not asyncio.wait_for: on Python 3.11 it can swallow this task's
                # cancellation when progress comes at the same moment.
                async with asyncio.timeout(quiet_s):
                    await gen.progress.wait()
            except TimeoutError:
                alive = await self._lm.health(timeout_s=min(quiet_s, 3.0), chat_id=gen.chat_id)
                gen.set_notice("model", MODEL_QUIET if alive else MODEL_DOWN)
            else:
                gen.set_notice("model", None)
