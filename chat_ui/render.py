"""Model output as safe HTML: Markdown (raw HTML off) + Pygments classes, then nh3.

The model's text is never trusted: markdown-it escapes any HTML it contains, and nh3
removes whatever could still execute (event handlers, javascript: links, unknown tags).
Highlighting uses CSS classes only (static/pygments.css), so the CSP needs no inline style.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
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


_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "highlight": _highlight})
_MD.enable(["table", "strikethrough"])

_TAGS = {
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
    "span": {"class"},
    "ol": {"start"},
}


# Rendering dominates a chat page's cost (a finished answer never changes), so recent
# renderings are kept; answers longer than this are rendered each time to bound memory.
CACHE_MAX_CHARS = 16_000


def markdown_html(text: str) -> str:
    """Sanitized HTML for a model answer."""
    if len(text) <= CACHE_MAX_CHARS:
        return _cached_markdown_html(text)
    return _markdown_html(text)


@lru_cache(maxsize=512)
def _cached_markdown_html(text: str) -> str:
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
    """The stylesheet behind the highlight classes (light, and dark via media query)."""
    light = HtmlFormatter(style="default", classprefix="").get_style_defs(".md pre")
    dark = HtmlFormatter(style="monokai", classprefix="").get_style_defs(".md pre")
    return f"{light}\n@media (prefers-color-scheme: dark) {{\n{dark}\n}}\n"


def age(ts: str | None, now: datetime | None = None) -> str:
    """A short relative age such as '3 min ago' for an ISO timestamp."""
    if not ts:
        return ""
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
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
