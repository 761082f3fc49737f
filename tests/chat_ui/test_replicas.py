"""Two chat_ui replicas over one storage (the fakes): answer leases, following an answer
another replica writes, Stop from either one, and answers whose replica went away.
tests/stack/test_replicas.py runs the same with real processes behind nginx."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from chat_ui.config import Settings
from chat_ui.contracts import Message
from chat_ui.leases import Replica
from tests.chat_ui.conftest import Browser, LiveServer, Shown, eventually, final_body, message_ids
from tests.chat_ui.fakes import FakeDb, FakeLm

FULL = "Hello, world!"


@dataclass
class Pair:
    """One person's browser, pointed at replica A or B (same cookies, same CSRF token)."""

    a: Browser
    b: Browser

    def on_b(self) -> Browser:
        self.b.client.cookies = self.a.client.cookies
        self.b.csrf = self.a.csrf
        return self.b


@pytest.fixture
def pair(make_ui: Callable[..., LiveServer]) -> Iterator[Pair]:
    fast = {"flush_interval_s": 0.02, "follow_poll_s": 0.02, "lease_s": 30, "lease_renew_s": 0.05}
    ui_a = make_ui(replica_name="ui-a", **fast)
    ui_b = make_ui(replica_name="ui-b", **fast)
    pair = Pair(Browser(ui_a.url), Browser(ui_b.url))
    pair.a.login("Ada")
    yield pair
    pair.a.close()
    pair.b.close()


def stream_url(page: str) -> str:
    """The stream a running answer's bubble opens (from the text the page shows)."""
    match = re.search(r'sse-connect="([^"]+)"', page)
    assert match, page
    return match.group(1)


def started_on_a(pair: Pair, fake_lm: FakeLm, fake_db: FakeDb) -> tuple[str, str]:
    """An answer replica A writes, held after its first token (saved); (chat, answer)."""
    fake_lm.hold_after = 1
    chat = pair.a.new_chat()
    assert pair.a.send(chat, "Hi").status_code == 303
    assert fake_lm.held.wait(timeout=10)
    mid = message_ids(pair.a.get(f"/chats/{chat}").text)[0]
    eventually(lambda: fake_db.messages[mid]["content"] == "Hello")
    return chat, mid


