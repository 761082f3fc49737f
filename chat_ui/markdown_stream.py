"""Markdown rendered while an answer streams: complete blocks once, the open tail as text.

An answer arrives in small pieces. `MarkdownStream.feed` takes each piece and says what
changed on the page:

- the top-level blocks that just became complete (a paragraph followed by a blank line, a
  closed code fence, a list followed by something that is not part of it, a heading...),
  rendered and sanitized by `chat_ui.render`, each exactly once;
- the open tail (the block still being written, and the line being typed), as escaped text:
  either what to append to the tail shown so far, or the whole new tail when blocks were
  just taken out of it.

The pieces add up to the final rendering: the HTML of all blocks plus the HTML of `close()`
is `markdown_html(whole answer)` (render.py renders every top-level block on its own), so
the end of the answer changes nothing visible.

Cost: linear in the answer's length. Only complete lines are parsed, and only when a line
could have closed the open block: a closing fence closes a fence; a blank line closes a
paragraph, a quote or a table; a line less indented than a list item's text, not the list's
next item, may close a list (after a blank line, or when it starts a block). Everything
else (the text of a long code block, a list's items, a paragraph's plain lines) appends to
the tail without any parsing. A parse that finds nothing complete makes the next guessed
parse wait until the tail has grown by half, so repeated false alarms stay linear too. A
parse covers the open tail only, never the blocks already rendered, and each block is
rendered once.

Why a complete block never changes later: in CommonMark a block, once closed, stays
closed, and with link reference definitions off (render.py) nothing written later reaches
back into it. Only whole lines are parsed, because a line being typed can still turn into
something else ("#" becomes "#hashtag", "-" becomes a list item). A block is complete when
a later top-level block has started, or, for the last block, when it can no longer grow:
a heading or a rule at once, a fence once its closing line is there, a paragraph, table or
quote after a blank line. Lists and indented code continue after blank lines, so they are
complete only when something else starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from markdown_it.token import Token

from chat_ui.render import parse, render_blocks

# What a line can start with to begin a block that interrupts a paragraph (or is a table).
_BLOCK_START = re.compile(r"[ ]{0,3}(?:[#>*+\-=_|:~`]|\d)")
_LIST_ITEM = re.compile(r"([ ]{0,3})([*+\-]|\d{1,9}[.)])([ \t]+|$)")
_NOT_A_ROW = re.compile(r"[ ]{0,3}(?:[#>*+\-=_:~`]|\d)")  # a table row starts with "|" or text
_RULE = re.compile(r"[ ]{0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})$")
_QUOTE = re.compile(r"[ ]{0,3}>")
_BLANK_LINES = re.compile(r"(?:[ \t]*\n)+")


@dataclass(frozen=True, slots=True)
class Update:
    """What one piece of text changed.

    `html`: blocks completed by this piece (rendered, sanitized), to add after those shown.
    `tail`: escaped text; appended to the tail shown so far, or, when `replace`, the whole
    new tail (blocks were just taken out of it)."""

    html: str = ""
    tail: str = ""
    replace: bool = False

    @property
    def empty(self) -> bool:
        return not (self.html or self.tail or self.replace)


@dataclass(frozen=True, slots=True)
class _Open:
    """The open block at the start of the tail, as the last parse saw it."""

    kind: str  # paragraph, fence, code_block, bullet_list, ordered_list, blockquote, table
    fence: re.Pattern[str] | None = None  # a fence's closing line
    marker: str = ""  # a list's bullet character, or an ordered list's delimiter


def _gap(spaces: str) -> int:
    """Spaces between a list marker and the item's text that belong to the marker."""
    return len(spaces) if 0 < len(spaces) <= 4 else 1


def _indent(line: str) -> int:
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4 - width % 4
        else:
            break
    return width


