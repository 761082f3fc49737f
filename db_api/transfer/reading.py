"""From an upload's bytes to chat drafts, refusing hostile files before they cost much.

Order of the checks: the size (the caller counts bytes as they arrive), a zip is
opened only to read one member and only up to the size limit whatever its header says,
the nesting depth is counted by a scanner before any parsing (so no parser recurses
deeply), then JSON is parsed, the format recognised and each chat converted. Every
refusal is an ImportRejected with a 4xx status and a sentence for people.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from db_api.transfer import chatgpt, openwebui, parlor
from db_api.transfer.tree import ChatDraft, ImportRejected, Limits

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_CHUNK = 1024 * 1024
# A JSON string (skipped whole, escapes included) or a bracket.
_STRUCTURE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPENERS = frozenset(b"[{")
EMPTY = "empty"


def _mib(count: int) -> str:
    return f"{count / (1024 * 1024):.0f} MiB" if count >= 1024 * 1024 else f"{count} bytes"


def too_large(limit: int) -> ImportRejected:
    return ImportRejected(413, f"the file is larger than the import limit of {_mib(limit)}")


def unzip(data: bytes, limits: Limits) -> bytes:
    """The JSON inside a zip: ChatGPT's `conversations.json`, or the zip's only .json
    file. Reading stops as soon as the unpacked size passes the limit (a zip bomb)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [info for info in archive.infolist() if not info.is_dir()]
        chosen = [i for i in members if i.filename.rsplit("/", 1)[-1] == "conversations.json"]
        if not chosen:
            chosen = [i for i in members if i.filename.lower().endswith(".json")]
        if len(chosen) != 1:
            raise ImportRejected(
                422,
                "the zip file holds no conversations.json (ChatGPT's export) and not exactly "
                "one .json file; upload the JSON file itself",
            )
        (member,) = chosen
        if member.flag_bits & 0x1:
            raise ImportRejected(422, "the zip file is encrypted")
        if member.file_size > limits.max_bytes:
            raise ImportRejected(
                413, f"{member.filename} unpacks to more than the limit of {_mib(limits.max_bytes)}"
            )
        out = bytearray()
        with archive.open(member) as stream:
            while chunk := stream.read(_CHUNK):
                out += chunk
                if len(out) > limits.max_bytes:
                    raise ImportRejected(
                        413,
                        f"{member.filename} unpacks to more than the limit of "
                        f"{_mib(limits.max_bytes)}",
                    )
        return bytes(out)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        raise ImportRejected(400, f"not a readable zip file ({exc})") from None


def check_depth(data: bytes, max_depth: int) -> None:
    depth = 0
    for match in _STRUCTURE.finditer(data):
        char = match.group()[0]
        if char in _OPENERS:
            depth += 1
            if depth > max_depth:
                raise ImportRejected(
                    422, f"the JSON is nested deeper than {max_depth} levels; nothing was imported"
                )
        elif char != 0x22:  # a closing bracket (0x22 is a string's quote)
            depth -= 1


def parse(data: bytes, limits: Limits) -> Any:
    if data.startswith(ZIP_MAGIC):
        data = unzip(data, limits)
    if len(data) > limits.max_bytes:
        raise too_large(limits.max_bytes)
    check_depth(data, limits.max_depth)
    try:
        return json.loads(data, parse_constant=_not_json)
    except RecursionError:
        raise ImportRejected(422, "the JSON is nested too deeply; nothing was imported") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise ImportRejected(400, f"not a JSON file ({exc}); nothing was imported") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def drafts(data: Any, limits: Limits) -> tuple[str, Iterator[ChatDraft]]:
    """The source format's name and its chats as drafts (converted lazily, in order)."""
    if parlor.looks_like(data):
        export = parlor.read(data)
        _check_count(len(export.chats), limits)
        return parlor.SOURCE, (parlor.convert(c, i) for i, c in enumerate(export.chats, 1))
    items = data if isinstance(data, list) else [data]
    _check_count(len(items), limits)
    if not items:
        return EMPTY, iter(())
    for source in (chatgpt, openwebui):
        if source.looks_like(items[0]):
            for position, item in enumerate(items, 1):
                if not source.looks_like(item):
                    raise ImportRejected(
                        422,
                        f"item {position} of the file is not like the first one "
                        f"(a {source.SOURCE} chat); nothing was imported",
                    )
            convert = source.convert
            return source.SOURCE, (convert(item, i) for i, item in enumerate(items, 1))
    raise ImportRejected(
        422,
        "not a chat export Parlor reads: expected Parlor's JSON export, ChatGPT's "
        "conversations.json (or its zip) or Open WebUI's chat export",
    )


def _check_count(count: int, limits: Limits) -> None:
    if count > limits.max_chats:
        raise ImportRejected(
            422,
            f"the file holds {count} chats; the limit per import is {limits.max_chats}; "
            "nothing was imported",
        )
