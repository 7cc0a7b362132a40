"""POST /search: full-text search over the messages, titles and file names of the sessions the
caller names. A session id is a capability, so the caller proves it holds each session by
naming its full id; no other session is ever searched, and ids of sessions that are gone are
passed over without saying whether they ever existed."""

from __future__ import annotations

import re

from aiohttp import web

from agentic import keys
from agentic.api.requests import int_field, read_json_object, string_field
from agentic.ids import parse_session_id
from agentic.web.errors import ApiError

MAX_QUERY_CHARS = 200
MAX_SEARCH_SESSIONS = 100
MAX_TERMS = 16
DEFAULT_HITS = 20
MAX_HITS = 100

routes = web.RouteTableDef()


@routes.post("/search", name="search")
async def search(request: web.Request) -> web.Response:
    body = await read_json_object(request, {"q", "session_ids", "limit"}, required={"q", "session_ids"})
    terms = search_terms(string_field(body, "q", MAX_QUERY_CHARS) or "")
    session_ids = _session_ids(body["session_ids"])
    limit = int_field(body, "limit", 1, MAX_HITS) or DEFAULT_HITS
    manager = request.app[keys.sessions_key]
    live = {sid: record for sid in session_ids if (record := manager.find(sid)) is not None and not manager.is_expired(record)}
    hits = await manager.search(terms, list(live), limit)
    return web.json_response({"hits": [hit.to_json(live[hit.session_id].title) for hit in hits]})


def search_terms(query: str) -> list[str]:
    """The words of `query`, each matched as the start of a word; every one must occur."""
    terms = list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:MAX_TERMS]
    if not terms:
        raise ApiError(422, "invalid_field", "'q' must contain a word to search for")
    return terms


def _session_ids(raw: object) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ApiError(422, "invalid_field", "'session_ids' must be an array of session ids")
    if len(raw) > MAX_SEARCH_SESSIONS:
        raise ApiError(413, "too_large", f"'session_ids' may name at most {MAX_SEARCH_SESSIONS} sessions")
    return list(dict.fromkeys(parse_session_id(item) for item in raw))
