"""Origin checks: a browser page on another site must not drive someone's session."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from agentic.api.errors import ApiError


def origin_allowed(request: web.Request, extra_allowed: tuple[str, ...] = ()) -> bool:
    """No Origin (curl, scripts) or the page's own host, or one of `extra_allowed`."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in extra_allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == (request.host or "").lower()


def require_origin(request: web.Request, extra_allowed: tuple[str, ...] = ()) -> None:
    if not origin_allowed(request, extra_allowed):
        raise ApiError(403, "origin_refused", f"origin {request.headers.get('Origin')!r} is not allowed")
