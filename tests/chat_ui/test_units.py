"""Pure functions: Markdown rendering, history fitting, names, titles, ages."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

from chat_ui.contracts import Chat, Message
from chat_ui.conversation import title_from
from chat_ui.prompt import estimate_tokens, fit_history, history_before
from chat_ui.render import age, markdown_html
from chat_ui.session import new_session, normalize_name
from db_contract import Role, Status
from tests.chat_ui.test_safety import assert_no_active_content


def test_markdown_highlights_code_with_classes_only() -> None:
    out = markdown_html("Some **bold** and `x`\n\n```python\ndef f():\n    return 1\n```\n")
    assert "<strong>bold</strong>" in out and "<code>x</code>" in out
    assert '<span class="k">def</span>' in out
    assert "style=" not in out


def test_markdown_drops_html_and_dangerous_links() -> None:
    out = markdown_html(
        '<script>alert(1)</script>\n\n<b onclick="x()">b</b> [a](javascript:alert(1)) '
        "[ok](https://example.org) ![i](https://example.org/i.png)"
    )
    assert_no_active_content(out)
    assert "&lt;script&gt;" in out and "<img" not in out  # no remote images (privacy, CSP)
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">ok</a>' in out


def test_markdown_unknown_language_is_escaped() -> None:
    out = markdown_html("```nosuchlang\n<b>hi</b>\n```")
    assert "&lt;b&gt;hi&lt;/b&gt;" in out


def test_markdown_tables_lose_inline_styles() -> None:
    out = markdown_html("| a | b |\n|:-|-:|\n| 1 | 2 |\n")
    assert "<table>" in out and "style" not in out


def test_fit_history_keeps_system_and_newest_turns() -> None:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "w" * 297}
        for i in range(10)
    ]
    out = fit_history("sys", turns, budget_tokens=4 * estimate_tokens("x" * 300))
    assert out[0] == {"role": "system", "content": "sys"}
    kept = [m["content"].split()[0] for m in out[1:]]
    assert kept == ["6", "7", "8", "9"][-len(kept) :] and kept[-1] == "9"
    assert out[1]["role"] == "user"  # never starts on an assistant turn


def test_fit_history_cuts_at_stable_points_as_a_chat_grows() -> None:
    """The kept history starts at the same turn for several turns in a row, so the model
    server's prefix cache survives, and every prompt still fits the budget."""
    budget = 40 * estimate_tokens("w" * 100)
    turns: list[dict[str, str]] = []
    firsts: list[str] = []
    for i in range(200):
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} " + "w" * 98})
        if turns[-1]["role"] != "user":
            continue
        out = fit_history("sys", turns, budget_tokens=budget)
        assert sum(estimate_tokens(m["content"]) for m in out) <= budget
        assert out[1]["role"] == "user" and out[-1] == turns[-1]
        firsts.append(out[1]["content"].split()[0])
    cuts = [b for a, b in itertools.pairwise(firsts) if a != b]
    # 100 user turns; the first kept turn moves about once per quarter budget (10 turns),
    # where cutting to the exact fit would move it at almost every turn.
    assert firsts[0] == "0" and 5 <= len(cuts) <= 20, cuts


def test_fit_history_always_keeps_the_latest_turn() -> None:
    out = fit_history("sys", [{"role": "user", "content": "x" * 10_000}], budget_tokens=10)
    assert [m["role"] for m in out] == ["system", "user"]


def test_history_skips_failed_and_pending_answers() -> None:
    chat_id = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(6)]
    rows: list[tuple[Role, str, Status]] = [
        ("user", "a", "complete"),
        ("assistant", "", "error"),
        ("user", "b", "complete"),
        ("assistant", "partial", "interrupted"),
        ("user", "c", "complete"),
        ("assistant", "", "pending"),
    ]
    chat = Chat(
        id=chat_id,
        messages=[
            Message(id=i, chat_id=chat_id, role=role, content=content, status=status)
            for i, (role, content, status) in zip(ids, rows, strict=True)
        ],
    )
    assert history_before(chat, ids[5]) == [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "partial"},
        {"role": "user", "content": "c"},
    ]


def test_names() -> None:
    assert normalize_name("  Ada \t Lovelace ", 64) == "Ada Lovelace"
    assert normalize_name("", 64) is None
    assert normalize_name("x" * 65, 64) is None
    assert normalize_name("bad\x00name", 64) is None
    assert normalize_name("Zoë 🌟", 64) == "Zoë 🌟"


def test_owner_depends_on_browser_and_name() -> None:
    a, b = new_session(), new_session()
    assert a.owner is None
    from dataclasses import replace

    assert replace(a, name="x").owner != replace(b, name="x").owner
    assert replace(a, name="x").owner != replace(a, name="y").owner
    assert len(replace(a, name="x").owner or "") == 64


def test_titles_and_ages() -> None:
    assert title_from("  hello\n  world ") == "hello world"
    long = title_from("word " * 40)
    assert len(long) == 60 and long.endswith("…")
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert age((now - timedelta(seconds=5)).isoformat(), now) == "just now"
    assert age((now - timedelta(minutes=3)).isoformat(), now) == "3 min ago"
    assert age((now - timedelta(hours=2)).isoformat(), now) == "2 h ago"
    assert age((now - timedelta(days=1)).isoformat(), now) == "1 day ago"
    assert age("garbage", now) == ""


def test_static_pygments_css_matches_the_renderer() -> None:
    from pathlib import Path

    from chat_ui.render import pygments_css

    css = (Path(__file__).parents[2] / "chat_ui/static/pygments.css").read_text()
    # Regenerate with: uv run python -c "from chat_ui.render import pygments_css; ..."
    assert css.endswith(pygments_css())
    assert ".md pre .k" in css