def test_the_answer_is_leased_to_the_replica_that_writes_it(
    pair: Pair, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat, mid = started_on_a(pair, fake_lm, fake_db)
    stored = fake_db.messages[mid]
    # Claimed when the turn was created (the first write that made it), then renewed.
    turns = [c for c in fake_db.calls if c == ("POST", f"/chats/{chat}/turns")]
    assert len(turns) == 1
    assert stored["lease_owner"].startswith("ui-a/") and fake_db.lease_live(stored)

    def renewals() -> list[dict[str, Any]]:
        return [p for m, p in fake_db.control if m == mid and "lease_s" in p]

    eventually(lambda: len(renewals()) >= 2)
    # Control writes: no revision, so they never make the ordered saves stale.
    assert all(set(p) == {"lease_owner", "lease_s", "revision"} for p in renewals())
    assert all(p["revision"] is None and p["lease_s"] == 30 for p in renewals())
    fake_lm.release()
    pair.a.follow(chat, mid)
    assert fake_db.messages[mid]["status"] == "complete"


def test_another_replica_leaves_a_leased_answer_running_and_follows_it(
    pair: Pair, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat, mid = started_on_a(pair, fake_lm, fake_db)
    b = pair.on_b()
    page = b.get(f"/chats/{chat}").text
    assert re.search(rf'id="msg-{mid}"[^>]*data-status="(pending|streaming)"', page), page
    assert "server_restarted" not in page and "lease_expired" not in page
    assert ("POST", f"/messages/{mid}/expire") not in fake_db.calls
    shown = Shown()
    done = None
    for ev in b.events(stream_url(page)):
        if ev.event == "done":
            done = ev
            break
        shown.apply(ev)
        if ev.event == "sync":
            assert shown.text == "Hello"  # what A has saved so far
            fake_lm.release()
    assert done is not None
    assert shown.text.strip() == FULL
    # The same `done` as on the replica that wrote it.
    _, done_on_a = pair.a.follow(chat, mid)
    assert done.data == done_on_a.data
    assert shown.blocks == final_body(done) == "<p>Hello, world!</p>\n"
    assert 'data-status="complete"' in done.data
    assert fake_db.messages[mid]["status"] == "complete"


def test_stop_on_the_other_replica_stops_the_writer_and_keeps_the_text(
    pair: Pair, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat, mid = started_on_a(pair, fake_lm, fake_db)
    b = pair.on_b()
    b.get(f"/chats/{chat}")
    resp = b.post(f"/chats/{chat}/messages/{mid}/stop", htmx=True)
    assert resp.status_code == 200, resp.text
    assert 'data-status="interrupted"' in resp.text and 'data-reason="stopped"' in resp.text
    assert "Hello" in resp.text
    stored = fake_db.messages[mid]
    assert (stored["status"], stored["reason"], stored["content"]) == (
        "interrupted",
        "stopped",
        "Hello",
    )
    assert stored["stop_requested"] is True
    # A wrote the end (B only asked): the stream on A ends the same way.
    _, done = pair.a.follow(chat, mid)
    assert 'data-reason="stopped"' in done.data


def test_stop_without_javascript_from_the_other_replica(
    pair: Pair, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat, mid = started_on_a(pair, fake_lm, fake_db)
    b = pair.on_b()
    b.get(f"/chats/{chat}")
    resp = b.post(f"/chats/{chat}/messages/{mid}/stop")
    assert resp.status_code == 303
    page = b.get(resp.headers["location"]).text
    assert re.search(rf'id="msg-{mid}"[^>]*data-status="interrupted"', page)
    assert fake_db.messages[mid]["reason"] == "stopped"


def test_the_page_without_javascript_follows_from_the_other_replica(
    pair: Pair, fake_lm: FakeLm, fake_db: FakeDb
) -> None:
    chat, mid = started_on_a(pair, fake_lm, fake_db)
    b = pair.on_b()
    with b.client.stream("GET", f"/chats/{chat}/live") as resp:
        assert resp.status_code == 200
        chunks = resp.iter_text()
        head = next(chunks)
        assert f'id="live-{mid}"' in head and "Hello" in head
        fake_lm.release()
        body = head + "".join(chunks)
    assert "Hello, world!" in body
    # The finished answer closes the page, after the live one.
    _, final = body.split(f'id="live-{mid}"', 1)
    assert re.search(rf'id="msg-{mid}"[^>]*data-status="complete"', final)


def seeded_answer(
    pair: Pair, fake_db: FakeDb, lease_owner: str | None, *, live: bool
) -> tuple[str, str]:
    """A running answer with some text, leased to `lease_owner` (a replica that does not
    run here); (chat, answer)."""
    chat = pair.a.new_chat()
    owner = fake_db.chats[chat]["owner"]
    body: dict[str, Any] = {"content": "q"}
    if lease_owner is not None:
        body.update(lease_owner=lease_owner, lease_s=30)
    with httpx.Client(transport=fake_db.sync_transport(), base_url="http://db") as client:
        turn = client.post(f"/chats/{chat}/turns", headers={"X-Owner": owner}, json=body)
    mid = turn.json()["assistant"]["id"]
    fake_db.messages[mid].update(content="Half an answer", status="streaming")
    if lease_owner is not None and not live:
        fake_db.lapse(mid)
    return chat, mid


def test_an_answer_whose_lease_lapsed_ends_as_lease_expired(
    pair: Pair, fake_db: FakeDb, fake_lm: FakeLm
) -> None:
    chat, mid = seeded_answer(pair, fake_db, "ui-gone/1234abcd", live=False)
    page = pair.on_b().get(f"/chats/{chat}").text
    assert 'data-reason="lease_expired"' in page
    assert "the server writing it went away" in page
    stored = fake_db.messages[mid]
    assert (stored["status"], stored["reason"], stored["content"]) == (
        "interrupted",
        "lease_expired",
        "Half an answer",
    )
    assert fake_lm.requests == []


def test_a_live_lease_of_another_replica_is_never_expired(pair: Pair, fake_db: FakeDb) -> None:
    chat, mid = seeded_answer(pair, fake_db, "ui-elsewhere/1234abcd", live=True)
    for browser in (pair.a, pair.on_b()):
        page = browser.get(f"/chats/{chat}").text
        assert re.search(rf'id="msg-{mid}"[^>]*data-status="streaming"', page)
    assert fake_db.messages[mid]["status"] == "streaming"


def test_a_restarted_replica_ends_its_own_answers_at_once(pair: Pair, fake_db: FakeDb) -> None:
    """B's name under an earlier start id: B restarted, nothing writes it any more,
    whatever its lease says."""
    chat, mid = seeded_answer(pair, fake_db, "ui-b/0123abcd", live=True)
    page = pair.on_b().get(f"/chats/{chat}").text
    assert 'data-reason="server_restarted"' in page
    stored = fake_db.messages[mid]
    assert (stored["status"], stored["reason"]) == ("interrupted", "server_restarted")
    # On A the same answer (had it still been running) would have waited for its lease.


def test_a_stream_following_a_dead_replica_ends_when_the_lease_lapses(
    pair: Pair, fake_db: FakeDb
) -> None:
    chat, mid = seeded_answer(pair, fake_db, "ui-gone/1234abcd", live=True)
    b = pair.on_b()
    shown = Shown()
    for ev in b.events(stream_url(b.get(f"/chats/{chat}").text)):
        if ev.event == "done":
            break
        shown.apply(ev)
        if ev.event == "sync":
            assert shown.text == "Half an answer"
            fake_db.lapse(mid)  # the replica writing it died long enough ago
    assert 'data-reason="lease_expired"' in ev.data and "Half an answer" in ev.data
    assert fake_db.messages[mid]["reason"] == "lease_expired"


def test_a_followed_answer_deleted_meanwhile_ends_its_stream(pair: Pair, fake_db: FakeDb) -> None:
    chat, mid = seeded_answer(pair, fake_db, "ui-elsewhere/1234abcd", live=True)
    b = pair.on_b()
    for ev in b.events(f"/chats/{chat}/messages/{mid}/stream"):
        if ev.event == "sync":
            del fake_db.messages[mid]
        if ev.event == "done":
            break
    assert "no longer exists" in ev.data


def test_lease_settings_must_leave_room_for_a_failed_renewal() -> None:
    with pytest.raises(ValidationError, match="at most half"):
        Settings(lease_s=4, lease_renew_s=3)
    with pytest.raises(ValidationError):
        Settings(replica_name="has/slash")
    assert Settings(lease_s=4, lease_renew_s=2).lease_s == 4


def test_a_stream_resumed_beyond_what_is_saved_waits_for_it_instead_of_shrinking(
    pair: Pair, fake_db: FakeDb
) -> None:
    """The writing replica showed the page from memory, ahead of its last save; the stream
    that lands on the other replica starts once storage has caught up."""
    chat, mid = seeded_answer(pair, fake_db, "ui-elsewhere/1234abcd", live=True)
    more = "Half an answer, and more"

    def saved_later() -> None:
        eventually(lambda: fake_db.calls.count(("GET", f"/messages/{mid}")) >= 2)
        fake_db.messages[mid]["content"] = more

    writer = threading.Thread(target=saved_later)
    writer.start()
    shown = Shown()
    for ev in pair.on_b().events(f"/chats/{chat}/messages/{mid}/stream?after=20"):
        shown.apply(ev)
        if ev.event == "sync":
            assert shown.text == more[:20]
            fake_db.messages[mid].update(status="complete")
        if ev.event == "done":
            break
    writer.join()
    assert [e.event for e in shown.events][:2] == ["sync", "token"]
    assert shown.events[1].data == more[20:]


def test_which_running_answers_nothing_will_finish() -> None:
    replica = Replica.start(Settings(replica_name="ui-b"))
    now = datetime.now(UTC)
    later = (now + timedelta(seconds=5)).isoformat()
    earlier = (now - timedelta(seconds=1)).isoformat()

    def answer(lease_owner: str | None, lease_until: str | None, updated: str = "") -> Message:
        return Message(
            id=uuid.uuid4(),
            chat_id=uuid.uuid4(),
            role="assistant",
            status="streaming",
            lease_owner=lease_owner,
            lease_until=lease_until,
            updated_at=updated or (now - timedelta(hours=1)).isoformat(),
        )

    assert replica.orphaned(answer(replica.lease_owner, later)) is None  # being started here
    assert replica.orphaned(answer("ui-a/0123abcd", later)) is None  # A writes it
    assert replica.orphaned(answer("ui-a/0123abcd", earlier)) == "lease_expired"
    assert replica.orphaned(answer("ui-a/0123abcd", None)) == "lease_expired"  # given up
    assert replica.orphaned(answer("ui-b/0123abcd", later)) == "server_restarted"  # B before
    assert replica.orphaned(answer(None, None)) == "server_restarted"  # never leased
    # ...unless just written: its generation is about to claim it.
    assert replica.orphaned(answer(None, None, now.isoformat())) is None
    # Another process with a name that merely starts the same is another replica.
    assert replica.orphaned(answer("ui-bb/0123abcd", later)) is None
    assert Replica.start(Settings()).start_id != replica.start_id


def test_the_default_replica_name_is_the_host_name_made_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host name survives a restart (so a restarted replica knows its own answers);
    one that is too long or has characters a lease name cannot hold is trimmed, never a
    reason not to start."""
    monkeypatch.setattr("socket.gethostname", lambda: "web-7f9c")
    assert Settings().replica_name == "web-7f9c"
    monkeypatch.setattr("socket.gethostname", lambda: "x" * 80 + " é/y")
    assert Settings().replica_name == "x" * 64
    monkeypatch.setattr("socket.gethostname", lambda: "pod é/1")
    assert Settings().replica_name == "pod---1"
    monkeypatch.setattr("socket.gethostname", lambda: "")
    assert Settings().replica_name == "chat-ui"
