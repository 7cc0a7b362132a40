"""The store a `DATABASE_URL` names: unset, SQLite in DATA_DIR (the default for one server);
`sqlite:///PATH` (relative; `sqlite:////abs/path` for an absolute one); `postgresql://...` for
several main servers sharing one database."""

from __future__ import annotations

from pathlib import Path

from agentic.sessions.backend import Store
from agentic.sessions.store import SessionStore

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def check_url(url: str) -> None:
    """ValueError unless `url` names a store this agentic can open."""
    if not url.startswith((SQLITE_PREFIX, *POSTGRES_SCHEMES)) or url in (SQLITE_PREFIX, *POSTGRES_SCHEMES):
        raise ValueError(f"DATABASE_URL must be sqlite:///PATH or postgresql://..., got {url!r}")


def open_store(url: str | None, default_sqlite: Path) -> Store:
    """A store, not yet opened, for `url`; with no url, SQLite at `default_sqlite`."""
    if not url:
        return SessionStore(default_sqlite)
    check_url(url)
    if url.startswith(SQLITE_PREFIX):
        return SessionStore(Path(url[len(SQLITE_PREFIX):]))
    from agentic.sessions.pg_store import PostgresStore  # asyncpg is loaded only where it is used

    return PostgresStore(url)
