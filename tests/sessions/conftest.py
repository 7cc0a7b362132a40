"""The store tests run on both backends: SQLite in a temporary folder and a real PostgreSQL
(one server for the whole run, a new database for each test)."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = postgres_server()
    yield server
    server.stop()


@pytest.fixture
async def pg_url(postgres: PostgresServer) -> str:
    return await postgres.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request, tmp_path) -> str:
    """A DATABASE_URL for an empty store of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.sqlite3"
    return await request.getfixturevalue("postgres").new_database()
