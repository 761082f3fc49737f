"""Several models: every GGUF in the models directory is served, loaded on first use, the
least recently used idle one unloaded when `max_loaded` are loaded, a swap makes nobody
wait with a 503. Real llama.cpp on synthetic models (different seeds: different answers)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lm_api.config import Settings
from lm_api.engines.base import load_llama
from parlor.synth import write_gguf
from tests.lm_api.conftest import Gate, health, poll_until, serve, toy_settings

USER = [{"role": "user", "content": "Tell me about the river and the stone."}]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, toy_model: Path) -> Path:
    """alpha (the toy model), beta and gamma (other seeds), a half download, a note."""
    d = tmp_path_factory.mktemp("several")
    shutil.copy(toy_model, d / "alpha.gguf")
    write_gguf(d / "beta.gguf", preset="toy", seed=1)
    write_gguf(d / "gamma.gguf", preset="toy", seed=2)
    (d / "delta.gguf.part").write_bytes(b"GGUF half a download")
    (d / "README.txt").write_text("not a model")
    return d


class Loads:
    """A loader that records which models it opens and can hold one of them."""

    def __init__(self, hold: str | None = None) -> None:
        self.opened: list[str] = []
        self.hold = hold
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, settings: Settings) -> Any:
        name = settings.model_path.stem
        self.opened.append(name)
        if name == self.hold:
            self.entered.set()
            assert self.release.wait(60), "test never released the loader"
        return load_llama(settings)


def ask(url: str, model: str | None, max_tokens: int = 6, **kw: Any) -> httpx.Response:
    body: dict[str, Any] = {"messages": USER, "max_tokens": max_tokens, "temperature": 0, **kw}
    if model is not None:
        body["model"] = model
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def listed(url: str) -> dict[str, dict[str, Any]]:
    r = httpx.get(url + "/v1/models", timeout=30)
    assert r.status_code == 200, r.text
    return {m["id"]: m["meta"] for m in r.json()["data"]}


@pytest.fixture
def one_at_a_time(models_dir: Path) -> Iterator[tuple[str, Loads]]:
    loads = Loads()
    with serve(toy_settings(models_dir / "alpha.gguf"), loader=loads) as url:
        yield url, loads


def test_every_gguf_in_the_directory_is_listed_with_its_metadata(
    one_at_a_time: tuple[str, Loads], models_dir: Path
) -> None:
    url, _ = one_at_a_time
    r = httpx.get(url + "/v1/models", timeout=30).json()
    assert [m["id"] for m in r["data"]] == ["alpha", "beta", "gamma"]  # the default first
    meta = listed(url)
    assert meta["alpha"]["state"] == "ready" and meta["alpha"]["loaded"] is True
    assert meta["beta"] == {
        "n_ctx": 1024,
        "n_ctx_train": 4096,
        "size_bytes": (models_dir / "beta.gguf").stat().st_size,
        "quantization": "F32",
        "architecture": "llama",
        "loaded": False,
        "state": "unloaded",
    }


def test_a_request_names_its_model_which_loads_on_first_use(
    one_at_a_time: tuple[str, Loads],
) -> None:
    url, loads = one_at_a_time
    alpha = ask(url, "alpha")
    beta = ask(url, "beta")
    assert alpha.status_code == beta.status_code == 200
    assert alpha.json()["model"] == "alpha" and beta.json()["model"] == "beta"
    # Other weights, other answer (greedy: each is that model's own).
    assert (
        alpha.json()["choices"][0]["message"]["content"]
        != (beta.json()["choices"][0]["message"]["content"])
    )
    # max_loaded=1: beta replaced alpha.
    meta = listed(url)
    assert (meta["alpha"]["state"], meta["beta"]["state"]) == ("unloaded", "ready")
    assert health(url)["loaded"] == ["beta"]
    # No model named: the default, loaded again, with the same answer as before.
    again = ask(url, None)
    assert again.json()["model"] == "alpha"
    assert again.json()["choices"] == alpha.json()["choices"]
    assert loads.opened == ["alpha", "beta", "alpha"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/tokenize"])
def test_an_unknown_model_is_a_404_in_openai_shape(
    one_at_a_time: tuple[str, Loads], path: str
) -> None:
    url, loads = one_at_a_time
    for name in ("nope", "delta", "README"):  # neither a half download nor another file
        r = httpx.post(url + path, json={"model": name, "messages": USER, "max_tokens": 2})
        assert r.status_code == 404, r.text
        assert r.json()["error"] == {
            "message": f"The model '{name}' does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    assert loads.opened == ["alpha"]


def test_a_model_copied_in_while_serving_is_served(
    one_at_a_time: tuple[str, Loads], models_dir: Path, toy_model: Path
) -> None:
    url, _ = one_at_a_time
    late = models_dir / "late.gguf"
    shutil.copy(toy_model, late)
    try:
        assert "late" in listed(url)
        assert ask(url, "late").status_code == 200
    finally:
        late.unlink()


def test_up_to_max_loaded_stay_loaded_and_the_least_recently_used_goes(
    models_dir: Path,
) -> None:
    loads = Loads()
    with serve(toy_settings(models_dir / "alpha.gguf", max_loaded=2), loader=loads) as url:
        assert ask(url, "beta").status_code == 200
        assert sorted(health(url)["loaded"]) == ["alpha", "beta"]
        assert ask(url, "alpha").status_code == 200  # beta is now the least recently used
        assert ask(url, "gamma").status_code == 200
        assert sorted(health(url)["loaded"]) == ["alpha", "gamma"]
        assert loads.opened == ["alpha", "beta", "gamma"]


def test_a_request_for_a_model_being_swapped_in_waits_instead_of_a_503(
    models_dir: Path,
) -> None:
    loads = Loads(hold="beta")
    results: dict[int, httpx.Response] = {}
    with serve(toy_settings(models_dir / "alpha.gguf", max_queue=4), loader=loads) as url:
        threads = [
            threading.Thread(target=lambda i=i: results.setdefault(i, ask(url, "beta")))
            for i in range(2)
        ]
        try:
            threads[0].start()
            assert loads.entered.wait(60)  # alpha is unloaded, beta is loading
            threads[1].start()
            poll_until(lambda: health(url)["queue_depth"] == 2, "both requests to wait")
            h = httpx.get(url + "/health")
            assert h.status_code == 200  # a swap is no outage
            assert listed(url)["beta"]["state"] == "loading"
        finally:
            loads.release.set()
            for t in threads:
                t.join(60)
    assert [results[i].status_code for i in range(2)] == [200, 200]
    assert loads.opened == ["alpha", "beta"]


def test_a_busy_model_is_not_unloaded_until_its_answer_ends(models_dir: Path, gate: Gate) -> None:
    loads = Loads()
    results: dict[str, httpx.Response] = {}
    with serve(toy_settings(models_dir / "alpha.gguf"), loader=loads) as url:
        busy = threading.Thread(target=lambda: results.setdefault("alpha", ask(url, "alpha")))
        other = threading.Thread(target=lambda: results.setdefault("beta", ask(url, "beta")))
        busy.start()
        gate.wait_entered()  # alpha is answering
        other.start()
        poll_until(lambda: health(url)["queue_depth"] == 1, "beta's request to wait")
        assert health(url)["loaded"] == ["alpha"] and loads.opened == ["alpha"]
        gate.release()
        busy.join(60)
        other.join(60)
    assert results["alpha"].status_code == results["beta"].status_code == 200
    assert results["alpha"].json()["usage"]["completion_tokens"] == 6
    assert loads.opened == ["alpha", "beta"]


def test_a_model_that_fails_to_load_says_why_and_the_others_serve(
    tmp_path: Path, toy_model: Path
) -> None:
    shutil.copy(toy_model, tmp_path / "good.gguf")
    (tmp_path / "broken.gguf").write_bytes(toy_model.read_bytes()[:4096])
    with serve(toy_settings(tmp_path / "good.gguf")) as url:
        r = ask(url, "broken")
        assert r.status_code == 503
        assert "model failed to load" in r.json()["error"]["message"]
        assert httpx.get(url + "/health").status_code == 200
        assert listed(url)["broken"]["state"] == "failed"
        assert ask(url, "good").status_code == 200
        # Fixed on disk: tried again.
        shutil.copy(toy_model, tmp_path / "broken.gguf")
        assert ask(url, "broken").status_code == 200


def test_models_dir_and_a_default_model_elsewhere(tmp_path: Path, toy_model: Path) -> None:
    other = tmp_path / "others"
    other.mkdir()
    shutil.copy(toy_model, other / "beta.gguf")
    settings = toy_settings(toy_model, models_dir=other, model_name="house")
    with serve(settings) as url:
        assert list(listed(url)) == ["house", "beta"]
        assert ask(url, None).json()["model"] == "house"
        assert ask(url, "toy").json()["model"] == "house"  # its file name works too
        assert ask(url, "beta").json()["model"] == "beta"


def test_the_line_for_a_loading_model_is_bounded_by_max_queue(models_dir: Path) -> None:
    loads = Loads(hold="beta")
    results: dict[str, httpx.Response] = {}
    with serve(toy_settings(models_dir / "alpha.gguf", max_queue=1), loader=loads) as url:
        first = threading.Thread(target=lambda: results.setdefault("first", ask(url, "beta")))
        try:
            first.start()
            assert loads.entered.wait(60)
            poll_until(lambda: health(url)["queue_depth"] == 1, "the first request to wait")
            second = ask(url, "beta")
            assert second.status_code == 503
            assert second.json()["error"]["code"] == "queue_full"
            assert int(second.headers["retry-after"]) >= 1
        finally:
            loads.release.set()
            first.join(60)
    assert results["first"].status_code == 200


def metric(url: str, name: str, model: str) -> float:
    """One labelled sample of lm_api's /metrics (0 when not exported yet)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_per_model_with_the_sampling_they_set(
    one_at_a_time: tuple[str, Loads],
) -> None:
    url, _loads = one_at_a_time
    assert ask(url, "beta", max_tokens=3, temperature=0.7, top_p=0.9).status_code == 200
    assert ask(url, "beta", max_tokens=5).status_code == 200  # temperature 0, no top_p
    assert ask(url, "nope").status_code == 404  # never accepted: not counted
    assert metric(url, "lm_api_model_requests_total", "beta") == 2
    assert metric(url, "lm_api_model_requests_total", "nope") == 0
    assert metric(url, "lm_api_requested_temperature_count", "beta") == 2
    assert metric(url, "lm_api_requested_temperature_sum", "beta") == pytest.approx(0.7)
    assert metric(url, "lm_api_requested_top_p_count", "beta") == 1
    assert metric(url, "lm_api_requested_top_p_sum", "beta") == pytest.approx(0.9)
    assert metric(url, "lm_api_requested_max_tokens_sum", "beta") == 8
