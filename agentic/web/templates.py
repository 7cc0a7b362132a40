"""The chat page: its templates and static files, and its rendering with the page's security
headers. Shared by the main server and client N's frontend, so neither imports the other."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

# templates/ and static/ live at the top of the repository; a wheel installs them as data
# files under <prefix>/share/agentic (setup.cfg). A checkout or an editable install uses its own.
ASSET_ROOTS = (Path(__file__).resolve().parents[2], Path(sysconfig.get_path("data")) / "share" / "agentic")


def asset_root(roots: tuple[Path, ...] = ASSET_ROOTS) -> Path:
    """The first of `roots` that holds the page's templates."""
    for root in roots:
        if (root / "templates" / "chat.html").is_file():
            return root
    raise FileNotFoundError(f"templates/chat.html is in none of {', '.join(map(str, roots))}")


ROOT = asset_root()
STATIC_DIR = ROOT / "static"
TEMPLATES_DIR = ROOT / "templates"

# No inline script anywhere: the page's code comes from /static only.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def setup_templates(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True)


def render_chat_page(request: web.Request, api_base: str, client_id: str) -> web.Response:
    response = aiohttp_jinja2.render_template("chat.html", request, {"api_base": api_base, "client_id": client_id})
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
