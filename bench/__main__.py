"""`uv run python -m bench`: run Parlor's benchmarks, print the tables, write the results.

uv run python -m bench                 # everything (40-60 minutes on a quiet 2-core machine)
uv run python -m bench --part 1 --part 4 --runs 5
uv run python -m bench --quick --out /tmp/b    # the smoke-test form
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    part1_single,
    part2_concurrency,
    part3_long_chat,
    part4_pages,
    part5_memory,
    part6_long_prompt,
)
from bench.context import Config, Context
from bench.machine import describe, physical_cores
from bench.models import benchmark_model
from bench.report import PartResult, write_part, write_results_md
from lm_api.config import Settings

BENCH_DIR = Path(__file__).resolve().parent

PARTS: dict[int, Callable[[Context], PartResult]] = {
    1: part1_single.run,
    2: part2_concurrency.run,
    3: part3_long_chat.run,
    4: part4_pages.run,
    5: part5_memory.run,
    6: part6_long_prompt.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--part",
        type=int,
        action="append",
        choices=sorted(PARTS),
        help="run this part (repeatable); default: all",
    )
    p.add_argument("--runs", type=int, help="runs per measurement (default 3; 1 with --quick)")
    p.add_argument(
        "--threads",
        type=int,
        default=physical_cores(),
        help="llama.cpp threads everywhere (default: physical cores)",
    )
    p.add_argument(
        "--engine",
        choices=["fifo", "batched"],
        default=Settings.model_fields["engine"].default,
        help="lm_api's engine, LM_API_ENGINE (default: lm_api's default)",
    )
    p.add_argument("--model", type=Path, help="a real GGUF instead of the synthetic model")
    p.add_argument("--max-tokens", type=int, help="answer length (default 128; 8 with --quick)")
    p.add_argument(
        "--no-build",
        action="store_true",
        help="do not build llama-server when it is missing (its rows are skipped)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiniest form: toy model, 1 run, few tokens, tiny pages",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR,
        help="where RESULTS.md and results/*.json go (default: bench/)",
    )
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def make_config(args: argparse.Namespace) -> Config:
    out: Path = args.out.resolve()
    workdir = (BENCH_DIR / "work" if out == BENCH_DIR else out / "work") / time.strftime(
        "run-%Y%m%d-%H%M%S"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    model, desc = benchmark_model(args.model, quick=args.quick, workdir=workdir)
    quick = bool(args.quick)
    return Config(
        parts=sorted(set(args.part or PARTS)),
        runs=args.runs or (1 if quick else 3),
        threads=args.threads,
        engine=args.engine,
        max_tokens=args.max_tokens or (8 if quick else 128),
        n_ctx=1024 if quick else 4096,
        quick=quick,
        out=out,
        workdir=workdir,
        model=model,
        model_desc=desc,
        concurrency=[1, 2] if quick else [1, 2, 4, 8],
        turns=3 if quick else 20,
        turn_marks=[1, 2, 3] if quick else [1, 10, 20],
        page_messages=[4, 10] if quick else [20, 50, 500],
        sidebar_chats=5 if quick else 2000,
        connections=4 if quick else 32,
        duration_s=1 if quick else 10,
        slot_ctx=1024 if quick else 2048,
        slots=4,
        build_llama_server=not (quick or args.no_build),
        long_words=60 if quick else 1500,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    run_info = cfg.run_info(describe())
    print(
        f"model: {cfg.model_desc}\nthreads: {cfg.threads}, engine: {cfg.engine}, runs: {cfg.runs}, "
        f"parts: {cfg.parts}, work dir: {cfg.workdir}\n",
        flush=True,
    )
    ctx = Context(cfg)
    status = 0
    try:
        for number in cfg.parts:
            started = time.perf_counter()
            # Other work on the machine moves every figure: say how busy it was.
            run_info["load_average_at_start"] = round(os.getloadavg()[0], 2)
            try:
                result = PARTS[number](ctx)
            except Exception:
                traceback.print_exc()
                print(f"part {number} FAILED (logs under {cfg.workdir})", file=sys.stderr)
                status = 1
                continue
            run_info["seconds"] = round(time.perf_counter() - started)
            write_part(cfg.out, result, run_info)
            write_results_md(cfg.out)
            print(result.markdown(), flush=True)
            if result.failures:
                status = 1
    finally:
        ctx.close()
    print(f"wrote {cfg.out / 'RESULTS.md'} and {cfg.out / 'results'}/part*.json")
    return status


if __name__ == "__main__":
    sys.exit(main())
