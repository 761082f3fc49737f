"""Titles written by the model: after a chat's first answer, the model is asked (in the
background) for a few words naming the chat. The title is cleaned up and capped, and
stored as the model's (title_source "model"): db_api refuses it (409) once the person has
named the chat, so a name the person gave is never replaced. On any failure the title
from the question's first words stays."""

from __future__ import annotations

import logging
import re
from uuid import UUID

from chat_ui.clients import DbApi, DbRejected, DbUnavailable, LmApi, LmError, NotFound
from chat_ui.contracts import ChatPatch

log = logging.getLogger("chat_ui.titles")

TITLE_MAX_TOKENS = 16
TITLE_MAX_WORDS = 8
TITLE_MAX_CHARS = 60
# How much of the question and answer the model reads to name the chat.
EXCERPT_CHARS = 1000

TITLE_PROMPT = (
    "Write a title of at most six words for this conversation. Answer with the title "
    "only: no quotes, no punctuation at the end."
)

_PREFIX = re.compile(r"^\s*(title\s*:\s*)", re.IGNORECASE)
# Quotes (straight and curly) and Markdown marks around words.
_DECORATION = "\"'`*_#>[]()\u201c\u201d\u2018\u2019"


def clean_title(raw: str) -> str | None:
    """A title fit for the sidebar from what the model wrote: its first non-empty line,
    without quotes, Markdown marks or a "Title:" prefix, at most TITLE_MAX_WORDS words
    and TITLE_MAX_CHARS characters; None when nothing readable is left."""
    line = next((ln for ln in raw.splitlines() if ln.strip()), "")
    line = _PREFIX.sub("", line)
    # Control characters (and what db_api cannot store) never reach a title.
    line = "".join(c if c.isprintable() else " " for c in line)
    words = [w.strip(_DECORATION) for w in line.split()]
    words = [w for w in words if w][:TITLE_MAX_WORDS]
    title = " ".join(words).rstrip(".,;:!?-\u2013\u2014")
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    if not any(c.isalnum() for c in title):
        return None
    return title


async def ask_title(lm: LmApi, model: str, chat_id: UUID, question: str, answer: str) -> str | None:
    """The model's title for a chat that began with `question` and `answer`."""
    messages = [
        {"role": "system", "content": TITLE_PROMPT},
        {
            "role": "user",
            "content": f"Question: {question[:EXCERPT_CHARS]}\n\nAnswer: {answer[:EXCERPT_CHARS]}",
        },
    ]
    text = ""
    async for delta in lm.stream_chat(model, messages, TITLE_MAX_TOKENS, chat_id):
        text += delta.text
    return clean_title(text)


async def write_title(
    db: DbApi, lm: LmApi, owner: str, chat_id: UUID, model: str, question: str, answer: str
) -> str | None:
    """Ask for a title and store it as the model's; the stored title, or None when the
    first words stay (the model failed, or the person named the chat)."""
    try:
        title = await ask_title(lm, model, chat_id, question, answer)
        if title is None:
            return None
        await db.update_chat(owner, chat_id, ChatPatch(title=title, title_source="model"))
    except LmError as exc:
        log.info("no model title for chat %s: %s", chat_id, exc.message)
        return None
    except DbRejected as exc:
        # 409: the person named the chat meanwhile; their name stays.
        log.info("model title for chat %s not stored: %s", chat_id, exc.detail)
        return None
    except (DbUnavailable, NotFound) as exc:
        log.info("model title for chat %s not stored: %r", chat_id, exc)
        return None
    return title
