"""Full-text search over one owner's chat titles and message contents.

What a word is: a run of letters, digits and combining marks (Unicode categories L*, N*,
M*, plus private-use Co); everything else, ASCII punctuation included, separates words.
Both backends are set up (Alembic revision 0003) to split text that way, and the
snippets below use the same rule, so "nginx.conf", "proxy_buffering" and "X-Accel" are
found by any of their parts on both.

- PostgreSQL: a generated column `search_vector` on messages (and on chats, for the
  title) holding `to_tsvector('simple', translate(text, <ASCII punctuation>, <spaces>))`,
  with a GIN index. The `simple` configuration lowercases and does nothing else: no
  stemming and no stop words, so it treats every language the parser can split alike
  (German, Japanese with spaces, Russian...) instead of stemming them all as English, and
  a prefix of any word matches (`ngin:*` finds "nginx"). Stored rather than an
  expression index: ranking reads it instead of parsing every matching text again, and a
  plan that walks one owner's messages stays cheap.
- SQLite: an FTS5 table (`search_fts`, unicode61 tokenizer without diacritic folding,
  like `simple`) whose rows are mapped to chats and messages by `search_docs`; triggers
  on chats and messages keep both in step on insert, update and delete.

The person's input is text, never a query language: it is split into words by the rule
above, and each word becomes a quoted prefix term (`'word':*` in a tsquery, `"word"*` in
FTS5) joined by AND. Quotes, operators, NEAR, backslashes cannot survive the split.

Results: one row per chat (its best hit), ranked by the backend's relevance (ts_rank_cd,
bm25) with a bonus for a title hit, newest chat first among equals. The snippet is cut
here, in Python, from the stored text: a list of {text, hit} segments, never HTML.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session, aliased

from db_api.models import Chat, Message

# What migration 0003 builds beside the models (SQLite's FTS5 table, its shadow tables and
# the doc map; PostgreSQL's expression indexes): autogenerate must not drop them.
SEARCH_OBJECTS = frozenset(
    {
        "search_docs",
        "search_fts",
        *(f"search_fts_{part}" for part in ("data", "idx", "content", "docsize", "config")),
        "ix_messages_search",
        "ix_chats_search",
        "search_vector",
    }
)
MAX_QUERY_CHARS = 1000
MAX_TERMS = 16
MAX_TERM_CHARS = 64
SNIPPET_CHARS = 180
TITLE_WEIGHT = 2.0

# ASCII punctuation; the PostgreSQL index expression (migration 0003) turns each of these
# characters into a space. Written out in SQL as a literal, quotes doubled.
ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_PUNCT_SQL = ASCII_PUNCTUATION.replace("'", "''")
_SPACES_SQL = " " * len(ASCII_PUNCTUATION)


def include_object(
    _object: object, name: str | None, _type: str, reflected: bool, _compare_to: object
) -> bool:
    """Alembic's include_object hook: leave the search objects out of comparisons."""
    return not (reflected and name in SEARCH_OBJECTS)


def pg_document(column: str) -> str:
    """The tsvector of `column` as migration 0003 generates `search_vector` from it."""
    return f"to_tsvector('simple'::regconfig, translate({column}, '{_PUNCT_SQL}', '{_SPACES_SQL}'))"


@cache
def _word_pattern() -> re.Pattern[str]:
    """A regex matching one word: a run of characters of category L*, N*, M* or Co
    (what FTS5's tokenizer is configured to keep). `[^\\W_]` is L* and N*; the marks are
    collected from unicodedata (all of them lie below U+20000 but for the variation
    selectors supplement), the private-use areas are fixed."""
    extra: list[tuple[int, int]] = [(0xE000, 0xF8FF), (0xE0100, 0xE01EF), (0xF0000, 0xFFFFD)]
    extra.append((0x100000, 0x10FFFD))
    start = -1
    for code in range(0x20000):
        mark = unicodedata.category(chr(code))[0] == "M"
        if mark and start < 0:
            start = code
        elif not mark and start >= 0:
            extra.append((start, code - 1))
            start = -1
    ranges = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in extra)
    return re.compile(f"(?:[^\\W_]|[{ranges}])+")


