"""/health and friends while the model loads and after a failed load."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from lm_api.config import Settings
from lm_api.engines.base import load_llama
from tests.lm_api.conftest import poll_until, serve, toy_settings
from tests.support import wait_healthy

BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_health_is_503_loading_until_the_model_is_loaded(toy_model: Path, engine: str) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_loader(settings: Settings) -> Any:
        entered.set()
        assert release.wait(60), "test never released the loader"
        return load_llama(settings)

    with serve(toy_settings(toy_model, engine=engine), loader=slow_loader, healthy=False) as url:
        try:
            assert entered.wait(60)
            h = httpx.get(url + "/health")
            assert h.status_code == 503
            assert h.json()["status"] == "loading"
            models = httpx.get(url + "/v1/models")
            assert models.status_code == 503
            assert models.json()["error"]["code"] == "model_not_loaded"
            chat = httpx.post(url + "/v1/chat/completions", json=BODY)
            assert chat.status_code == 503
            assert "retry-after" in chat.headers
            tokens = httpx.post(url + "/tokenize", json={"content": "hi"})
            assert tokens.status_code == 503
            assert tokens.json()["error"]["code"] == "model_not_loaded"
            assert httpx.get(url + "/metrics").status_code == 200
        finally:
            release.set()
        wait_healthy(url + "/health", deadline_s=60)
        assert httpx.post(url + "/v1/chat/completions", json=BODY, timeout=60).status_code == 200


def _garbage(tmp_path: Path) -> Path:
    p = tmp_path / "notes.gguf"
    p.write_text("this is not a model\n" * 100)
    return p


def _truncated(tmp_path: Path, toy_model: Path) -> Path:
    p = tmp_path / "truncated.gguf"
    p.write_bytes(toy_model.read_bytes()[:4096])
    return p


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp, toy: tmp / "missing.gguf", "model file not found"),
        (lambda tmp, toy: _garbage(tmp), "not a GGUF file"),
        (lambda tmp, toy: _truncated(tmp, toy), "model failed to load"),
    ],
    ids=["missing", "not-gguf", "truncated"],
)
def test_a_failed_load_is_503_with_the_reason(
    tmp_path: Path, toy_model: Path, engine: str, make: Any, expected: str
) -> None:
    path = make(tmp_path, toy_model)
    with serve(toy_settings(path, engine=engine), healthy=False) as url:
        poll_until(lambda: httpx.get(url + "/health").json()["status"] == "failed", "failure")
        h = httpx.get(url + "/health")
        assert h.status_code == 503
        assert expected in h.json()["detail"]
        chat = httpx.post(url + "/v1/chat/completions", json=BODY)
        assert chat.status_code == 503
        assert expected in chat.json()["error"]["message"]
        assert "Traceback" not in chat.text


def test_an_unusable_chat_format_is_503_with_the_reason(toy_model: Path, engine: str) -> None:
    with serve(toy_settings(toy_model, chat_format="llama-2", engine=engine), healthy=False) as url:
        poll_until(lambda: httpx.get(url + "/health").json()["status"] == "failed", "failure")
        detail = httpx.get(url + "/health").json()["detail"]
    assert "chat format not usable" in detail
    assert "LM_API_CHAT_FORMAT" in detail
