"""Errors on the OpenAI API (/v1/) in OpenAI's shape, for the main server and the client proxy."""

from __future__ import annotations

import json
from typing import Any, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from agentic.web.errors import Handler

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                409: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error", 421: "permission_error",
                422: "invalid_request_error", 429: "rate_limit_error", 503: "unavailable_error"}


def error_response(status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> web.Response:
    error_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return web.json_response({"error": {"message": message, "type": error_type, "param": None, "code": code}}, status=status, headers=headers)


def _retry_after(headers: Any) -> dict[str, str] | None:
    return {"Retry-After": headers["Retry-After"]} if headers is not None and "Retry-After" in headers else None


def openai_errors_middleware(on_openai_api: Callable[[web.Request], bool]) -> Middleware:
    """Outermost: every error on the OpenAI API, wherever it was made (the views, the Host and
    Origin guards, an unknown route, a body too large, a proxy that cannot reach the main
    server), in OpenAI's shape, keeping Retry-After."""

    @web.middleware
    async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not on_openai_api(request):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = _api_error(exc.text)
            return error_response(exc.status, error.get("code"), error.get("message") or exc.reason, _retry_after(exc.headers))
        if response.status >= 400 and isinstance(response, web.Response) and response.content_type == "application/json":
            error = _api_error(response.text)
            if "type" not in error:
                return error_response(response.status, error.get("code"), error.get("message") or response.reason, _retry_after(response.headers))
        return response

    return openai_errors


def _api_error(text: str | None) -> dict[str, Any]:
    """The `error` object of an api.md error body, or {}."""
    try:
        error = json.loads(text or "").get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}
