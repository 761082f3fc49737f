"""Fetch a GGUF model into the models directory: progress bar, resume, checksum.

    parlor download                       # Qwen2.5-0.5B-Instruct Q4_K_M into ./models
    parlor download URL --sha256 HEX      # any other model

A download goes to `<name>.part` and is renamed only once complete and verified, so the
models directory never holds a half or a corrupt model. Run the command again after an
interruption: it resumes from the `.part` file with an HTTP Range request.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
from tqdm import tqdm

DEFAULT_URL = (
    "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/"
    "qwen2.5-0.5b-instruct-q4_k_m.gguf"
)
# From the Hugging Face LFS pointer of that file (491,400,032 bytes).
DEFAULT_SHA256 = "74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db"
KNOWN_SHA256 = {DEFAULT_URL: DEFAULT_SHA256}

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
        description="Download a GGUF model (default: Qwen2.5-0.5B-Instruct Q4_K_M).",
    )
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--name", help="file name in the models directory (default: from URL)")
    parser.add_argument("--sha256", help="expected checksum (known for the default model)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        download(
            args.url,
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
