"""The chat page, for single-user use straight from the main server."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

routes = web.RouteTableDef()

# No inline script anywhere: the page's code comes from /static only.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def render_chat_page(request: web.Request, api_base: str, client_id: str) -> web.Response:
    response = aiohttp_jinja2.render_template("chat.html", request, {"api_base": api_base, "client_id": client_id})
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@routes.get("/", name="page")
async def page(request: web.Request) -> web.Response:
    return render_chat_page(request, "", "")
