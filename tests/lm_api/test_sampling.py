"""Sampling as llama.cpp users expect it, on real llama.cpp with the toy model.

- The sampler chain (lm_api.engines.sampling) picks the same tokens as llama-cpp-python's
  own chain for the same seed: an independent check of llama.cpp's order and of each
  setting.
- The batched engine answers exactly as the FIFO engine for the same seed, setting by
  setting, alone and while other answers run, including prompts read in chunks between
  other answers' tokens.
- Settings out of range are a 400 in OpenAI's shape, naming the parameter.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest
from llama_cpp._internals import LlamaBatch

from lm_api.engines.batched import StepBudget
from lm_api.engines.sampling import SamplerChain, Sampling
from lm_api.engines.sequence import common_prefix
from tests.lm_api.conftest import (
    Gate,
    batch_rows,
    health,
    on_decode,
    poll_until,
    serve,
    toy_settings,
)

QUESTION = [{"role": "user", "content": "tell me a story about the river and the stone"}]

# Each setting on its own, then a few together; every one with a seed.
CASES: list[dict[str, Any]] = [
    {},
    {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
    {"temperature": 1.2, "top_k": 5},
    {"temperature": 1.2, "top_k": 0, "top_p": 0.5},
    {"temperature": 1.2, "top_k": 0, "min_p": 0.2},
    {"temperature": 0},
    {"temperature": 1.0, "repeat_penalty": 1.5},
    {"temperature": 1.0, "repeat_penalty": 1.3, "repeat_last_n": 8},
    {"temperature": 1.0, "frequency_penalty": 1.5},
    {"temperature": 1.0, "presence_penalty": 2.0},
    {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.1, "repeat_penalty": 1.1},
]


def completion(url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return dict(r.json())


def answer(url: str, seed: int, max_tokens: int = 24, **sampling: Any) -> str:
    body = {"messages": QUESTION, "max_tokens": max_tokens, "seed": seed, **sampling}
    return str(completion(url, body)["choices"][0]["message"]["content"])


@pytest.fixture(scope="module")
def fifo_url(toy_model: Path) -> Iterator[str]:
    with serve(toy_settings(toy_model, engine="fifo")) as url:
        yield url


@pytest.fixture(scope="module")
def batched_url(toy_model: Path) -> Iterator[str]:
    with serve(toy_settings(toy_model, engine="batched", parallel=4)) as url:
        yield url


# --- the chain against llama-cpp-python's own -------------------------------------------


@pytest.fixture(scope="module")
def llm(toy_model: Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(toy_model), n_ctx=256, n_threads=1, verbose=False)
    yield model
    model.close()


def reference_tokens(llm: llama_cpp.Llama, prompt: list[int], n: int, s: Sampling) -> list[int]:
    """llama-cpp-python's generate: its chain is penalties, top-k, typical, top-p, min-p,
    temperature, dist; its penalties see only the answer (it does not prime them)."""
    llm.reset()
    assert s.seed is not None
    llm.set_seed(s.seed)
    llm.last_n_tokens_size = s.repeat_last_n
    out: list[int] = []
    tokens = llm.generate(
        prompt,
        reset=False,
        temp=s.temperature,
        top_k=s.top_k,
        top_p=s.top_p,
        min_p=s.min_p,
        repeat_penalty=s.repeat_penalty,
        frequency_penalty=s.frequency_penalty,
        presence_penalty=s.presence_penalty,
    )
    for token in tokens:
        out.append(token)
        if len(out) == n:
            break
    return out


def chain_tokens(llm: llama_cpp.Llama, prompt: list[int], n: int, sampling: Sampling) -> list[int]:
    llm.reset()
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    chain = SamplerChain(sampling, vocab, n_ctx=llm.n_ctx())
    try:
        llm.eval(prompt)
        out: list[int] = []
        while len(out) < n:
            out.append(chain.sample(llm.ctx, -1))
            llm.eval([out[-1]])
        return out
    finally:
        chain.close()


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "defaults")
def test_the_chain_picks_what_llama_cpp_python_picks_for_the_same_seed(
    llm: llama_cpp.Llama, case: dict[str, Any]
) -> None:
    prompt = llm.tokenize(b"the river and the stone", add_bos=True)
    sampling = Sampling(**{**case, "seed": 11})
    expected = reference_tokens(llm, prompt, 32, sampling)
    assert chain_tokens(llm, prompt, 32, sampling) == expected


def test_settings_change_what_is_picked(llm: llama_cpp.Llama) -> None:
    """The cases above are not all the same answer (each setting does something)."""
    prompt = llm.tokenize(b"the river and the stone", add_bos=True)
    answers = {
        tuple(chain_tokens(llm, prompt, 32, Sampling(**{**case, "seed": 11}))) for case in CASES
    }
    assert len(answers) >= len(CASES) - 2


def test_a_logit_bias_of_100_makes_its_token_win(llm: llama_cpp.Llama) -> None:
    prompt = llm.tokenize(b"the river", add_bos=True)
    out = chain_tokens(llm, prompt, 8, Sampling(seed=1, temperature=1.5, logit_bias=((77, 100.0),)))
    assert out == [77] * 8
    banned = chain_tokens(llm, prompt, 16, Sampling(seed=1, temperature=0))
    first = banned[0]
    out = chain_tokens(
        llm, prompt, 16, Sampling(seed=1, temperature=0, logit_bias=((first, -100.0),))
    )
    assert first not in out


# --- the batched engine against the FIFO engine ----------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "defaults")
def test_batched_answers_as_fifo_for_the_same_seed(
    fifo_url: str, batched_url: str, case: dict[str, Any]
) -> None:
    expected = answer(fifo_url, seed=5, **case)
    assert expected
    assert answer(batched_url, seed=5, **case) == expected


def test_logit_bias_and_stop_the_same_in_both_engines(fifo_url: str, batched_url: str) -> None:
    plain = answer(fifo_url, seed=3, temperature=0)
    # The first answer token's text is a stop string: the answer ends before it.
    stop = plain[:1] if plain[:1].strip() else plain[:2]
    for url in (fifo_url, batched_url):
        assert answer(url, seed=3, temperature=0, stop=[stop]) == ""
    biased: dict[str, Any] = {"logit_bias": {"77": 100}, "temperature": 1.0}
    expected = answer(fifo_url, seed=3, **biased)
    assert len(set(expected)) < len(expected)  # one token, over and over
    assert answer(batched_url, seed=3, **biased) == expected


def test_without_a_seed_answers_differ(batched_url: str) -> None:
    body = {"messages": QUESTION, "max_tokens": 24, "temperature": 1.5, "top_k": 0}
    answers = {completion(batched_url, body)["choices"][0]["message"]["content"] for _ in range(4)}
    assert len(answers) > 1


def run_together(url: str, bodies: list[dict[str, Any]]) -> list[str]:
    out: list[str] = [""] * len(bodies)

    def one(i: int) -> None:
        out[i] = completion(url, bodies[i])["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _bodies(temperature: float) -> list[dict[str, Any]]:
    return [
        {
            "messages": [{"role": "user", "content": f"chat number {i} " * (1 + 3 * i)}],
            "max_tokens": 20 + 5 * i,
            "seed": 100 + i,
            "temperature": temperature,
            "repeat_penalty": 1.2,
        }
        for i in range(4)
    ]


def test_a_seeded_answer_is_the_fifo_engines(fifo_url: str, batched_url: str) -> None:
    # One at a time, both engines read the prompt in one pass and decode alone: the same
    # logits, so the same seeded chain must draw the same tokens.
    bodies = _bodies(temperature=1.0)
    expected = [completion(fifo_url, b)["choices"][0]["message"]["content"] for b in bodies]
    assert [completion(batched_url, b)["choices"][0]["message"]["content"] for b in bodies] == (
        expected
    )


def test_answers_decoded_together_are_those_decoded_alone(fifo_url: str, batched_url: str) -> None:
    # Greedy, with penalties: each slot keeps its own history. (Not at temperature 1:
    # llama.cpp's arithmetic differs in the last bits with how a batch is composed and
    # how a prompt is split into chunks, as llama-server's does, and a seeded draw can
    # land on the other side of a boundary; the greedy choice does not move.)
    bodies = _bodies(temperature=0.0)
    expected = [completion(fifo_url, b)["choices"][0]["message"]["content"] for b in bodies]
    assert run_together(batched_url, bodies) == expected


# --- stall-free batching ---------------------------------------------------------------


def test_a_long_prompt_is_read_in_chunks_beside_a_running_answer(
    toy_model: Path, fifo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one answer streams, a long prompt is read at most CHUNK tokens a step, each
    step still carrying the running answer's next token; both answers come out as the
    FIFO engine gives them (chunked reading changes nothing)."""
    chunk = 16
    monkeypatch.setattr(
        StepBudget,
        "prompt_tokens",
        lambda self, rows, protect=True: chunk if rows and protect else self.limit - rows,
    )
    steps: list[tuple[list[int], int]] = []  # (sequence of each row, rows)
    started, release = threading.Event(), threading.Event()

    def hook(batch: LlamaBatch) -> None:
        steps.append((batch_rows(batch), batch.batch.n_tokens))
        if started.is_set():  # the short answer runs: hold it until the long one waits
            assert release.wait(60), "never released"

    on_decode(monkeypatch, hook)
    short = {"messages": QUESTION, "max_tokens": 200, "seed": 1, "temperature": 1.0}
    long_text = "the river carries the stone down to the sea " * 30
    long = {
        "messages": [{"role": "user", "content": long_text}],
        "max_tokens": 8,
        "seed": 2,
        "temperature": 1.0,
    }
    expected_short = completion(fifo_url, short)["choices"][0]["message"]["content"]
    expected_long = completion(fifo_url, long)["choices"][0]["message"]["content"]
    results: dict[str, str] = {}
    with serve(toy_settings(toy_model, engine="batched", parallel=2)) as url:

        def run_short() -> None:
            body = {**short, "stream": True}
            parts: list[str] = []
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        parts.append(delta["content"])
                        started.set()
            results["short"] = "".join(parts)

        t = threading.Thread(target=run_short)
        t.start()
        assert started.wait(60)

        def run_long() -> None:
            results["long"] = completion(url, long)["choices"][0]["message"]["content"]

        t2 = threading.Thread(target=run_long)
        t2.start()
        poll_until(lambda: health(url)["queue_depth"] == 1, "the long request to wait")
        release.set()
        t.join(120)
        t2.join(120)
        prompt_tokens = completion(url, {**long, "max_tokens": 1})["usage"]["prompt_tokens"]
    assert results == {"short": expected_short, "long": expected_long}
    mixed = [(seqs, n) for seqs, n in steps if len(set(seqs)) == 2]
    # The long prompt took several steps, each with the running answer's token first and
    # at most `chunk` prompt tokens after it.
    assert len(mixed) >= prompt_tokens // chunk
    for seqs, n in mixed:
        assert n <= 1 + chunk
        assert seqs[0] != seqs[1] and seqs.count(seqs[0]) == 1


