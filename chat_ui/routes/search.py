"""Search over the person's chats: the box above the sidebar asks as they type (htmx,
results in a panel under it); without JavaScript the same form opens a page of results.
A result opens its chat at the message found (`#msg-<id>`: scrolled to, highlighted)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, TypeAdapter
from starlette.responses import Response

from chat_ui import deps
from chat_ui.web import is_htmx, page, redirect

router = APIRouter()

# db_api takes at most this much; longer input is cut, not refused (it is only a search).
MAX_QUERY_CHARS = 1000
PAGE_SIZE = 20
MAX_OFFSET = 1000


class Segment(BaseModel):
    text: str
    hit: bool


class Hit(BaseModel):
    chat_id: UUID
    chat_title: str | None = None
    message_id: UUID | None = None
    role: str | None = None
    hits: int = 0
    snippet: list[Segment] = []
    title_snippet: list[Segment] = []
    on_current_path: bool = True

    @property
    def href(self) -> str:
        if self.message_id is None:
            return f"/chats/{self.chat_id}"
        if not self.on_current_path:  # in another version: that branch is shown first
            return f"/search/open/{self.chat_id}/{self.message_id}"
        return at_message(self.chat_id, self.message_id)


def at_message(chat_id: UUID, message_id: UUID) -> str:
    """The chat page opened at a message: `at` for the page, the fragment for the browser
    (it scrolls there; CSS :target highlights it)."""
    return f"/chats/{chat_id}?{urlencode({'at': str(message_id)})}#msg-{message_id}"


_HITS = TypeAdapter(list[Hit])


@router.get("/search")
async def search(
    request: Request,
    owner: deps.Owner,
    db: deps.Db,
    conv: deps.Conversation,
    q: Annotated[str, Query()] = "",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    query = " ".join(q.split())[:MAX_QUERY_CHARS]
    hits: list[Hit] = []
    if query:
        # One more than a page tells whether there is a next page.
        raw = await db.search(owner, query, limit=PAGE_SIZE + 1, offset=offset)
        hits = _HITS.validate_python(raw)
    more = len(hits) > PAGE_SIZE
    context: dict[str, Any] = {
        "q": query,
        "hits": hits[:PAGE_SIZE],
        "offset": offset,
        "next_href": f"/search?{urlencode({'q': query, 'offset': offset + PAGE_SIZE})}"
        if more and offset + PAGE_SIZE <= MAX_OFFSET
        else None,
        "prev_href": f"/search?{urlencode({'q': query, 'offset': max(0, offset - PAGE_SIZE)})}"
        if offset > 0
        else None,
    }
    if is_htmx(request):
        return page(request, "_search_results.html", context)
    context.update(chats=await conv.sidebar(), chat=None)
    return page(request, "search.html", context)


@router.get("/search/open/{chat_id}/{message_id}")
async def open_result(
    request: Request, chat_id: UUID, message_id: UUID, owner: deps.Owner, db: deps.Db
) -> Response:
    """A result in a version the chat does not show: show the branch through it (as
    choosing that version would), then open the chat at it. A plain link, so it works
    without JavaScript; what it changes is only which version is shown, and only for a
    chat and message whose ids the person already has."""
    await db.select_branch(owner, chat_id, message_id)
    return redirect(request, at_message(chat_id, message_id))
