"""Memory comes back when a model is unloaded: the resident memory of a real lm_api
process, swapping two ~50 MB models back and forth with LM_API_MAX_LOADED=1, stays within
half a model of what one loaded model takes; with both kept loaded (the control) it grows
by more than that, so the measurement does see a model's weights."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parlor.synth import write_gguf
from tests.support import Service, run_service


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("memory")
    write_gguf(d / "a.gguf", preset="small", seed=0)
    shutil.copy(d / "a.gguf", d / "b.gguf")  # another file: its own pages
    return d


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def answer(svc: Service, model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    r = httpx.post(svc.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model


@contextlib.contextmanager
def lm_api(models: Path, tmp_path: Path, engine: str, max_loaded: int) -> Iterator[Service]:
    env = {
        "LM_API_MODEL_PATH": str(models / "a.gguf"),
        "LM_API_MAX_LOADED": str(max_loaded),
        "LM_API_ENGINE": engine,
        "LM_API_N_CTX": "256",
        "LM_API_PARALLEL": "2",
        "LM_API_N_THREADS": "1",
    }
    with run_service("lm_api", "lm_api.main:app", env, tmp_path) as svc:
        yield svc


@pytest.mark.parametrize("engine", ["fifo", "batched"])
def test_an_unloaded_models_memory_comes_back(
    two_models: Path, tmp_path: Path, engine: str
) -> None:
    size = (two_models / "a.gguf").stat().st_size
    with lm_api(two_models, tmp_path, engine, max_loaded=1) as svc:
        answer(svc, "a")  # every weight touched once
        one_model = rss_bytes(svc.proc.pid)
        seen = []
        for model in ("b", "a", "b", "a", "b"):
            answer(svc, model)
            seen.append(rss_bytes(svc.proc.pid))
            loaded = httpx.get(svc.url + "/health").json()["loaded"]
            assert loaded == [model]
    # Each swap gave the other model's memory back: five loads, never two models' worth.
    assert max(seen) < one_model + size / 2, (one_model, seen, size)


def test_the_control_two_loaded_models_take_a_model_more(two_models: Path, tmp_path: Path) -> None:
    size = (two_models / "a.gguf").stat().st_size
    with lm_api(two_models, tmp_path, "batched", max_loaded=2) as svc:
        answer(svc, "a")
        one_model = rss_bytes(svc.proc.pid)
        answer(svc, "b")
        both = rss_bytes(svc.proc.pid)
        assert sorted(httpx.get(svc.url + "/health").json()["loaded"]) == ["a", "b"]
    assert both > one_model + size / 2, (one_model, both, size)
