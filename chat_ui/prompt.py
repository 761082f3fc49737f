"""What one answer sends to the model: the history that fits the model's context.

Tokens are counted with the model's own tokenizer (lm_api's and llama-server's
`POST /tokenize`) when the server offers it, else estimated. Either way, when the server
still says the prompt is too long (`context_length_exceeded`), older turns are dropped
and the request is tried again, down to the latest question alone: one token-dense
message can fail its own answer, never every later one.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from chat_ui.clients import LmApi
from chat_ui.contracts import Chat

# Per-message overhead of chat templates (role markers, separators), in tokens.
MESSAGE_OVERHEAD_TOKENS = 8
# At most this many counting rounds to bring a measured prompt within the budget.
MAX_FIT_ROUNDS = 6


def estimate_tokens(text: str) -> int:
    # Deliberately pessimistic (about 3 characters per token, where English averages ~4):
    # overestimating only drops an old turn a little early, underestimating is corrected
    # by counting (or by the server's refusal).
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
class Prompt:
    messages: list[dict[str, str]]
    max_tokens: int


class PromptPlan:
    """The prompt of one answer, and smaller ones when the server finds it too long."""

    def __init__(
        self,
        lm: LmApi,
        *,
        model: str,
        chat_id: UUID,
        system_prompt: str,
        turns: list[dict[str, str]],
        n_ctx: int,
        max_tokens: int,
    ) -> None:
        self._lm = lm
        self._model = model
        self._chat_id = chat_id
        self._system = system_prompt
        self._turns = turns
        self._n_ctx = n_ctx
        # Never ask for more than half the context, so a small model still gets history.
        self._max_tokens = max(1, min(max_tokens, n_ctx // 2))
        # The budget fit_history works with, in estimated tokens; it only ever shrinks.
        self._estimated_budget = n_ctx - self._max_tokens
        self._current: Prompt | None = None

    def _fit(self) -> list[dict[str, str]]:
        return fit_history(self._system, self._turns, self._estimated_budget)

    async def first(self) -> Prompt:
        """The history that fits, measured with the model's tokenizer when it has one."""
        messages = self._fit()
        max_tokens = self._max_tokens
        budget = self._n_ctx - max_tokens
        for _ in range(MAX_FIT_ROUNDS):
            count = await self._lm.count_tokens(self._model, messages, self._chat_id)
            if count is None or count <= budget:
                break
            if len(messages) <= self._minimal_length():
                # The latest question alone is too long for the usual budget: give it the
                # room the answer would have had (the server refuses if even that fails).
                if count < self._n_ctx:
                    max_tokens = self._n_ctx - count
                break
            # Scale the estimate by what the tokenizer said, dropping at least one turn.
            self._estimated_budget = self._estimated_budget * budget // count
            smaller = self._fit()
            while len(smaller) >= len(messages) and self._estimated_budget > 1:
                self._estimated_budget //= 2
                smaller = self._fit()
            messages = smaller
        self._current = Prompt(messages, max_tokens)
        return self._current

    def shrink(self) -> Prompt | None:
        """A prompt with fewer old turns after the server said the last was too long;
        None when only the latest question is left."""
        assert self._current is not None, "first() comes first"
        if len(self._current.messages) <= self._minimal_length():
            return None
        before = len(self._current.messages)
        messages = self._current.messages
        while len(messages) >= before and self._estimated_budget > 1:
            self._estimated_budget //= 2
            messages = self._fit()
        if len(messages) >= before:
            messages = [*messages[: 1 if self._system else 0], messages[-1]]
        self._current = Prompt(messages, self._current.max_tokens)
        return self._current

    def _minimal_length(self) -> int:
        return (1 if self._system else 0) + 1
