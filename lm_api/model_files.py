"""The GGUF files lm_api serves, and what their headers say.

Every `*.gguf` in the models directory is a model, named by its file name without
`.gguf`; the default model (`LM_API_MODEL_PATH`) may carry another name
(`LM_API_MODEL_NAME`) and may live elsewhere. Half-done downloads (`*.gguf.part`) are not
models. The directory is read again on each call, so a model downloaded while lm_api runs
is served without a restart.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path

import gguf
import llama_cpp
import llama_cpp._logger

from lm_api.config import Settings

Stamp = tuple[int, int]  # (size, mtime_ns): a file replaced on disk gets a new stamp
MISSING: Stamp = (-1, -1)


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: Path

    def stamp(self) -> Stamp:
        try:
            st = self.path.stat()
        except OSError:
            return MISSING
        return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF's metadata says; None where it does not say (or cannot be read)."""

    architecture: str | None = None
    n_ctx_train: int | None = None
    quantization: str | None = None


def default_file(settings: Settings) -> ModelFile:
    return ModelFile(settings.served_model_name, settings.model_path)


def scan(settings: Settings) -> list[ModelFile]:
    """The models there are now: the default first (if its file exists), then by name."""
    default = default_file(settings)
    found: list[ModelFile] = []
    try:
        paths = sorted(settings.models_directory.glob("*.gguf"))
    except OSError:
        paths = []
    for path in paths:
        if not path.is_file() or _same(path, default.path):
            continue
        if path.stem != default.name:  # the default's name wins a clash
            found.append(ModelFile(path.stem, path))
    return [default, *found] if default.path.is_file() else found


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def quantization_name(file_type: int) -> str | None:
    """GGUF's `general.file_type` as people write it: 15 → "Q4_K_M", 1 → "F16"."""
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def read_info(path: Path) -> GgufInfo:
    """The metadata of a GGUF, read by llama.cpp without its weights (cached per version)."""
    try:
        st = path.stat()
    except OSError:
        return GgufInfo()
    return _read_info(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _read_info(path: str, _size: int, _mtime_ns: int) -> GgufInfo:
    # llama.cpp's own reader: fast (no weights, no Python-side parsing of a 150k-token
    # vocabulary) and it reads exactly what the loader will.
    llama_cpp._logger.set_verbose(False)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(path.encode(), params)
    if not model:
        return GgufInfo()
    try:
        buf = ctypes.create_string_buffer(256)

        def value(key: str) -> str | None:
            n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, ctypes.sizeof(buf))
            return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

        arch = value("general.architecture")
        n_ctx = value(f"{arch}.context_length") if arch else None
        file_type = value("general.file_type")
        return GgufInfo(
            architecture=arch,
            n_ctx_train=int(n_ctx) if n_ctx and n_ctx.isdigit() else None,
            quantization=quantization_name(int(file_type))
            if file_type and file_type.isdigit()
            else None,
        )
    finally:
        llama_cpp.llama_model_free(model)
