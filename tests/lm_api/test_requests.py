"""Bad requests get a clear 4xx in OpenAI's error shape; the token is checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.lm_api.conftest import serve, toy_settings

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages.0.role"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": USER, "max_tokens": -1}, "max_tokens"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "max_tokens": "5"}, "max_tokens"),
        ({"messages": USER, "max_tokens": 2.5}, "max_tokens"),
        ({"messages": USER, "temperature": "hot"}, "temperature"),
        ({"messages": USER, "temperature": 3}, "temperature"),
        ({"messages": USER, "top_p": 0}, "top_p"),
        ({"messages": USER, "stream": "yes"}, "stream"),
        ({"messages": USER, "stop": 7}, "stop"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": USER, "seed": "x"}, "seed"),
        ({"messages": USER, "n": 2}, "n"),
    ],
)
def test_bad_bodies_are_400_in_openai_shape(toy_url: str, body: Any, param: str) -> None:
    r = httpx.post(toy_url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)
    assert error["message"]


def test_a_body_that_is_not_json_is_a_400(toy_url: str) -> None:
    r = httpx.post(
        toy_url + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_openai_fields_are_accepted(toy_url: str) -> None:
    body = {
        "model": "toy",
        "messages": [
            {"role": "developer", "content": "be brief", "name": "ops"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "max_tokens": 3,
        "frequency_penalty": 0,
        "logit_bias": {},
        "user": "someone",
        "parallel_tool_calls": False,
    }
    r = httpx.post(toy_url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 3


def test_unknown_paths_are_404_in_openai_shape(toy_url: str) -> None:
    r = httpx.get(toy_url + "/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.fixture(scope="module")
def locked_url(toy_model: Path) -> Iterator[str]:
    with serve(toy_settings(toy_model, internal_token="s3cret")) as url:
        yield url


@pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret", "Basic s3cret"])
def test_a_missing_or_wrong_token_is_401(locked_url: str, header: str | None) -> None:
    headers = {"authorization": header} if header else {}
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        r = httpx.request(method, locked_url + path, json={"messages": USER}, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_the_right_token_is_let_through_and_probes_stay_open(locked_url: str) -> None:
    c = openai.OpenAI(base_url=locked_url + "/v1", api_key="s3cret", max_retries=0, timeout=60)
    resp = c.chat.completions.create(model="toy", messages=USER, max_tokens=2)  # type: ignore[arg-type]
    assert resp.usage is not None and resp.usage.completion_tokens == 2
    assert httpx.get(locked_url + "/health").status_code == 200
    assert httpx.get(locked_url + "/metrics").status_code == 200
