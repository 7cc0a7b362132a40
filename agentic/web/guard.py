"""Host and Origin rules of both servers.

A page on another site must not drive someone's session: its requests carry its own
`Origin`, refused unless it is the page's own or configured. DNS rebinding gets past that
(the attacker's name points at us, so `Host` and `Origin` agree), so `Host` itself must be
a name this server answers to: loopback names, the bound address, `ALLOWED_HOSTS`. Any IP
address is accepted as a Host, since rebinding needs a name the attacker controls.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, NamedTuple

from aiohttp import web
from aiohttp.typedefs import Middleware

from agentic.web.errors import ApiError, Handler, json_error

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY_HOST = "*"

_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::([0-9]{1,5}))?")
_ORIGIN = re.compile(r"(https?)://([^/?#@]*)")


class HostPort(NamedTuple):
    name: str
    port: int | None


class Origin(NamedTuple):
    scheme: str
    host: HostPort


def parse_host(raw: str) -> HostPort | None:
    """`name[:port]` lower-cased, IPv6 in brackets; None when it is not a well-formed host."""
    match = _HOST.fullmatch(raw.strip().lower())
    if match is None:
        return None
    name, port = match.group(1).rstrip("."), match.group(2)
    if port is not None and not 0 < int(port) < 65536:
        return None
    if name.startswith("[") and not _is_ip(name):
        return None
    return HostPort(name, int(port) if port else None)


def parse_origin(raw: str) -> Origin | None:
    """An `Origin` header as scheme and host, or None (`null`, other schemes, malformed)."""
    match = _ORIGIN.fullmatch(raw.strip().lower().rstrip("/"))
    if match is None:
        return None
    host = parse_host(match.group(2))
    return None if host is None else Origin(match.group(1), host)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def allowed_host_names(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Loopback names, the bound address and the configured extras, as `parse_host` spells them."""
    names = set(LOOPBACK_NAMES)
    for raw in (bound, *extra):
        raw = raw.strip()
        if raw == ANY_HOST:
            names.add(ANY_HOST)
        elif raw:
            parsed = parse_host(f"[{raw}]" if ":" in raw and not raw.startswith("[") and _is_ip(raw) else raw)
            if parsed is not None:
                names.add(parsed.name)
    return frozenset(names)


def host_allowed(raw: str | None, allowed: frozenset[str]) -> bool:
    """No Host (not a browser), an IP address, or one of `allowed`."""
    if raw is None or ANY_HOST in allowed:
        return True
    host = parse_host(raw)
    return host is not None and (host.name in allowed or _is_ip(host.name))


def host_guard(allowed: frozenset[str]) -> Middleware:
    """Middleware: 421 `host_not_allowed` for a request whose Host this server does not answer to."""

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host"), allowed):
            return json_error(421, "host_not_allowed", "this server does not answer to that Host; see ALLOWED_HOSTS")
        return await handler(request)

    return check_host


def origin_allowed(request: web.Request, extra_allowed: Iterable[str] = ()) -> bool:
    """No Origin (curl, scripts, the client proxies), the page's own host, or one of `extra_allowed`."""
    raw = request.headers.get("Origin")
    if raw is None:
        return True
    if raw.rstrip("/") in extra_allowed:
        return True
    origin = parse_origin(raw)
    own = parse_host(request.headers.get("Host", ""))
    return origin is not None and own is not None and origin.host == own


def require_origin(request: web.Request, extra_allowed: Iterable[str] = ()) -> None:
    if not origin_allowed(request, extra_allowed):
        raise ApiError(403, "origin_refused", f"origin {request.headers.get('Origin')!r} is not allowed")


def origin_guard(extra_allowed: Iterable[str] = ()) -> Middleware:
    """Middleware: a state-changing request from a page must come from an allowed origin."""
    extra = tuple(extra_allowed)

    @web.middleware
    async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in STATE_CHANGING:
            require_origin(request, extra)
        return await handler(request)

    return check_origin
