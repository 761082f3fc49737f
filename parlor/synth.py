"""`parlor synth`: deterministic random-weight GGUF models that real llama.cpp loads and runs.

Tests, demos (`parlor up --demo`) and benchmarks need a model without a download. A tool,
not part of any service: lm_api serves whatever GGUF it is given, and its image does not
carry this writer. Speed does not depend on weight values, so a random model of the right
shape is also the benchmark model.

Every synthetic model has its end-of-generation (and other control) tokens' output rows set
to zero while the other rows give logits a large spread: those tokens are never sampled, so
an answer always has exactly `max_tokens` tokens. Tests and benchmarks rely on that.

    uv run parlor synth --preset toy --out /tmp/toy.gguf
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ChatML, the format of Qwen and many small models; its markers are control tokens of the
# synthetic vocabularies, so the template tokenizes like a real model's.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Standard deviation of the logits of the ordinary tokens: large enough that a zero logit
# (the end-of-generation rows) is never inside top-k/top-p and has negligible probability
# even with sampling filters disabled.
LOGIT_SPREAD = 8.0


@dataclass(frozen=True)
class Preset:
    arch: str  # "llama" or "qwen2"
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float
    tied_embeddings: bool
    dtype: type  # numpy dtype of the 2-D weight matrices (norms stay float32)


PRESETS: dict[str, Preset] = {
    # ~1 MB: the test model.
    "toy": Preset("llama", 512, 64, 2, 4, 2, 256, 4096, 10000.0, False, np.float32),
    # A few tens of MB: generations that last a visible while (demos, stack tests).
    "small": Preset("llama", 512, 512, 8, 8, 4, 1536, 4096, 10000.0, False, np.float16),
    # The exact shape of Qwen2.5-0.5B (about 1 GB in F16, ~400 MB as Q4_K_M).
    "qwen2.5-0.5b": Preset("qwen2", 151936, 896, 24, 14, 2, 4864, 32768, 1e6, True, np.float16),
}

# gguf token types (gguf.TokenType), spelled out to keep the vocabulary builders plain.
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    scores: list[float] | None  # SentencePiece vocabularies
    merges: list[str] | None  # BPE vocabularies
    model: str  # tokenizer.ggml.model
    pre: str | None
    bos: int
    eos: int
    add_bos: bool
    extra: dict[str, tuple[Any, Any, Any]]  # copied metadata: key -> (value, type, subtype)

    def never_sampled(self) -> list[int]:
        """Control and unknown tokens: end-of-generation markers and their kind."""
        return [i for i, t in enumerate(self.types) if t in (CONTROL, UNKNOWN)]

    def rarely_sampled(self) -> list[int]:
        """Byte-fallback tokens: kept rare so answers read as words, not control bytes."""
        return [i for i, t in enumerate(self.types) if t == BYTE]


_WORDS = (
    "the of and to in is was that for it as with be on not he by are this his at from "
    "have or an they which one had you were her all she there would their we him been has "
    "when who will more no if out so said what up its about into than them can only other "
    "new some could time these two may then do first any my now such like our over man me "
    "even most made after also did many before must through back years where much your way "
    "well down should because each just those people how too little state good very make "
    "world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came "
    "right used take three model chat answer token word light river stone cloud"
).split()


def _spm_vocab(n_vocab: int) -> Vocab:
    """A byte-fallback SentencePiece-style vocabulary llama.cpp's SPM tokenizer accepts."""
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [UNKNOWN, CONTROL, CONTROL, CONTROL, CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [BYTE] * 256
    pieces: list[str] = ["▁"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    pieces += list("0123456789.,!?'\"-:;()\n")
    # Each word with all its prefixes, so SentencePiece's pairwise merges can reach it.
    for word in _WORDS:
        spelled = "▁" + word
        pieces += [spelled[:i] for i in range(2, len(spelled) + 1)]
    seen: set[str] = set()
    for piece in pieces:
        if len(tokens) >= n_vocab:
            break
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(NORMAL)
    while len(tokens) < n_vocab:  # pad with unreachable but valid pieces
        tokens.append(f"▁tok{len(tokens)}")
        types.append(NORMAL)
    # Longer pieces score higher so merges prefer whole words.
    scores = [0.0 if t != NORMAL else float(len(p)) for p, t in zip(tokens, types, strict=True)]
    return Vocab(tokens, types, scores, None, "llama", None, 1, 2, True, {})


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (byte-level BPE alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def _bpe_vocab(n_vocab: int) -> Vocab:
    """A synthetic byte-level BPE vocabulary of Qwen2's size and special-token layout."""
    n_special = 293  # Qwen2: 151643 ordinary tokens, then <|endoftext|>, <|im_start|>, ...
    n_regular = n_vocab - n_special
    alphabet = _bytes_to_unicode()
    tokens = list(alphabet)
    merges: list[str] = []
    # Two-symbol tokens, then three-symbol ones, each with the merge that builds it.
    for a in alphabet:
        for b in alphabet:
            if len(tokens) >= n_regular:
                break
            tokens.append(a + b)
            merges.append(f"{a} {b}")
    for ab_index in range(256, 256 + 256 * 256):
        for c in alphabet:
            if len(tokens) >= n_regular:
                break
            ab = tokens[ab_index]
            tokens.append(ab + c)
            merges.append(f"{ab} {c}")
        if len(tokens) >= n_regular:
            break
    types = [NORMAL] * len(tokens)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    specials += [f"<|extra_{i}|>" for i in range(n_special - len(specials))]
    tokens += specials
    types += [CONTROL] * n_special
    eos = n_regular + 2  # <|im_end|>, as in Qwen2.5-Instruct
    return Vocab(tokens, types, None, merges, "gpt2", "qwen2", n_regular, eos, False, {})


def _vocab_from(path: Path) -> Vocab:
    """The tokenizer (and chat template) of another GGUF, e.g. a weights-free vocab file."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    copied: dict[str, tuple[Any, Any, Any]] = {}
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == GGUFValueType.ARRAY else None
        copied[key] = (field.contents(), main, sub)
    tokens = copied["tokenizer.ggml.tokens"][0]
    types = copied["tokenizer.ggml.token_type"][0]
    eos = int(copied["tokenizer.ggml.eos_token_id"][0])
    bos = int(copied.get("tokenizer.ggml.bos_token_id", (eos,))[0])
    model = str(copied["tokenizer.ggml.model"][0])
    return Vocab(list(tokens), list(types), None, None, model, None, bos, eos, False, copied)


def _add_vocab(writer: Any, vocab: Vocab, chat_template: bool) -> None:
    if vocab.extra:
        for key, (value, main, sub) in vocab.extra.items():
            if key == "tokenizer.chat_template" and not chat_template:
                continue
            writer.add_key_value(key, value, main, sub_type=sub)
        if chat_template and "tokenizer.chat_template" not in vocab.extra:
            writer.add_chat_template(CHATML_TEMPLATE)
        return
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.model == "llama":
        writer.add_unk_token_id(0)
    else:
        writer.add_pad_token_id(vocab.bos)
    if chat_template:
        writer.add_chat_template(CHATML_TEMPLATE)


def _output_matrix(
    rng: np.random.Generator,
    n_vocab: int,
    n_embd: int,
    vocab: Vocab,
    silent: list[int],
    dtype: type,
) -> np.ndarray:
    """Output projection rows: zero for tokens never to be sampled, a wide spread otherwise.

    The final RMS norm gives hidden states with unit-variance entries, so rows with standard
    deviation LOGIT_SPREAD / sqrt(n_embd) give logits with standard deviation LOGIT_SPREAD.
    """
    out = rng.standard_normal((n_vocab, n_embd), dtype=np.float32)
    out *= LOGIT_SPREAD / np.sqrt(n_embd)
    out[vocab.rarely_sampled()] *= 0.2
    out[silent] = 0.0
    return out.astype(dtype)


def _header(path: Path, p: Preset, vocab: Vocab, chat_template: bool) -> Any:
    """A writer with the model's metadata (hyperparameters, tokenizer), no tensors yet."""
    from gguf import GGUFWriter, LlamaFileType

    writer = GGUFWriter(path, arch=p.arch)
    writer.add_name(f"parlor-synthetic-{p.arch}")
    writer.add_context_length(p.n_ctx_train)
    writer.add_embedding_length(p.n_embd)
    writer.add_block_count(p.n_layer)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    writer.add_rope_dimension_count(p.n_embd // p.n_head)
    writer.add_rope_freq_base(p.rope_theta)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(vocab.tokens))
    ftype = LlamaFileType.ALL_F32 if p.dtype is np.float32 else LlamaFileType.MOSTLY_F16
    writer.add_file_type(int(ftype))
    _add_vocab(writer, vocab, chat_template)
    return writer


def _end_of_generation_ids(path: Path, p: Preset, vocab: Vocab, chat_template: bool) -> set[int]:
    """The tokens llama.cpp itself treats as end-of-generation for this vocabulary.

    llama.cpp recognises many by their text (e.g. a plain "</s>" in Qwen's vocabulary), not
    only by token type, so ask it: load a weights-free copy of the vocabulary.
    """
    import llama_cpp

    writer = _header(path, p, vocab, chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    llama_vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eog = {i for i in range(len(vocab.tokens)) if llama_cpp.llama_vocab_is_eog(llama_vocab, i)}
    llm.close()
    return eog


def _write_f(path: Path, preset: Preset, vocab: Vocab, seed: int, chat_template: bool) -> None:
    p = preset
    rng = np.random.default_rng(seed)
    head_dim = p.n_embd // p.n_head
    n_embd_kv = head_dim * p.n_head_kv
    n_vocab = len(vocab.tokens)
    silent = sorted(
        set(vocab.never_sampled()) | _end_of_generation_ids(path, p, vocab, chat_template)
    )
    writer = _header(path, p, vocab, chat_template)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # 1/sqrt(fan-in) keeps activations of a random network in a sane range.
        m = rng.standard_normal((rows, cols), dtype=np.float32)
        m *= 1.0 / np.sqrt(cols)
        return m.astype(p.dtype)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    if p.tied_embeddings:
        # Tied: the embedding is also the output projection, so it carries the zero rows.
        writer.add_tensor(
            "token_embd.weight", _output_matrix(rng, n_vocab, p.n_embd, vocab, silent, p.dtype)
        )
    else:
        writer.add_tensor("token_embd.weight", matrix(n_vocab, p.n_embd))
    for i in range(p.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones(p.n_embd))
        writer.add_tensor(f"{blk}.attn_q.weight", matrix(p.n_embd, p.n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", matrix(n_embd_kv, p.n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", matrix(n_embd_kv, p.n_embd))
        if p.arch == "qwen2":
            writer.add_tensor(f"{blk}.attn_q.bias", np.zeros(p.n_embd, dtype=np.float32))
            writer.add_tensor(f"{blk}.attn_k.bias", np.zeros(n_embd_kv, dtype=np.float32))
            writer.add_tensor(f"{blk}.attn_v.bias", np.zeros(n_embd_kv, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_output.weight", matrix(p.n_embd, p.n_embd))
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones(p.n_embd))
        writer.add_tensor(f"{blk}.ffn_gate.weight", matrix(p.n_ff, p.n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", matrix(p.n_ff, p.n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", matrix(p.n_embd, p.n_ff))
    writer.add_tensor("output_norm.weight", ones(p.n_embd))
    if not p.tied_embeddings:
        writer.add_tensor(
            "output.weight", _output_matrix(rng, n_vocab, p.n_embd, vocab, silent, p.dtype)
        )

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _ftype(kind: str) -> int:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}", None)
    if not isinstance(ftype, int):
        raise ValueError(f"unknown quantization {kind!r} (try Q4_K_M, Q5_K_M, Q8_0)")
    return ftype


def quantize_gguf(src: Path, dst: Path, kind: str) -> None:
    """Quantize a GGUF with llama.cpp itself (`kind` such as Q4_K_M, Q8_0)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(kind)
    params.nthread = len(os.sched_getaffinity(0))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed with code {rc}")


def write_gguf(
    path: str | os.PathLike[str],
    *,
    preset: str = "toy",
    seed: int = 0,
    chat_template: bool = True,
    quantize: str | None = None,
    vocab_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a synthetic GGUF to `path` (atomically) and return the path.

    The same arguments always give the same file.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[preset]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if vocab_from is not None:
        vocab = _vocab_from(Path(vocab_from))
    elif p.arch == "llama":
        vocab = _spm_vocab(p.n_vocab)
    else:
        vocab = _bpe_vocab(p.n_vocab)
    # A copied tokenizer decides the vocabulary size (real Qwen GGUFs pad it).
    shape = Preset(**{**p.__dict__, "n_vocab": len(vocab.tokens)})

    if quantize:
        _ftype(quantize)  # refuse an unknown type before spending time on the weights
    # Written next to the target and renamed: a reader never sees a half-written model.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    qtmp = out.with_name(f".{out.name}.{os.getpid()}.q.tmp")
    try:
        _write_f(tmp, shape, vocab, seed, chat_template)
        if quantize:
            quantize_gguf(tmp, qtmp, quantize)
            qtmp.replace(out)
        else:
            tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        qtmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="parlor synth", description="Write a deterministic random-weight GGUF model."
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="toy")
    parser.add_argument("--out", required=True, type=Path, help="where to write the .gguf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantize", metavar="TYPE", help="e.g. Q4_K_M, Q8_0")
    parser.add_argument("--vocab-from", type=Path, help="copy the tokenizer of this GGUF")
    parser.add_argument("--no-chat-template", action="store_true")
    args = parser.parse_args(argv)
    try:
        out = write_gguf(
            args.out,
            preset=args.preset,
            seed=args.seed,
            chat_template=not args.no_chat_template,
            quantize=args.quantize,
            vocab_from=args.vocab_from,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
