"""llama.cpp's own `llama-server`, built from the llama.cpp that llama-cpp-python vendors.

The peer that matters for lm_api is llama-server (C++, slots, continuous batching). The
benchmark builds it once from the llama.cpp sources inside llama-cpp-python's source
distribution, the very version lm_api runs, and caches it in bench/work/:

    uv run python -m bench.llama_server          # locate it, building it if needed
    uv run python -m bench.llama_server --where  # only say where it is (or why not)

The sources come from uv's cache (the sdist uv built llama-cpp-python from) or, failing
that, `pip download --no-binary :all: llama-cpp-python==<version>`. The build is
`cmake -DLLAMA_CURL=OFF ...; cmake --build build --target llama-server` (Release, the
machine's own CPU features as llama-cpp-python's build uses them); on 2 cores it takes
20-40 minutes. When it cannot be built, the parts that use it skip the peer with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from parlor.supervisor import free_port, stop_process, wait_healthy

BENCH_DIR = Path(__file__).resolve().parent
VERSION = importlib.metadata.version("llama-cpp-python")
HOME = BENCH_DIR / "work" / f"llama-server-{VERSION}"
SOURCES = HOME / "src"  # llama.cpp as vendored by llama-cpp-python
BUILD = HOME / "build"
BINARY = BUILD / "bin" / "llama-server"
LOG = HOME / "build.log"

CMAKE_ARGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    # The web UI is not needed, and fetching a prebuilt one needs the internet.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
]


class Unavailable(Exception):
    """llama-server is not built and cannot be built here (the message says why)."""


def _vendored_in_uv_cache() -> Path | None:
    """llama.cpp inside the llama-cpp-python sdist uv unpacked to build the wheel."""
    roots = [os.environ.get("UV_CACHE_DIR", ""), str(Path.home() / ".cache" / "uv")]
    for root in filter(None, roots):
        pattern = f"{root}/sdists-v*/pypi/llama-cpp-python/{VERSION}/*/src/vendor/llama.cpp"
        for hit in sorted(glob.glob(pattern)):
            if (Path(hit) / "tools" / "server").is_dir():
                return Path(hit)
    return None


def _download_sdist(into: Path) -> Path:
    """`pip download` the sdist (pip from this environment, else uvx's); its llama.cpp."""
    into.mkdir(parents=True, exist_ok=True)
    spec = f"llama-cpp-python=={VERSION}"
    args = ["download", "--no-binary", ":all:", "--no-deps", "-d", str(into), spec]
    attempts = [[sys.executable, "-m", "pip", *args]]
    if shutil.which("uvx"):
        attempts.append(["uvx", "pip", *args])
    errors = []
    for cmd in attempts:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
        errors.append(f"{' '.join(cmd[:3])}: {done.stderr.strip()[-300:]}")
    else:
        raise Unavailable("could not download the sdist: " + " | ".join(errors))
    archives = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        raise Unavailable(f"pip download left no sdist in {into}")
    with tarfile.open(archives[0]) as tar:
        tar.extractall(into, filter="data")
    found = sorted(into.glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not found:
        raise Unavailable(f"the sdist {archives[0].name} holds no vendor/llama.cpp")
    return found[0]


def _sources() -> Path:
    if (SOURCES / "tools" / "server").is_dir():
        return SOURCES
    vendored = _vendored_in_uv_cache() or _download_sdist(HOME / "sdist")
    HOME.mkdir(parents=True, exist_ok=True)
    shutil.copytree(vendored, SOURCES, symlinks=True)
    return SOURCES


def build(jobs: int = 2) -> Path:
    """Build llama-server (once; a later call finds it). Raises Unavailable."""
    if BINARY.is_file():
        return BINARY
    if shutil.which("cmake") is None:
        raise Unavailable("cmake is not installed (Debian: apt-get install cmake)")
    src = _sources()
    HOME.mkdir(parents=True, exist_ok=True)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    steps = [
        ["cmake", "-S", str(src), "-B", str(BUILD), *generator, *CMAKE_ARGS],
        ["cmake", "--build", str(BUILD), "--target", "llama-server", "-j", str(jobs)],
    ]
    with LOG.open("ab") as log:
        for cmd in steps:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode:
                raise Unavailable(f"the build failed: see {LOG}")
    if not BINARY.is_file():
        raise Unavailable(f"the build made no {BINARY}: see {LOG}")
    return BINARY


def locate(*, may_build: bool) -> tuple[Path | None, str]:
    """(the binary or None, a note saying where it came from or why it is missing)."""
    if BINARY.is_file():
        return BINARY, f"llama-server built from llama-cpp-python {VERSION}'s llama.cpp"
    if not may_build:
        return None, (
            f"llama-server is not built (bench/work/llama-server-{VERSION}/): the peer was "
            "skipped; `uv run python -m bench.llama_server` builds it (20-40 minutes on 2 "
            "cores)"
        )
    print(f"building llama-server from llama-cpp-python {VERSION}'s llama.cpp (once)…", flush=True)
    try:
        return build(), f"llama-server built from llama-cpp-python {VERSION}'s llama.cpp"
    except Unavailable as exc:
        return None, f"llama-server could not be built, the peer was skipped: {exc}"


@dataclass
class LlamaServer:
    base_url: str  # the OpenAI base, /v1 included
    url: str
    proc: subprocess.Popen[bytes]
    args: list[str] = field(default_factory=list)


@contextlib.contextmanager
def run_llama_server(
    binary: Path, model: Path, workdir: Path, *, threads: int, slot_ctx: int, slots: int
) -> Iterator[LlamaServer]:
    """llama-server on a free loopback port: `slots` slots of `slot_ctx` tokens each, the
    given threads for decoding and for prompts, 512-token batches as lm_api reads prompts;
    everything else is llama-server's default (sampling, flash attention, prompt cache)."""
    port = free_port()
    args = [
        "--model", str(model),
        "--threads", str(threads),
        "--threads-batch", str(threads),
        "--ctx-size", str(slot_ctx * slots),
        "--parallel", str(slots),
        "--batch-size", "512",
        "--ubatch-size", "512",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-webui",
    ]  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "llama_server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), *args], cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + "/health", deadline_s=600, proc=proc, log=log)
        yield LlamaServer(base_url=url + "/v1", url=url, proc=proc, args=args)
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.llama_server", description=__doc__)
    p.add_argument("--where", action="store_true", help="do not build; say where it is")
    p.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    args = p.parse_args(argv)
    if args.where:
        path, note = locate(may_build=False)
    else:
        try:
            path, note = build(args.jobs), "built"
        except Unavailable as exc:
            path, note = None, str(exc)
    print(path if path else note)
    return 0 if path else 1


if __name__ == "__main__":
    sys.exit(main())
