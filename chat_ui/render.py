"""Model output as safe HTML: Markdown (raw HTML off) + Pygments classes, then nh3.

The model's text is never trusted: markdown-it escapes any HTML it contains, and nh3
removes whatever could still execute (event handlers, javascript: links, unknown tags).
Highlighting uses CSS classes only (static/pygments.css), so the CSP needs no inline style.

Every top-level block renders on its own (link reference definitions are off: they are
the one Markdown feature where a later block changes an earlier one), so an answer can be
rendered block by block while it streams (chat_ui.markdown_stream) and the pieces add up
to exactly `markdown_html` of the whole answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="")


@lru_cache(maxsize=128)
def _lexer(name: str) -> Lexer | None:
    # Looking a lexer up by name scans Pygments' registry: ~0.5 ms, worth remembering.
    try:
        return get_lexer_by_name(name, stripnl=False)
    except ClassNotFound:
        return None


def _highlight(code: str, lang: str, _attrs: str) -> str:
    lexer = _lexer(lang.split()[0].lower()) if lang.strip() else None
    if lexer is None:
        return ""  # markdown-it then escapes the code itself
    return str(highlight(code, lexer, _FORMATTER))


def _code_frame(html: str, lang: str) -> str:
    """A code block with its language shown above it (the copy button goes there too).

    `tabindex` lets a keyboard scroll a wide block."""
    label = escapeHtml(lang[:24]) if lang else "text"
    body = html.replace("<pre>", '<pre tabindex="0">', 1)
    return (
        f'<div class="code-block"><div class="code-head"><span class="code-lang">{label}</span>'
        f"</div>{body.rstrip()}</div>\n"
    )


def _fence(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    info = tokens[idx].info.strip()
    lang = info.split()[0] if info else ""
    return _code_frame(RendererHTML.fence(self, tokens, idx, options, env), lang)


def _code_block(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    return _code_frame(RendererHTML.code_block(self, tokens, idx, options, env), "")


_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight})
_MD.enable(["table", "strikethrough"])
# `[x]: url` definitions reach back into earlier blocks; without them every block renders
# alone (the streaming renderer relies on it). Such a line shows as the text it is.
_MD.disable("reference")
_MD.add_render_rule("fence", _fence)
_MD.add_render_rule("code_block", _code_block)

_TAGS = {
    "div",
    "p",
    "br",
    "hr",
    "em",
    "strong",
    "del",
    "s",
    "code",
    "pre",
    "span",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
# No <img>: a model could otherwise make the browser fetch any URL (and the CSP would
# block it anyway). No style attributes (tables' alignment): the CSP forbids inline style.
_ATTRS = {
    "a": {"href", "title"},
    "code": {"class"},
    "div": {"class"},
    "pre": {"tabindex"},
    "span": {"class"},
    "ol": {"start"},
}


# What the HTML of a given text looks like: raise it with any change to the renderer
# (rules, highlighting, sanitizing, the code frame), so that finished answers' HTML kept
# by chat_ui.render_cache is rendered again rather than shown the old way.
RENDERER_VERSION = 1


def markdown_html(text: str) -> str:
    """Sanitized HTML for a model answer (a finished message's is kept by
    chat_ui.render_cache: this renders every time)."""
    return _markdown_html(text)


def parse(text: str) -> list[Token]:
    """markdown-it's tokens for `text`, with the renderer's own settings."""
    return _MD.parse(text)


def render_blocks(text: str) -> str:
    """`markdown_html` without the cache (for pieces of a streaming answer)."""
    return _markdown_html(text)


def _markdown_html(text: str) -> str:
    html = _MD.render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRS,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def pygments_css() -> str:
    """The stylesheet behind the highlight classes: light; dark when the system is dark
    and the person did not choose light (`data-theme` on <html>), or chose dark."""
    light = HtmlFormatter(style="default", classprefix="").get_style_defs(".md pre")
    dark = HtmlFormatter(style="monokai", classprefix="")
    system = dark.get_style_defs(':root:not([data-theme="light"]) .md pre')
    chosen = dark.get_style_defs(':root[data-theme="dark"] .md pre')
    return f"{light}\n@media (prefers-color-scheme: dark) {{\n{system}\n}}\n{chosen}\n"


THEMES = ("system", "light", "dark")


def theme_of(cookies: Mapping[str, str]) -> str:
    """The person's theme choice from its cookie; `system` when absent or unknown."""
    value = cookies.get("theme", "system")
    return value if value in THEMES else "system"


def zone_of(cookies: Mapping[str, str]) -> tzinfo:
    """The browser's time zone (its `tz` cookie, set by the page script), else UTC."""
    name = cookies.get("tz", "")
    if not name or len(name) > 64:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


T = TypeVar("T")
DATE_GROUPS = ("Today", "Yesterday", "Previous 7 days", "Older")


def group_by_date(
    chats: Iterable[T], now: datetime | None = None, zone: tzinfo = UTC
) -> list[tuple[str, list[T]]]:
    """Chats under Today, Yesterday, Previous 7 days and Older (by their `updated_at`, an
    attribute or a key, in the person's time zone), keeping their order; empty groups left
    out."""
    today = (now or datetime.now(UTC)).astimezone(zone).date()
    groups: dict[str, list[T]] = {name: [] for name in DATE_GROUPS}
    for chat in chats:
        stamp = chat.get("updated_at") if isinstance(chat, Mapping) else None
        when = _parse_ts(stamp or getattr(chat, "updated_at", None))
        if when is None:
            groups["Older"].append(chat)
            continue
        days = (today - when.astimezone(zone).date()).days
        if days <= 0:
            groups["Today"].append(chat)
        elif days == 1:
            groups["Yesterday"].append(chat)
        elif days <= 7:
            groups["Previous 7 days"].append(chat)
        else:
            groups["Older"].append(chat)
    return [(name, items) for name, items in groups.items() if items]


def _parse_ts(ts: object) -> datetime | None:
    if not isinstance(ts, str) or not ts:
        return None
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def age(ts: str | None, now: datetime | None = None) -> str:
    """A short relative age such as '3 min ago' for an ISO timestamp."""
    when = _parse_ts(ts)
    if when is None:
        return ""
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = seconds // size
            if unit == "day":
                return f"{n} day{'s' if n != 1 else ''} ago"
            return f"{n} {unit} ago"
    return "just now"
