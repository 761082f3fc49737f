"""/health, database failures (down, restarted, unmigrated) and /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from db_api.db import alembic_config, upgrade_database
from db_api.main import create_app
from tests.db_api.conftest import ALICE, make_settings, new_chat
from tests.support import free_port, fresh_postgres_database, postgres_server_url, run_service


def test_health_ok(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def _client_for(url: str) -> TestClient:
    return TestClient(create_app(make_settings(url, connect_timeout_s=2)))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:{port}/parlor",
        "postgresql+psycopg://postgres@127.0.0.1:{port}/parlor",
    ],
)
def test_database_down_is_503_not_a_traceback(url: str) -> None:
    # A port nothing listens on: the database is down.
    with _client_for(url.format(port=free_port())) as client:
        r = client.get("/health")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable"
        assert body["detail"].startswith("database unavailable")
        assert "Traceback" not in r.text
        for method, path, payload in [
            ("GET", "/chats", None),
            ("POST", "/chats", {"title": "x"}),
            ("GET", "/chats/00000000-0000-4000-8000-000000000000", None),
            ("POST", "/chats/00000000-0000-4000-8000-000000000000/messages",
             {"role": "user", "content": "hello"}),
            ("PATCH", "/messages/00000000-0000-4000-8000-000000000000", {"content": "x"}),
        ]:  # fmt: skip
            r = client.request(method, path, json=payload, headers=ALICE)
            assert r.status_code == 503, (method, path)
            assert r.json() == {"detail": "database unavailable, try again shortly"}
            assert r.headers["Retry-After"] == "1"
        # Bad input is still the caller's problem, even while the database is down.
        assert client.get("/chats", params={"limit": 0}, headers=ALICE).status_code == 422


def test_sqlite_file_unreachable_is_503(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with _client_for(f"sqlite:///{blocker / 'parlor.db'}") as client:
        r = client.get("/health")
        assert r.status_code == 503
        assert "unable to open database file" in r.json()["detail"]


def test_unmigrated_database_is_503_with_the_fix(database_url: str) -> None:
    with _client_for(database_url) as client:
        r = client.get("/health")
        assert r.status_code == 503
        assert "python -m db_api.migrate" in r.json()["detail"]
    upgrade_database(database_url)
    command.downgrade(alembic_config(database_url), "base")
    with _client_for(database_url) as client:
        assert client.get("/health").status_code == 503
    upgrade_database(database_url)
    with _client_for(database_url) as client:
        assert client.get("/health").status_code == 200


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = postgres_server_url()
    if server is None:
        pytest.skip("TEST_DATABASE_URL is not set")
    with fresh_postgres_database(server) as url:
        upgrade_database(url)
        yield url


def _terminate_backends(url: str) -> int:
    """Kill every server process serving `url`'s database, as a PostgreSQL restart does."""
    database = sa.make_url(url).database
    admin = sa.create_engine(postgres_server_url() or "", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(killed)


def test_survives_postgres_connections_being_killed(postgres_url: str) -> None:
    with _client_for(postgres_url) as client:
        chat = new_chat(client, ALICE, title="before")
        assert client.get("/health").status_code == 200
        for _ in range(3):
            assert _terminate_backends(postgres_url) >= 1  # the pooled connection died
            # pre-ping notices the dead connection and reconnects: no error reaches us.
            got = client.get(f"/chats/{chat['id']}", headers=ALICE)
            assert got.status_code == 200
            assert got.json()["title"] == "before"
            assert client.get("/health").status_code == 200
        new_chat(client, ALICE, title="after")
        titles = [c["title"] for c in client.get("/chats", headers=ALICE).json()]
        assert titles == ["after", "before"]


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_by_route_template(client: TestClient) -> None:
    chat = new_chat(client, ALICE)
    for _ in range(3):
        client.get(f"/chats/{chat['id']}", headers=ALICE)
    client.get("/chats/00000000-0000-4000-8000-000000000000", headers=ALICE)
    client.get("/no/such/path")
    client.get("/openapi.json")
    samples = _samples(client)
    key = (("method", "GET"), ("route", "/chats/{chat_id}"), ("status", "200"))
    assert samples[("db_api_requests_total", key)] == 3
    assert samples[("db_api_request_duration_seconds_count", key)] == 3
    missing = (("method", "GET"), ("route", "/chats/{chat_id}"), ("status", "404"))
    assert samples[("db_api_requests_total", missing)] == 1
    created = (("method", "POST"), ("route", "/chats"), ("status", "201"))
    assert samples[("db_api_requests_total", created)] == 1
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert samples[("db_api_requests_total", unmatched)] == 1
    docs = (("method", "GET"), ("route", "/openapi.json"), ("status", "200"))
    assert samples[("db_api_requests_total", docs)] == 1
    # No raw ids in any label: one series per route, not per chat.
    assert chat["id"] not in client.get("/metrics").text


def test_uvicorn_serves_the_module_app(tmp_path: Path) -> None:
    """`uvicorn db_api.main:app` configured only by DB_API_* variables."""
    import httpx

    url = f"sqlite:///{tmp_path / 'parlor.db'}"
    upgrade_database(url)
    env = {"DB_API_DATABASE_URL": url, "DB_API_INTERNAL_TOKEN": "tok"}
    with run_service("db_api", "db_api.main:app", env, tmp_path) as svc:
        headers = {**ALICE, "Authorization": "Bearer tok"}
        with httpx.Client(base_url=svc.url, headers=headers) as http:
            chat = http.post("/chats", json={"title": "real"}).json()
            msg = http.post(f"/chats/{chat['id']}/messages", json={"role": "user", "content": "hi"})
            assert msg.status_code == 201
            assert http.get(f"/chats/{chat['id']}").json()["messages"][0]["content"] == "hi"
            assert http.get("/chats", headers={"Authorization": "Bearer no"}).status_code == 401