class MarkdownStream:
    """The rendering of one answer as it grows (one per stream listener)."""

    def __init__(self) -> None:
        self._lines: list[str] = []  # the tail's complete lines, each ending with "\n"
        self._tail_chars = 0
        self._partial: list[str] = []  # the line being written
        self._cr = False  # a "\r" held back: it may be the first half of "\r\n"
        self._open: _Open | None = None
        self._item_indent = 0  # where the open list's last item's content starts
        self._blank = False  # whether the last complete line was blank
        self._miss_chars = 0  # tail length at the last parse that completed nothing
        self._shown = False  # whether the shown tail has started (leading blank lines hidden)
        self._lead: list[str] = []  # whitespace held back while the shown tail is empty
        self._closed = False
        self._emitted = 0  # characters (after "\r\n" became "\n") taken out as blocks
        self.parsed_chars = 0  # what the parses read in all (the cost, for the tests)

    @property
    def emitted_chars(self) -> int:
        """How much of the (newline-normalized) text the blocks so far were made of."""
        return self._emitted

    @classmethod
    def resume(cls, text: str) -> tuple[MarkdownStream, Update]:
        """A stream that has seen `text`, and all of it as one update (`replace` set): what a
        page shows for an answer so far. The same text always gives the same split."""
        stream = cls()
        update = stream.feed(text, parse_now=True)
        if update.replace:
            return stream, update
        return stream, Update(update.html, update.tail, replace=True)

    def feed(self, text: str, *, parse_now: bool = False) -> Update:
        """Take the next piece of the answer."""
        if self._closed:
            raise RuntimeError("the stream is closed")
        text = self._normalize(text)
        pieces = text.split("\n")
        self._partial.append(pieces[0])
        must_parse = parse_now
        for piece in pieces[1:]:
            line = "".join(self._partial) + "\n"
            self._partial = [piece]
            self._lines.append(line)
            self._tail_chars += len(line)
            must_parse = self._closes(line) or must_parse
        if must_parse and self._lines:
            html = self._parse()
            if html is not None:
                return Update(html, self._tail_html(), replace=True)
        return Update(tail=self._show(text))

    def close(self) -> Update:
        """The answer ended: the whole tail rendered, nothing left open."""
        if self._closed:
            return Update()
        self._closed = True
        rest = "".join(self._lines) + "".join(self._partial) + ("\n" if self._cr else "")
        self._lines, self._partial, self._tail_chars = [], [], 0
        return Update(render_blocks(rest) if rest.strip() else "", "", replace=True)

    # -- lines -----------------------------------------------------------------------

    def _normalize(self, text: str) -> str:
        """ "\r\n" and a lone "\r" as "\n", as markdown-it reads them (even when a "\r\n"
        is split between two pieces)."""
        if self._cr:
            text = "\r" + text
            self._cr = False
        if text.endswith("\r"):
            self._cr = True
            text = text[:-1]
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def _closes(self, line: str) -> bool:
        """Whether this new complete line may have closed the open block (worth a parse)."""
        blank = not line.strip()
        after_blank, self._blank = self._blank, blank
        block = self._open
        if block is None:
            return not blank  # a block starts: learn what it is
        if block.kind == "fence":
            assert block.fence is not None
            return block.fence.match(line) is not None  # closed for sure
        if blank:
            # Closes a paragraph, quote or table for sure; lists and indented code go on.
            return block.kind in ("paragraph", "blockquote", "table")
        starts_block = _BLOCK_START.match(line) is not None
        if block.kind == "code_block":
            return _indent(line) < 4  # for sure: indented code has no lazy lines
        if block.kind in ("bullet_list", "ordered_list"):
            item = _LIST_ITEM.match(line)
            if item is not None and item.group(2)[-1] == block.marker:
                self._item_indent = item.end(2) + _gap(item.group(3))
                return _RULE.match(line) is not None  # "- - -" is a rule, not an item
            if _indent(line) >= self._item_indent:
                return False  # the item goes on
            # After a blank line it ends the list (no lazy lines then); else it is a lazy
            # line of the item's paragraph, unless it starts a block.
            maybe = after_blank or starts_block
        elif block.kind == "paragraph":
            maybe = starts_block or "|" in line
        elif block.kind == "table":
            maybe = "|" not in line or _NOT_A_ROW.match(line) is not None
        else:  # a quote: a line without ">" is lazy, unless it starts a block
            maybe = _QUOTE.match(line) is None and starts_block
        # A guess: after one that completed nothing, wait for the tail to grow by half.
        return maybe and (not self._miss_chars or 2 * self._tail_chars >= 3 * self._miss_chars)

    # -- parsing ---------------------------------------------------------------------

    def _parse(self) -> str | None:
        """Parse the tail's complete lines; render and drop the complete blocks. The HTML of
        what was completed, or None when nothing was (or only blank lines)."""
        source = "".join(self._lines)
        self.parsed_chars += len(source)
        blocks = [t for t in parse(source) if t.level == 0 and t.nesting >= 0 and t.map]
        count = len(self._lines)
        self._open = None
        cut = count  # the first line still open: none, unless the last block is open
        if blocks:
            last = blocks[-1]
            assert last.map is not None
            if not self._complete(last, last.map[1] < count):
                cut = last.map[0]
                self._open = self._describe(last)
        if cut == 0:
            self._miss_chars = self._tail_chars
            return None
        done = "".join(self._lines[:cut])
        del self._lines[:cut]
        self._tail_chars -= len(done)
        self._emitted += len(done)
        self._miss_chars = 0
        if not done.strip():
            return None  # blank lines: the tail shown does not change
        return render_blocks(done)

    def _complete(self, token: Token, blank_after: bool) -> bool:
        kind = token.type.removesuffix("_open")
        if kind in ("heading", "hr"):
            return True
        if kind == "fence":
            assert token.map is not None
            start, end = token.map
            return end - start >= 2 and self._closing(token).match(self._lines[end - 1]) is not None
        return blank_after and kind in ("paragraph", "blockquote", "table")

    @staticmethod
    def _closing(token: Token) -> re.Pattern[str]:
        mark = token.markup
        return re.compile(rf"[ ]{{0,3}}{re.escape(mark[0])}{{{len(mark)},}}[ \t]*\n?$")

    def _describe(self, token: Token) -> _Open:
        kind = token.type.removesuffix("_open")
        if kind == "fence":
            return _Open(kind, fence=self._closing(token))
        if kind in ("bullet_list", "ordered_list"):
            assert token.map is not None
            self._item_indent = 2
            for line in self._lines[token.map[0] :]:  # the open list's last item
                item = _LIST_ITEM.match(line)
                if item is not None and item.group(2)[-1] == token.markup[-1:]:
                    self._item_indent = item.end(2) + _gap(item.group(3))
            return _Open(kind, marker=token.markup[-1:])
        return _Open(kind)

    # -- the shown tail --------------------------------------------------------------

    def _tail_html(self) -> str:
        """The whole tail as shown (escaped, leading blank lines left out)."""
        text = "".join(self._lines) + "".join(self._partial)
        lead = _BLANK_LINES.match(text)
        if lead is not None:
            text = text[lead.end() :]
        self._shown = bool(text.strip())
        self._lead = [] if self._shown else [text]
        return escape(text) if self._shown else ""

    def _show(self, text: str) -> str:
        """What to append to the shown tail for this (normalized) piece."""
        if self._shown:
            return escape(text)
        if not text.strip():
            self._lead.append(text)
            return ""
        text = "".join(self._lead) + text
        self._lead = []
        lead = _BLANK_LINES.match(text)
        if lead is not None:
            text = text[lead.end() :]
        self._shown = True
        return escape(text)