def test_prompts_of_a_burst_are_read_whole_beside_an_answer_that_just_began(
    toy_model: Path, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that arrive while the first one's prompt is read are read together in
    the next step, whole: the first answer has no pace to protect yet (one token out)."""
    monkeypatch.setattr(
        StepBudget,
        "prompt_tokens",
        lambda self, rows, protect=True: 4 if rows and protect else self.limit - rows,
    )
    steps: list[list[int]] = []
    on_decode(monkeypatch, lambda batch: steps.append(batch_rows(batch)))
    bodies = [
        {"messages": [{"role": "user", "content": f"chat {i} " * 10}], "max_tokens": 6}
        for i in range(4)
    ]
    out: dict[int, dict[str, Any]] = {}
    with serve(toy_settings(toy_model, engine="batched", parallel=4)) as url:

        def one(i: int) -> None:
            out[i] = completion(url, bodies[i])

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        threads[0].start()
        gate.wait_entered()  # the first prompt is being read ...
        for t in threads[1:]:
            t.start()
        poll_until(lambda: health(url)["queue_depth"] == 3, "three requests to wait")
        gate.release()  # ... while three more arrive
        for t in threads:
            t.join(60)
    prompts = [out[i]["usage"]["prompt_tokens"] for i in range(4)]
    first, second = steps[0], steps[1]
    assert len(first) == prompts[0]
    # The first answer's second token and the three other prompts, whole, in one step.
    assert len(second) == 1 + sum(prompts[1:])
    assert all(out[i]["usage"]["completion_tokens"] == 6 for i in range(4))


def test_with_no_answer_running_a_prompt_is_read_whole(
    toy_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    on_decode(monkeypatch, lambda batch: sizes.append(batch.batch.n_tokens))
    with serve(toy_settings(toy_model, engine="batched", parallel=2)) as url:
        body = {"messages": [{"role": "user", "content": "stone " * 80}], "max_tokens": 2}
        usage = completion(url, body)["usage"]
    assert sizes[0] == usage["prompt_tokens"]  # one step (n_batch 512), then one token each


def test_the_step_budget_learns_what_a_prompt_token_costs() -> None:
    budget = StepBudget(factor=2.0, limit=512)
    assert budget.prompt_tokens(0) == 512  # nobody to hold up
    assert budget.prompt_tokens(2) == StepBudget.FIRST_GUESS
    for _ in range(20):
        # A plain step of two answers: 38 ms of decode, 40 ms in all.
        budget.record(2, 0, 0.038, 0.040, budgeted=True)
        # Eight prompt tokens add 40 ms to the decode: 5 ms each.
        budget.record(2, 8, 0.078, 0.080, budgeted=True)
    # Within twice a plain step: 40 ms more, 8 tokens (the steps came as predicted).
    assert budget.prompt_tokens(2) == 8
    assert budget.prompt_tokens(3) == StepBudget.FIRST_GUESS  # not measured yet with 3 rows
    slow = StepBudget(factor=2.0, limit=512)
    slow.record(1, 0, 0.010, 0.011, budgeted=True)
    slow.record(1, 4, 0.500, 0.501, budgeted=True)
    assert slow.prompt_tokens(1) == 1  # a prompt always moves
    assert StepBudget(factor=0, limit=512).prompt_tokens(3) == 509  # no limit asked for
    three = StepBudget(factor=3.0, limit=64)
    three.record(1, 0, 0.010, 0.010, budgeted=True)
    three.record(1, 10, 0.020, 0.020, budgeted=True)  # 1 ms a token: 20 ms more allowed
    assert three.prompt_tokens(1) == 20
    three.record(1, 0, 0.001, 0.001, budgeted=True)  # the moving average follows slowly
    assert 0 < three.prompt_tokens(1) < 20


def _steady(budget: StepBudget, plain_s: list[float], token_s: float, tokens: int) -> None:
    """Plain steps of two answers taking `plain_s` in turn, each followed by a step with
    `tokens` prompt tokens that add `token_s` apiece."""
    for decode_s in plain_s * 10:
        budget.record(2, 0, decode_s, decode_s, budgeted=True)
        budget.record(2, tokens, decode_s + tokens * token_s, 0, budgeted=True)


def test_the_step_budget_keeps_a_margin_for_noise() -> None:
    # Times in powers of two, so that the arithmetic is exact.
    quiet, noisy = StepBudget(factor=2.5, limit=512), StepBudget(factor=2.5, limit=512)
    _steady(quiet, [1 / 16], 1 / 128, 8)
    _steady(noisy, [1 / 32, 3 / 32], 1 / 128, 8)  # the same 1/16 s on average, but jumpy
    # Quiet: 1.5 plain steps spare (3/32 s), 12 tokens of 1/128 s.
    assert quiet.prompt_tokens(2) == 12
    # Noisy: fewer, so that a step that lands late still stays under the ceiling; but
    # never less than half of the spare time.
    assert 6 <= noisy.prompt_tokens(2) < 12


def test_a_step_carries_at_most_twice_the_prompt_tokens_of_the_one_before() -> None:
    budget = StepBudget(factor=2.0, limit=512)
    for _ in range(5):
        budget.record(2, 0, 0.040, 0.040, budgeted=True)
    budget.record(2, 4, 0.060, 0.060, budgeted=True)  # 5 ms a token
    assert budget.prompt_tokens(2) == 8  # 40 ms spare; at most 2 * 4 + 1 = 9
    budget.record(2, 8, 0.080, 0.080, budgeted=True)
    # One stalled plain step (a second), then a mixed step that looks as if its prompt
    # tokens cost nothing beside it: the estimate now allows far more than a step can
    # carry, but the next step grows only twofold.
    budget.record(2, 0, 1.0, 1.0, budgeted=True)
    budget.record(2, 8, 0.080, 0.080, budgeted=True)
    assert budget.prompt_tokens(2) == 2 * 8 + 1


def test_a_prompt_read_whole_does_not_teach_the_budget() -> None:
    budget = StepBudget(factor=2.0, limit=512)
    for _ in range(5):
        budget.record(2, 0, 0.040, 0.040, budgeted=True)
    # A burst's prompt read whole beside answers that are not streaming yet: 100 tokens
    # at 1 ms each, far cheaper per token than the few-token chunks the budget plans.
    budget.record(2, 100, 0.140, 0.140, budgeted=False)
    assert budget.prompt_tokens(2) == StepBudget.FIRST_GUESS  # still not measured
    budget.record(2, 2, 0.060, 0.060, budgeted=True)  # 10 ms a token in a small chunk
    assert budget.prompt_tokens(2) == 4


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_k": -1}, "top_k"),
        ({"top_k": "5"}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"top_p": 1.1}, "top_p"),
        ({"repeat_penalty": 0}, "repeat_penalty"),
        ({"repeat_penalty": 2.5}, "repeat_penalty"),
        ({"repeat_last_n": -2}, "repeat_last_n"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"seed": -2}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"5": "high"}}, "logit_bias"),
        ({"logit_bias": [[5, 1]]}, "logit_bias"),
        ({"logit_bias": {"999999": 5}}, "logit_bias"),  # not in the model's vocabulary
    ],
)
def test_sampling_settings_out_of_range_are_400(
    batched_url: str, extra: dict[str, Any], param: str
) -> None:
    body = {"messages": QUESTION, "max_tokens": 2, **extra}
    r = httpx.post(batched_url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)
    assert error["message"]


def test_llama_server_settings_are_accepted(batched_url: str) -> None:
    body = {
        "messages": QUESTION,
        "max_tokens": 3,
        "top_k": 10,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
        "repeat_last_n": -1,
        "seed": -1,
        "logit_bias": {"5": -100, "6": 2.5},
    }
    assert completion(batched_url, body)["usage"]["completion_tokens"] == 3
