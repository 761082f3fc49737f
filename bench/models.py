"""The benchmark model: a real GGUF given by the user, or the synthetic Qwen2.5-0.5B shape."""

from __future__ import annotations

from pathlib import Path

from parlor.paths import SHARED

QWEN_VOCAB = SHARED / "models" / "ggml-vocab-qwen2.gguf"
CACHE = Path(__file__).resolve().parent / "work" / "models"


def benchmark_model(given: Path | None, *, quick: bool, workdir: Path) -> tuple[Path, str]:
    """(path, description). Synthetic models are written once and cached (writing the
    Qwen-shaped one and quantizing it takes minutes; the same arguments give the same file)."""
    from parlor.synth import write_gguf

    if given is not None:
        if not given.is_file():
            raise FileNotFoundError(f"--model {given}: no such file")
        return given, f"{given.name} (given with --model)"
    if quick:
        path = write_gguf(workdir / "models" / "toy.gguf", preset="toy")
        return path, "synthetic toy llama (~1 MB, ChatML template), smoke-test form"
    vocab = QWEN_VOCAB if QWEN_VOCAB.is_file() else None
    name = f"qwen2.5-0.5b-Q4_K_M-{'qwen2vocab' if vocab else 'synthvocab'}.gguf"
    path = CACHE / name
    if not path.is_file():
        print(f"writing the benchmark model {path} (once; a few minutes)…", flush=True)
        write_gguf(path, preset="qwen2.5-0.5b", quantize="Q4_K_M", vocab_from=vocab)
    tokenizer = (
        "Qwen2's real tokenizer and ChatML template from ggml-vocab-qwen2.gguf"
        if vocab
        else "a synthetic BPE tokenizer (ggml-vocab-qwen2.gguf absent)"
    )
    return (
        path,
        f"synthetic Qwen2.5-0.5B shape, Q4_K_M ({path.stat().st_size / 1e6:.0f} MB), "
        f"random weights, {tokenizer}",
    )
