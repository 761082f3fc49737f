"""Model output as safe HTML: Markdown (raw HTML off) + Pygments classes, then nh3.

The model's text is never trusted: markdown-it escapes any HTML it contains, and nh3
removes whatever could still execute (event handlers, javascript: links, unknown tags).
Highlighting uses CSS classes only (static/pygments.css), so the CSP needs no inline style.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="")


def _highlight(code: str, lang: str, _attrs: str) -> str:
    if lang:
        try:
            lexer = get_lexer_by_name(lang.split()[0], stripnl=False)
        except ClassNotFound:
            return ""  # markdown-it then escapes the code itself
        return highlight(code, lexer, _FORMATTER)
    return ""


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


def markdown_html(text: str) -> str:
    """Sanitized HTML for a model answer."""
    html = _MD.render(text)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRS,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def plain_html(text: str) -> str:
    """Escaped text for a bubble still streaming (shown with white-space: pre-wrap)."""
    return escape(text)


def pygments_css() -> str:
    """The stylesheet behind the highlight classes (light, and dark via media query)."""
    light = HtmlFormatter(style="default", classprefix="").get_style_defs(".md")
    dark = HtmlFormatter(style="monokai", classprefix="").get_style_defs(".md")
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
