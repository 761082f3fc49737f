"""How a token is picked: the request's sampling settings and llama.cpp's sampler chain.

The chain is the one llama-server builds (llama.cpp's `common_sampler_init` with its
default order): logit bias, repetition penalties, top-k, top-p, min-p, temperature, then
a draw seeded by the request (or the most likely token at temperature 0). As in
llama-server, the penalties also see the prompt's last tokens (`prime`), so a repeat
penalty discourages repeating the question as well as the answer so far.

Both engines sample through `SamplerChain`, so for the same seed and the same logits they
pick the same tokens. Samplers that would change nothing (a penalty of 1, top-k 0, top-p
1, min-p 0) are left out of the chain: each pass over the 151,936 logits of a Qwen
vocabulary costs time at every token, and top-k first makes what follows sort 40
candidates instead of the whole vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp

# llama.cpp's defaults (common_params_sampling), which llama-server applies to requests
# that do not say otherwise.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_LAST_N = 64


@dataclass(frozen=True)
class Sampling:
    """A request's sampling settings (validated by the HTTP layer's schema)."""

    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K  # 0: no cut
    top_p: float = DEFAULT_TOP_P  # 1: no cut
    min_p: float = DEFAULT_MIN_P  # 0: no cut
    repeat_penalty: float = 1.0  # 1: none
    repeat_last_n: int = DEFAULT_REPEAT_LAST_N  # how many recent tokens penalties look at
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None  # None or -1: a fresh random seed
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)

    @property
    def penalizes(self) -> bool:
        neutral = (
            self.repeat_penalty == 1.0
            and self.frequency_penalty == 0.0
            and self.presence_penalty == 0.0
        )
        return self.repeat_last_n != 0 and not neutral

    def check(self, n_vocab: int) -> None:
        """Raise ValueError for what only the model can judge (token ids of the bias)."""
        for token, _ in self.logit_bias:
            if not 0 <= token < n_vocab:
                raise ValueError(
                    f"logit_bias: token {token} is not in the model's vocabulary (0-{n_vocab - 1})"
                )


DEFAULT_SAMPLING = Sampling()


def resolve_seed(seed: int | None) -> int:
    """The 32-bit seed of the draw: the request's, or a random one for None and -1."""
    if seed is None or seed == -1:
        return random.getrandbits(31)
    return seed & 0xFFFFFFFF


class SamplerChain:
    """A llama.cpp sampler chain for one generation; `close` frees it."""

    def __init__(self, sampling: Sampling, vocab: Any, *, n_ctx: int) -> None:
        self._chain: Any = None
        s = sampling
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        s.check(n_vocab)
        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = llama_cpp.llama_sampler_chain_init(params)
        self._chain = chain
        add = llama_cpp.llama_sampler_chain_add
        if s.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(s.logit_bias))(
                *(llama_cpp.llama_logit_bias(token, bias) for token, bias in s.logit_bias)
            )
            add(chain, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
        self.penalizes = s.penalizes
        last_n = n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
        self._last_n = last_n
        if self.penalizes:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
                ),
            )
        if s.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return
        if 0 < s.top_k < n_vocab:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(resolve_seed(s.seed)))

    def prime(self, tokens: Sequence[int]) -> None:
        """Let the penalties see the prompt (as llama-server does)."""
        if self.penalizes:
            # The penalties keep only the last `last_n` tokens: the rest would fall out.
            for token in tokens[len(tokens) - self._last_n :]:
                llama_cpp.llama_sampler_accept(self._chain, token)

    def sample(self, ctx: Any, index: int) -> int:
        """Pick from the logits of batch row `index` (-1: the last); the penalties see it."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
