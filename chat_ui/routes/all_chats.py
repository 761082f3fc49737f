"""All of a person's chats, a page at a time (the sidebar lists only the newest)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from chat_ui import chat_list, deps
from chat_ui.web import page

router = APIRouter()


@router.get("/all-chats")
async def all_chats(
    request: Request,
    owner: deps.Owner,
    db: deps.Db,
    conv: deps.Conversation,
    offset: Annotated[int, Query(ge=0, le=chat_list.MAX_OFFSET)] = 0,
) -> Response:
    # One more than a page says whether there is a next one.
    listed = await db.list_chats(owner, limit=chat_list.PAGE + 1, offset=offset)
    more = len(listed) > chat_list.PAGE
    context = {
        "listed": listed[: chat_list.PAGE],
        "offset": offset,
        "next_href": f"/all-chats?offset={offset + chat_list.PAGE}"
        if more and offset + chat_list.PAGE <= chat_list.MAX_OFFSET
        else None,
        "prev_href": f"/all-chats?offset={max(0, offset - chat_list.PAGE)}" if offset else None,
        "chats": await conv.sidebar(),
        "chat": None,
    }
    return page(request, "all_chats.html", context)
