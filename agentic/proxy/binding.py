"""Which session a proxy request belongs to: the caller's own header, else the browser's
cookie binding, else this client's default session (created on demand, remembered on disk)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from pathlib import Path

from aiohttp import ClientSession, web
from aiohttp_session import STORAGE_KEY, get_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from agentic.ids import valid_session_id
from agentic.proxy.limits import EXCHANGE_TIMEOUT

log = logging.getLogger("agentic.proxy")

SESSION_KEY = "sid"
rebound_key = web.RequestKey("rebound", bool)


class CookieStorage(EncryptedCookieStorage):
    """HttpOnly, SameSite=Lax, and Secure whenever the request itself came over https."""

    async def save_session(self, request: web.Request, response: web.StreamResponse, session) -> None:
        self._cookie_params["secure"] = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        await super().save_session(request, response, session)


def load_cookie_key(configured: str | None, key_file: Path) -> bytes:
    """32 bytes: from COOKIE_KEY (urlsafe base64), else a key file kept under the data dir."""
    if configured:
        key = base64.urlsafe_b64decode(configured.encode() + b"=" * (-len(configured) % 4))
        if len(key) != 32:
            raise ValueError("COOKIE_KEY must be 32 bytes, urlsafe-base64 encoded")
        return key
    if key_file.exists():
        return base64.urlsafe_b64decode(key_file.read_bytes().strip())
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.urlsafe_b64encode(key))
    return key


def cookie_storage(key: bytes, number: int) -> CookieStorage:
    return CookieStorage(key, cookie_name=f"agentic_client_{number}", httponly=True, samesite="Lax", max_age=30 * 24 * 3600)


def valid_uuid(raw: str | None) -> str | None:
    """The canonical id, by the one rule of agentic.ids; surrounding spaces are forgiven."""
    return valid_session_id(raw.strip()) if raw else None


async def save_binding(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp-session saves the cookie into plain Responses only; a stream or a WebSocket is
    sent by its handler, so a binding made for it is saved here, before it is prepared."""
    if request.get(rebound_key):
        await request[STORAGE_KEY].save_session(request, response, await get_session(request))


class SessionBinder:
    def __init__(self, backend_url: str, client_id: str, state_file: Path) -> None:
        self.backend_url = backend_url
        self.client_id = client_id
        self.state_file = state_file
        self._default: str | None = self._read_default()
        self._lock = asyncio.Lock()

    def _read_default(self) -> str | None:
        try:
            return valid_uuid(json.loads(self.state_file.read_text()).get("default_session"))
        except (OSError, ValueError, AttributeError):
            return None

    def _write_default(self, session_id: str) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"default_session": session_id}))

    async def cookie_session(self, request: web.Request) -> str | None:
        session = await get_session(request)
        return valid_uuid(session.get(SESSION_KEY))

    async def bind(self, request: web.Request, session_id: str) -> None:
        session = await get_session(request)
        session[SESSION_KEY] = session_id
        request[rebound_key] = True

    async def implicit_session(self, request: web.Request, http: ClientSession, check_live: bool) -> str | None:
        """The cookie's session, else the default one; with check_live, replaced when gone."""
        bound = await self.cookie_session(request)
        if bound and (not check_live or await self._is_live(http, bound)):
            return bound
        default = await self.default_session(http, check_live)
        if default:
            await self.bind(request, default)
        return default

    async def default_session(self, http: ClientSession, check_live: bool) -> str | None:
        async with self._lock:
            if self._default and (not check_live or await self._is_live(http, self._default)):
                return self._default
            self._default = await self._create(http)
            if self._default:
                await asyncio.to_thread(self._write_default, self._default)
            return self._default

    async def _is_live(self, http: ClientSession, session_id: str) -> bool:
        async with http.get(f"{self.backend_url}/sessions/{session_id}", headers={"x-session-id": session_id}, timeout=EXCHANGE_TIMEOUT) as resp:
            return resp.status == 200

    async def _create(self, http: ClientSession) -> str | None:
        async with http.post(f"{self.backend_url}/sessions", json={"client_id": self.client_id}, headers={"x-client-id": self.client_id}, timeout=EXCHANGE_TIMEOUT) as resp:
            if resp.status != 201:
                return None
            return (await resp.json())["session_id"]
