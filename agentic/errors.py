"""What went wrong, in the domain's words: every refusal of the sessions, uploads and chat code.

Each error carries a `code` (api.md's error codes, e.g. `session_not_found`) and a message for
a person. The domain knows nothing of HTTP: the web layer maps each kind to a status
(agentic/web/errors.py) and the WebSocket handler sends code and message as an error frame.
"""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Malformed(DomainError):
    """The request names something in a form that cannot be valid (a session id that is no UUID)."""


class NotFound(DomainError):
    """What was asked for does not exist, or no longer does."""


class SessionGone(NotFound):
    """The session was deleted (or expired) while a request was still using it."""

    def __init__(self, message: str = "the session was deleted meanwhile") -> None:
        super().__init__("session_not_found", message)


class Conflict(DomainError):
    """It cannot be done in the current state (a reply is already being generated)."""


class TooLarge(DomainError):
    """Over a size or count limit."""


class Unsupported(DomainError):
    """A kind of content that is not accepted (a file type)."""


class Invalid(DomainError):
    """A value that is well formed but not allowed (a setting out of range, an empty message)."""


class Busy(DomainError):
    """Not now: a limit of the server is reached; trying later may work."""


class Unavailable(DomainError):
    """The server cannot do it at all at the moment (the model is loading or has failed)."""
