"""Session ids are UUID4 capabilities, parsed strictly before any lookup or path."""

from __future__ import annotations

import uuid

from agentic.web.errors import ApiError


def parse_session_id(raw: str | None) -> str:
    """Canonical lower-case UUID string, or a 400 error."""
    if not raw or len(raw) != 36:
        raise ApiError(400, "invalid_session_id", "session id must be a UUID")
    try:
        parsed = uuid.UUID(raw)
    except ValueError:
        raise ApiError(400, "invalid_session_id", "session id must be a UUID") from None
    if str(parsed) != raw.lower():
        raise ApiError(400, "invalid_session_id", "session id must be a UUID")
    return str(parsed)


def new_session_id() -> str:
    return str(uuid.uuid4())


def truncate_id(session_id: str) -> str:
    return session_id[:8]
