"""Helpers only the tests need: throw-away PostgreSQL databases.

Processes, ports and health polls are parlor.supervisor's, the stack is parlor.stack's and
nginx is parlor.nginx's: the names below are re-exported so that a suite imports its
helpers from one place.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from parlor.nginx import run_nginx
from parlor.paths import REPO, SHARED
from parlor.stack import Stack, run_stack
from parlor.supervisor import Service, free_port, run_service, stop_process, wait_healthy

__all__ = [
    "REPO",
    "SHARED",
    "Service",
    "Stack",
    "free_port",
    "fresh_postgres_database",
    "postgres_server_url",
    "run_nginx",
    "run_service",
    "run_stack",
    "stop_process",
    "wait_healthy",
]


def postgres_server_url() -> str | None:
    """The PostgreSQL server URL for tests, from TEST_DATABASE_URL, or None."""
    return os.environ.get("TEST_DATABASE_URL") or None


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the server of `server_url`, yield its URL, drop it.

    `server_url` is a SQLAlchemy URL such as postgresql+psycopg://postgres@127.0.0.1/postgres.
    """
    import sqlalchemy as sa

    base = sa.make_url(server_url)
    name = f"parlor_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
