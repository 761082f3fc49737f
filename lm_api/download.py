"""Fetch a GGUF model into the models directory: progress bar, resume, checksum.

    parlor download                       # Qwen2.5-0.5B-Instruct Q4_K_M into ./models
    parlor download --list                # the models it knows by name, with their sizes
    parlor download llama-3.2-1b          # one of those, size and sha256 checked
    parlor download URL --sha256 HEX      # any other model

lm_api serves every GGUF in the models directory, so a downloaded model can be picked by
its file name (without `.gguf`) without a restart.

A download goes to `<name>.part` and is renamed only once complete and verified, so the
models directory never holds a half or a corrupt model. Run the command again after an
interruption: it resumes from the `.part` file with an HTTP Range request.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
from tqdm import tqdm

HF = "https://huggingface.co"


@dataclass(frozen=True)
class KnownModel:
    """A small instruct GGUF worth running on a CPU; size and sha256 from its Hugging Face
    LFS pointer, so a download is checked end to end."""

    name: str
    url: str
    size: int  # bytes
    sha256: str
    about: str

    @property
    def file_name(self) -> str:
        return _name_from(self.url)


# Q4_K_M throughout: the usual balance of size and quality on a CPU. Smallest first.
CATALOGUE: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            "qwen2.5-0.5b",
            f"{HF}/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_k_m.gguf",
            491_400_032,
            "74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db",
            "Qwen2.5 0.5B Instruct (Apache-2.0): the default, fast on any CPU",
        ),
        KnownModel(
            "llama-3.2-1b",
            f"{HF}/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/"
            "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
            807_694_464,
            "6f85a640a97cf2bf5b8e764087b1e83da0fdb51d7c9fab7d0fece9385611df83",
            "Llama 3.2 1B Instruct (Llama 3.2 Community License)",
        ),
        KnownModel(
            "qwen2.5-1.5b",
            f"{HF}/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/main/qwen2.5-1.5b-instruct-q4_k_m.gguf",
            1_117_320_736,
            "6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e",
            "Qwen2.5 1.5B Instruct (Apache-2.0): a good step up on a laptop",
        ),
        KnownModel(
            "gemma-2-2b",
            f"{HF}/bartowski/gemma-2-2b-it-GGUF/resolve/main/gemma-2-2b-it-Q4_K_M.gguf",
            1_708_582_752,
            "e0aee85060f168f0f2d8473d7ea41ce2f3230c1bc1374847505ea599288a7787",
            "Gemma 2 2B Instruct (Gemma Terms of Use)",
        ),
        KnownModel(
            "llama-3.2-3b",
            f"{HF}/bartowski/Llama-3.2-3B-Instruct-GGUF/resolve/main/"
            "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
            2_019_377_696,
            "6c1a2b41161032677be168d354123594c0e6e67d2b9227c84f296ad037c728ff",
            "Llama 3.2 3B Instruct (Llama 3.2 Community License)",
        ),
        KnownModel(
            "qwen2.5-3b",
            f"{HF}/Qwen/Qwen2.5-3B-Instruct-GGUF/resolve/main/qwen2.5-3b-instruct-q4_k_m.gguf",
            2_104_932_768,
            "626b4a6678b86442240e33df819e00132d3ba7dddfe1cdc4fbb18e0a9615c62d",
            "Qwen2.5 3B Instruct (Qwen Research License): careful, needs ~4 GB of memory",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-0.5b"
DEFAULT_URL = CATALOGUE[DEFAULT_MODEL].url
DEFAULT_SHA256 = CATALOGUE[DEFAULT_MODEL].sha256
KNOWN_SHA256 = {m.url: m.sha256 for m in CATALOGUE.values()}
KNOWN_SIZE = {m.url: m.size for m in CATALOGUE.values()}

CHUNK = 1 << 20


class DownloadError(Exception):
    """A download that did not produce a verified file (the message says why and what next)."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _name_from(url: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise DownloadError(f"cannot tell a file name from {url}; pass --name")
    return name


