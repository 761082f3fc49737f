"""Writes of one answer apply in revision order, a final state is final, Continue reopens
an answer, and only an answer whose lease is absent or expired may be declared dead."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from db_api.db import make_engine
from tests.db_api.conftest import ALICE, new_chat, new_message, new_turn


@pytest.fixture
def answer(client: TestClient) -> dict[str, Any]:
    chat = new_chat(client, ALICE)
    return new_turn(client, ALICE, chat["id"], "question")[1]


def _patch(client: TestClient, message_id: str, **fields: Any) -> Any:
    return client.patch(f"/messages/{message_id}", json=fields, headers=ALICE)


def _get(client: TestClient, message_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/messages/{message_id}", headers=ALICE).json()
    return body


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_revisions_only_move_forward(client: TestClient, answer: dict[str, Any]) -> None:
    mid = answer["id"]
    r = _patch(client, mid, content="Hel", status="streaming", revision=1)
    assert r.status_code == 200 and r.json()["revision"] == 1
    r = _patch(client, mid, content="Hello", status="streaming", revision=5)
    assert r.json()["revision"] == 5
    stored = _get(client, mid)
    for stale in (5, 4, 0):
        r = _patch(client, mid, content="Hel", revision=stale)
        assert r.status_code == 409
        body = r.json()
        assert "not newer" in body["detail"]
        assert body["message"] == stored  # the stored message, to rebase on
    assert _get(client, mid) == stored
    # Without a revision, a write takes the next one.
    assert _patch(client, mid, content="Hello!").json()["revision"] == 6


def test_a_final_state_never_goes_back(client: TestClient, answer: dict[str, Any]) -> None:
    mid = answer["id"]
    done = _patch(client, mid, content="All of it.", status="complete", finish_reason="stop")
    assert done.status_code == 200
    for status in ("streaming", "pending"):
        r = _patch(client, mid, content="All", status=status, revision=99)
        assert r.status_code == 409
        assert "already final" in r.json()["detail"]
        assert r.json()["message"]["content"] == "All of it."
    assert _get(client, mid)["revision"] == done.json()["revision"]
    # Another final state is still a write (the generation learns it was stopped).
    r = _patch(client, mid, status="interrupted", reason="stopped")
    assert (r.status_code, r.json()["status"], r.json()["reason"]) == (
        200,
        "interrupted",
        "stopped",
    )


def test_late_partials_never_overwrite_the_final_answer(
    client: TestClient, answer: dict[str, Any]
) -> None:
    """Issue 10 #2: partial saves and the final save race through a slow db_api; sent
    in a shuffled order from many threads, the final one always stays."""
    mid = answer["id"]
    text = "".join(f"w{i} " for i in range(30))
    writes = [
        {"content": text[: 3 * i], "status": "streaming", "revision": i} for i in range(1, 30)
    ]
    writes.append({"content": text, "status": "complete", "revision": 30, "finish_reason": "stop"})
    random.Random(7).shuffle(writes)

    def send(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = client.patch(f"/messages/{mid}", json=body, headers=ALICE)
        return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, writes))
    assert {status for status, _ in results} <= {200, 409}
    for (status, body), sent in zip(results, writes, strict=True):
        if status == 200:
            assert body["revision"] == sent["revision"]
        else:  # refused: what was stored was newer, or final
            stored = body["message"]
            assert stored["revision"] >= sent["revision"] or stored["status"] == "complete"
    final = _get(client, mid)
    assert (final["content"], final["status"], final["revision"]) == (text, "complete", 30)
    assert final["finish_reason"] == "stop"


def test_concurrent_writers_without_revisions_each_move_it_once(
    client: TestClient, answer: dict[str, Any]
) -> None:
    mid = answer["id"]

    def send(i: int) -> int:
        r = client.patch(f"/messages/{mid}", json={"content": f"v{i}"}, headers=ALICE)
        assert r.status_code == 200
        revision: int = r.json()["revision"]
        return revision

    with ThreadPoolExecutor(max_workers=6) as pool:
        revisions = list(pool.map(send, range(24)))
    assert sorted(revisions) == list(range(1, 25))  # no two writes saw the same revision
    assert _get(client, mid)["revision"] == 24


def test_control_writes_do_not_move_the_revision(
    client: TestClient, answer: dict[str, Any]
) -> None:
    mid = answer["id"]
    _patch(client, mid, content="so far", status="streaming", revision=3)
    r = _patch(client, mid, stop_requested=True)
    assert (r.json()["stop_requested"], r.json()["revision"]) == (True, 3)
    r = _patch(client, mid, lease_owner="replica-b", lease_s=30)
    assert (r.json()["lease_owner"], r.json()["revision"]) == ("replica-b", 3)
    # The generation's next write (revision 4) is therefore not stale.
    r = _patch(client, mid, content="so far, and", revision=4)
    assert r.status_code == 200 and r.json()["stop_requested"] is True


def test_answer_metadata_roundtrips(client: TestClient, answer: dict[str, Any]) -> None:
    fields = {
        "content": "Paris.",
        "status": "complete",
        "finish_reason": "length",
        "model": "qwen-0.5b",
        "params": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 3},
        "plan": "1. Say the capital.",
        "prompt_tokens": 12,
        "completion_tokens": 2,
        "ttft_ms": 40.0,
        "generation_ms": 90.5,
    }
    r = _patch(client, answer["id"], **fields)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in fields} == fields
    assert {k: _get(client, answer["id"])[k] for k in fields} == fields
    cleared = _patch(client, answer["id"], plan=None, params=None, model=None).json()
    assert (cleared["plan"], cleared["params"], cleared["model"]) == (None, None, None)


@pytest.mark.parametrize(
    "body",
    [
        {"revision": -1},
        {"revision": None},
        {"revision": "3"},
        {"revision": 1.5},
        {"finish_reason": "eos"},
        {"reason": "because"},
        {"stop_requested": None},
        {"stop_requested": "yes"},
        {"lease_s": 0},
        {"lease_s": 3601},
        {"lease_s": "10"},
        {"lease_owner": ""},
        {"lease_owner": "x" * 129},
        {"plan": "a\x00b"},
        {"model": ""},
        {"params": {"temperature": 3}},
        {"params": {"seed": [1]}},
        {"params": {"seed": {"a": 1}}},
        {"params": {"": 1}},
        {"params": {f"k{i}": i for i in range(33)}},
    ],
)
def test_bad_answer_writes(
    client: TestClient, answer: dict[str, Any], body: dict[str, Any]
) -> None:
    r = _patch(client, answer["id"], **body)
    assert r.status_code == 422, r.text
    assert _get(client, answer["id"]) == answer


# --- reopen (Continue) ------------------------------------------------------------------


def test_reopen_a_cut_answer(client: TestClient, answer: dict[str, Any]) -> None:
    mid = answer["id"]
    cut = _patch(
        client, mid, content="Once upon", status="complete", finish_reason="length", revision=7
    ).json()
    r = client.post(
        f"/messages/{mid}/reopen", json={"lease_owner": "replica-a", "lease_s": 20}, headers=ALICE
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["content"], body["revision"]) == ("pending", "Once upon", 8)
    assert (body["finish_reason"], body["reason"], body["error"]) == (None, None, None)
    assert body["lease_owner"] == "replica-a"
    assert _utc(body["lease_until"]) > _utc(cut["updated_at"])
    # Continue writes go on from the reopened revision.
    assert _patch(client, mid, content="Once upon a time", revision=9).status_code == 200

    # Still running now: no second reopen.
    again = client.post(f"/messages/{mid}/reopen", json={}, headers=ALICE)
    assert again.status_code == 409 and "still pending" in again.json()["detail"]


def test_reopen_clears_an_error(client: TestClient, answer: dict[str, Any]) -> None:
    _patch(client, answer["id"], status="error", reason="model_error", error="boom")
    body = client.post(f"/messages/{answer['id']}/reopen", json={}, headers=ALICE).json()
    assert (body["status"], body["error"], body["reason"], body["lease_owner"]) == (
        "pending",
        None,
        None,
        None,
    )


def test_reopen_refuses_a_question(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    question, _ = new_turn(client, ALICE, chat["id"], "q")
    r = client.post(f"/messages/{question['id']}/reopen", json={}, headers=ALICE)
    assert r.status_code == 409
    assert "not a user message" in r.json()["detail"]
    assert r.json()["message"] == _get(client, question["id"])


# --- expire: only an answer without a live lease ----------------------------------------


def _age_lease(url: str, message_id: str, seconds_ago: float) -> None:
    """Move the lease into the past directly in the database (no waiting in a test)."""
    past = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    engine = make_engine(url)
    with engine.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        conn.execute(
            sa.text("UPDATE messages SET lease_until = :t WHERE id = :id"),
            {
                "t": past.replace(tzinfo=None) if sqlite else past,
                "id": message_id.replace("-", "") if sqlite else message_id,
            },
        )
    engine.dispose()


def _expire(client: TestClient, message_id: str, reason: str = "lease_expired") -> Any:
    body = {"reason": reason, "error": "the writer went away"}
    return client.post(f"/messages/{message_id}/expire", json=body, headers=ALICE)


def test_expire_an_answer_nobody_holds(client: TestClient, answer: dict[str, Any]) -> None:
    r = _expire(client, answer["id"], "server_restarted")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["reason"], body["error"]) == (
        "interrupted",
        "server_restarted",
        "the writer went away",
    )
    assert body["revision"] == 1
    # Now final: a second expire (another replica) is refused.
    again = _expire(client, answer["id"])
    assert again.status_code == 409 and "not a running answer" in again.json()["detail"]


def test_a_live_lease_protects_the_answer(
    client: TestClient, answer: dict[str, Any], migrated_url: str
) -> None:
    mid = answer["id"]
    held = _patch(
        client, mid, status="streaming", content="Hi", lease_owner="replica-a", lease_s=30
    )
    assert held.json()["lease_until"] is not None
    r = _expire(client, mid)
    assert r.status_code == 409
    assert "replica-a" in r.json()["detail"]
    assert _get(client, mid) == held.json()
    # The lease ran out (its replica died): now it may be expired.
    _age_lease(migrated_url, mid, seconds_ago=1)
    r = _expire(client, mid)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["content"], r.json()["reason"]) == (
        "interrupted",
        "Hi",
        "lease_expired",
    )
    # The dead replica's late write cannot revive it.
    late = _patch(client, mid, content="Hi there", status="streaming", revision=50)
    assert late.status_code == 409


def test_a_turn_can_be_leased_from_the_start(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    _, answer = new_turn(client, ALICE, chat["id"], "q", lease_owner="replica-a", lease_s=60)
    assert answer["lease_owner"] == "replica-a"
    assert _utc(answer["lease_until"]) > _utc(answer["created_at"]) + timedelta(seconds=50)
    assert _expire(client, answer["id"]).status_code == 409
    # Giving the lease up (lease_s null) lets it be expired.
    _patch(client, answer["id"], lease_s=None)
    assert _expire(client, answer["id"]).status_code == 200


def test_a_restarted_replica_may_expire_what_it_held_itself(client: TestClient) -> None:
    """The caller's own name (it restarted: the generation that held the lease is gone)
    lets it end the answer at once; another name still meets the live lease."""
    chat = new_chat(client, ALICE)
    _, answer = new_turn(client, ALICE, chat["id"], "q", lease_owner="replica-a", lease_s=60)
    body = {"reason": "server_restarted", "lease_owner": "replica-b"}
    other = client.post(f"/messages/{answer['id']}/expire", json=body, headers=ALICE)
    assert other.status_code == 409 and "replica-a" in other.json()["detail"]
    body["lease_owner"] = "replica-a"
    own = client.post(f"/messages/{answer['id']}/expire", json=body, headers=ALICE)
    assert own.status_code == 200, own.text
    assert (own.json()["status"], own.json()["reason"]) == ("interrupted", "server_restarted")
    bad = client.post(
        f"/messages/{answer['id']}/expire",
        json={"reason": "server_restarted", "lease_owner": ""},
        headers=ALICE,
    )
    assert bad.status_code == 422


def test_expire_refuses_what_is_not_a_running_answer(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    question = new_message(client, ALICE, chat["id"], content="q")
    done = new_message(client, ALICE, chat["id"], role="assistant", content="a")
    for message in (question, done):
        r = _expire(client, message["id"])
        assert r.status_code == 409
        assert r.json()["message"] == _get(client, message["id"])


def test_concurrent_expiries_mark_it_once(client: TestClient, answer: dict[str, Any]) -> None:
    """The lease check is in the UPDATE: of many replicas expiring one answer at the same
    time exactly one succeeds."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: _expire(client, answer["id"]).status_code, range(8)))
    assert sorted(statuses) == [200] + [409] * 7
    assert _get(client, answer["id"])["revision"] == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": "tired"}, {"reason": None}, {"reason": "stopped", "extra": 1}],
)
def test_bad_expire(client: TestClient, answer: dict[str, Any], body: dict[str, Any]) -> None:
    r = client.post(f"/messages/{answer['id']}/expire", json=body, headers=ALICE)
    assert r.status_code == 422
    assert _get(client, answer["id"]) == answer
