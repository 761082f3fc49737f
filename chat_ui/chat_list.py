"""How many chats the sidebar lists, and the pages of all of them.

The sidebar is on every page, so its cost must not grow with the number of chats: it
lists the most recently updated `SIDEBAR_CHATS` (db_api reads them from the (owner,
updated_at) index and stops there) and, when there are more, links to the "All chats"
pages, `PAGE` chats each, newest first. Search finds any chat by its words.
"""

from __future__ import annotations

from chat_ui.contracts import ChatSummary

SIDEBAR_CHATS = 50
PAGE = 100
# db_api's own bound on paging (its MAX_OFFSET): far beyond anyone's scrolling.
MAX_OFFSET = 100_000


def shown_in_sidebar(chats: list[ChatSummary] | None) -> tuple[list[ChatSummary], bool]:
    """The chats the sidebar lists (it asks for one more than it shows), and whether
    there are more than it shows."""
    chats = chats or []
    return chats[:SIDEBAR_CHATS], len(chats) > SIDEBAR_CHATS
