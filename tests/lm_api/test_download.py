"""`parlor download` against a real HTTP server on loopback (no internet)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lm_api import download
from lm_api.download import CATALOGUE, DEFAULT_URL, KnownModel, lookup, main

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MB, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class FileServer:
    url: str
    cut_after: int | None = None  # drop the connection after this many bytes, once
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    state = FileServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/models/model.gguf":
                self.send_error(404)
                return
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            start = 0
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(PAYLOAD):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
                )
            else:
                self.send_response(200)
            body = PAYLOAD[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                self.wfile.write(body[: state.cut_after])
                state.cut_after = None
                self.wfile.flush()
                self.close_connection = True
                return  # the client sees fewer bytes than Content-Length
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/models/model.gguf"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(10)


def run(url: str, models: Path, *extra: str) -> int:
    return main([url, "--models-dir", str(models), "--quiet", *extra])


def test_downloads_and_verifies(file_server: FileServer, tmp_path: Path) -> None:
    assert run(file_server.url, tmp_path, "--sha256", SHA) == 0
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD
    assert not (tmp_path / "model.gguf.part").exists()


def test_without_a_checksum_prints_the_computed_one(
    file_server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(file_server.url, tmp_path, "--name", "other.gguf") == 0
    assert SHA in capsys.readouterr().out
    assert (tmp_path / "other.gguf").read_bytes() == PAYLOAD


def test_an_interrupted_download_resumes_with_a_range_request(
    file_server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file_server.cut_after = 300_000
    assert run(file_server.url, tmp_path, "--sha256", SHA) == 1
    assert "run the same command again to resume" in capsys.readouterr().err
    part = tmp_path / "model.gguf.part"
    assert part.read_bytes() == PAYLOAD[:300_000]
    assert not (tmp_path / "model.gguf").exists()

    assert run(file_server.url, tmp_path, "--sha256", SHA) == 0
    assert file_server.ranges == [None, "bytes=300000-"]
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD
    assert not part.exists()


def test_a_server_that_ignores_range_still_gives_a_correct_file(
    file_server: FileServer, tmp_path: Path
) -> None:
    (tmp_path / "model.gguf.part").write_bytes(b"stale bytes from before")
    file_server.honour_range = False
    assert run(file_server.url, tmp_path, "--sha256", SHA) == 0
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD


def test_a_checksum_mismatch_keeps_no_bad_file(
    file_server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(file_server.url, tmp_path, "--sha256", "0" * 64) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_present_file_is_not_downloaded_again(file_server: FileServer, tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(PAYLOAD)
    assert run(file_server.url, tmp_path, "--sha256", SHA) == 0
    assert file_server.ranges == []
    # ... unless it is not the expected file.
    (tmp_path / "model.gguf").write_bytes(b"something else")
    assert run(file_server.url, tmp_path, "--sha256", SHA) == 1
    assert run(file_server.url, tmp_path, "--sha256", SHA, "--force") == 0
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD


def test_an_http_error_is_a_clear_message(
    file_server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(file_server.url.replace("model.gguf", "nope.gguf"), tmp_path) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert not (tmp_path / "nope.gguf").exists()


def test_the_catalogue_knows_small_instruct_models_with_sizes_and_checksums() -> None:
    assert lookup("qwen2.5-0.5b") == CATALOGUE["qwen2.5-0.5b"]
    assert CATALOGUE["qwen2.5-0.5b"].url == DEFAULT_URL  # what `parlor download` fetches
    assert len(CATALOGUE) >= 4
    for name, m in CATALOGUE.items():
        assert lookup(name) is m
        assert m.url.startswith("https://huggingface.co/") and "/resolve/" in m.url
        assert m.file_name.endswith(".gguf")
        assert len(m.sha256) == 64 and int(m.sha256, 16) >= 0
        assert 100e6 < m.size < 4e9  # small models: fit a laptop
    # A URL is taken as it is.
    assert lookup("https://example.org/x.gguf") == "https://example.org/x.gguf"


def test_list_names_the_models_with_their_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for m in CATALOGUE.values():
        assert m.name in out and m.file_name in out
    assert "0.49 GB" in out  # qwen2.5-0.5b's 491,400,032 bytes


def test_an_unknown_name_says_which_names_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gpt-5", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "'gpt-5'" in err and "qwen2.5-1.5b" in err
    assert list(tmp_path.iterdir()) == []


def known(monkeypatch: pytest.MonkeyPatch, url: str, size: int, sha: str) -> None:
    """A catalogue entry served by the loopback server (the real ones are never fetched)."""
    entry = KnownModel("tiny", url, size, sha, "a test model")
    monkeypatch.setitem(download.CATALOGUE, "tiny", entry)
    monkeypatch.setitem(download.KNOWN_SHA256, url, sha)
    monkeypatch.setitem(download.KNOWN_SIZE, url, size)


def test_a_name_downloads_its_file_with_the_catalogues_checks(
    file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known(monkeypatch, file_server.url, len(PAYLOAD), SHA)
    assert main(["tiny", "--models-dir", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "model.gguf").read_bytes() == PAYLOAD
    assert file_server.ranges == [None]


@pytest.mark.parametrize(
    ("size", "sha", "error"),
    [
        (len(PAYLOAD) + 1, SHA, "size mismatch"),
        (len(PAYLOAD), "f" * 64, "checksum mismatch"),
    ],
)
def test_a_named_download_that_is_not_the_catalogues_file_is_refused(
    file_server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    size: int,
    sha: str,
    error: str,
) -> None:
    known(monkeypatch, file_server.url, size, sha)
    assert main(["tiny", "--models-dir", str(tmp_path), "--quiet"]) == 1
    assert error in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no bad model, no .part to resume
