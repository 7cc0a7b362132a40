"""Session ids are UUID4 capabilities: the one rule for what a valid id is, used by both servers
before any lookup or path is made from one."""

from __future__ import annotations

import uuid

from agentic.errors import Malformed


def parse_session_id(raw: str | None) -> str:
    """Canonical lower-case UUID string, or `Malformed` (`invalid_session_id`)."""
    session_id = valid_session_id(raw)
    if session_id is None:
        raise Malformed("invalid_session_id", "session id must be a UUID")
    return session_id


def valid_session_id(raw: str | None) -> str | None:
    """The canonical form of a well-formed id (36 characters, hex and dashes, any case), else None."""
    if not raw or len(raw) != 36:
        return None
    try:
        parsed = uuid.UUID(raw)
    except ValueError:
        return None
    return str(parsed) if str(parsed) == raw.lower() else None


def new_session_id() -> str:
    return str(uuid.uuid4())