def terms_of(query: str) -> list[str]:
    """The person's words, lowercased, in order, without repeats: what is searched for."""
    words: list[str] = []
    for match in _word_pattern().finditer(query[:MAX_QUERY_CHARS]):
        word = match.group().lower()[:MAX_TERM_CHARS]
        if word not in words:
            words.append(word)
        if len(words) == MAX_TERMS:
            break
    return words


def pg_tsquery(terms: list[str]) -> str:
    """`'nginx':* & 'buf':*`; the terms hold no quote, backslash or operator."""
    return " & ".join(f"'{term}':*" for term in terms)


def fts5_query(terms: list[str]) -> str:
    """`"nginx"* "buf"*` (implicit AND); quotes doubled although terms hold none."""
    return " ".join('"' + term.replace('"', '""') + '"*' for term in terms)


class Segment(BaseModel):
    text: str
    hit: bool


def snippet(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> list[Segment]:
    """A window of `text` around its first hit, as segments marked hit or not. Whitespace
    runs become one space; an ellipsis marks a cut at either end."""
    flat = " ".join(text.split())
    spans = [
        (m.start(), m.end())
        for m in _word_pattern().finditer(flat)
        if any(m.group().lower().startswith(term) for term in terms)
    ]
    if spans and len(flat) > width:
        first = spans[0][0]
        start = max(0, first - width // 3)
        if start > 0:  # begin at a word boundary
            space = flat.find(" ", start, first)
            start = space + 1 if space >= 0 else start
    else:
        start = 0
    end = min(len(flat), start + width)
    if end < len(flat):
        space = flat.rfind(" ", start + width // 2, end)
        end = space if space > 0 else end
    segments: list[Segment] = []

    def add(piece: str, hit: bool) -> None:
        if not piece:
            return
        if segments and segments[-1].hit == hit:
            segments[-1].text += piece
        else:
            segments.append(Segment(text=piece, hit=hit))

    if start > 0:
        add("…", False)
    cursor = start
    for a, b in spans:
        if b <= start or a >= end:
            continue
        a, b = max(a, start), min(b, end)
        add(flat[cursor:a], False)
        add(flat[a:b], True)
        cursor = b
    add(flat[cursor:end], False)
    if end < len(flat):
        add("…", False)
    return segments


class Hit(BaseModel):
    """One chat found: its best message and the snippets, as GET /search answers it."""

    model_config = ConfigDict(frozen=True)

    chat_id: uuid.UUID
    chat_title: str | None
    chat_updated_at: datetime
    message_id: uuid.UUID | None
    role: str | None
    rank: float
    hits: int
    snippet: list[Segment]
    title_snippet: list[Segment]
    # Whether the message is on the branch the chat shows (else opening it at the
    # message means choosing its branch first).
    on_current_path: bool


def _on_current_paths(session: Session, chat_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The ids of the messages on the current branch of these chats (one recursive
    query, walking up from each current leaf)."""
    start = (
        sa.select(Message.id, Message.parent_id)
        .join(Chat, Chat.current_leaf_id == Message.id)
        .where(Chat.id.in_(chat_ids))
        .cte("path", recursive=True)
    )
    above = aliased(Message)
    path = start.union_all(
        sa.select(above.id, above.parent_id).join(start, above.id == start.c.parent_id)
    )
    return set(session.scalars(sa.select(path.c.id)))


_RESULT_COLUMNS: dict[str, Any] = {
    "chat_id": sa.Uuid,
    "message_id": sa.Uuid,
    "rank": sa.Float,
    "hits": sa.Integer,
}

# One row per chat: its best message hit (or its title when only the title matches),
# the number of its messages that match, and a score adding the title's rank.
_PER_CHAT = """
scored AS (
  SELECT hits.chat_id, hits.message_id, hits.rank, hits.created_at,
    row_number() OVER (
      PARTITION BY hits.chat_id
      ORDER BY CASE WHEN hits.message_id IS NULL THEN 1 ELSE 0 END, hits.rank DESC,
               hits.created_at DESC
    ) AS n,
    count(hits.message_id) OVER (PARTITION BY hits.chat_id) AS hits,
    coalesce(max(CASE WHEN hits.message_id IS NOT NULL THEN hits.rank END)
             OVER (PARTITION BY hits.chat_id), 0)
    + :title_weight * coalesce(max(CASE WHEN hits.message_id IS NULL THEN hits.rank END)
             OVER (PARTITION BY hits.chat_id), 0) AS score
  FROM hits
)
SELECT scored.chat_id, scored.message_id, scored.score AS rank, scored.hits
FROM scored JOIN chats ON chats.id = scored.chat_id
WHERE scored.n = 1
ORDER BY scored.score DESC, chats.updated_at DESC, scored.chat_id
LIMIT :limit OFFSET :offset
"""

# Built from constants only (the person's words are a bound parameter).
_TSQUERY = "to_tsquery('simple'::regconfig, :query)"
_PG_HITS = f"""
WITH hits AS (
  SELECT m.chat_id, m.id AS message_id, m.created_at,
    ts_rank_cd(m.search_vector, {_TSQUERY}) AS rank
  FROM messages m JOIN chats c ON c.id = m.chat_id
  WHERE c.owner = :owner AND m.search_vector @@ {_TSQUERY}
  UNION ALL
  SELECT c.id, NULL, c.created_at, ts_rank_cd(c.search_vector, {_TSQUERY})
  FROM chats c
  WHERE c.owner = :owner AND c.search_vector @@ {_TSQUERY}
),
"""  # noqa: S608

_SQLITE_HITS = """
WITH matched AS (
  SELECT search_docs.chat_id, search_docs.message_id, -bm25(search_fts) AS rank
  FROM search_fts JOIN search_docs ON search_docs.id = search_fts.rowid
  WHERE search_fts MATCH :query
),
hits AS (
  SELECT matched.chat_id, matched.message_id, matched.rank,
    coalesce(m.created_at, c.created_at) AS created_at
  FROM matched JOIN chats c ON c.id = matched.chat_id
  LEFT JOIN messages m ON m.id = matched.message_id
  WHERE c.owner = :owner
),
"""


def search(session: Session, owner: str, query: str, *, limit: int, offset: int) -> list[Hit]:
    """The owner's chats matching every word of `query` (as prefixes), best first."""
    terms = terms_of(query)
    if not terms:
        return []
    with session.begin():
        dialect = session.connection().dialect.name
        if dialect == "postgresql":
            sql, text_query = _PG_HITS + _PER_CHAT, pg_tsquery(terms)
        else:
            sql, text_query = _SQLITE_HITS + _PER_CHAT, fts5_query(terms)
        statement = (
            sa.text(sql)
            .bindparams(
                sa.bindparam("owner", type_=sa.String),
                sa.bindparam("query", type_=sa.String),
            )
            .columns(**_RESULT_COLUMNS)
        )
        rows = session.execute(
            statement,
            {
                "query": text_query,
                "owner": owner,
                "limit": limit,
                "offset": offset,
                "title_weight": TITLE_WEIGHT,
            },
        ).all()
        if not rows:
            return []
        chats = {
            chat.id: chat
            for chat in session.scalars(
                sa.select(Chat).where(Chat.id.in_([row.chat_id for row in rows]))
            )
        }
        message_ids = [row.message_id for row in rows if row.message_id is not None]
        messages = {
            row.id: (row.role, row.content)
            for row in session.execute(
                sa.select(Message.id, Message.role, Message.content).where(
                    Message.id.in_(message_ids)
                )
            )
        }
        current = _on_current_paths(session, [row.chat_id for row in rows if row.message_id])
    hits: list[Hit] = []
    for row in rows:
        chat = chats[row.chat_id]
        title = chat.title or ""
        role, content = messages.get(row.message_id, (None, None))
        hits.append(
            Hit(
                chat_id=row.chat_id,
                chat_title=chat.title,
                chat_updated_at=chat.updated_at,
                message_id=row.message_id,
                role=role,
                rank=float(row.rank),
                hits=int(row.hits),
                snippet=snippet(content if content is not None else title, terms),
                title_snippet=snippet(title, terms, width=len(title) + 1),
                on_current_path=row.message_id is None or row.message_id in current,
            )
        )
    return hits
