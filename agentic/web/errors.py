"""The JSON error body of api.md, and the middleware that guarantees every error uses it."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from agentic.errors import Busy, Conflict, DomainError, Invalid, Malformed, NotFound, TooLarge, Unavailable, Unsupported

log = logging.getLogger("agentic.web")

_CODES_BY_STATUS = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    421: "host_not_allowed",
    422: "invalid_field",
    429: "busy",
    502: "backend_unreachable",
    503: "not_ready",
}

# The one place a domain error becomes an HTTP status.
_STATUS_BY_ERROR: dict[type[DomainError], int] = {
    Malformed: 400,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Unsupported: 415,
    Invalid: 422,
    Busy: 429,
    Unavailable: 503,
}


def http_status(exc: BaseException) -> int:
    """The status an error is answered with: its own for HTTP errors, the kind's for domain errors, else 500."""
    if isinstance(exc, web.HTTPException):
        return exc.status
    if isinstance(exc, DomainError):
        return next((status for kind, status in _STATUS_BY_ERROR.items() if isinstance(exc, kind)), 400)
    return 500


class ApiError(web.HTTPException):
    """An HTTP error whose body is already the api.md JSON error."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        super().__init__(
            text=web.json_response(error_body(code, message)).text,
            content_type="application/json",
            headers=headers,
        )
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(code, message), status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def response_started(request: web.Request) -> bool:
    """Whether the handler already sent a head (a stream, an upgraded WebSocket): no error answer
    may be written after it, or its bytes land inside the stream."""
    return request.writer.output_size > 0


class MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (junk after an answered request on a kept-alive
    connection, a bad header) as an error with a traceback, so any client could fill the log
    with them; it answers 400 itself. They become one info line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "%s: malformed request (%s)", (record.getMessage(), exc.message)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def quiet_malformed_requests() -> None:
    """Install MalformedRequests on aiohttp's server log, once per process (both servers' app factories call it)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server.filters):
        server.addFilter(MalformedRequests())


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and client_gone(request):
            # The caller hung up (a dropped upload, a closed stream): nobody to answer, nothing broken.
            log.info("client went away during %s %s", request.method, request.path)
            return json_error(400, "connection_lost", "the client closed the connection")
        if response_started(request):
            # aiohttp logs this once and closes the connection without writing an answer.
            raise ConnectionResetError("error after the response started") from exc
        return _error_response(request, exc)


def _error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    if isinstance(exc, ApiError):
        raise exc
    if isinstance(exc, DomainError):
        return json_error(http_status(exc), exc.code, exc.message)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return _http_error(request, exc)
    if isinstance(exc, ConnectionResetError):
        raise exc
    log.exception("unhandled error on %s %s", request.method, request.path)
    return json_error(500, "internal_error", "internal server error")


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    code = _CODES_BY_STATUS.get(exc.status, "http_error")
    message = exc.reason if exc.status != 413 else "request body too large"
    if exc.status == 404:
        message = f"no route for {request.method} {request.path}"
    resp = json_error(exc.status, code, message)
    if exc.status == 405 and "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp
