"""Which models `parlor up` serves: every GGUF beside the default one (lm_api's models
directory is the default model's), and a model the person downloaded is used without
fetching the default one too."""

from __future__ import annotations

from pathlib import Path

import pytest

from parlor.up import DEMO_MODEL, UpOptions, resolve_model, served_models


def gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def test_every_gguf_beside_the_model_is_served(tmp_path: Path) -> None:
    model = gguf(tmp_path / "alpha.gguf")
    gguf(tmp_path / "beta.gguf")
    (tmp_path / "gamma.gguf.part").write_bytes(b"GGUF half")
    assert served_models(model) == ["alpha", "beta"]


def test_a_downloaded_model_is_the_default_when_the_default_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    chosen = gguf(tmp_path / "models" / "Llama-3.2-1B-Instruct-Q4_K_M.gguf")
    options = UpOptions(data_dir=tmp_path / "data", download=False)
    assert resolve_model(options) == chosen.resolve()


def test_the_demo_model_is_never_taken_for_a_downloaded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    gguf(tmp_path / "data" / "models" / DEMO_MODEL)
    from parlor.up import UpError

    with pytest.raises(UpError, match="no model found"):
        resolve_model(UpOptions(data_dir=tmp_path / "data", download=False))
