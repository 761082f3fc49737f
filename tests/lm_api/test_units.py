"""Small pieces: stop strings, thread defaults, settings."""

from __future__ import annotations

import os

import pytest

from lm_api.config import Settings, physical_cores
from lm_api.stops import StopMatcher


def feed_all(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = ""
    for piece in pieces:
        text, hit = m.feed(piece)
        out += text
        if hit:
            return out, True
    return out + m.flush(), False


@pytest.mark.parametrize(
    ("stops", "pieces", "expected"),
    [
        ((), ["a", "b"], ("ab", False)),
        (("<|im_end|>",), ["Hello", " <|im", "_end|>", "more"], ("Hello ", True)),
        (("<|im_end|>",), ["Hello <", "|nope"], ("Hello <|nope", False)),
        (("END", "STOP"), ["xxST", "OPyyEND"], ("xx", True)),
        (("ab",), ["a"], ("a", False)),  # a held-back prefix is released at the end
        (("\nUser:",), ["Hi\nUs", "ually"], ("Hi\nUsually", False)),
    ],
)
def test_stop_matcher(stops: tuple[str, ...], pieces: list[str], expected: object) -> None:
    assert feed_all(stops, pieces) == expected


def test_stop_matcher_holds_back_only_a_possible_stop_prefix() -> None:
    m = StopMatcher(("<|im_end|>",))
    assert m.feed("abc<|im") == ("abc", False)
    assert m.feed("x") == ("<|imx", False)


def test_threads_default_to_physical_cores_and_never_exceed_usable_cores() -> None:
    usable = len(os.sched_getaffinity(0))
    assert 1 <= physical_cores() <= usable
    assert Settings(n_threads=None).threads == physical_cores()
    assert Settings(n_threads=10_000).threads == usable
    assert Settings(n_threads=1).threads == 1


def test_settings_come_from_lm_api_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LM_API_MODEL_PATH", "/models/x.gguf")
    monkeypatch.setenv("LM_API_N_GPU_LAYERS", "-1")
    monkeypatch.setenv("LM_API_MAX_QUEUE", "3")
    s = Settings()
    assert s.served_model_name == "x"
    assert s.n_gpu_layers == -1
    assert s.max_queue == 3
