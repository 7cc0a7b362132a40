"""Session, message and file records and their JSON shapes (api.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from agentic.errors import Invalid


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> float:
    return time.time()


@dataclass
class ChatSettings:
    """Per-session assistant settings; None means the server default."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    max_tokens: int | None = None
    seed: int | None = None
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()

    LIMITS = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "top_k": (1, 1000), "max_tokens": (1, 1_000_000), "seed": (0, 2**31 - 1)}
    FLAGS = frozenset({"ignore_eos"})

    def __post_init__(self) -> None:
        self.stop = tuple(self.stop)  # a list, as read back from JSON

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def updated(self, changes: Any) -> "ChatSettings":
        if not isinstance(changes, dict):
            raise Invalid("invalid_field", "settings must be an object")
        values = self.to_json()
        for name, value in changes.items():
            if name not in values:
                raise Invalid("invalid_field", f"unknown setting {name!r}")
            if name == "stop":
                values[name] = checked_stops(value)
            else:
                values[name] = _checked_flag(name, value) if name in self.FLAGS else _checked_setting(name, value, self.LIMITS[name])
        return ChatSettings(**values)


MAX_STOPS = 16
MAX_STOP_CHARS = 200


def checked_stops(value: Any) -> tuple[str, ...]:
    """Stop strings as a request or setting gives them (None, one string or a list), or `Invalid`."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise Invalid("invalid_field", "'stop' must be a string or a list of strings")
    if len(items) > MAX_STOPS or not all(0 < len(s) <= MAX_STOP_CHARS for s in items):
        raise Invalid("invalid_field", f"'stop' holds at most {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters")
    return tuple(dict.fromkeys(items))


def _checked_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("invalid_field", f"setting {name!r} must be a boolean")
    return value


def _checked_setting(name: str, value: Any, limits: tuple[float, float]) -> Any:
    if value is None and name in ("max_tokens", "seed"):
        return None
    want_int = name in ("top_k", "max_tokens", "seed")
    ok_type = isinstance(value, int) if want_int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if want_int else "a number"
        raise Invalid("invalid_field", f"setting {name!r} must be {kind}")
    low, high = limits
    if not low <= value <= high:
        raise Invalid("invalid_field", f"setting {name!r} must be between {low} and {high}")
    return value


@dataclass
class FileRecord:
    name: str
    size: int
    content_type: str
    uploaded_at: float
    extracted_chars: int = 0
    sha256: str = ""
    status: str = "ok"
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        body = {
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "uploaded_at": iso(self.uploaded_at),
            "extracted_chars": self.extracted_chars,
            "status": self.status,
        }
        if self.note:
            body["note"] = self.note
        return body


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    client_id: str | None
    title: str
    created_at: float
    last_activity: float
    system_prompt: str
    settings: ChatSettings
    message_count: int = 0
    files: dict[str, FileRecord] = field(default_factory=dict)

    def expires_at(self, timeout_s: float) -> float:
        return self.last_activity + timeout_s

    def summary_json(self, timeout_s: float, owner: bool) -> dict[str, Any]:
        """`owner` (the session's holder or the admin) sees the full id and the title, which is
        the start of the first message; anyone else an 8-character id and a null title."""
        return {
            "session_id": self.session_id if owner else self.session_id[:8],
            "client_id": self.client_id,
            "title": self.title if owner else None,
            "created_at": iso(self.created_at),
            "last_activity": iso(self.last_activity),
            "expires_at": iso(self.expires_at(timeout_s)),
            "message_count": self.message_count,
        }

    def to_json(self, timeout_s: float) -> dict[str, Any]:
        body = self.summary_json(timeout_s, owner=True)
        body["files"] = [f.to_json() for f in self.files.values()]
        body["system_prompt"] = self.system_prompt
        body["settings"] = self.settings.to_json()
        return body


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    role: str
    content: str
    created_at: float
    usage: dict[str, Any] | None = None
    alternatives: tuple[str, ...] = ()  # earlier replies to the same user message, oldest first

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "role": self.role, "content": self.content, "created_at": iso(self.created_at)}
        if self.usage is not None:
            body["usage"] = self.usage
        if self.alternatives:
            body["alternatives"] = list(self.alternatives)
        return body


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message, title or file name of a session that matched a search. `parts` is the
    matching text (around the match, for a long message) cut into (text, is_match) pieces."""

    session_id: str
    kind: str  # "message", "title" or "file"
    parts: tuple[tuple[str, bool], ...]
    message_id: str | None = None
    role: str | None = None

    def to_json(self, title: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "title": title,
            "kind": self.kind,
            "snippet": "".join(text for text, _ in self.parts),
            "parts": [{"text": text, "match": match} for text, match in self.parts],
        }
        if self.message_id is not None:
            body.update(message_id=self.message_id, role=self.role)
        return body
