"""Full-text search over the owner's chats (see db_api/search.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from db_api import search
from db_api.routes import deps

# Results are for people, a page at a time; deep paging is a scraper's.
MAX_OFFSET = 1000

router = deps.owner_scoped_router("search")


@router.get("/search", response_model=list[search.Hit])
def search_chats(
    owner: deps.OwnerDep,
    session: deps.SessionDep,
    q: Annotated[str, Query(max_length=search.MAX_QUERY_CHARS)] = "",
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[search.Hit]:
    """The owner's chats whose title or messages contain every word of `q` (each word
    also as the prefix of a longer one), best first: one row per chat, with its best
    message (`message_id` null when only the title matches), the number of its messages
    that match (`hits`), whether that message is on the branch the chat shows
    (`on_current_path`; else POST /chats/{id}/current selects it) and snippets as
    [{text, hit}] segments. `q` is plain text: any
    punctuation separates words; with no word at all the answer is empty."""
    return search.search(session, owner, q, limit=limit, offset=offset)
