"""The streaming Markdown renderer: complete blocks rendered once, the open tail as text,
and the pieces adding up to the rendering of the whole answer however the text is split."""

from __future__ import annotations

import itertools
import re
from html import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat_ui.markdown_stream import MarkdownStream, Update
from chat_ui.render import markdown_html

_BLANK_LEAD = re.compile(r"(?:[ \t]*\n)+")


def _normalized(text: str) -> str:
    if text.endswith("\r"):
        text = text[:-1]  # held back: it may be half of "\r\n"
    return text.replace("\r\n", "\n").replace("\r", "\n")


class Page:
    """What a browser shows: the blocks appended so far, then the tail."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.tail = ""
        self.updates: list[Update] = []

    def apply(self, update: Update) -> None:
        self.updates.append(update)
        if update.html:
            self.blocks.append(update.html)
        self.tail = update.tail if update.replace else self.tail + update.tail

    @property
    def html(self) -> str:
        return "".join(self.blocks)


def stream(chunks: list[str]) -> tuple[Page, MarkdownStream]:
    """Feed `chunks`, checking after each one that the page shows exactly the blocks made
    of the text taken out so far and the rest as escaped text; then close."""
    md = MarkdownStream()
    page = Page()
    so_far = ""
    for chunk in chunks:
        page.apply(md.feed(chunk))
        so_far += chunk
        text = _normalized(so_far)
        done, rest = text[: md.emitted_chars], text[md.emitted_chars :]
        assert page.html == (markdown_html(done) if done.strip() else "")
        lead = _BLANK_LEAD.match(rest)
        shown = rest[lead.end() :] if lead else rest
        assert page.tail == (escape(shown) if shown.strip() else "")
    page.apply(md.close())
    assert page.tail == ""
    return page, md


def pieces(text: str, cuts: list[int]) -> list[str]:
    edges = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges) if a < b]


FENCE = "Some code:\n\n```python\ndef f(x):\n    return x < 2\n```\n\nThe end.\n"


def test_a_fence_renders_as_soon_as_its_closing_line_is_complete() -> None:
    md = MarkdownStream()
    assert md.feed("Some code:\n\n``").html == "<p>Some code:</p>\n"
    opened = md.feed("`python\ndef f(x):\n    return x < 2\n``")
    assert opened == Update(tail="`python\ndef f(x):\n    return x &lt; 2\n``")
    assert md.feed("`").html == ""  # the closing line is not complete yet
    closed = md.feed("\nThe")
    assert 'class="code-lang">python' in closed.html and "<pre" in closed.html
    assert closed.replace and closed.tail == "The"
    rest = md.feed(" end.\n")
    assert rest == Update(tail=" end.\n")
    assert md.close().html == "<p>The end.</p>\n"


def test_split_everywhere_adds_up_to_the_whole_rendering() -> None:
    for cut in range(1, len(FENCE)):
        page, _ = stream([FENCE[:cut], FENCE[cut:]])
        assert page.html == markdown_html(FENCE), cut
    page, _ = stream(list(FENCE))
    assert page.html == markdown_html(FENCE)
    # Each block once: the code block is not rendered again at the end.
    assert sum("<pre" in block for block in page.blocks) == 1


def test_a_list_is_complete_only_when_something_else_starts() -> None:
    md = MarkdownStream()
    assert md.feed("- one\n- two\n\n").html == ""  # a blank line does not end a list
    assert md.feed("- three\n").html == ""
    assert md.feed("After the list.\n").html == ""  # a lazy line: still the item
    update = md.feed("\nAfter it.\n")
    assert update.html.startswith("<ul>") and update.html.count("<li>") == 3
    assert update.tail == "After it.\n"


def test_code_nested_in_a_list_stays_raw_until_the_list_ends() -> None:
    text = "1. Install:\n\n   ```sh\n   pip install x\n   ```\n\n2. Run it.\n\nDone.\n"
    md = MarkdownStream()
    shown = [md.feed(line + "\n") for line in text.splitlines()]
    assert all(u.html == "" for u in shown[:-1])  # the list goes on until "Done."
    last = shown[-1]
    assert last.html.startswith("<ol>") and 'class="code-lang">sh' in last.html
    assert last.tail == "Done.\n"
    page, _ = stream(pieces(text, [3, 17, 18, 30, 41, 50]))
    assert page.html == markdown_html(text)


def test_a_tail_that_is_a_partial_fence_is_shown_as_text() -> None:
    md = MarkdownStream()
    update = md.feed("Look:\n\n``")
    assert update.html == "<p>Look:</p>\n" and update.tail == "``"
    assert md.feed("`js\nlet a = 1 <").tail == "`js\nlet a = 1 &lt;"
    final = md.close()
    assert 'class="code-lang">js' in final.html and final.tail == "" and final.replace


def test_a_line_being_typed_is_never_taken_for_a_block() -> None:
    # "#" alone would be a heading that ends the paragraph; "#hashtag" continues it.
    md = MarkdownStream()
    md.feed("Some text\n")
    assert md.feed("#").html == ""
    assert md.feed("hashtag\n\n").html == "<p>Some text\n#hashtag</p>\n"


def test_setext_heading_and_table_turn_an_open_paragraph_into_something_else() -> None:
    page, _ = stream(["Title\n", "===\n", "| a | b |\n", "|---|--:|\n", "| 1 | 2 |\n", "\nx"])
    assert page.blocks[0] == "<h1>Title</h1>\n"
    assert page.blocks[1].startswith("<table>") and "<td>1</td>" in page.blocks[1]
    assert page.html == markdown_html("Title\n===\n| a | b |\n|---|--:|\n| 1 | 2 |\n\nx")


def test_crlf_split_between_pieces() -> None:
    text = "one\r\n\r\n```\r\ncode\r\n```\r\nend"
    for cut in range(1, len(text)):
        page, _ = stream([text[:cut], text[cut:]])
        assert page.html == markdown_html(text), cut


def test_html_in_the_answer_stays_text_in_blocks_and_tail() -> None:
    md = MarkdownStream()
    update = md.feed("<script>alert(1)</script>\n\n<img src=x onerror=y>")
    assert "<script>" not in update.html and "&lt;script&gt;" in update.html
    assert update.tail == "&lt;img src=x onerror=y&gt;"
    assert "<img" not in md.close().html


def test_resume_gives_the_same_split_as_a_page_shows() -> None:
    text = "Intro\n\n- a\n- b\n\nPara\n\n```py\nx = 1\n"
    for cut in range(len(text) + 1):
        md, shown = MarkdownStream.resume(text[:cut])
        _, shown_again = MarkdownStream.resume(text[:cut])
        assert shown == shown_again and shown.replace
        page = Page()
        page.apply(shown)
        page.apply(md.feed(text[cut:]))
        page.apply(md.close())
        assert page.html == markdown_html(text), cut


def test_leading_blank_lines_are_not_shown() -> None:
    md = MarkdownStream()
    assert md.feed("\n\n  \n").tail == ""
    assert md.feed("  indented").tail == "  indented"


@pytest.mark.parametrize(
    "text",
    [
        "```python\n" + "x = 1\n# not a heading\n- not a list\n\n" * 800 + "```\n",
        "- item\n  more\n\n" * 1000 + "After.\n",
        "1999 was a year\n" * 2000,  # every line looks like the start of a list
        "- a\nlazy line\n" * 1500,
        "| a | b |\n|---|---|\n" + "| 1 | 2 |\n" * 2000,
        "Para one.\n\n# Heading\n\n```\nc\n```\n- a\n- b\n\nEnd.\n\n" * 300,
        "    code\n\n" * 2000,
    ],
    ids=[
        "long-fence",
        "long-list",
        "false-alarms",
        "lazy-list",
        "table",
        "many-blocks",
        "indented",
    ],
)
def test_cost_is_linear_in_the_answer(text: str) -> None:
    """Parses read at most a few times the answer, token by token (3 characters a piece)."""
    md = MarkdownStream()
    for i in range(0, len(text), 3):
        md.feed(text[i : i + 3])
    md.close()
    assert md.parsed_chars <= 3 * len(text)


def test_a_long_code_block_is_parsed_once() -> None:
    text = "```\n" + "line of code\n" * 5000 + "```\n"
    md = MarkdownStream()
    emitted = [md.feed(text[i : i + 4]).html for i in range(0, len(text), 4)]
    assert sum(1 for html in emitted if html) == 1 and emitted[-1].startswith("<div")
    assert md.parsed_chars <= len(text) + 20


LINES = [
    "",
    "   ",
    "Plain words",
    "more *emphasis* and `code`",
    "- item",
    "  - nested",
    "* star",
    "+ plus",
    "- ```",
    "  ```py",
    "  code()",
    "  ```",
    "1. one",
    "2) two",
    "10. ten",
    "1. ```py",
    "   y = 2",
    "```",
    "```python",
    "````",
    "~~~",
    "    indented code",
    "\tx",
    "> quote",
    "> - quoted item",
    "# Heading",
    "#",
    "---",
    "===",
    "***",
    "- - -",
    "| a | b |",
    "|---|---|",
    "[x]: /url",
    "[x]",
    "x < y & z",
    "**",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(LINES), min_size=1, max_size=25),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.lists(st.integers(min_value=1, max_value=400), max_size=15),
)
def test_any_split_of_any_text_adds_up(
    lines: list[str], newline: str, trailing: bool, cuts: list[int]
) -> None:
    text = newline.join(lines) + (newline if trailing else "")
    page, _ = stream(pieces(text, [c for c in cuts if c < len(text)]))
    assert page.html == markdown_html(text)
