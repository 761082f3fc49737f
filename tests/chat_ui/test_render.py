"""render.py's page helpers: code blocks with their language, themes, date groups."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from chat_ui.render import group_by_date, markdown_html, theme_of, zone_of


def test_code_blocks_show_their_language_and_scroll_by_keyboard() -> None:
    out = markdown_html("```Python extra words\nx = 1\n```\n\n    indented\n")
    assert out.count('<div class="code-block">') == 2
    assert '<span class="code-lang">Python</span>' in out
    assert '<span class="code-lang">text</span>' in out  # indented code, no language
    assert out.count('<pre tabindex="0">') == 2


def test_a_language_label_is_escaped_and_short() -> None:
    out = markdown_html("```<img/src=x>" + "a" * 60 + "\ncode\n```\n")
    assert "<img" not in out
    label = out.split('class="code-lang">')[1].split("</span>")[0]
    assert len(label) <= 24 + len("&lt;&gt;") * 2 and "&lt;img" in label


def test_reference_definitions_are_plain_text() -> None:
    # They would reach back into earlier blocks, which streaming cannot allow.
    assert markdown_html("[a]\n\n[a]: https://example.com\n") == (
        "<p>[a]</p>\n<p>[a]: https://example.com</p>\n"
    )


def test_theme_cookie() -> None:
    assert theme_of({}) == "system"
    assert theme_of({"theme": "dark"}) == "dark"
    assert theme_of({"theme": "light"}) == "light"
    assert theme_of({"theme": "<script>"}) == "system"


def test_time_zone_cookie() -> None:
    assert zone_of({}) is UTC
    assert zone_of({"tz": "Europe/Paris"}) == ZoneInfo("Europe/Paris")
    assert zone_of({"tz": "Not/AZone"}) is UTC
    assert zone_of({"tz": "../../etc/passwd"}) is UTC
    assert zone_of({"tz": "x" * 100}) is UTC


def test_chats_grouped_by_date_in_the_persons_time_zone() -> None:
    now = datetime(2026, 3, 10, 23, 30, tzinfo=UTC)
    chats: list[dict[str, str | None]] = [
        {"id": "a", "updated_at": "2026-03-10T23:00:00Z"},
        {"id": "b", "updated_at": "2026-03-10T01:00:00+00:00"},
        {"id": "c", "updated_at": "2026-03-09T12:00:00"},
        {"id": "d", "updated_at": "2026-03-04T12:00:00Z"},
        {"id": "e", "updated_at": "2026-03-02T12:00:00Z"},
        {"id": "f", "updated_at": None},
    ]
    groups = group_by_date(chats, now)
    assert [(name, [c["id"] for c in items]) for name, items in groups] == [
        ("Today", ["a", "b"]),
        ("Yesterday", ["c"]),
        ("Previous 7 days", ["d"]),
        ("Older", ["e", "f"]),
    ]
    # In Tokyo it is already March 11th: "a" is today, "b" yesterday.
    tokyo = group_by_date(chats, now, ZoneInfo("Asia/Tokyo"))
    assert [(name, [c["id"] for c in items]) for name, items in tokyo][:2] == [
        ("Today", ["a"]),
        ("Yesterday", ["b"]),
    ]
    assert group_by_date([], now) == []
