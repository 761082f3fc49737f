"""Fixtures shared by every suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fresh_postgres_database, postgres_server_url


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~1 MB synthetic llama GGUF with a chat template, written once per run."""
    from parlor.synth import write_gguf

    path = tmp_path_factory.mktemp("models") / "toy.gguf"
    return write_gguf(path, preset="toy", seed=0)


@pytest.fixture(scope="session")
def toy_model_no_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same toy model without a chat template (many small models ship none)."""
    from parlor.synth import write_gguf

    path = tmp_path_factory.mktemp("models") / "toy-no-template.gguf"
    return write_gguf(path, preset="toy", seed=0, chat_template=False)


def _database_params() -> list[str]:
    return ["sqlite", "postgres"] if postgres_server_url() else ["sqlite"]


@pytest.fixture(params=_database_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: SQLite always, PostgreSQL too when TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parlor.db'}"
        return
    server = postgres_server_url()
    assert server is not None
    with fresh_postgres_database(server) as url:
        yield url