# -- on the page ---------------------------------------------------------------------
# A streaming answer's body holds its rendered blocks, then its tail:
#   <div class="msg-body md msg-live" id="body-ID"> blocks <div class="md-tail" id="tail-ID">
# With JavaScript (htmx's SSE extension), `sync` replaces the body's content, `token`
# appends to the tail, `block` inserts blocks before the tail and replaces the tail's text
# (out of band). Without JavaScript, the page itself is streamed: `live_html` is what to
# write into the open tail, and CSS shows only the last tail (.md-tail:has(~ *)).


def answer_so_far(text: str) -> Update:
    """How a page shows an answer still being written: its blocks, then its tail."""
    return MarkdownStream.resume(text)[1]


def tail_html(message_id: object, tail: str) -> str:
    return f'<div class="md-tail" id="tail-{message_id}">{tail}</div>'


def sync_html(message_id: object, update: Update) -> str:
    """The `sync` event: the body's whole content."""
    return update.html + tail_html(message_id, update.tail)


def block_html(message_id: object, update: Update) -> str:
    """The `block` event: new blocks, and the tail's new text swapped out of band."""
    return f'{update.html}<div id="tail-{message_id}" hx-swap-oob="innerHTML">{update.tail}</div>'


def live_html(update: Update) -> str:
    """What a page streamed without JavaScript writes for `update`, inside its open tail."""
    if update.replace:
        return f'</div>{update.html}<div class="md-tail">{update.tail}'
    return update.tail
