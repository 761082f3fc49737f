"""The synthetic GGUF writer: deterministic files real llama.cpp loads and runs."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest
from gguf import GGUFReader

from parlor import synth as synthetic
from parlor.synth import PRESETS, _bpe_vocab, main, write_gguf


def field(path: Path, key: str) -> object:
    f = GGUFReader(path).fields.get(key)
    return None if f is None else f.contents()


def run(path: Path, max_tokens: int, **sampling: float) -> dict:  # type: ignore[type-arg]
    llm = llama_cpp.Llama(str(path), n_ctx=1024, verbose=False)
    prompt = llm.tokenize(b"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", special=True)
    return llm.create_completion(prompt, max_tokens=max_tokens, seed=3, **sampling)  # type: ignore[return-value, arg-type]


def test_same_arguments_give_the_same_file(tmp_path: Path, toy_model: Path) -> None:
    again = write_gguf(tmp_path / "again.gguf", preset="toy", seed=0)
    assert again.read_bytes() == toy_model.read_bytes()
    other = write_gguf(tmp_path / "other.gguf", preset="toy", seed=1)
    assert other.read_bytes() != toy_model.read_bytes()
    assert toy_model.stat().st_size < 2_000_000


def test_toy_has_llama_shape_tokenizer_and_template(
    toy_model: Path, toy_model_no_template: Path
) -> None:
    assert field(toy_model, "general.architecture") == "llama"
    assert field(toy_model, "tokenizer.ggml.model") == "llama"
    assert "<|im_start|>" in str(field(toy_model, "tokenizer.chat_template"))
    assert field(toy_model_no_template, "tokenizer.chat_template") is None


def test_end_of_generation_is_never_sampled_even_with_hot_unfiltered_sampling(
    toy_model: Path,
) -> None:
    out = run(toy_model, 600, temperature=2.0, top_k=0, top_p=1.0, min_p=0.0)
    assert out["usage"]["completion_tokens"] == 600
    assert out["choices"][0]["finish_reason"] == "length"


def test_quantized_toy_loads_and_runs(tmp_path: Path) -> None:
    q = write_gguf(tmp_path / "toy-q8.gguf", preset="toy", quantize="Q8_0")
    f32 = write_gguf(tmp_path / "toy-f32.gguf", preset="toy")
    assert q.stat().st_size < f32.stat().st_size
    assert run(q, 20)["usage"]["completion_tokens"] == 20
    assert not list(tmp_path.glob(".*tmp"))


def test_an_unknown_quantization_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown quantization"):
        write_gguf(tmp_path / "x.gguf", preset="toy", quantize="Q9_Z")
    assert list(tmp_path.iterdir()) == []


def test_vocab_from_copies_the_tokenizer(tmp_path: Path, toy_model: Path) -> None:
    copy = write_gguf(tmp_path / "copy.gguf", preset="toy", seed=5, vocab_from=toy_model)
    assert field(copy, "tokenizer.ggml.tokens") == field(toy_model, "tokenizer.ggml.tokens")
    assert field(copy, "tokenizer.chat_template") == field(toy_model, "tokenizer.chat_template")
    assert run(copy, 10)["usage"]["completion_tokens"] == 10


def test_the_synthetic_bpe_vocab_has_qwen2_size_and_consistent_merges() -> None:
    vocab = _bpe_vocab(PRESETS["qwen2.5-0.5b"].n_vocab)
    assert len(vocab.tokens) == 151936
    assert len(set(vocab.tokens)) == len(vocab.tokens)
    known = set(vocab.tokens)
    assert vocab.merges is not None
    assert all(a + b in known for a, b in (m.split(" ") for m in vocab.merges[::997]))
    assert vocab.tokens[vocab.eos] == "<|im_end|>"


def test_cli_writes_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.gguf"
    assert main(["--preset", "toy", "--out", str(out), "--no-chat-template"]) == 0
    assert field(out, "tokenizer.chat_template") is None
    assert "wrote" in capsys.readouterr().out
    assert main(["--preset", "toy", "--out", str(out), "--quantize", "nope"]) == 1
    assert "unknown quantization" in capsys.readouterr().err


def test_presets_are_the_documented_shapes() -> None:
    q = synthetic.PRESETS["qwen2.5-0.5b"]
    assert (q.arch, q.n_embd, q.n_layer, q.n_head, q.n_head_kv, q.n_ff, q.n_vocab) == (
        "qwen2",
        896,
        24,
        14,
        2,
        4864,
        151936,
    )
    assert q.rope_theta == 1e6 and q.tied_embeddings


def test_tokens_llama_cpp_ends_on_by_their_text_are_silenced_too(tmp_path: Path) -> None:
    # Real vocabularies hold ordinary-typed tokens llama.cpp still treats as end of
    # generation (Qwen2's has a plain "</s>"); those rows must be zero too.
    vocab = synthetic._spm_vocab(512)
    vocab.tokens[-1] = "<|eot_id|>"
    eog = synthetic._end_of_generation_ids(
        tmp_path / "vocab.gguf", PRESETS["toy"], vocab, chat_template=True
    )
    assert {2, 4, 511} <= eog
    assert 511 not in vocab.never_sampled()  # not found by token type alone
