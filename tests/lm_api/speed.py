"""Tokens/s in-process (llama-cpp-python directly) vs through lm_api, same model, prompt,
token count and threads. Not a test (timings are not asserted anywhere); run it:

    uv run python -m tests.lm_api.speed --preset toy --tokens 256
    uv run python -m tests.lm_api.speed --model /tmp/qwen.gguf --tokens 64 --threads 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import llama_cpp

from lm_api.config import Settings
from lm_api.engines.base import load_llama
from lm_api.prompt import ChatPrompter
from parlor.synth import write_gguf
from tests.support import run_service

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me a long story about a river, a stone and a cloud."},
]


def in_process(settings: Settings, tokens: int, reps: int) -> list[tuple[float, float]]:
    """(decode tok/s after the first token, end-to-end tok/s) per repetition."""
    llm = load_llama(settings)
    prompt = ChatPrompter(llm, settings.chat_format).build(MESSAGES).tokens
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out = []
    for rep in range(reps):
        llm.set_seed(rep)
        start = time.perf_counter()
        first = start
        n = 0
        for token in llm.generate(prompt, temp=0.8, top_p=0.95, repeat_penalty=1.0):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            llm.detokenize([token])  # the service detokenizes each token too
            n += 1
            if n == 1:
                first = time.perf_counter()
            if n == tokens:
                break
        end = time.perf_counter()
        out.append(((n - 1) / (end - first), n / (end - start)))
    del llm
    gc.collect()
    return out


def through_service(settings: Settings, tokens: int, reps: int) -> list[tuple[float, float]]:
    env = {
        "LM_API_MODEL_PATH": str(settings.model_path),
        "LM_API_N_CTX": str(settings.n_ctx),
        "LM_API_N_THREADS": str(settings.threads),
    }
    out = []
    with (
        tempfile.TemporaryDirectory() as logs,
        run_service("lm_api", "lm_api.main:app", env, Path(logs)) as svc,
        httpx.Client(timeout=600) as client,
    ):
        for rep in range(reps):
            body = {
                "messages": MESSAGES,
                "max_tokens": tokens,
                "seed": rep,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            start = time.perf_counter()
            last = start
            n = 0
            with client.stream("POST", svc.url + "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                for line in r.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        n = chunk["usage"]["completion_tokens"]
                    elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        last = time.perf_counter()
            out.append((0.0, n / (last - start)))
        # Decode speed as the server measured it: the client sees tokens in bursts.
        metrics = client.get(svc.url + "/metrics").text
        values = {
            line.split()[0]: float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("lm_api_tokens_per_second_")
        }
        mean = values["lm_api_tokens_per_second_sum"] / values["lm_api_tokens_per_second_count"]
    return [(mean, e2e) for _, e2e in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_gguf(Path(tmp) / f"{args.preset}.gguf", preset=args.preset)
        settings = Settings(model_path=model, n_ctx=args.n_ctx, n_threads=args.threads)
        print(
            f"model={model.name} tokens={args.tokens} threads={settings.threads} "
            f"reps={args.reps} load={os.getloadavg()[0]:.1f}"
        )
        for name, run in (("in-process", in_process), ("lm_api", through_service)):
            results = run(settings, args.tokens, args.reps)
            decode = statistics.median(r[0] for r in results)
            e2e = statistics.median(r[1] for r in results)
            print(f"{name:>10}: decode {decode:8.1f} tok/s   end-to-end {e2e:8.1f} tok/s")
        print("decode: tokens after the first / time after the first (lm_api: its own metric,")
        print("mean); end-to-end: tokens / (request start -> last token), median of the reps")


if __name__ == "__main__":
    main()
