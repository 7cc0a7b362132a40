"""The chat page, for single-user use straight from the main server."""

from __future__ import annotations

from aiohttp import web

from agentic.web.templates import render_chat_page

routes = web.RouteTableDef()


@routes.get("/", name="page")
async def page(request: web.Request) -> web.Response:
    return render_chat_page(request, "", "")