def lookup(what: str) -> KnownModel | str:
    """A catalogue model by name, or `what` itself when it is a URL (raises DownloadError)."""
    if what in CATALOGUE:
        return CATALOGUE[what]
    if urlparse(what).scheme in ("http", "https"):
        return what
    raise DownloadError(
        f"{what!r} is neither a URL nor a model this command knows "
        f"({', '.join(CATALOGUE)}; `parlor download --list` says more)"
    )


def catalogue_lines() -> list[str]:
    return [
        f"{m.name:<14} {m.size / 1e9:5.2f} GB  {m.about}\n{'':<14} {m.file_name}"
        for m in CATALOGUE.values()
    ]


def _fetch(client: httpx.Client, url: str, part: Path, progress: bool) -> None:
    """Append the rest of `url` to `part` (resuming from its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", url, headers=headers) as r:
        if r.status_code == 416 and offset:
            return  # the .part already holds the whole file; verification decides
        if r.status_code not in (200, 206):
            raise DownloadError(f"{url} answered HTTP {r.status_code}")
        if r.status_code == 200 and offset:
            offset = 0  # the server ignored the Range request: start over
        length = r.headers.get("content-length")
        total = offset + int(length) if length and length.isdigit() else None
        with (
            part.open("ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            # No chunk size: httpx would buffer up to it and lose the buffer on a cut.
            for block in r.iter_bytes():
                out.write(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise DownloadError("the connection closed early")


def download(
    url: str = DEFAULT_URL,
    models_dir: Path = Path("models"),
    *,
    name: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress: bool = True,
    client: httpx.Client | None = None,
) -> Path:
    """Download `url` into `models_dir`; return the verified file's path."""
    expected = (sha256 or KNOWN_SHA256.get(url) or "").lower() or None
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / (name or _name_from(url))
    part = target.with_name(target.name + ".part")
    if target.exists() and not force:
        if expected and file_sha256(target) != expected:
            raise DownloadError(
                f"{target} exists but its sha256 is not {expected}; use --force to replace it"
            )
        print(f"{target} is there already")
        return target
    own_client = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30, read=120))
    try:
        _fetch(http, url, part, progress)
    except httpx.HTTPError as exc:
        raise DownloadError(
            f"download interrupted ({exc.__class__.__name__}: {exc}); "
            f"run the same command again to resume from {part}"
        ) from exc
    except DownloadError as exc:
        raise DownloadError(f"{exc}; run the same command again to resume from {part}") from exc
    finally:
        if own_client:
            http.close()
    size = KNOWN_SIZE.get(url)
    if size is not None and part.stat().st_size != size:
        got = part.stat().st_size
        part.unlink()  # not the file the catalogue knows: do not resume it either
        raise DownloadError(f"size mismatch for {url}: expected {size} bytes, got {got}")
    actual = file_sha256(part)
    if expected and actual != expected:
        part.unlink()  # a corrupt download is worth nothing, and must not be resumed
        raise DownloadError(f"checksum mismatch for {url}: expected {expected}, got {actual}")
    part.replace(target)
    if not expected:
        print(f"sha256 {actual} (pass --sha256 to check it next time)")
    print(f"saved {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="parlor download",
        description="Download a GGUF model by name (see --list) or URL "
        f"(default: {DEFAULT_MODEL}).",
    )
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="a name or a URL")
    parser.add_argument("--list", action="store_true", help="the models known by name")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--name", help="file name in the models directory (default: from URL)")
    parser.add_argument("--sha256", help="expected checksum (known for the named models)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(catalogue_lines()))
        return 0
    try:
        found = lookup(args.model)
        download(
            found.url if isinstance(found, KnownModel) else found,
            args.models_dir,
            name=args.name,
            sha256=args.sha256,
            force=args.force,
            progress=not args.quiet,
        )
    except (DownloadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
