"""Which part of a long chat a page shows: a window of the current branch.

A chat page costs what it shows, not what the chat holds: it opens with the latest
`WINDOW` messages (db_api walks the branch up from its leaf and stops there), and earlier
ones come a window at a time as the person scrolls up (htmx, the sentinel at the top of
the messages) or follows "Show earlier messages" (without JavaScript: a page of the
window above). `?at=<message>` (a search hit, a shared link) opens the window holding that
message however far back it lies; a window short of the newest message ends with "Show
later messages" and a link to the latest.
"""

from __future__ import annotations

from uuid import UUID

from chat_ui.clients import NotFound
from chat_ui.contracts import Chat, Page
from chat_ui.conversation import Conversation

# Messages a page opens with (and loads per step): about a screenful of scrolling
# several times over, and a flat cost whatever the chat's length.
WINDOW = 50


def latest() -> dict[str, str | int]:
    """The newest messages of the current branch."""
    return {"limit": WINDOW}


def earlier(before: UUID) -> dict[str, str | int]:
    """The window just above `before`."""
    return {"limit": WINDOW, "before": str(before)}


def later(after: UUID) -> dict[str, str | int]:
    """The window just below `after`."""
    return {"limit": WINDOW, "after": str(after)}


def around(message_id: UUID) -> dict[str, str | int]:
    """A window holding `message_id` (about half of it above the message)."""
    return {"limit": WINDOW, "around": str(message_id)}


async def open_chat(conv: Conversation, chat_id: UUID, at: UUID | None = None) -> Chat:
    """The chat as its page opens: at a message when `at` names one of its current
    branch, else (no `at`, or one that is gone or on another branch since the link was
    made) its latest window; a missing chat raises NotFound."""
    if at is not None:
        try:
            return await conv.load_window(chat_id, around(at))
        except NotFound:
            pass  # the chat's own 404, if it is missing, comes from the next call
    return await conv.load_window(chat_id, latest())


async def open_page(conv: Conversation, chat_id: UUID, at: UUID | None = None) -> Page:
    """What the chat's page shows, as `open_chat` opens it: the latest window comes with
    the page's other reads (the sidebar, the roles) in one round trip to db_api, the
    common case; a window at a message comes first, then the rest."""
    if at is None:
        return await conv.load_page(chat_id, WINDOW)
    chat = await open_chat(conv, chat_id, at)
    return (await conv.load_page(None, WINDOW)).model_copy(update={"chat": chat})


def earlier_href(chat: Chat) -> str | None:
    """Where the messages above the window come from, if there are any."""
    if not chat.has_earlier or not chat.messages:
        return None
    return f"/chats/{chat.id}/earlier?before={chat.messages[0].id}"


def later_href(chat: Chat) -> str | None:
    """Where the messages below the window come from, if there are any."""
    if not chat.has_later or not chat.messages:
        return None
    return f"/chats/{chat.id}/later?after={chat.messages[-1].id}"
